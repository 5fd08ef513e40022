/*
** image.c: the local image of a replica on disk (docs/read-path.md, "The
** local image").
**
** A directory per replica (cache_image_dir names it) holds:
**
**   lock     flock()ed while a process has the image open: one process at a
**            time uses a cache directory (a second one runs without a disk
**            cache and says so in the log).
**   meta     what the image is: format version, replica identity (its URL),
**            page size, the TXID H whose page map the record holds, the file
**            that ended at H (to recognise the replica), the poller's
**            listing positions, and the file being applied, if any. Written
**            whole: temporary file, fsync, rename, fsync of the directory;
**            its own CRC-64 at the end, so a damaged one is never trusted.
**   image    the database in SQLite page layout, sparse until hydrated.
**   pages    the page record, mapped shared: a 64-byte header, then one
**            32-byte entry per page: the file that holds the page's version
**            in the map at H (max TXID, min TXID and level), the CRC-64 of
**            the bytes the image holds for it, and whether it holds them.
**   staging  a copy of the LTX file being applied, fsynced before the first
**            page of it is written (so replay after a crash needs no
**            network).
**
** The rule readers use (cache_image_get): the image serves page p to a view
** whose page map names file F for p only if the entry names F too, holds the
** page, and the bytes read back have the entry's CRC. Every entry is thus
** self-validating: a torn write, a crash between bytes and entry, or a
** concurrent rewrite is a miss, never wrong bytes. The CRC is checked once
** per process and page, for bytes an earlier process left (the hydrator's
** check pass does most of it in the background); bytes this process writes
** are whole before their entry says held.
**
** Readers take no lock. They copy a page from a read-only shared mapping of
** the image (the "window", larger than the file) or pread it when the
** window does not cover it. A mapped page past the end of the file would
** fault (SIGBUS), so while the image is open its file never shrinks: a
** shrink or reset punches the blocks away and keeps the size, close cuts the
** file to what the map needs. A page is touched only while its entry says
** held, and its pwrite (which extended the file) came before that. Mapped
** pages count as the process's resident memory: a reader that streams
** forward while the image fills gives back the page tables behind it
** (MADV_DONTNEED; the pages stay in the page cache), so a cold scan stays
** flat; a hydrated image stays mapped where it was read, like a database
** under mmap.
**
** Order of writes (one writer at a time, under im->write_mutex, which is
** held across the pwrite of one page: the entry and its bytes must change
** together, and a local write of a page is short; it is never held across
** a store call or an fsync, but it is across an eviction's msync and punch):
**   put (fill, read-through): pwrite the bytes; store crc; store held = 1.
**   remap (a new file F applied, or a rebase): store held = 0; store the new
**     identity; then, if the bytes are at hand, pwrite them, crc, held = 1.
**   shrink, reset: seq odd; entries cleared; blocks punched; seq even.
**   evict (a budget, cache_max): per victim extent, ext_seq odd; its entries
**     say held = 0; those entries synced (msync); THEN its blocks punched;
**     ext_seq even. The record never claims bytes that are gone, even
**     after a crash (and the CRC would catch it if it did).
** A reader loads seq, the entry and its extent's ext_seq, copies, then loads
** them all again and compares (a seqlock: any overlapping change is a miss);
** the CRC check backs that up (and is all another process could rely on).
** A fill's step syncs (cache_image_sync_step, from a thread of its own)
** only make bytes durable sooner; nothing above depends on them.
** Crash consistency for the map itself (the identities) comes from the
** marker protocol of cache_image_meta.applying: the marker is durable before
** the first entry changes, H moves only after every entry of the file is
** written and synced, and a restart with a marker set replays the staged
** file (idempotent).
**
** The budget: at most `budget` bytes of pages are held. A write that would
** pass it first evicts cold extents (EXTENT_PAGES pages, CLOCK: an extent
** read since the hand last passed gets another round) down to 7/8 of it; so
** a database larger than cache_max keeps its hottest extents, and the
** image's allocated blocks stay under the budget.
*/
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cache/cache.h"

#define META_MAGIC "LTVFSIMG"
#define PAGES_MAGIC "LTVFSPGS"
#define IMAGE_FORMAT 1
#define PAGES_HEADER 64
#define MAP_MIN_PAGES (1u << 16)
#define EXTENT_PAGES 256u           /* the unit of eviction (1 MiB of 4 KiB pages) */
#define WINDOW_MIN_BYTES (256u << 20) /* the smallest mapping of the image */
#define WINDOW_TRIM_BYTES (4u << 20) /* a scan drops the window's page tables
                                     ** behind it this often (MADV_DONTNEED): the
                                     ** mapped pages would count as resident memory,
                                     ** as many as the database has */
#define STREAM_GAP 8u                /* pages a scan may skip and still be one */
#define STREAM_MIN 64u               /* pages in a row that make a scan */

typedef struct image_entry {
  _Atomic uint64_t max_txid;  /* 0: no file holds the page in the map */
  _Atomic uint64_t min_level; /* min TXID << 8 | level */
  _Atomic uint64_t crc;       /* of the bytes held, when held */
  _Atomic uint64_t held;      /* 1: the image holds the map's version */
} image_entry;

_Static_assert(sizeof(image_entry) == 32, "one entry is 32 bytes on disk");

/* A mapping of the record. A larger one replaces it when the database
** grows; the old ones stay mapped until close, since readers may still be
** looking at them. */
typedef struct record_map {
  uint8_t *base;
  size_t bytes;
  uint32_t pages;         /* entries it covers */
  atomic_uchar *checked;  /* per page: its bytes passed their CRC in this
                          ** process. Bytes this process writes are whole
                          ** before the entry says held, so only bytes an
                          ** earlier process left need the check, once. */
  atomic_uchar *touched;  /* per extent of EXTENT_PAGES pages: read since the
                          ** eviction clock last passed it (CLOCK) */
  atomic_uint *ext_seq;   /* per extent: odd while it is being evicted (its
                          ** entries cleared, then its blocks punched); a read
                          ** that overlaps is a miss. Every map of the chain
                          ** gets the same bumps (readers may use any). */
  struct record_map *older;
} record_map;

/* A read-only shared mapping of the image file, larger than the file (the
** part beyond its end is never touched: a page is read only while its
** entry says held, which its pwrite, extending the file, preceded; and the
** file never shrinks while it is mapped: see cache_image_truncate). A
** larger one replaces it as the database grows; old ones stay until close. */
typedef struct image_window {
  uint8_t *base;
  size_t bytes;
  struct image_window *older;
} image_window;

