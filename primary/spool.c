/*
** spool.c: the spool directory beside the database (DB-ltvfs/ by default).
**
**   state            the durable record (spool_state): two 512-byte slots,
**                    each CRC-64 checked with a sequence number; a write
**                    goes to the older slot and is fdatasync'd, so a torn
**                    write leaves the newer one intact
**   lock             flock'd by whoever changes the spool (spool_lock)
**   upload.lock      flock'd by the one process of this host that uploads
**   ltx/%016x.ltx    captured L0 files [T, T] waiting for upload
**   seg/%016x.ltx    rollback-mode commits of the current sync interval,
**                    numbered by the spool (state: seg_first..seg_next),
**                    merged into one L0 file when the interval ends
**
** Crash safety, the order of writes for one capture (spool_write_ltx and
** its caller in primary.c):
**   1. the file is written to ltx/T.ltx.tmp;
**   2. renamed to ltx/T.ltx;
**   3. the state says txid_spooled = T and how far the WAL is captured.
** The state is the commit point: a file above txid_spooled is a capture
** that never happened (it is deleted at open and captured again from the
** WAL or the database), and a file at or below txid_uploaded is one whose
** upload was confirmed (deleted, a retry of the delete).
**
** None of that is fsynced when it is written, so a capture costs a commit
** no fsync: a killed process leaves it in the page cache, and what a power
** loss can take (the last captures) SQLite had already made durable in the
** database or the WAL, where the next open finds it again (the WAL from
** the captured frame on; else the database's fingerprint no longer
** matches, and it is captured whole as a snapshot). What must be durable
** is the order against the bucket: before a file goes up, it, the
** directory and the state that names it are synced (spool_make_durable),
** so a state that a power loss rolled back can never be behind the bucket
** (which would read as "another primary wrote the replica").
**
** Locking: the spool lock is taken for every capture, seal and state write,
** by every process of the host (SQLite's write lock already serialises the
** writers; this lock adds the background threads and the uploader). A
** holder never waits for an SQLite lock, so it cannot deadlock with one.
*/
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "primary/primary_int.h"

#define STATE_SLOT 512
#define STATE_MAGIC "LTVFSPO1"
#define STATE_VERSION 1u

struct spool {
  char *dir;
  int lock_fd;
  int state_fd;
  pthread_mutex_t mu;
};

/* ---- little-endian fields of the state record ---- */

static void put64(uint8_t **p, uint64_t v) {
  for (int i = 0; i < 8; i++) (*p)[i] = (uint8_t)(v >> (8 * i));
  *p += 8;
}
static void put32(uint8_t **p, uint32_t v) {
  for (int i = 0; i < 4; i++) (*p)[i] = (uint8_t)(v >> (8 * i));
  *p += 4;
}
static uint64_t get64(const uint8_t **p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)(*p)[i] << (8 * i);
  *p += 8;
  return v;
}
static uint32_t get32(const uint8_t **p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)(*p)[i] << (8 * i);
  *p += 4;
  return v;
}

static void put_wal_pos(uint8_t **p, const wal_pos *w) {
  put32(p, w->salt1);
  put32(p, w->salt2);
  put32(p, w->frame);
}
static void get_wal_pos(const uint8_t **p, wal_pos *w) {
  w->salt1 = get32(p);
  w->salt2 = get32(p);
  w->frame = get32(p);
}

static void encode_state(const spool_state *s, uint8_t slot[STATE_SLOT]) {
  uint8_t *p = slot;
  memset(slot, 0, STATE_SLOT);
  memcpy(p, STATE_MAGIC, 8);
  p += 8;
  put32(&p, STATE_VERSION);
  put64(&p, s->seq);
  memcpy(p, s->owner, sizeof s->owner);
  p += sizeof s->owner;
  put64(&p, s->replica_crc);
  put32(&p, s->page_size);
  put64(&p, s->txid_spooled);
  put64(&p, s->txid_uploaded);
  put32(&p, s->db_pages);
  put_wal_pos(&p, &s->wal);
  put_wal_pos(&p, &s->wal_prev);
  put64(&p, s->fp.ino);
  put64(&p, s->fp.size);
  put64(&p, (uint64_t)s->fp.mtime_ns);
  put64(&p, (uint64_t)s->fp.ctime_ns);
  put32(&p, s->fp.change_counter);
  put64(&p, (uint64_t)s->last_commit_ms);
  put64(&p, s->seg_first);
  put64(&p, s->seg_next);
  memcpy(p, s->lease_lost, sizeof s->lease_lost);
  p += sizeof s->lease_lost;
  {
    uint8_t *crc_at = slot + STATE_SLOT - 8;
    uint64_t crc = ltx_crc64(0, slot, STATE_SLOT - 8);
    put64(&crc_at, crc);
  }
}