struct cache_image {
  char *dir;
  int lock_fd, image_fd, pages_fd;
  atomic_uint page_size;       /* 0: empty (read by readers without a lock) */
  _Atomic(record_map *) map;
  _Atomic(image_window *) win; /* NULL: readers pread */
  atomic_uint seq;             /* odd while entries are being taken away
                               ** together with their bytes (a shrink, a reset,
                               ** an eviction): a read that overlaps one is a
                               ** miss (seqlock) */
  uint64_t logical;            /* bytes the image file should have: a shrink
                               ** punches the tail, the file is cut to this
                               ** at close (write_mutex) */
  uint32_t clock_hand;         /* next extent the eviction looks at (write_mutex) */
  int punch_failed;            /* hole punching is not supported here (logged once) */
  atomic_uint backed;          /* entries 1..backed have disk blocks: a mapped
                               ** page of a sparse file on a full file system
                               ** would fault with SIGBUS, so no entry beyond
                               ** is ever touched */
  pthread_mutex_t write_mutex; /* one writer of bytes and entries at a time */
  atomic_int disabled;         /* writes stopped (disk full, I/O error, budget) */
  atomic_uint_fast64_t budget; /* most bytes of pages to hold; UINT64_MAX = no limit */
  atomic_uint_fast64_t held, bad, bytes_written, evicted;
  atomic_uint_fast64_t unsynced; /* bytes written since the last step's sync */
  atomic_int syncing;            /* a step's sync is running */
  atomic_uint_fast64_t mapped; /* entries that name a file: held == mapped is a
                               ** full image (write_mutex; read by readers) */
  /* bumped by every reader: a line of their own, away from the writers' */
  _Alignas(64) atomic_uint_fast64_t hits;
  atomic_uint_fast64_t misses;
  char pad_[64 - 2 * sizeof(atomic_uint_fast64_t)];
};

/* ---- small helpers ---- */

static uint64_t min_level(const store_ltx_file *f) {
  return f->min_txid << 8 | (uint64_t)(unsigned)f->level;
}

static char *path_in(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static int io_error(ltx_error *err, const char *what, const char *path) {
  return ltx_error_set(err, CACHE_ERR_IO, "%s %s: %s", what, path, strerror(errno));
}

static int fsync_dir(const char *dir, ltx_error *err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = LTX_OK;
  if (fd < 0) return io_error(err, "open", dir);
  if (fsync(fd) != 0) rc = io_error(err, "fsync", dir);
  close(fd);
  return rc;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *path, ltx_error *err) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof(buf)) return ltx_error_set(err, LTX_ERR_ARG, "bad cache path '%s'", path);
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir(buf, 0700) != 0 && errno != EEXIST) return io_error(err, "create", buf);
      *p = c;
      if (c == '\0') break;
    }
  }
  return LTX_OK;
}

int cache_make_dirs(const char *path, ltx_error *err) { return make_dirs(path, err); }

/* ---- the directory of a replica ---- */

int cache_image_dir(const char *root, const char *url, char *out, size_t cap) {
  char name[80];
  size_t k = 0;
  const char *u = strstr(url, "://");
  u = u ? u + 3 : url;
  /* A readable part (the replica URL without scheme, unsafe characters as
  ** '_'), then a hash of the whole URL: two URLs never share a directory. */
  for (; *u && k < 48; u++) {
    char c = *u;
    name[k++] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.')
                    ? c
                    : '_';
  }
  name[k] = '\0';
  int n = snprintf(out, cap, "%s/%s-%016" PRIx64, root, name, ltx_crc64(0, url, strlen(url)));
  return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* ---- meta ---- */

typedef struct wbuf {
  uint8_t b[2048];
  size_t n;
} wbuf;

static void put64(wbuf *w, uint64_t v) {
  for (int i = 7; i >= 0; i--) w->b[w->n++] = (uint8_t)(v >> (8 * i));
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}
static void put_file(wbuf *w, const store_ltx_file *f) {
  put64(w, (uint64_t)(int64_t)f->level);
  put64(w, f->min_txid);
  put64(w, f->max_txid);
  put64(w, f->size);
  put64(w, (uint64_t)f->timestamp_ms);
}
static const uint8_t *get_file(const uint8_t *p, store_ltx_file *f) {
  f->level = (int)(int64_t)get64(p);
  f->min_txid = get64(p + 8);
  f->max_txid = get64(p + 16);
  f->size = get64(p + 24);
  f->timestamp_ms = (int64_t)get64(p + 32);
  return p + 40;
}
#define FILE_BYTES 40

int cache_image_write_meta(cache_image *im, const cache_image_meta *m, ltx_error *err) {
  wbuf w = {{0}, 0};
  char *path = path_in(im->dir, "meta"), *tmp = path_in(im->dir, "meta.tmp");
  size_t ident = strlen(m->identity);
  int fd = -1, rc = LTX_OK;
  if (path == NULL || tmp == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  if (ident > 1024) ident = 1024;
  memcpy(w.b, META_MAGIC, 8);
  w.n = 8;
  put64(&w, IMAGE_FORMAT);
  put64(&w, m->page_size);
  put64(&w, m->commit);
  put64(&w, m->txid);
  put64(&w, (uint64_t)m->timestamp_ms);
  put_file(&w, &m->head);
  for (int l = 0; l <= STORE_MAX_LEVEL; l++) put_file(&w, &m->seen[l]);
  put_file(&w, &m->applying);
  put64(&w, ident);
  memcpy(w.b + w.n, m->identity, ident);
  w.n += ident;
  put64(&w, ltx_crc64(0, w.b, w.n));
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = io_error(err, "create", tmp);
    goto out;
  }
  if (write(fd, w.b, w.n) != (ssize_t)w.n || fsync(fd) != 0) {
    rc = io_error(err, "write", tmp);
    goto out;
  }
  close(fd);
  fd = -1;
  if (rename(tmp, path) != 0) {
    rc = io_error(err, "rename", tmp);
    goto out;
  }
  rc = fsync_dir(im->dir, err);
out:
  if (fd >= 0) close(fd);
  if (rc != LTX_OK && tmp) unlink(tmp);
  free(path);
  free(tmp);
  return rc;
}

/* Reads the meta; 1 when there is a valid one, 0 when there is none, -1
** when it is damaged or of another format (why in why). */
static int read_meta(const char *dir, cache_image_meta *m, char *why, size_t cap) {
  uint8_t b[2048];
  char *path = path_in(dir, "meta");
  ssize_t n;
  int fd, rc = -1;
  const uint8_t *p;
  memset(m, 0, sizeof(*m));
  if (path == NULL) return -1;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  free(path);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  n = read(fd, b, sizeof(b));
  close(fd);
  snprintf(why, cap, "meta is damaged");
  if (n < 8 + 5 * 8 + FILE_BYTES * (STORE_MAX_LEVEL + 3) + 16 || memcmp(b, META_MAGIC, 8) != 0)
    return -1;
  if (get64(b + n - 8) != ltx_crc64(0, b, (size_t)n - 8)) return -1;
  if (get64(b + 8) != IMAGE_FORMAT) {
    snprintf(why, cap, "meta is of format %" PRIu64 ", this build reads %d", get64(b + 8),
             IMAGE_FORMAT);
    return -1;
  }
  m->page_size = (uint32_t)get64(b + 16);
  m->commit = (uint32_t)get64(b + 24);
  m->txid = get64(b + 32);
  m->timestamp_ms = (int64_t)get64(b + 40);
  p = get_file(b + 48, &m->head);
  for (int l = 0; l <= STORE_MAX_LEVEL; l++) p = get_file(p, &m->seen[l]);
  p = get_file(p, &m->applying);
  uint64_t ident = get64(p);
  p += 8;
  if (ident >= sizeof(m->identity) || p + ident + 8 != b + n) return -1;
  memcpy(m->identity, p, ident);
  m->identity[ident] = '\0';
  rc = 1;
  return rc;
}

/* ---- the record ---- */

static record_map *current(const cache_image *im) { return atomic_load(&((cache_image *)im)->map); }

static image_entry *entry_of(const cache_image *im, record_map *m, uint32_t pgno) {
  if (m == NULL || pgno == 0 || pgno > m->pages || pgno > atomic_load(&((cache_image *)im)->backed))
    return NULL;
  return (image_entry *)(m->base + PAGES_HEADER + (size_t)(pgno - 1) * sizeof(image_entry));
}

/* Makes the record cover at least pages entries (the file grows sparse).
** Caller holds write_mutex (or is the only thread). */
static int record_reserve(cache_image *im, uint32_t pages, ltx_error *err) {
  record_map *old = current(im), *m;
  uint64_t want;
  if (pages > atomic_load(&im->backed)) {
    /* blocks for the entries first (4096 at a time), so that writing them
    ** through the mapping never faults */
    uint64_t upto = ((uint64_t)pages + 4095) / 4096 * 4096;
    if (upto > 0xFFFFFFFFull) upto = 0xFFFFFFFFull;
    int e = posix_fallocate(im->pages_fd, 0, (off_t)(PAGES_HEADER + upto * sizeof(image_entry)));
    if (e != 0) {
      errno = e;
      atomic_store(&im->disabled, 1);
      return io_error(err, "allocate", "the page record");
    }
    if (old && old->pages >= upto) {
      atomic_store(&im->backed, (uint32_t)upto);
      return LTX_OK;
    }
    pages = (uint32_t)upto;
  }
  if (old && old->pages >= pages) return LTX_OK;
  want = MAP_MIN_PAGES;
  while (want < (uint64_t)pages * 2) want *= 2;
  if (want > 0xFFFFFFFFull) want = 0xFFFFFFFFull;
  m = calloc(1, sizeof(*m));
  if (m == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  m->pages = (uint32_t)want;
  m->bytes = PAGES_HEADER + (size_t)want * sizeof(image_entry);
  struct stat sb;
  if (fstat(im->pages_fd, &sb) != 0 ||
      ((uint64_t)sb.st_size < m->bytes && ftruncate(im->pages_fd, (off_t)m->bytes) != 0)) {
    free(m);
    return io_error(err, "grow", "the page record");
  }
  m->checked = calloc((size_t)want + 1, 1);
  m->touched = calloc((size_t)want / EXTENT_PAGES + 1, 1);
  m->ext_seq = calloc((size_t)want / EXTENT_PAGES + 1, sizeof(*m->ext_seq));
  m->base = m->checked && m->touched && m->ext_seq
                ? mmap(NULL, m->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, im->pages_fd, 0)
                : MAP_FAILED;
  if (m->base == MAP_FAILED) {
    free(m->checked);
    free(m->touched);
    free(m->ext_seq);
    free(m);
    return io_error(err, "map", "the page record");
  }
  if (old) { /* what this process learnt so far carries over (a lost update is harmless) */
    for (uint32_t p = 0; p <= old->pages; p++)
      if (atomic_load_explicit(&old->checked[p], memory_order_relaxed))
        atomic_store_explicit(&m->checked[p], 1, memory_order_relaxed);
    for (uint32_t x = 0; x <= old->pages / EXTENT_PAGES; x++) {
      atomic_store_explicit(&m->touched[x],
                            atomic_load_explicit(&old->touched[x], memory_order_relaxed),
                            memory_order_relaxed);
      atomic_store(&m->ext_seq[x], atomic_load(&old->ext_seq[x])); /* even: write_mutex */
    }
  }
  m->older = old;
  atomic_store(&im->map, m);
  if (pages > atomic_load(&im->backed)) atomic_store(&im->backed, pages);
  return LTX_OK;
}

/* Counts the pages held (at open). */
static uint64_t count_held(cache_image *im, uint32_t commit) {
  uint64_t n = 0, mapped = 0;
  for (uint32_t p = 1; p <= commit; p++) {
    image_entry *e = entry_of(im, current(im), p);
    if (e && atomic_load(&e->held)) n++;
    if (e && atomic_load(&e->max_txid)) mapped++;
  }
  atomic_store(&im->mapped, mapped);
  return n;
}

/* Makes the window cover the first end bytes of the image (a mapping twice
** that, at least WINDOW_MIN_BYTES). Without one, readers pread. Caller holds
** write_mutex (or is the only thread). */
static void window_cover(cache_image *im, uint64_t end) {
  image_window *old = atomic_load(&im->win), *w;
  uint64_t want = WINDOW_MIN_BYTES;
  if (old && old->bytes >= end) return;
  while (want < end * 2) want *= 2;
  if (want > SIZE_MAX / 2) return;
  w = calloc(1, sizeof(*w));
  if (w == NULL) return;
  w->bytes = (size_t)want;
  w->base = mmap(NULL, w->bytes, PROT_READ, MAP_SHARED, im->image_fd, 0);
  if (w->base == MAP_FAILED) {
    free(w);
    return;
  }
  w->older = old;
  atomic_store(&im->win, w);
}

/* Gives back the disk blocks of image bytes [off, off + n) (the file keeps
** its size). 0, or -1 when the file system cannot (nothing changed). */
static int punch(cache_image *im, uint64_t off, uint64_t n) {
  if (n == 0) return 0;
#if defined(HAVE_FALLOCATE) && HAVE_DECL_FALLOC_FL_PUNCH_HOLE && HAVE_DECL_FALLOC_FL_KEEP_SIZE
  if (fallocate(im->image_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)n) == 0)
    return 0;
#else
  (void)off;
  errno = EOPNOTSUPP;
#endif
  im->punch_failed = 1;
  return -1;
}

/* ---- open, reset, close ---- */

/* Removes the image's files (not the lock). */
static void remove_files(const char *dir) {
  static const char *const kFiles[] = {"meta", "meta.tmp", "image", "pages", "staging"};
  for (size_t i = 0; i < sizeof(kFiles) / sizeof(kFiles[0]); i++) {
    char *p = path_in(dir, kFiles[i]);
    if (p) unlink(p);
    free(p);
  }
}

static int open_data_files(cache_image *im, ltx_error *err) {
  char *ip = path_in(im->dir, "image"), *pp = path_in(im->dir, "pages");
  int rc = LTX_OK;
  if (ip == NULL || pp == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  im->image_fd = open(ip, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (im->image_fd < 0) {
    rc = io_error(err, "open", ip);
    goto out;
  }
  im->pages_fd = open(pp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (im->pages_fd < 0) {
    rc = io_error(err, "open", pp);
    goto out;
  }
  {
    uint8_t hdr[PAGES_HEADER];
    ssize_t n = pread(im->pages_fd, hdr, sizeof(hdr), 0);
    if (n == 0) { /* new record */
      memset(hdr, 0, sizeof(hdr));
      memcpy(hdr, PAGES_MAGIC, 8);
      hdr[8] = IMAGE_FORMAT;
      hdr[9] = (uint8_t)sizeof(image_entry);
      /* entries are native-endian and never leave this machine; the header
      ** says which order, so another machine's record is not misread */
      uint32_t probe = 0x01020304;
      memcpy(hdr + 12, &probe, 4);
      if (pwrite(im->pages_fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
        rc = io_error(err, "write", pp);
        goto out;
      }
    } else {
      uint32_t probe = 0x01020304;
      if (n != (ssize_t)sizeof(hdr) || memcmp(hdr, PAGES_MAGIC, 8) != 0 ||
          hdr[8] != IMAGE_FORMAT || hdr[9] != sizeof(image_entry) || memcmp(hdr + 12, &probe, 4) != 0) {
        rc = ltx_error_set(err, CACHE_ERR_IO, "%s: not a page record of this format", pp);
        goto out;
      }
    }
  }
  rc = record_reserve(im, 1, err);
  if (rc == LTX_OK) {
    struct stat sb;
    if (fstat(im->image_fd, &sb) != 0) {
      rc = io_error(err, "stat", ip);
      goto out;
    }
    im->logical = (uint64_t)sb.st_size;
    window_cover(im, (uint64_t)sb.st_size);
  }
out:
  free(ip);
  free(pp);
  return rc;
}

static void close_data_files(cache_image *im) {
  record_map *m = atomic_exchange(&im->map, NULL);
  while (m) {
    record_map *older = m->older;
    munmap(m->base, m->bytes);
    free(m->checked);
    free(m->touched);
    free(m->ext_seq);
    free(m);
    m = older;
  }
  image_window *w = atomic_exchange(&im->win, NULL);
  while (w) {
    image_window *older = w->older;
    munmap(w->base, w->bytes);
    free(w);
    w = older;
  }
  /* No mapping is left: the file may shrink to what the map needs. */
  if (im->image_fd >= 0) {
    struct stat sb;
    if (fstat(im->image_fd, &sb) == 0 && (uint64_t)sb.st_size > im->logical &&
        ftruncate(im->image_fd, (off_t)im->logical) != 0) {
      /* a longer file only costs its (punched) tail */
    }
  }
  if (im->image_fd >= 0) close(im->image_fd);
  if (im->pages_fd >= 0) close(im->pages_fd);
  im->image_fd = im->pages_fd = -1;
}

int cache_image_open(const char *dir, const char *identity, cache_image **out,
                     cache_image_meta *meta, char *note, size_t note_cap, ltx_error *err) {
  cache_image *im = calloc(1, sizeof(*im));
  char *lock = NULL, why[160] = "";
  int rc, found;
  note[0] = '\0';
  if (im == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  im->lock_fd = im->image_fd = im->pages_fd = -1;
  atomic_init(&im->budget, UINT64_MAX);
  pthread_mutex_init(&im->write_mutex, NULL);
  im->dir = strdup(dir);
  if (im->dir == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  rc = make_dirs(dir, err);
  if (rc != LTX_OK) goto out;
  chmod(dir, 0700);
  lock = path_in(dir, "lock");
  if (lock == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  im->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (im->lock_fd < 0) {
    rc = io_error(err, "open", lock);
    goto out;
  }
  if (flock(im->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = ltx_error_set(err, CACHE_ERR_BUSY, "%s is in use by another process", dir);
    goto out;
  }
  found = read_meta(dir, meta, why, sizeof(why));
  if (found == 1 && strcmp(meta->identity, identity) != 0) {
    snprintf(why, sizeof(why), "it belongs to %.100s", meta->identity);
    found = -1;
  }
  if (found == 1) {
    rc = open_data_files(im, err);
    if (rc != LTX_OK) {
      snprintf(why, sizeof(why), "%.150s", err->msg);
      close_data_files(im);
      found = -1;
    }
  }
  if (found == -1) {
    snprintf(note, note_cap, "discarding the cache in %s: %s", dir, why);
  }
  if (found != 1) {
    remove_files(dir);
    memset(meta, 0, sizeof(*meta));
    for (int l = 0; l <= STORE_MAX_LEVEL; l++) meta->seen[l].level = l;
    meta->applying.level = -1;
    snprintf(meta->identity, sizeof(meta->identity), "%s", identity);
    rc = open_data_files(im, err);
    if (rc != LTX_OK) goto out;
  } else {
    atomic_store(&im->page_size, meta->page_size);
    rc = record_reserve(im, meta->commit, err);
    if (rc != LTX_OK) goto out;
    atomic_store(&im->held, count_held(im, meta->commit));
  }
  *out = im;
  im = NULL;
out:
  free(lock);
  if (im) cache_image_close(im);
  return rc;
}

void cache_image_close(cache_image *im) {
  if (im == NULL) return;
  close_data_files(im);
  if (im->lock_fd >= 0) close(im->lock_fd); /* releases the flock */
  pthread_mutex_destroy(&im->write_mutex);
  free(im->dir);
  free(im);
}

const char *cache_image_path(const cache_image *im) { return im->dir; }

/* Readers may be looking at the record and the image while this runs: the
** mappings stay, every entry is cleared in place (held first), then the
** image file's blocks are punched (its size stays until close). */
int cache_image_reset(cache_image *im, uint32_t page_size, ltx_error *err) {
  int rc = LTX_OK;
  char *staging = path_in(im->dir, "staging"), *meta = path_in(im->dir, "meta");
  pthread_mutex_lock(&im->write_mutex);
  /* No meta first: a crash from here on finds no image, not a stale one. */
  if (meta) unlink(meta);
  atomic_fetch_add(&im->seq, 1); /* odd: readers miss until it is even again */
  atomic_store(&im->page_size, 0);
  for (record_map *m = current(im); m != NULL; m = NULL) {
    for (uint32_t p = 1; p <= m->pages && p <= atomic_load(&im->backed); p++) {
      image_entry *e = entry_of(im, m, p);
      if (atomic_load(&e->held)) atomic_store(&e->held, 0);
      if (atomic_load(&e->max_txid)) atomic_store(&e->max_txid, 0);
      if (atomic_load(&e->min_level)) atomic_store(&e->min_level, 0);
    }
  }
  /* The file keeps its size while it is mapped (a read of a page beyond
  ** the end of a mapped file faults); its blocks go. */
  {
    struct stat sb;
    if (fstat(im->image_fd, &sb) != 0) rc = io_error(err, "stat", "the local image");
    else punch(im, 0, (uint64_t)sb.st_size); /* where it cannot, the bytes stay, unclaimed */
  }
  im->logical = 0;
  atomic_fetch_add(&im->seq, 1);
  if (staging) unlink(staging);
  atomic_store(&im->page_size, page_size);
  atomic_store(&im->held, 0);
  atomic_store(&im->mapped, 0);
  atomic_store(&im->disabled, 0);
  pthread_mutex_unlock(&im->write_mutex);
  free(staging);
  free(meta);
  return rc;
}

/* ---- pages ---- */

/* The lock-free read (the rule in the header): entry, bytes, entry again,
** all inside one even value of seq and of the extent's ext_seq. From the
** window (a memcpy from the page cache) when it covers the page, else a
** pread. 1 served, 0 a miss, -1 bytes that fail their CRC. */
static int image_read(cache_image *im, uint32_t pgno, uint64_t want_mx, uint64_t want_ml,
                      uint8_t *out, int use_window) {
  record_map *m = current(im);
  image_entry *e = entry_of(im, m, pgno);
  uint64_t h1, mx, ml, c, off;
  uint32_t ps = atomic_load(&im->page_size), s1, x1;
  image_window *w;
  if (e == NULL || ps == 0) return 0;
  s1 = atomic_load(&im->seq);
  h1 = atomic_load(&e->held);
  mx = atomic_load(&e->max_txid);
  ml = atomic_load(&e->min_level);
  x1 = atomic_load(&m->ext_seq[(pgno - 1) / EXTENT_PAGES]);
  c = atomic_load(&e->crc);
  if (!h1 || mx != want_mx || ml != want_ml || ((s1 | x1) & 1)) return 0;
  off = (uint64_t)(pgno - 1) * ps;
  w = use_window ? atomic_load(&im->win) : NULL;
  if (w != NULL && off + ps <= w->bytes) {
    memcpy(out, w->base + off, ps);
  } else if (pread(im->image_fd, out, ps, (off_t)off) != (ssize_t)ps) {
    return -1;
  }
  atomic_thread_fence(memory_order_acquire); /* the bytes before the re-check */
  if (!atomic_load(&e->held) || atomic_load(&e->max_txid) != mx ||
      atomic_load(&e->min_level) != ml || atomic_load(&im->seq) != s1 ||
      atomic_load(&m->ext_seq[(pgno - 1) / EXTENT_PAGES]) != x1)
    return 0;
  if (!atomic_load_explicit(&m->checked[pgno], memory_order_relaxed)) {
    if (ltx_crc64(0, out, ps) != c) return -1;
    atomic_store_explicit(&m->checked[pgno], 1, memory_order_relaxed);
  }
  return 1;
}

/* Drops the window's page tables over pages [from, to) (not the pages:
** they stay in the page cache, and a later copy maps them again at a minor
** fault), so that scanning the image does not make the process look as
** large as the database. Safe while other readers copy: the mapping is
** shared, read-only and backed by the file; nothing is lost. */
static void window_trim(cache_image *im, uint32_t from, uint32_t to) {
  image_window *w = atomic_load(&im->win);
  uint64_t ps = atomic_load(&im->page_size), lo, hi;
  long pg = sysconf(_SC_PAGESIZE);
  if (w == NULL || ps == 0 || to <= from) return;
  lo = (uint64_t)(from - 1) * ps / (uint64_t)pg * (uint64_t)pg;
  hi = (uint64_t)(to - 1) * ps / (uint64_t)pg * (uint64_t)pg;
  if (hi > w->bytes) hi = w->bytes;
  if (hi > lo) madvise(w->base + lo, (size_t)(hi - lo), MADV_DONTNEED);
}

int cache_image_get(cache_image *im, uint32_t pgno, const store_ltx_file *want, uint8_t *out,
                    cache_image_stream *st) {
  int rc = image_read(im, pgno, want->max_txid, min_level(want), out, 1);
  if (rc == 1) {
    record_map *m = current(im);
    atomic_uchar *t = &m->touched[(pgno - 1) / EXTENT_PAGES];
    uint32_t ps = atomic_load_explicit(&im->page_size, memory_order_relaxed);
    if (!atomic_load_explicit(t, memory_order_relaxed)) atomic_store_explicit(t, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&im->hits, 1, memory_order_relaxed);
    if (st != NULL && ps != 0 && atomic_load(&im->held) < atomic_load(&im->mapped)) {
      /* While the image fills (or holds part of the map only, under a
      ** budget), a reader moving forward (a scan) gives back the mapping
      ** behind it every WINDOW_TRIM_BYTES; random reads, and any reads of
      ** a full image, keep what they mapped, as a database under mmap. */
      if (pgno > st->last && pgno - st->last <= STREAM_GAP) {
        if (pgno - st->from >= WINDOW_TRIM_BYTES / ps) {
          window_trim(im, st->from, pgno - STREAM_GAP);
          st->from = pgno - STREAM_GAP;
        }
      } else {
        /* a jump: a long stretch behind it was a scan too */
        if (st->last >= st->from + STREAM_MIN) window_trim(im, st->from, st->last + 1);
        st->from = pgno;
      }
      st->last = pgno;
    }
    return 1;
  }
  if (rc < 0) atomic_fetch_add(&im->bad, 1);
  atomic_fetch_add_explicit(&im->misses, 1, memory_order_relaxed);
  return 0;
}

uint32_t cache_image_check(cache_image *im, uint32_t pgno, uint32_t n) {
  record_map *m = current(im);
  uint32_t ps = atomic_load(&im->page_size), end = pgno + n;
  uint8_t *buf = ps ? malloc(ps) : NULL;
  if (buf == NULL) return end;
  for (; pgno < end; pgno++) {
    image_entry *e = entry_of(im, m, pgno);
    if (e == NULL) break;
    if (!atomic_load(&e->held) || atomic_load_explicit(&m->checked[pgno], memory_order_relaxed))
      continue;
    uint64_t mx = atomic_load(&e->max_txid), ml = atomic_load(&e->min_level);
    /* pread, not the window: the check must not leave the image mapped */
    if (image_read(im, pgno, mx, ml, buf, 0) >= 0) continue; /* checked, or changed meanwhile */
    atomic_fetch_add(&im->bad, 1);
    pthread_mutex_lock(&im->write_mutex);
    /* still the bytes that failed (not rewritten meanwhile): not held */
    if (atomic_load(&e->max_txid) == mx && atomic_load(&e->min_level) == ml &&
        !atomic_load(&m->checked[pgno]) && atomic_exchange(&e->held, 0))
      atomic_fetch_sub(&im->held, 1);
    pthread_mutex_unlock(&im->write_mutex);
  }
  free(buf);
  return pgno;
}

int cache_image_holds(cache_image *im, uint32_t pgno, const store_ltx_file *version) {
  image_entry *e = entry_of(im, current(im), pgno);
  return e != NULL && atomic_load(&e->held) && atomic_load(&e->max_txid) == version->max_txid &&
         atomic_load(&e->min_level) == min_level(version);
}

int cache_image_wants(cache_image *im, uint32_t pgno, const store_ltx_file *version) {
  image_entry *e = entry_of(im, current(im), pgno);
  return e != NULL && !atomic_load(&im->disabled) && !atomic_load(&e->held) &&
         atomic_load(&e->max_txid) == version->max_txid &&
         atomic_load(&e->min_level) == min_level(version);
}

/* Writes the bytes and marks the entry held. Caller holds write_mutex and
** has checked that the entry names the version of these bytes and that
** the budget has room (make_room). */
static int write_page(cache_image *im, image_entry *e, uint32_t pgno, const uint8_t *page,
                      ltx_error *err) {
  uint32_t ps = atomic_load(&im->page_size);
  uint64_t end = (uint64_t)pgno * ps;
  ssize_t n = ps ? pwrite(im->image_fd, page, ps, (off_t)(end - ps)) : -1;
  if (n != (ssize_t)ps || ps == 0) {
    /* Disk full or failing: stop writing, keep serving what is held. */
    atomic_store(&im->disabled, 1);
    return ltx_error_set(err, CACHE_ERR_IO, "write page %u of %s/image: %s; the local image stops "
                         "growing, reads go on from memory and the replica", pgno, im->dir,
                         n < 0 ? strerror(errno) : "short write");
  }
  if (end > im->logical) im->logical = end;
  window_cover(im, end);
  record_map *m = current(im);
  /* whole before held: this process never needs to check these bytes */
  atomic_store_explicit(&m->checked[pgno], 1, memory_order_relaxed);
  atomic_store(&e->crc, ltx_crc64(0, page, ps));
  atomic_store(&e->held, 1);
  atomic_fetch_add(&im->held, 1);
  atomic_fetch_add(&im->bytes_written, ps);
  return LTX_OK;
}

/* ---- the budget: eviction of cold extents ---- */

/* Bumps extent x's seq in every map of the chain (odd: being evicted). */
static void ext_bump(cache_image *im, uint32_t x) {
  for (record_map *m = current(im); m != NULL; m = m->older)
    if (x <= m->pages / EXTENT_PAGES) atomic_fetch_add(&m->ext_seq[x], 1);
}

/* Evicts extents by CLOCK until at most target bytes of pages are held: an
** extent read since the hand last passed it gets another round, the others
** go whole. The order keeps a crash consistent: the entries of every victim
** say "not held" and are synced (msync) BEFORE its blocks are punched, so a
** record never claims bytes that are gone (a torn state would be caught by
** the CRC anyway). Readers overlapping it in a victim miss (its ext_seq is
** odd meanwhile). Caller holds write_mutex: no write can refill a victim
** between its entries and its punch. */
static void evict_to(cache_image *im, uint64_t target) {
  record_map *m = current(im);
  uint32_t ps = atomic_load(&im->page_size), backed = atomic_load(&im->backed);
  uint32_t pages = m ? (m->pages < backed ? m->pages : backed) : 0;
  uint32_t next = (pages + EXTENT_PAGES - 1) / EXTENT_PAGES;
  uint32_t victims[64], nv = 0;
  long pg = sysconf(_SC_PAGESIZE);
  if (next == 0 || ps == 0) return;
  for (uint32_t steps = 0; steps < 2 * next + 1 && nv < 64 &&
                           atomic_load(&im->held) * ps > target; steps++) {
    uint32_t x = im->clock_hand, first = x * EXTENT_PAGES + 1, n = 0;
    im->clock_hand = x + 1 >= next ? 0 : x + 1;
    if (atomic_exchange_explicit(&m->touched[x], 0, memory_order_relaxed)) continue;
    for (uint32_t p = first; p < first + EXTENT_PAGES && p <= pages && n == 0; p++) {
      image_entry *e = entry_of(im, m, p);
      n = e && atomic_load(&e->held);
    }
    if (n == 0) continue;
    ext_bump(im, x); /* odd */
    n = 0;
    for (uint32_t p = first; p < first + EXTENT_PAGES && p <= pages; p++) {
      image_entry *e = entry_of(im, m, p);
      if (e && atomic_exchange(&e->held, 0)) {
        atomic_fetch_sub(&im->held, 1);
        n++;
      }
    }
    atomic_fetch_add(&im->evicted, n);
    victims[nv++] = x;
  }
  /* the cleared entries durable, then the blocks go, then readers may look again */
  for (uint32_t i = 0; i < nv; i++) {
    size_t lo = PAGES_HEADER + (size_t)victims[i] * EXTENT_PAGES * sizeof(image_entry);
    size_t hi = lo + EXTENT_PAGES * sizeof(image_entry);
    lo = lo / (size_t)pg * (size_t)pg;
    if (hi > m->bytes) hi = m->bytes;
    msync(m->base + lo, hi - lo, MS_SYNC);
  }
  for (uint32_t i = 0; i < nv; i++) {
    punch(im, (uint64_t)victims[i] * EXTENT_PAGES * ps, (uint64_t)EXTENT_PAGES * ps);
    ext_bump(im, victims[i]); /* even */
  }
}

/* Whether n more pages fit the budget, evicting cold extents to make room
** (down to 7/8 of the budget, so evictions come in batches). Caller holds
** write_mutex. */
static int make_room(cache_image *im, uint64_t n) {
  uint64_t budget = atomic_load(&im->budget), ps = atomic_load(&im->page_size);
  if (budget == UINT64_MAX || (atomic_load(&im->held) + n) * ps <= budget) return 1;
  if (!im->punch_failed && budget - budget / 8 > n * ps) evict_to(im, budget - budget / 8 - n * ps);
  if ((atomic_load(&im->held) + n) * ps <= budget) return 1;
  atomic_store(&im->disabled, 2); /* cannot evict here: hold what we have */
  return 0;
}

int cache_image_put(cache_image *im, uint32_t pgno, const store_ltx_file *version,
                    const uint8_t *page, ltx_error *err) {
  int rc = LTX_OK;
  pthread_mutex_lock(&im->write_mutex);
  image_entry *e = entry_of(im, current(im), pgno);
  if (e != NULL && !atomic_load(&im->disabled) && !atomic_load(&e->held) &&
      atomic_load(&e->max_txid) == version->max_txid &&
      atomic_load(&e->min_level) == min_level(version) && make_room(im, 1))
    rc = write_page(im, e, pgno, page, err);
  pthread_mutex_unlock(&im->write_mutex);
  return rc;
}

int cache_image_put_pages(cache_image *im, const store_ltx_file *version, const uint32_t *pgnos,
                          const uint8_t *pages, const uint64_t *crcs, size_t n, ltx_error *err) {
  uint32_t ps = atomic_load(&im->page_size);
  uint64_t ml = min_level(version);
  int rc = LTX_OK;
  pthread_mutex_lock(&im->write_mutex);
  for (size_t i = 0; i < n && rc == LTX_OK && !atomic_load(&im->disabled);) {
    /* the longest stretch from i of consecutive pages the image wants */
    size_t k = i;
    record_map *m = current(im);
    while (k < n && (k == i || pgnos[k] == pgnos[k - 1] + 1)) {
      image_entry *e = entry_of(im, m, pgnos[k]);
      if (e == NULL || atomic_load(&e->held) || atomic_load(&e->max_txid) != version->max_txid ||
          atomic_load(&e->min_level) != ml)
        break;
      k++;
    }
    if (k == i) { /* page i is not wanted */
      i++;
      continue;
    }
    if (!make_room(im, k - i)) break;
    uint64_t off = (uint64_t)(pgnos[i] - 1) * ps, len = (uint64_t)(k - i) * ps;
    const uint8_t *src = pages + i * (size_t)ps;
    for (uint64_t done = 0; done < len;) {
      ssize_t w = pwrite(im->image_fd, src + done, (size_t)(len - done), (off_t)(off + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        atomic_store(&im->disabled, 1);
        rc = ltx_error_set(err, CACHE_ERR_IO, "write pages %u..%u of %s/image: %s; the local "
                           "image stops growing, reads go on from memory and the replica",
                           pgnos[i], pgnos[k - 1], im->dir, w < 0 ? strerror(errno) : "short write");
        break;
      }
      done += (uint64_t)w;
    }
    if (rc != LTX_OK) break;
    if (off + len > im->logical) im->logical = off + len;
    window_cover(im, off + len);
    m = current(im);
    for (size_t j = i; j < k; j++) {
      image_entry *e = entry_of(im, m, pgnos[j]);
      atomic_store_explicit(&m->checked[pgnos[j]], 1, memory_order_relaxed);
      atomic_store(&e->crc, crcs[j]);
      atomic_store(&e->held, 1);
    }
    atomic_fetch_add(&im->held, k - i);
    atomic_fetch_add(&im->bytes_written, len);
    i = k;
  }
  pthread_mutex_unlock(&im->write_mutex);
  return rc;
}

int cache_image_remap(cache_image *im, uint32_t pgno, const store_ltx_file *version,
                      const uint8_t *page, ltx_error *err) {
  int rc = LTX_OK;
  pthread_mutex_lock(&im->write_mutex);
  rc = record_reserve(im, pgno, err);
  image_entry *e = rc == LTX_OK ? entry_of(im, current(im), pgno) : NULL;
  if (e != NULL) {
    uint64_t mx = version ? version->max_txid : 0, ml = version ? min_level(version) : 0;
    int same = atomic_load(&e->max_txid) == mx && atomic_load(&e->min_level) == ml;
    if (!same || page != NULL) {
      int was_held = (int)atomic_exchange(&e->held, 0);
      if (was_held) atomic_fetch_sub(&im->held, 1);
      if (atomic_load(&e->max_txid) == 0 && mx != 0) atomic_fetch_add(&im->mapped, 1);
      if (atomic_load(&e->max_txid) != 0 && mx == 0) atomic_fetch_sub(&im->mapped, 1);
      atomic_store(&e->max_txid, mx);
      atomic_store(&e->min_level, ml);
      /* Under a budget the old bytes must not keep their blocks (the entry
      ** names another file now: a reader that saw the old one misses). */
      if (was_held && page == NULL && atomic_load(&im->budget) != UINT64_MAX && !im->punch_failed)
        punch(im, (uint64_t)(pgno - 1) * atomic_load(&im->page_size), atomic_load(&im->page_size));
      if (page != NULL && version != NULL && !atomic_load(&im->disabled) && make_room(im, 1))
        rc = write_page(im, e, pgno, page, err);
    }
  }
  pthread_mutex_unlock(&im->write_mutex);
  return rc;
}

int cache_image_truncate(cache_image *im, uint32_t old_commit, uint32_t commit, ltx_error *err) {
  int rc = LTX_OK;
  uint64_t ps = atomic_load(&im->page_size);
  struct stat sb;
  (void)err;
  pthread_mutex_lock(&im->write_mutex);
  atomic_fetch_add(&im->seq, 1); /* odd: a read that overlaps is a miss */
  record_map *m = current(im);
  for (uint32_t p = commit + 1; m && p <= old_commit && p <= m->pages; p++) {
    image_entry *e = entry_of(im, m, p);
    if (e == NULL) break;
    if (atomic_exchange(&e->held, 0)) atomic_fetch_sub(&im->held, 1);
    if (atomic_exchange(&e->max_txid, 0)) atomic_fetch_sub(&im->mapped, 1);
    atomic_store(&e->min_level, 0);
  }
  /* Entries first, then the bytes: the tail is punched, not cut, while the
  ** file is mapped (close cuts it). */
  if (fstat(im->image_fd, &sb) == 0 && (uint64_t)sb.st_size > commit * ps)
    punch(im, commit * ps, (uint64_t)sb.st_size - commit * ps);
  im->logical = commit * ps;
  atomic_fetch_add(&im->seq, 1);
  pthread_mutex_unlock(&im->write_mutex);
  return rc;
}

int cache_image_entry(cache_image *im, uint32_t pgno, store_ltx_file *version, int *held) {
  image_entry *e = entry_of(im, current(im), pgno);
  uint64_t ml;
  if (e == NULL || atomic_load(&e->max_txid) == 0) return 0;
  memset(version, 0, sizeof(*version));
  version->max_txid = atomic_load(&e->max_txid);
  ml = atomic_load(&e->min_level);
  version->min_txid = ml >> 8;
  version->level = (int)(ml & 0xff);
  version->timestamp_ms = -1;
  if (held) *held = (int)atomic_load(&e->held);
  return 1;
}

void cache_image_written(cache_image *im, uint64_t bytes) { atomic_fetch_add(&im->unsynced, bytes); }

int cache_image_sync_step(cache_image *im, uint64_t min_bytes) {
  int idle = 0;
  if (atomic_load(&im->unsynced) < min_bytes || !atomic_compare_exchange_strong(&im->syncing, &idle, 1))
    return 0;
  atomic_store(&im->unsynced, 0);
  (void)fdatasync(im->image_fd); /* a failure is the final sync's to report */
  atomic_store(&im->syncing, 0);
  return 1;
}

int cache_image_sync(cache_image *im, ltx_error *err) {
  record_map *m = current(im);
  if (fdatasync(im->image_fd) != 0) return io_error(err, "fsync", "the local image");
  if (m && msync(m->base, m->bytes, MS_SYNC) != 0) return io_error(err, "msync", "the page record");
  return LTX_OK;
}

/* ---- staging: the file being applied ---- */

int cache_image_stage(cache_image *im, const uint8_t *buf, size_t n, ltx_error *err) {
  char *path = path_in(im->dir, "staging");
  int fd = -1, rc = LTX_OK;
  if (path == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = io_error(err, "create", path);
    goto out;
  }
  for (size_t done = 0; done < n;) {
    ssize_t w = write(fd, buf + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = io_error(err, "write", path);
      goto out;
    }
    done += (size_t)w;
  }
  if (fsync(fd) != 0) rc = io_error(err, "fsync", path);
out:
  if (fd >= 0) close(fd);
  free(path);
  return rc;
}

int cache_image_read_staged(cache_image *im, uint8_t **buf, size_t *n, ltx_error *err) {
  char *path = path_in(im->dir, "staging");
  struct stat sb;
  int fd, rc = LTX_OK;
  *buf = NULL;
  if (path == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &sb) != 0) {
    rc = io_error(err, "open", path);
    goto out;
  }
  *n = (size_t)sb.st_size;
  *buf = malloc(*n ? *n : 1);
  if (*buf == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for %s", path);
    goto out;
  }
  if (pread(fd, *buf, *n, 0) != (ssize_t)*n) {
    rc = io_error(err, "read", path);
    free(*buf);
    *buf = NULL;
  }
out:
  if (fd >= 0) close(fd);
  free(path);
  return rc;
}

void cache_image_unstage(cache_image *im) {
  char *path = path_in(im->dir, "staging");
  if (path) unlink(path);
  free(path);
}

/* ---- state ---- */

void cache_image_stats(cache_image *im, cache_image_stat *out) {
  out->held = atomic_load(&im->held);
  out->hits = atomic_load(&im->hits);
  out->misses = atomic_load(&im->misses);
  out->bad = atomic_load(&im->bad);
  out->bytes_written = atomic_load(&im->bytes_written);
  out->evicted = atomic_load(&im->evicted);
  out->disabled = atomic_load(&im->disabled);
}

uint64_t cache_image_free_bytes(const cache_image *im, uint64_t *total) {
  struct statvfs sv;
  if (statvfs(im->dir, &sv) != 0) {
    if (total) *total = UINT64_MAX;
    return UINT64_MAX;
  }
  if (total) *total = (uint64_t)sv.f_blocks * sv.f_frsize;
  return (uint64_t)sv.f_bavail * sv.f_frsize;
}

void cache_image_disable(cache_image *im) { atomic_store(&im->disabled, 1); }

void cache_image_set_budget(cache_image *im, uint64_t bytes) { atomic_store(&im->budget, bytes); }