/* 1 when slot holds a valid record (decoded into s). */
static int decode_state(const uint8_t slot[STATE_SLOT], spool_state *s) {
  const uint8_t *p = slot, *crc_at = slot + STATE_SLOT - 8;
  if (memcmp(p, STATE_MAGIC, 8) != 0) return 0;
  if (get64(&crc_at) != ltx_crc64(0, slot, STATE_SLOT - 8)) return 0;
  p += 8;
  if (get32(&p) != STATE_VERSION) return 0;
  memset(s, 0, sizeof *s);
  s->seq = get64(&p);
  memcpy(s->owner, p, sizeof s->owner);
  s->owner[sizeof s->owner - 1] = '\0';
  p += sizeof s->owner;
  s->replica_crc = get64(&p);
  s->page_size = get32(&p);
  s->txid_spooled = get64(&p);
  s->txid_uploaded = get64(&p);
  s->db_pages = get32(&p);
  get_wal_pos(&p, &s->wal);
  get_wal_pos(&p, &s->wal_prev);
  s->fp.ino = get64(&p);
  s->fp.size = get64(&p);
  s->fp.mtime_ns = (int64_t)get64(&p);
  s->fp.ctime_ns = (int64_t)get64(&p);
  s->fp.change_counter = get32(&p);
  s->last_commit_ms = (int64_t)get64(&p);
  s->seg_first = get64(&p);
  s->seg_next = get64(&p);
  memcpy(s->lease_lost, p, sizeof s->lease_lost);
  s->lease_lost[sizeof s->lease_lost - 1] = '\0';
  return 1;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;
  if (fd < 0) return -1;
  rc = fsync(fd);
  close(fd);
  return rc;
}

static int mkdir_private(const char *path, ltx_error *err) {
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return ltx_error_set(err, PRIMARY_ERR_IO, "create the spool directory %s: %s", path,
                         strerror(errno));
  return LTX_OK;
}

int spool_open(const char *dir, spool **out, ltx_error *err) {
  spool *sp = calloc(1, sizeof *sp);
  char path[4096];
  int rc = LTX_OK;
  *out = NULL;
  if (sp == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  sp->lock_fd = sp->state_fd = -1;
  pthread_mutex_init(&sp->mu, NULL);
  sp->dir = strdup(dir);
  if (sp->dir == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  rc = mkdir_private(dir, err);
  if (rc != LTX_OK) goto out;
  snprintf(path, sizeof path, "%s/ltx", dir);
  rc = mkdir_private(path, err);
  if (rc != LTX_OK) goto out;
  snprintf(path, sizeof path, "%s/seg", dir);
  rc = mkdir_private(path, err);
  if (rc != LTX_OK) goto out;
  snprintf(path, sizeof path, "%s/lock", dir);
  sp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  snprintf(path, sizeof path, "%s/state", dir);
  if (sp->lock_fd >= 0) sp->state_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (sp->lock_fd < 0 || sp->state_fd < 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "open %s: %s", path, strerror(errno));
    goto out;
  }
out:
  if (rc != LTX_OK) {
    spool_close(sp);
    return rc;
  }
  *out = sp;
  return LTX_OK;
}

void spool_close(spool *sp) {
  if (sp == NULL) return;
  if (sp->lock_fd >= 0) close(sp->lock_fd);
  if (sp->state_fd >= 0) close(sp->state_fd);
  pthread_mutex_destroy(&sp->mu);
  free(sp->dir);
  free(sp);
}

const char *spool_dir(const spool *sp) { return sp->dir; }

void spool_lock(spool *sp) {
  pthread_mutex_lock(&sp->mu);
  while (flock(sp->lock_fd, LOCK_EX) != 0 && errno == EINTR) {
  }
}

void spool_unlock(spool *sp) {
  flock(sp->lock_fd, LOCK_UN);
  pthread_mutex_unlock(&sp->mu);
}

int spool_read_state(spool *sp, spool_state *st, ltx_error *err) {
  uint8_t slots[2 * STATE_SLOT];
  spool_state a, b;
  int va, vb;
  ssize_t got = pread(sp->state_fd, slots, sizeof slots, 0);
  if (got < 0) return ltx_error_set(err, PRIMARY_ERR_IO, "read %s/state: %s", sp->dir, strerror(errno));
  if (got < (ssize_t)sizeof slots) memset(slots + (got > 0 ? got : 0), 0, sizeof slots - (size_t)(got > 0 ? got : 0));
  va = decode_state(slots, &a);
  vb = decode_state(slots + STATE_SLOT, &b);
  if (!va && !vb) {
    if (got > 0) {
      /* Written once and both slots bad: not ours to guess at. */
      uint8_t zero[2 * STATE_SLOT] = {0};
      if (memcmp(slots, zero, sizeof zero) != 0)
        return ltx_error_set(err, PRIMARY_ERR_IO,
                             "%s/state: no valid record (damaged); move the spool directory away "
                             "to start it again (the next open writes a snapshot)", sp->dir);
    }
    return LTX_DONE;
  }
  *st = (va && (!vb || a.seq > b.seq)) ? a : b;
  return LTX_OK;
}

int spool_write_state(spool *sp, spool_state *st, ltx_error *err) {
  uint8_t slot[STATE_SLOT];
  st->seq++;
  encode_state(st, slot);
  if (pwrite(sp->state_fd, slot, STATE_SLOT, (off_t)(st->seq % 2) * STATE_SLOT) != STATE_SLOT) {
    st->seq--;
    return ltx_error_set(err, PRIMARY_ERR_IO, "write %s/state: %s", sp->dir, strerror(errno));
  }
  return LTX_OK;
}

void spool_file_path(const spool *sp, uint64_t txid, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/ltx/%016llx.ltx", sp->dir, (unsigned long long)txid);
}

void spool_segment_path(const spool *sp, uint64_t seq, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/seg/%016llx.ltx", sp->dir, (unsigned long long)seq);
}

/* The TXID a spooled file's name gives, 0 when it is not one. */
static uint64_t spooled_txid(const char *name) {
  char hex[17];
  uint64_t txid;
  if (strlen(name) != 20 || strcmp(name + 16, ".ltx") != 0) return 0;
  memcpy(hex, name, 16);
  hex[16] = '\0';
  if (ltx_txid_parse(hex, &txid) != 0) return 0;
  return txid;
}

void spool_usage(spool *sp, uint64_t *bytes, uint64_t *files) {
  static const char *const kDirs[] = {"ltx", "seg"};
  *bytes = *files = 0;
  for (size_t k = 0; k < 2; k++) {
    char path[4096];
    DIR *d;
    struct dirent *e;
    snprintf(path, sizeof path, "%s/%s", sp->dir, kDirs[k]);
    d = opendir(path);
    if (d == NULL) continue;
    while ((e = readdir(d)) != NULL) {
      struct stat s;
      if (spooled_txid(e->d_name) == 0) continue;
      if (fstatat(dirfd(d), e->d_name, &s, 0) == 0) {
        *bytes += (uint64_t)s.st_size;
        (*files)++;
      }
    }
    closedir(d);
  }
}


/* Removes from DIR/sub the stale .tmp files and the numbered files outside
** [keep_from, keep_to). */
static void prune_dir(spool *sp, const char *sub, uint64_t keep_from, uint64_t keep_to) {
  char path[4096];
  DIR *d;
  struct dirent *e;
  snprintf(path, sizeof path, "%s/%s", sp->dir, sub);
  d = opendir(path);
  if (d == NULL) return;
  while ((e = readdir(d)) != NULL) {
    uint64_t num = spooled_txid(e->d_name);
    size_t len = strlen(e->d_name);
    int stale_tmp = len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0;
    if (stale_tmp || (num != 0 && (num < keep_from || num >= keep_to)))
      unlinkat(dirfd(d), e->d_name, 0);
  }
  closedir(d);
}

void spool_prune(spool *sp, uint64_t uploaded, uint64_t spooled) {
  prune_dir(sp, "ltx", uploaded + 1, spooled + 1);
}

void spool_prune_segments(spool *sp, uint64_t first, uint64_t next) {
  prune_dir(sp, "seg", first, next);
}

/* ---- encoding a capture ---- */

int spool_write_ltx(spool *sp, int segment, uint64_t txid, uint32_t page_size, uint32_t db_pages,
                    int64_t timestamp_ms, const page_src *pages, size_t n, int db_fd,
                    int wal_fd, uint64_t *size, ltx_error *err) {
  char path[4096], tmp[4200];
  ltx_encoder *enc = NULL;
  ltx_header h = {0};
  uint8_t *page = NULL;
  cache_fd_sink o = {-1, 0};
  struct stat s;
  int rc = LTX_OK;

  if (segment) spool_segment_path(sp, txid, path, sizeof path);
  else spool_file_path(sp, txid, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  o.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (o.fd < 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "create %s: %s", tmp, strerror(errno));
    goto out;
  }
  page = malloc(page_size);
  if (page == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  h.flags = LTX_HEADER_FLAG_NO_CHECKSUM; /* LTX.md: the interop trap */
  h.page_size = page_size;
  h.commit = db_pages;
  h.min_txid = h.max_txid = txid;
  h.timestamp_ms = timestamp_ms;
  rc = ltx_encoder_open(&enc, &h, cache_fd_sink_write, &o, err);
  if (rc != LTX_OK) goto out;
  for (size_t i = 0; i < n; i++) {
    int fd = pages[i].from_wal ? wal_fd : db_fd;
    ssize_t got = pread(fd, page, page_size, pages[i].at);
    if (got != (ssize_t)page_size) {
      /* A database page past the file's end is one SQLite never wrote
      ** (a grown file read before its first write): zeros, as SQLite reads it. */
      if (got >= 0 && !pages[i].from_wal) {
        memset(page + got, 0, page_size - (size_t)got);
      } else {
        rc = ltx_error_set(err, PRIMARY_ERR_IO, "read page %u from the %s: %s", pages[i].pgno,
                           pages[i].from_wal ? "WAL" : "database",
                           got < 0 ? strerror(errno) : "short read");
        goto out;
      }
    }
    rc = ltx_encoder_put(enc, pages[i].pgno, page, err);
    if (rc != LTX_OK) goto out;
  }
  rc = ltx_encoder_close(enc, 0, err);
  if (rc != LTX_OK) goto out;
  if (fstat(o.fd, &s) != 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "stat %s: %s", tmp, strerror(errno));
    goto out;
  }
  if (rename(tmp, path) != 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "rename %s: %s", tmp, strerror(errno));
    goto out;
  }
  if (size) *size = (uint64_t)s.st_size;
out:
  if (rc != LTX_OK && o.fd >= 0) unlink(tmp);
  if (o.fd >= 0) close(o.fd);
  ltx_encoder_free(enc);
  free(page);
  return rc;
}

int spool_make_durable(spool *sp, int fd, ltx_error *err) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/ltx", sp->dir);
  if (fsync(fd) != 0 || fsync_dir(dir) != 0 || fdatasync(sp->state_fd) != 0)
    return ltx_error_set(err, PRIMARY_ERR_IO, "sync the spool %s: %s", sp->dir, strerror(errno));
  return LTX_OK;
}

/* ---- the database's fingerprint ---- */

int db_fingerprint_read(int db_fd, db_fingerprint *fp, ltx_error *err) {
  struct stat s;
  uint8_t c[4] = {0};
  memset(fp, 0, sizeof *fp);
  if (fstat(db_fd, &s) != 0)
    return ltx_error_set(err, PRIMARY_ERR_IO, "stat the database: %s", strerror(errno));
  if (pread(db_fd, c, 4, 24) < 0)
    return ltx_error_set(err, PRIMARY_ERR_IO, "read the database header: %s", strerror(errno));
  fp->ino = (uint64_t)s.st_ino;
  fp->size = (uint64_t)s.st_size;
  fp->mtime_ns = (int64_t)s.st_mtim.tv_sec * 1000000000 + s.st_mtim.tv_nsec;
  fp->ctime_ns = (int64_t)s.st_ctim.tv_sec * 1000000000 + s.st_ctim.tv_nsec;
  fp->change_counter = ((uint32_t)c[0] << 24) | ((uint32_t)c[1] << 16) | ((uint32_t)c[2] << 8) | c[3];
  return LTX_OK;
}

int db_fingerprint_equal(const db_fingerprint *a, const db_fingerprint *b) {
  return a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
         a->ctime_ns == b->ctime_ns && a->change_counter == b->change_counter;
}
