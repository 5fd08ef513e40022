/*
** primary.c: the primary object, one per database file per process.
**
** What it does, in the order a database lives:
**   start-up    (primary_acquire) under the spool lock: read the spool's
**               state, list the replica, and decide: continue at the next
**               TXID; snapshot (empty replica, a database changed outside
**               the VFS, a WAL that does not hold what was captured);
**               refuse (the replica is ahead: another primary wrote it), or
**               restore it first (bootstrap=restore, or no database yet).
**   capture     the committed WAL frames after the captured position, and
**               rollback-mode commits (captured by the VFS's hook at once),
**               become one L0 file per sync interval (or per commit). Inside
**               an interval captures are segments (the thread takes WAL
**               frames every SEGMENT_EVERY_MS under load); the end of the
**               interval merges them into the one file (merge_segments),
**               and any other capture merges them first, so TXIDs keep the
**               order of the commits. A WAL restart, truncation or deletion
**               is sealed first: everything in it captured, then the state
**               says so.
**   upload      the background thread of the host's uploading process (it
**               holds the spool's upload.lock) ships spooled files in TXID
**               order with put-if-absent, records each in the state and
**               deletes it; it renews the lease at a third of its TTL and
**               stops uploading at once when the lease is lost.
**   close       the last reference captures what is left, drains the spool
**               for at most close_timeout_ms (what is left stays spooled for
**               the next open) and releases the lease.
**
** Durability (docs/write-path.md): in WAL mode a commit is in the WAL, which
** SQLite made as durable as `synchronous` says; the capture has to exist
** before those frames can be overwritten, and the seal makes sure of that.
** A rollback-mode commit overwrites the database in place, so it is
** captured before SQLite lets the next writer in. Neither is fsynced on the
** commit path (spool.c says why that loses nothing); a file is made durable
** just before its upload.
**
** Locks, in the order they are taken: SQLite's own (held by the caller of a
** hook) -> the spool lock (spool.c) -> p->mu. Nothing waits for an SQLite
** lock while holding the spool lock, and nothing takes the spool lock while
** holding p->mu.
*/
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"
#include "primary/primary_int.h"

#define TICK_MS 100
#define BACKOFF_MAX_MS 5000
#define SNAPSHOT_ATTEMPTS 5
#define SEGMENT_EVERY_MS 20 /* batching under load: WAL frames to a segment this often */
#define SPOOL_FULL_WAIT_MS 1000 /* a write waits this long for a full spool to drain */

struct primary {
  primary *next;           /* the process's registry (g_mu) */
  int refs;                /* g_mu */
  char *db_path, *wal_path, *url, *spool_path;
  primary_config cfg;
  uint64_t replica_crc;
  store *st;
  spool *sp;
  int db_fd;               /* O_RDONLY for the primary's life: closing an fd of
                           ** the database would drop SQLite's POSIX locks */
  int upload_fd;           /* spool/upload.lock; flock'd while this process uploads */
  int uploader;
  char owner[40];

  pthread_t thread;
  int thread_started;
  pthread_mutex_t mu;      /* everything below */
  pthread_cond_t wake;     /* the thread: work to do */
  pthread_cond_t progress; /* waiters: uploaded TXID moved, or an error */
  int stop;
  int flush_now;
  int commits_seen;
  uint64_t txid_spooled, txid_uploaded;
  uint64_t spool_bytes, spool_files;
  int64_t oldest_pending_ms;
  lease lease;
  int lease_lost;
  int64_t last_flush_ms;   /* the last end of a sync interval */
  int64_t last_capture_ms; /* the last capture of any kind */
  int64_t next_upload_ms;  /* backoff */
  long backoff_ms;
  uint64_t uploads, upload_failures, snapshots, captures, bytes_uploaded;
  char last_error[512];
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static primary *g_primaries;
static _Atomic(primary_log_fn) g_log;

void primary_set_log(primary_log_fn fn) { atomic_store(&g_log, fn); }

static void plog(int level, const char *fmt, ...) LTX_PRINTF(2, 3);
static void plog(int level, const char *fmt, ...) {
  primary_log_fn fn = atomic_load(&g_log);
  char msg[1024];
  va_list ap;
  if (fn == NULL) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fn(level, msg);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void abs_deadline(struct timespec *ts, long ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void set_last_error(primary *p, const ltx_error *err) {
  pthread_mutex_lock(&p->mu);
  snprintf(p->last_error, sizeof p->last_error, "%s", err->msg);
  pthread_mutex_unlock(&p->mu);
}

/* ---- the database's pages ---- */

static uint32_t db_header_page_size(int db_fd) {
  uint8_t b[2];
  uint32_t ps;
  if (pread(db_fd, b, 2, 16) != 2) return 0;
  ps = ((uint32_t)b[0] << 8) | b[1];
  return ps == 1 ? 65536 : ps;
}

/* The database size the header states (bytes 28-31), 0 when it is not
** valid (bytes 92-95 differ from the change counter at 24-27). */
static uint32_t db_header_pages(int db_fd) {
  uint8_t h[96];
  if (pread(db_fd, h, sizeof h, 0) != (ssize_t)sizeof h) return 0;
  if (memcmp(h + 24, h + 92, 4) != 0) return 0;
  return ((uint32_t)h[28] << 24) | ((uint32_t)h[29] << 16) | ((uint32_t)h[30] << 8) | h[31];
}

static int cmp_page_src(const void *a, const void *b) {
  const page_src *x = a, *y = b;
  if (x->pgno != y->pgno) return x->pgno < y->pgno ? -1 : 1;
  /* the newest frame of a page first, so the dedup keeps it */
  if (x->at != y->at) return x->at > y->at ? -1 : 1;
  return 0;
}

/* Sorts by pgno and keeps the first of each (the newest, by cmp_page_src),
** dropping pages above db_pages and the lock page. Returns the new count. */
static size_t dedup_pages(page_src *v, size_t n, uint32_t db_pages, uint32_t page_size) {
  size_t out = 0;
  uint32_t lock = ltx_lock_pgno(page_size);
  qsort(v, n, sizeof *v, cmp_page_src);
  for (size_t i = 0; i < n; i++) {
    if (v[i].pgno > db_pages || v[i].pgno == lock) continue;
    if (out > 0 && v[out - 1].pgno == v[i].pgno) continue;
    v[out++] = v[i];
  }
  return out;
}

/* ---- capture (the caller holds the spool lock) ---- */

typedef struct capture_ctx {
  primary *p;
  spool_state *s;
  int wal_fd;          /* -1 when there is no WAL */
  wal_header wh;
  int have_wal;        /* wh is valid */
} capture_ctx;

static int open_wal(capture_ctx *c, ltx_error *err) {
  int rc;
  c->wal_fd = open(c->p->wal_path, O_RDONLY | O_CLOEXEC);
  c->have_wal = 0;
  if (c->wal_fd < 0) {
    if (errno == ENOENT) return LTX_OK;
    return ltx_error_set(err, PRIMARY_ERR_IO, "open %s: %s", c->p->wal_path, strerror(errno));
  }
  rc = wal_read_header(c->wal_fd, &c->wh, err);
  if (rc == LTX_OK) c->have_wal = 1;
  return rc == LTX_DONE ? LTX_OK : rc;
}

static void close_wal(capture_ctx *c) {
  if (c->wal_fd >= 0) close(c->wal_fd);
  c->wal_fd = -1;
}

/* Records a new file of txid in the state and the counters. */
static int record_capture(capture_ctx *c, uint64_t txid, uint32_t db_pages, uint64_t size,
                          int64_t ts, ltx_error *err) {
  primary *p = c->p;
  int rc;
  c->s->txid_spooled = txid;
  c->s->db_pages = db_pages;
  c->s->last_commit_ms = ts;
  rc = spool_write_state(p->sp, c->s, err);
  if (rc != LTX_OK) return rc;
  pthread_mutex_lock(&p->mu);
  p->txid_spooled = txid;
  p->spool_bytes += size;
  p->spool_files++;
  if (p->oldest_pending_ms == 0) p->oldest_pending_ms = ts;
  p->captures++;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  return LTX_OK;
}

static int merge_segments(capture_ctx *c, ltx_error *err);
static uint64_t segments_next(const spool_state *s);

/* Appends frames [first, last) of the scan sc (of the WAL wh) to pages as
** page sources; returns the new count. */
static size_t add_wal_frames(page_src *pages, size_t n, const wal_scan *sc, const wal_header *wh,
                             size_t first, size_t last) {
  for (size_t i = first; i < last; i++) {
    pages[n].pgno = sc->pgnos[i];
    pages[n].from_wal = 1;
    pages[n].at = wal_frame_page_offset(wh, sc->from_frame + (uint32_t)i + 1);
    n++;
  }
  return n;
}

/* Writes pages as the next segment (a capture of the current sync
** interval) and records it in the state (with whatever else the caller
** set in c->s) and the counters. */
static int write_segment(capture_ctx *c, uint32_t page_size, uint32_t db_pages,
                         const page_src *pages, size_t n, ltx_error *err) {
  primary *p = c->p;
  uint64_t seq = segments_next(c->s), size = 0;
  int rc = spool_write_ltx(p->sp, 1, seq, page_size, db_pages, now_ms(), pages, n, p->db_fd,
                           c->wal_fd, &size, err);
  if (rc != LTX_OK) return rc;
  if (c->s->seg_first == 0 || c->s->seg_first == c->s->seg_next) c->s->seg_first = seq;
  c->s->seg_next = seq + 1;
  c->s->page_size = page_size;
  rc = spool_write_state(p->sp, c->s, err);
  if (rc != LTX_OK) return rc;
  pthread_mutex_lock(&p->mu);
  p->spool_bytes += size;
  p->captures++;
  pthread_mutex_unlock(&p->mu);
  return LTX_OK;
}

/* A full image of the database as committed now (the database file under
** the committed WAL frames) as the next TXID. A checkpoint running meanwhile
** can only copy committed frames, so pages read from the database are
** right unless a commit landed during the read: then it is done again. */
static int capture_snapshot(capture_ctx *c, const char *why, ltx_error *err) {
  primary *p = c->p;
  page_src *pages = NULL;
  size_t n = 0;
  int rc = merge_segments(c, err); /* what came before keeps its place */
  if (rc != LTX_OK) return rc;
  for (int attempt = 0; attempt < SNAPSHOT_ATTEMPTS; attempt++) {
    wal_scan sc = {0}, again = {0};
    uint32_t ps, db_pages, lock;
    uint32_t last_frame = 0;
    uint64_t txid = c->s->txid_spooled + 1, size = 0;
    int64_t ts = now_ms();
    struct stat sb;

    close_wal(c);
    rc = open_wal(c, err);
    if (rc != LTX_OK) goto out;
    ps = db_header_page_size(p->db_fd);
    if (c->have_wal) {
      rc = wal_scan_from(c->wal_fd, &c->wh, 0, &sc, err);
      if (rc != LTX_OK) goto out;
      if (sc.n_commits > 0) {
        last_frame = sc.commits[sc.n_commits - 1].frame;
        ps = c->wh.page_size;
      }
    }
    if (fstat(p->db_fd, &sb) != 0) {
      rc = ltx_error_set(err, PRIMARY_ERR_IO, "stat %s: %s", p->db_path, strerror(errno));
      wal_scan_free(&sc);
      goto out;
    }
    if (ps < 512 || (ps & (ps - 1)) != 0) {
      wal_scan_free(&sc);
      if (sb.st_size == 0) goto out; /* an empty database: the first commit is the snapshot */
      rc = ltx_error_set(err, PRIMARY_ERR_IO, "%s: not a database (page size %u)", p->db_path, ps);
      goto out;
    }
    db_pages = last_frame ? sc.commits[sc.n_commits - 1].db_pages : (uint32_t)(sb.st_size / ps);
    if (db_pages == 0) {
      wal_scan_free(&sc);
      goto out;
    }
    free(pages);
    pages = malloc(((size_t)db_pages + sc.n_frames) * sizeof *pages);
    if (pages == NULL) {
      wal_scan_free(&sc);
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
      goto out;
    }
    n = add_wal_frames(pages, 0, &sc, &c->wh, 0, sc.n_frames);
    lock = ltx_lock_pgno(ps);
    for (uint32_t pg = 1; pg <= db_pages; pg++) {
      if (pg == lock) continue;
      pages[n].pgno = pg;
      pages[n].from_wal = 0;
      pages[n].at = -1 - (off_t)(pg - 1) * ps; /* sorts after every WAL frame of pg */
      n++;
    }
    n = dedup_pages(pages, n, db_pages, ps);
    for (size_t i = 0; i < n; i++)
      if (!pages[i].from_wal) pages[i].at = (off_t)(pages[i].pgno - 1) * ps;
    wal_scan_free(&sc);
    rc = spool_write_ltx(p->sp, 0, txid, ps, db_pages, ts, pages, n, p->db_fd, c->wal_fd, &size, err);
    if (rc != LTX_OK) goto out;
    /* Did a commit land while the pages were read? */
    if (c->have_wal) {
      rc = wal_scan_from(c->wal_fd, &c->wh, last_frame, &again, err);
      if (rc != LTX_OK) goto out;
      if (again.n_commits > 0) {
        wal_scan_free(&again);
        continue;
      }
      wal_scan_free(&again);
    }
    c->s->page_size = ps;
    if (c->have_wal) {
      c->s->wal.salt1 = c->wh.salt1;
      c->s->wal.salt2 = c->wh.salt2;
      c->s->wal.frame = last_frame;
    } else {
      memset(&c->s->wal, 0, sizeof c->s->wal);
    }
    memset(&c->s->wal_prev, 0, sizeof c->s->wal_prev);
    rc = db_fingerprint_read(p->db_fd, &c->s->fp, err);
    if (rc != LTX_OK) goto out;
    rc = record_capture(c, txid, db_pages, size, ts, err);
    if (rc != LTX_OK) goto out;
    pthread_mutex_lock(&p->mu);
    p->snapshots++;
    pthread_mutex_unlock(&p->mu);
    /* The first TXID is a snapshot by nature; any later one means something
    ** happened that the user should hear about. */
    plog(txid == 1 ? REPLICA_LOG_INFO : REPLICA_LOG_WARN, "%s: snapshot at TXID %016" PRIx64 " (%u pages, %" PRIu64 " bytes): %s",
         p->db_path, txid, db_pages, size, why);
    goto out;
  }
  rc = ltx_error_set(err, PRIMARY_ERR_WAL,
                     "%s: the snapshot kept changing under %d attempts (commits landing while it "
                     "was read); it is tried again", p->db_path, SNAPSHOT_ATTEMPTS);
out:
  free(pages);
  return rc;
}

/* The committed frames after the captured position, as one file (batching)
** or one per commit. */
static int capture_frames(capture_ctx *c, int flush, ltx_error *err) {
  primary *p = c->p;
  wal_scan sc = {0};
  page_src *pages = NULL;
  size_t first = 0;
  int rc;

  rc = wal_scan_from(c->wal_fd, &c->wh, c->s->wal.frame, &sc, err);
  if (rc == PRIMARY_ERR_WAL) return capture_snapshot(c, err->msg, err);
  if (rc != LTX_OK) return rc;
  if (sc.n_commits == 0) goto out;
  pages = malloc(sc.n_frames * sizeof *pages);
  if (pages == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  if (p->cfg.sync_interval_ms > 0 && (!flush || c->s->seg_next > c->s->seg_first)) {
    /* Batching, inside the interval (or with segments already waiting):
    ** these frames become a segment, merged with the interval's others into
    ** one TXID when it ends. The thread takes segments every few ms under
    ** load, so a seal (on the commit path) has little left to capture. */
    const wal_commit *cm = &sc.commits[sc.n_commits - 1];
    size_t n = add_wal_frames(pages, 0, &sc, &c->wh, 0, cm->frame - sc.from_frame);
    n = dedup_pages(pages, n, cm->db_pages, c->wh.page_size);
    c->s->wal.frame = cm->frame;
    rc = write_segment(c, c->wh.page_size, cm->db_pages, pages, n, err);
    if (rc == LTX_OK && flush) rc = merge_segments(c, err);
    goto out;
  }
  rc = merge_segments(c, err); /* rollback-mode commits before these frames */
  if (rc != LTX_OK) goto out;
  for (size_t ci = 0; ci < sc.n_commits; ci++) {
    const wal_commit *cm = &sc.commits[ci];
    size_t last, n;
    uint64_t txid = c->s->txid_spooled + 1, size = 0;
    int64_t ts = now_ms();
    if (p->cfg.sync_interval_ms > 0 && ci + 1 < sc.n_commits) continue; /* batch: up to the last */
    last = cm->frame - sc.from_frame; /* frames [first, last) of the scan */
    n = add_wal_frames(pages, 0, &sc, &c->wh, first, last);
    n = dedup_pages(pages, n, cm->db_pages, c->wh.page_size);
    rc = spool_write_ltx(p->sp, 0, txid, c->wh.page_size, cm->db_pages, ts, pages, n, p->db_fd,
                         c->wal_fd, &size, err);
    if (rc != LTX_OK) goto out;
    c->s->page_size = c->wh.page_size;
    c->s->wal.frame = cm->frame;
    rc = record_capture(c, txid, cm->db_pages, size, ts, err);
    if (rc != LTX_OK) goto out;
    first = last;
  }
out:
  free(pages);
  wal_scan_free(&sc);
  return rc;
}

/* The next segment number: segments are numbered by the spool from 2 up
** (never 1: an LTX file with min TXID 1 must be a snapshot). */
static uint64_t segments_next(const spool_state *s) {
  return s->seg_next >= 2 ? s->seg_next : 2;
}

typedef struct fd_source {
  int fd;
} fd_source;

static int fd_source_read(void *ctx, uint64_t off, uint8_t *buf, size_t n, ltx_error *err) {
  fd_source *f = ctx;
  ssize_t got = pread(f->fd, buf, n, (off_t)off);
  if (got != (ssize_t)n)
    return ltx_error_set(err, PRIMARY_ERR_IO, "read a segment: %s", got < 0 ? strerror(errno) : "short");
  return LTX_OK;
}

/* The rollback-mode commits of the interval (segments seg_first..seg_next)
** as one L0 file, the next TXID: the newest version of each page, pages a
** later shrink cut off dropped (ltx_compact's rules). Every capture starts
** with this, so TXIDs keep the order of the commits. */
static int merge_segments(capture_ctx *c, ltx_error *err) {
  primary *p = c->p;
  spool_state *s = c->s;
  size_t n = s->seg_first >= 2 && s->seg_next > s->seg_first ? (size_t)(s->seg_next - s->seg_first) : 0;
  ltx_source *in = NULL;
  fd_source *fds = NULL;
  char path[4200], tmp[4300];
  cache_fd_sink out = {-1, 0};
  ltx_header h;
  uint64_t txid = s->txid_spooled + 1;
  int rc = LTX_OK;

  if (n == 0) return LTX_OK;
  in = calloc(n, sizeof *in);
  fds = calloc(n, sizeof *fds);
  if (in == NULL || fds == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) fds[i].fd = -1;
  for (size_t i = 0; i < n; i++) {
    struct stat sb;
    spool_segment_path(p->sp, s->seg_first + i, path, sizeof path);
    fds[i].fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fds[i].fd < 0 || fstat(fds[i].fd, &sb) != 0) {
      rc = ltx_error_set(err, PRIMARY_ERR_IO, "open %s: %s", path, strerror(errno));
      goto out;
    }
    in[i].read_at = fd_source_read;
    in[i].ctx = &fds[i];
    in[i].size = (uint64_t)sb.st_size;
  }
  spool_file_path(p->sp, txid, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  out.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out.fd < 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "create %s: %s", tmp, strerror(errno));
    goto out;
  }
  rc = ltx_compact_as(in, n, txid, txid, cache_fd_sink_write, &out, &h, err);
  if (rc != LTX_OK) {
    ltx_error_prefix(err, "merge %zu segments into TXID %016" PRIx64, n, txid);
    goto out;
  }
  if (rename(tmp, path) != 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "rename %s: %s", tmp, strerror(errno));
    goto out;
  }
  /* The segments' bytes leave the count as the merged file's enter it. */
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; i < n; i++) p->spool_bytes = p->spool_bytes > in[i].size ? p->spool_bytes - in[i].size : 0;
  pthread_mutex_unlock(&p->mu);
  s->seg_first = s->seg_next;
  rc = record_capture(c, txid, h.commit, out.written, h.timestamp_ms, err);
  if (rc == LTX_OK) spool_prune_segments(p->sp, s->seg_first, s->seg_next);
out:
  if (out.fd >= 0) close(out.fd);
  if (rc != LTX_OK) unlink(tmp);
  if (fds)
    for (size_t i = 0; i < n; i++)
      if (fds[i].fd >= 0) close(fds[i].fd);
  free(fds);
  free(in);
  return rc;
}

/* Whether SQLite may still have to roll back a hot journal: then the
** database file holds a transaction that never committed. */
static int hot_journal_possible(primary *p) {
  char path[4200];
  uint8_t magic[8] = {0};
  int fd, hot = 0;
  snprintf(path, sizeof path, "%s-journal", p->db_path);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  if (pread(fd, magic, sizeof magic, 0) == (ssize_t)sizeof magic) {
    static const uint8_t zero[8];
    hot = memcmp(magic, zero, sizeof zero) != 0; /* PERSIST zeroes a finished one */
  }
  close(fd);
  return hot;
}

/* Everything committed and not captured yet, with the start-up and
** per-transaction checks for changes made outside the VFS.
**
** held: the caller holds an SQLite lock on the database (SHARED or more,
** through a hook), so no rollback-mode transaction is half written into
** the file. Without it (the background thread, the open) the checks that
** read the database file as a whole are left to the next hook: in rollback
** mode the file is consistent only under SQLite's lock. WAL mode needs no
** lock: the database file only ever receives committed frames.
** flush: the sync interval is over: rollback-mode segments become a TXID
** even when nothing else is captured (a capture of anything else merges
** them first in any case, so TXIDs keep the commits' order). */
static int capture_locked(primary *p, spool_state *s, int held, int flush, ltx_error *err) {
  capture_ctx c = {p, s, -1, {0}, 0};
  db_fingerprint fp;
  int rc = flush ? merge_segments(&c, err) : LTX_OK;
  if (rc != LTX_OK) return rc;
  rc = open_wal(&c, err);
  if (rc != LTX_OK) goto out;
  if (s->txid_spooled == 0) {
    if (held || c.have_wal || !hot_journal_possible(p))
      rc = capture_snapshot(&c, "the replica's first TXID", err);
    goto out;
  }
  if (s->wal.salt1 == 0 && s->wal.salt2 == 0) {
    /* No WAL was being captured: the database must be as last captured. */
    if (!held || hot_journal_possible(p)) goto out;
    rc = db_fingerprint_read(p->db_fd, &fp, err);
    if (rc != LTX_OK) goto out;
    if (!db_fingerprint_equal(&fp, &s->fp)) {
      char why[300];
      snprintf(why, sizeof why,
               "the database was changed outside the VFS (file size %" PRIu64 " -> %" PRIu64
               ", change counter %u -> %u, mtime %+" PRId64 " ns, inode %s)",
               s->fp.size, fp.size, s->fp.change_counter, fp.change_counter,
               fp.mtime_ns - s->fp.mtime_ns, fp.ino == s->fp.ino ? "same" : "replaced");
      rc = capture_snapshot(&c, why, err);
      goto out;
    }
    if (!c.have_wal) goto out;
    /* A WAL begun outside the VFS: its frames are on top of the database
    ** as captured, so they are taken from its start. */
    s->wal.salt1 = c.wh.salt1;
    s->wal.salt2 = c.wh.salt2;
    s->wal.frame = 0;
  }
  if (!c.have_wal) {
    if (s->wal.frame == 0) {
      /* Sealed for a generation SQLite had not begun writing (a crash
      ** between the seal and the header): nothing of it to lose, as long as
      ** the database is as the seal left it. */
      rc = db_fingerprint_read(p->db_fd, &fp, err);
      if (rc != LTX_OK || db_fingerprint_equal(&fp, &s->fp)) goto out;
    }
    if (!held) goto out;
    rc = capture_snapshot(&c, "the WAL being captured is gone (checkpointed and removed outside "
                              "the VFS)", err);
    goto out;
  }
  if (c.wh.salt1 != s->wal.salt1 || c.wh.salt2 != s->wal.salt2) {
    if (c.wh.salt1 == s->wal_prev.salt1 && c.wh.salt2 == s->wal_prev.salt2) {
      s->wal = s->wal_prev; /* sealed for a restart that did not happen (a crash) */
    } else {
      rc = capture_snapshot(&c, "the WAL was restarted outside the VFS", err);
      goto out;
    }
  }
  rc = capture_frames(&c, flush, err);
out:
  close_wal(&c);
  return rc;
}

static int load_state(primary *p, spool_state *s, ltx_error *err) {
  int rc = spool_read_state(p->sp, s, err);
  if (rc == LTX_DONE) {
    memset(s, 0, sizeof *s);
    snprintf(s->owner, sizeof s->owner, "%s", p->owner);
    s->replica_crc = p->replica_crc;
    return LTX_OK;
  }
  return rc;
}

static int capture(primary *p, int held, int flush, ltx_error *err) {
  spool_state s;
  int rc;
  pthread_mutex_lock(&p->mu);
  if (flush) p->last_flush_ms = mono_ms();
  p->last_capture_ms = mono_ms();
  p->commits_seen = 0; /* before the scan: a commit landing during it is seen next time */
  pthread_mutex_unlock(&p->mu);
  spool_lock(p->sp);
  rc = load_state(p, &s, err);
  if (rc == LTX_OK) rc = capture_locked(p, &s, held, flush, err);
  spool_unlock(p->sp);
  return rc;
}

/* ---- hooks ---- */

void primary_wal_frame_written(primary *p, const uint8_t hdr[24]) {
  uint32_t commit = ((uint32_t)hdr[4] << 24) | ((uint32_t)hdr[5] << 16) | ((uint32_t)hdr[6] << 8) | hdr[7];
  if (commit == 0) return;
  pthread_mutex_lock(&p->mu);
  p->commits_seen = 1;
  /* Per commit: the thread captures it now. Batching: it takes a segment
  ** when the last capture is SEGMENT_EVERY_MS old (capture_frames). */
  if (p->cfg.sync_interval_ms == 0 || mono_ms() - p->last_capture_ms >= SEGMENT_EVERY_MS)
    pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
}

int primary_wal_will_reset(primary *p, const uint8_t *new_header, ltx_error *err) {
  spool_state s;
  int rc;
  spool_lock(p->sp);
  rc = load_state(p, &s, err);
  if (rc == LTX_OK) rc = capture_locked(p, &s, 1, 0, err);
  if (rc == LTX_OK) {
    /* Sealed: every commit of this WAL is captured. The state names the
    ** generation that follows before SQLite starts writing it. */
    s.wal_prev = s.wal;
    memset(&s.wal, 0, sizeof s.wal);
    if (new_header != NULL) {
      s.wal.salt1 = ((uint32_t)new_header[16] << 24) | ((uint32_t)new_header[17] << 16) |
                    ((uint32_t)new_header[18] << 8) | new_header[19];
      s.wal.salt2 = ((uint32_t)new_header[20] << 24) | ((uint32_t)new_header[21] << 16) |
                    ((uint32_t)new_header[22] << 8) | new_header[23];
    }
    /* The database as the seal leaves it (checkpointed): what an empty or
    ** missing WAL is checked against. */
    rc = db_fingerprint_read(p->db_fd, &s.fp, err);
    if (rc == LTX_OK) rc = spool_write_state(p->sp, &s, err);
  }
  spool_unlock(p->sp);
  if (rc != LTX_OK) set_last_error(p, err);
  return rc;
}

int primary_rollback_committed(primary *p, const uint32_t *pgnos, size_t n, ltx_error *err) {
  spool_state s;
  capture_ctx c = {p, &s, -1, {0}, 0};
  page_src *pages = NULL;
  struct stat sb;
  uint32_t ps, db_pages;
  uint64_t size = 0;
  int64_t ts = now_ms();
  int rc;

  spool_lock(p->sp);
  rc = load_state(p, &s, err);
  if (rc != LTX_OK) goto out;
  if (s.txid_spooled == 0 || s.wal.salt1 != 0 || s.wal.salt2 != 0) {
    /* Never captured, or coming out of WAL mode without a seal (a WAL
    ** removed outside the VFS): the whole database. (A change outside
    ** before this transaction was caught at its RESERVED lock.) */
    rc = capture_snapshot(&c, s.txid_spooled == 0 ? "the replica's first TXID"
                                                  : "the database was changed outside the VFS",
                          err);
    goto out;
  }
  ps = db_header_page_size(p->db_fd);
  if (fstat(p->db_fd, &sb) != 0 || ps < 512 || (ps & (ps - 1)) != 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "%s: cannot read the database header", p->db_path);
    goto out;
  }
  /* The commit's size is the header's (offsets 28 and 92 == 24: valid):
  ** SQLite truncates a shrunk file only after the journal is finalised. */
  db_pages = db_header_pages(p->db_fd);
  if (db_pages == 0) db_pages = (uint32_t)(sb.st_size / ps);
  pages = malloc((n ? n : 1) * sizeof *pages);
  if (pages == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    pages[i].pgno = pgnos[i];
    pages[i].from_wal = 0;
    pages[i].at = (off_t)(pgnos[i] - 1) * ps;
  }
  n = dedup_pages(pages, n, db_pages, ps);
  s.page_size = ps;
  if (p->cfg.sync_interval_ms > 0) {
    /* Batching: a segment now (before the next writer), merged with the
    ** interval's others into one TXID by the thread (merge_segments). */
    rc = db_fingerprint_read(p->db_fd, &s.fp, err);
    if (rc == LTX_OK) rc = write_segment(&c, ps, db_pages, pages, n, err);
    goto out;
  }
  rc = spool_write_ltx(p->sp, 0, s.txid_spooled + 1, ps, db_pages, ts, pages, n, p->db_fd, -1,
                       &size, err);
  if (rc != LTX_OK) goto out;
  rc = db_fingerprint_read(p->db_fd, &s.fp, err);
  if (rc == LTX_OK) rc = record_capture(&c, s.txid_spooled + 1, db_pages, size, ts, err);
out:
  spool_unlock(p->sp);
  free(pages);
  if (rc != LTX_OK) set_last_error(p, err);
  return rc;
}

int primary_rollback_settled(primary *p, ltx_error *err) {
  spool_state s;
  int rc;
  spool_lock(p->sp);
  rc = load_state(p, &s, err);
  if (rc == LTX_OK && s.txid_spooled > 0 && s.wal.salt1 == 0 && s.wal.salt2 == 0) {
    rc = db_fingerprint_read(p->db_fd, &s.fp, err);
    if (rc == LTX_OK) rc = spool_write_state(p->sp, &s, err);
  }
  spool_unlock(p->sp);
  return rc;
}

int primary_write_allowed(primary *p, int rollback_mode, ltx_error *err) {
  int rc = LTX_OK;
  pthread_mutex_lock(&p->mu);
  if (p->lease_lost) {
    rc = ltx_error_set(err, PRIMARY_ERR_LEASE,
                       "%s: this primary lost the replica's lease (%s); writes stop so the "
                       "replica does not fork. Reopen to take the lease again", p->db_path,
                       p->last_error);
  } else if (p->spool_bytes >= p->cfg.spool_max) {
    /* Full: give the uploader a moment (a store that just came back drains
    ** a full spool in well under a second) before failing the write. */
    int64_t until = mono_ms() + SPOOL_FULL_WAIT_MS;
    while (p->spool_bytes >= p->cfg.spool_max && !p->lease_lost && mono_ms() < until) {
      struct timespec ts;
      pthread_cond_broadcast(&p->wake);
      abs_deadline(&ts, 20);
      pthread_cond_timedwait(&p->progress, &p->mu, &ts);
    }
  }
  if (rc == LTX_OK && p->spool_bytes >= p->cfg.spool_max) {
    rc = ltx_error_set(err, PRIMARY_ERR_SPOOL_FULL,
                       "%s: %" PRIu64 " bytes of commits wait in the spool for upload "
                       "(spool_max %" PRIu64 "); writes resume when the replica's store takes "
                       "them (last error: %s)", p->db_path, p->spool_bytes, p->cfg.spool_max,
                       p->last_error[0] ? p->last_error : "none");
  }
  pthread_mutex_unlock(&p->mu);
  if (rc == LTX_OK && rollback_mode) {
    /* Under SQLite's RESERVED lock the file is whole: the check for changes
    ** made outside the VFS (a snapshot now, before this transaction). */
    ltx_error e2;
    if (capture(p, 1, 0, &e2) != LTX_OK) set_last_error(p, &e2);
  }
  return rc;
}

int primary_check(primary *p, ltx_error *err) { return capture(p, 1, 0, err); }

/* ---- upload ---- */

/* Whether the object at key holds exactly the bytes of the spooled file
** (a put-if-absent lost to ourselves: an upload that went through before a
** crash recorded it). */
static int same_object(primary *p, const char *key, int fd, uint64_t size, ltx_error *err) {
  uint64_t osize = 0;
  uint8_t a[16], b[16];
  size_t nread = 0;
  int rc = store_head(p->st, key, &osize, NULL, 0, err);
  if (rc != LTX_OK) return rc;
  if (osize != size || size < 16) return 0;
  rc = store_read_suffix(p->st, key, a, sizeof a, &nread, &osize, err);
  if (rc != LTX_OK) return rc;
  if (pread(fd, b, sizeof b, (off_t)size - 16) != 16) return 0;
  return nread == 16 && memcmp(a, b, 16) == 0; /* the trailer: post-apply and file checksums */
}

/* Uploads the spooled file of txid; LTX_OK when it is in the replica. */
static int upload_one(primary *p, uint64_t txid, ltx_error *err) {
  char path[4096], key[128];
  struct stat sb;
  int fd, rc;
  int64_t ts = 0;
  uint8_t hdr[LTX_HEADER_SIZE];
  ltx_header h;

  spool_file_path(p->sp, txid, path, sizeof path);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &sb) != 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "open the spooled file %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return rc;
  }
  /* Durable before it is in the bucket (spool.c, crash safety). */
  rc = spool_make_durable(p->sp, fd, err);
  if (rc != LTX_OK) {
    close(fd);
    return rc;
  }
  if (pread(fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr &&
      ltx_header_decode(hdr, &h, NULL) == LTX_OK)
    ts = h.timestamp_ms;
  store_ltx_key(p->st, 0, txid, txid, key, sizeof key);
  rc = store_put_fd(p->st, key, fd, (uint64_t)sb.st_size, ts, STORE_PUT_IF_ABSENT, NULL, NULL, 0,
                    err);
  if (rc == STORE_ERR_PRECONDITION) {
    ltx_error e2;
    int same = same_object(p, key, fd, (uint64_t)sb.st_size, &e2);
    if (same == 1) {
      rc = LTX_OK;
    } else if (same == 0) {
      rc = ltx_error_set(err, PRIMARY_ERR_CONFLICT,
                         "%s already holds TXID %016" PRIx64 " with other bytes: another primary "
                         "wrote this replica; uploads stopped", p->url, txid);
    } else {
      *err = e2;
      rc = same;
    }
  }
  close(fd);
  return rc;
}

/* Records in the spool's state that this host lost the lease (msg) or
** holds it again (msg NULL), for the host's other processes. */
static void note_lease_in_state(primary *p, const char *msg) {
  spool_state s;
  ltx_error e2;
  spool_lock(p->sp);
  if (load_state(p, &s, &e2) == LTX_OK && (msg ? strcmp(s.lease_lost, msg) != 0 : s.lease_lost[0] != 0)) {
    snprintf(s.lease_lost, sizeof s.lease_lost, "%s", msg ? msg : "");
    spool_write_state(p->sp, &s, &e2);
  }
  spool_unlock(p->sp);
}

static void lose_lease(primary *p, const ltx_error *err) {
  note_lease_in_state(p, err->msg);
  pthread_mutex_lock(&p->mu);
  if (!p->lease_lost)
    plog(REPLICA_LOG_ERROR, "%s: %s", p->db_path, err->msg);
  p->lease_lost = 1;
  p->lease.held = 0;
  snprintf(p->last_error, sizeof p->last_error, "%s", err->msg);
  pthread_cond_broadcast(&p->progress);
  pthread_mutex_unlock(&p->mu);
}

/* One round of the uploader: the lease, then every spooled file in order. */
/* The lease and the uploader role are the thread's: it works on a copy and
** publishes it under p->mu, which is where stats and writers read them. */
static void publish_lease(primary *p, const lease *l, int uploader) {
  pthread_mutex_lock(&p->mu);
  p->lease = *l;
  p->uploader = uploader;
  pthread_mutex_unlock(&p->mu);
}

static void upload_round(primary *p) {
  ltx_error err;
  spool_state s;
  uint64_t next;
  lease l;
  int rc, lost;

  pthread_mutex_lock(&p->mu);
  l = p->lease;
  lost = p->lease_lost;
  pthread_mutex_unlock(&p->mu);
  if (!p->uploader) {
    if (flock(p->upload_fd, LOCK_EX | LOCK_NB) != 0) return; /* another process of this host */
    publish_lease(p, &l, 1);
  }
  if (lost) return;
  if (!l.held) {
    rc = lease_acquire(p->st, &l, p->owner, p->cfg.lease_ttl_ms, &err);
    if (rc == PRIMARY_ERR_LEASE) {
      lose_lease(p, &err);
      return;
    }
    if (rc != LTX_OK) goto failed;
    publish_lease(p, &l, 1);
    note_lease_in_state(p, NULL);
  } else if (now_ms() >= l.expires_ms - (p->cfg.lease_ttl_ms - p->cfg.lease_renew_ms)) {
    rc = lease_renew(p->st, &l, p->cfg.lease_ttl_ms, &err);
    if (rc == PRIMARY_ERR_LEASE) {
      lose_lease(p, &err);
      return;
    }
    if (rc != LTX_OK) {
      if (now_ms() >= l.expires_ms) {
        ltx_error_set(&err, PRIMARY_ERR_LEASE,
                      "the replica's lease expired before it could be renewed (%s)", err.msg);
        lose_lease(p, &err);
        return;
      }
      goto failed;
    }
    publish_lease(p, &l, 1);
  }
  for (;;) {
    spool_lock(p->sp);
    rc = load_state(p, &s, &err);
    spool_unlock(p->sp);
    if (rc != LTX_OK) goto failed;
    if (s.txid_uploaded >= s.txid_spooled) break;
    if (now_ms() >= l.expires_ms) break; /* renewed at the next round first */
    next = s.txid_uploaded + 1;
    rc = upload_one(p, next, &err);
    if (rc == PRIMARY_ERR_CONFLICT) {
      lose_lease(p, &err);
      return;
    }
    if (rc != LTX_OK) goto failed;
    spool_lock(p->sp);
    rc = load_state(p, &s, &err);
    if (rc == LTX_OK && s.txid_uploaded < next) {
      s.txid_uploaded = next;
      rc = spool_write_state(p->sp, &s, &err);
    }
    spool_unlock(p->sp);
    if (rc != LTX_OK) goto failed;
    {
      char path[4096];
      struct stat sb;
      spool_file_path(p->sp, next, path, sizeof path);
      if (stat(path, &sb) != 0) sb.st_size = 0;
      unlink(path);
      pthread_mutex_lock(&p->mu);
      p->txid_uploaded = next;
      p->uploads++;
      p->bytes_uploaded += (uint64_t)sb.st_size;
      p->spool_bytes = p->spool_bytes > (uint64_t)sb.st_size ? p->spool_bytes - (uint64_t)sb.st_size : 0;
      if (p->spool_files) p->spool_files--;
      p->backoff_ms = 0;
      p->last_error[0] = '\0';
      if (next == s.txid_spooled) p->oldest_pending_ms = 0;
      pthread_cond_broadcast(&p->progress);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return;
failed:
  pthread_mutex_lock(&p->mu);
  p->upload_failures++;
  p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : 100;
  if (p->backoff_ms > BACKOFF_MAX_MS) p->backoff_ms = BACKOFF_MAX_MS;
  p->next_upload_ms = mono_ms() + p->backoff_ms;
  if (strcmp(p->last_error, err.msg) != 0)
    plog(REPLICA_LOG_WARN, "%s: upload to %s: %s (retrying)", p->db_path, p->url, err.msg);
  snprintf(p->last_error, sizeof p->last_error, "%s", err.msg);
  pthread_cond_broadcast(&p->progress);
  pthread_mutex_unlock(&p->mu);
}

/* Recounts the spool from disk (other processes of the host add to it). */
static void refresh_usage(primary *p) {
  uint64_t bytes, files;
  spool_state s;
  ltx_error err;
  spool_usage(p->sp, &bytes, &files);
  spool_lock(p->sp);
  int rc = spool_read_state(p->sp, &s, &err);
  spool_unlock(p->sp);
  pthread_mutex_lock(&p->mu);
  p->spool_bytes = bytes;
  p->spool_files = files;
  if (rc == LTX_OK && !p->uploader && (s.lease_lost[0] != 0) != p->lease_lost) {
    /* The host's uploader lost the lease (this process stops writing too),
    ** or holds it again. */
    p->lease_lost = s.lease_lost[0] != 0;
    if (p->lease_lost) snprintf(p->last_error, sizeof p->last_error, "%s", s.lease_lost);
    pthread_cond_broadcast(&p->progress);
  }
  if (rc == LTX_OK) {
    p->txid_spooled = s.txid_spooled;
    if (s.txid_uploaded > p->txid_uploaded) {
      p->txid_uploaded = s.txid_uploaded;
      pthread_cond_broadcast(&p->progress);
    }
  }
  pthread_mutex_unlock(&p->mu);
}

static void *primary_thread(void *arg) {
  primary *p = arg;
  int64_t last_refresh = 0;
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    int64_t now = mono_ms();
    /* Per commit: at each commit this process saw, and each second for the
    ** commits of the host's other processes. */
    int due_flush = p->flush_now ||
                    (p->cfg.sync_interval_ms == 0
                         ? p->commits_seen || now - p->last_flush_ms >= 1000
                         : now - p->last_flush_ms >= p->cfg.sync_interval_ms);
    /* Batching under load: segments every few ms (see capture_frames). */
    int due_segment = !due_flush && p->cfg.sync_interval_ms > 0 && p->commits_seen &&
                      now - p->last_capture_ms >= SEGMENT_EVERY_MS;
    int due_upload = p->txid_uploaded < p->txid_spooled || !p->lease.held ||
                     now - last_refresh >= 1000;
    if (due_segment) {
      ltx_error err;
      pthread_mutex_unlock(&p->mu);
      if (capture(p, 0, 0, &err) != LTX_OK) set_last_error(p, &err);
      pthread_mutex_lock(&p->mu);
      continue;
    }
    if (due_flush || (due_upload && now >= p->next_upload_ms)) {
      pthread_mutex_unlock(&p->mu);
      if (due_flush) {
        ltx_error err;
        int rc;
        pthread_mutex_lock(&p->mu);
        p->flush_now = 0;
        pthread_mutex_unlock(&p->mu);
        rc = capture(p, 0, 1, &err);
        if (rc != LTX_OK) {
          plog(REPLICA_LOG_WARN, "%s: capture: %s", p->db_path, err.msg);
          set_last_error(p, &err);
        }
      }
      if (now - last_refresh >= 1000) {
        refresh_usage(p);
        last_refresh = now;
      }
      if (mono_ms() >= p->next_upload_ms) upload_round(p);
      pthread_mutex_lock(&p->mu);
      pthread_cond_broadcast(&p->progress);
      continue;
    }
    {
      struct timespec ts;
      long wait = TICK_MS;
      if (p->cfg.sync_interval_ms > 0 && p->cfg.sync_interval_ms < wait) wait = p->cfg.sync_interval_ms;
      abs_deadline(&ts, wait);
      pthread_cond_timedwait(&p->wake, &p->mu, &ts);
    }
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* ---- waiting for uploads ---- */

static int wait_uploaded(primary *p, uint64_t target, long timeout_ms, ltx_error *err) {
  int64_t deadline = mono_ms() + timeout_ms;
  int rc = LTX_OK;
  pthread_mutex_lock(&p->mu);
  while (p->txid_uploaded < target) {
    struct timespec ts;
    if (p->lease_lost) {
      rc = ltx_error_set(err, PRIMARY_ERR_LEASE, "%s", p->last_error);
      break;
    }
    if (mono_ms() >= deadline) {
      rc = ltx_error_set(err, PRIMARY_ERR_TIMEOUT,
                         "%s: TXID %016" PRIx64 " not uploaded within %ld ms (uploaded: %016" PRIx64
                         "; last error: %s); it stays in the spool and goes up when the store "
                         "takes it", p->db_path, target, timeout_ms, p->txid_uploaded,
                         p->last_error[0] ? p->last_error : "none");
      break;
    }
    pthread_cond_broadcast(&p->wake);
    abs_deadline(&ts, 20);
    pthread_cond_timedwait(&p->progress, &p->mu, &ts);
    if (!p->uploader) {
      /* another process of this host uploads: its progress is in the state */
      pthread_mutex_unlock(&p->mu);
      refresh_usage(p);
      pthread_mutex_lock(&p->mu);
    }
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int primary_sync(primary *p, long timeout_ms, ltx_error *err) {
  int rc = capture(p, 0, 1, err);
  uint64_t target;
  if (rc != LTX_OK) return rc;
  pthread_mutex_lock(&p->mu);
  target = p->txid_spooled;
  pthread_mutex_unlock(&p->mu);
  return wait_uploaded(p, target, timeout_ms, err);
}

int primary_commit_wait(primary *p, ltx_error *err) {
  return primary_sync(p, p->cfg.commit_timeout_ms, err);
}

/* ---- start-up ---- */

static int open_db_fd(primary *p, ltx_error *err);

static uint64_t replica_max_txid(const store_ltx_list *l) {
  uint64_t m = 0;
  for (size_t i = 0; i < l->n; i++)
    if (l->files[i].max_txid > m) m = l->files[i].max_txid;
  return m;
}

static void random_owner(char *out, size_t cap) {
  uint8_t r[8] = {0};
  char host[64] = "host";
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, r, sizeof r) != (ssize_t)sizeof r) memset(r, 0, sizeof r);
    close(fd);
  }
  gethostname(host, sizeof host - 1);
  /* (20 characters of the host: the owner fits the lease's 40 bytes) */
  snprintf(out, cap, "%.20s-%02x%02x%02x%02x%02x%02x%02x%02x", host, r[0], r[1], r[2], r[3], r[4],
           r[5], r[6], r[7]);
}

/* Restores the replica into the database path (bootstrap), with no WAL or
** journal left of what was there. */
static int bootstrap_restore(primary *p, const store_ltx_list *files, spool_state *s,
                             ltx_error *err) {
  store_plan plan = {0};
  char side[4200];
  int rc = store_plan_build(files->files, files->n, 0, -1, &plan, err);
  if (rc != LTX_OK) return rc;
  rc = cache_restore(p->st, &plan, p->db_path, 1, NULL, NULL, err);
  if (rc == LTX_OK) {
    snprintf(side, sizeof side, "%s-wal", p->db_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", p->db_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-journal", p->db_path);
    unlink(side);
    plog(REPLICA_LOG_INFO, "%s: restored from %s at TXID %016" PRIx64 " (bootstrap)", p->db_path,
         p->url, plan.txid);
    s->txid_spooled = s->txid_uploaded = plan.txid;
    memset(&s->wal, 0, sizeof s->wal);
    memset(&s->wal_prev, 0, sizeof s->wal_prev);
  }
  store_plan_free(&plan);
  return rc;
}

static int start_up(primary *p, ltx_error *err) {
  store_ltx_list files = {0};
  spool_state s;
  struct stat sb;
  uint64_t r;
  int db_exists, bootstrapped = 0, rc;

  spool_lock(p->sp);
  rc = load_state(p, &s, err);
  if (rc != LTX_OK) goto out;
  if (s.owner[0] == '\0') snprintf(s.owner, sizeof s.owner, "%s", p->owner);
  snprintf(p->owner, sizeof p->owner, "%s", s.owner);
  if (s.txid_spooled != 0 && s.replica_crc != p->replica_crc) {
    plog(REPLICA_LOG_WARN, "%s: the spool %s was for another replica: starting it again for %s",
         p->db_path, p->spool_path, p->url);
    memset(&s, 0, sizeof s);
    snprintf(s.owner, sizeof s.owner, "%s", p->owner);
  }
  s.replica_crc = p->replica_crc;
  rc = store_list_all(p->st, &files, err);
  if (rc == STORE_ERR_NOT_FOUND) {
    /* No replica yet (a file:// directory nobody created): an empty one,
    ** which the first upload creates. */
    store_ltx_list_free(&files);
    rc = LTX_OK;
  }
  if (rc != LTX_OK) {
    ltx_error_prefix(err, "list the replica %s", p->url);
    goto out;
  }
  r = replica_max_txid(&files);
  db_exists = stat(p->db_path, &sb) == 0 && sb.st_size > 0;
  if (r > s.txid_spooled) {
    if (!db_exists || p->cfg.bootstrap_restore) {
      rc = bootstrap_restore(p, &files, &s, err);
      if (rc != LTX_OK) goto out;
      bootstrapped = 1;
    } else {
      rc = ltx_error_set(err, PRIMARY_ERR_AHEAD,
                         "%s is at TXID %016" PRIx64 ", ahead of this database (TXID %016" PRIx64
                         " in %s): another primary wrote it. Refusing to write; open with "
                         "bootstrap=restore to replace the database with the replica and continue",
                         p->url, r, s.txid_spooled, p->spool_path);
      goto out;
    }
  } else if (r < s.txid_uploaded) {
    if (r == 0) {
      plog(REPLICA_LOG_WARN, "%s: the replica %s is empty but held TXID %016" PRIx64
           ": starting it again from a snapshot", p->db_path, p->url, s.txid_uploaded);
      s.txid_spooled = s.txid_uploaded = 0;
    } else {
      rc = ltx_error_set(err, PRIMARY_ERR_CONFLICT,
                         "%s is at TXID %016" PRIx64 ", behind TXID %016" PRIx64
                         " that this database uploaded: files were removed from it. Move %s away "
                         "to start a new replica history", p->url, r, s.txid_uploaded, p->spool_path);
      goto out;
    }
  } else if (r > s.txid_uploaded) {
    s.txid_uploaded = r; /* uploads that went through before a crash recorded them */
  }
  rc = open_db_fd(p, err);
  if (rc != LTX_OK) goto out;
  if (bootstrapped) {
    rc = db_fingerprint_read(p->db_fd, &s.fp, err);
    if (rc != LTX_OK) goto out;
    s.page_size = db_header_page_size(p->db_fd);
  }
  spool_prune(p->sp, s.txid_uploaded, s.txid_spooled);
  spool_prune_segments(p->sp, s.seg_first, s.seg_next);
  rc = spool_write_state(p->sp, &s, err);
  if (rc != LTX_OK) goto out;
  p->txid_spooled = s.txid_spooled;
  p->txid_uploaded = s.txid_uploaded;
out:
  spool_unlock(p->sp);
  store_ltx_list_free(&files);
  return rc;
}

/* ---- the object ---- */

static char *str_printf(const char *fmt, ...) LTX_PRINTF(1, 2);
static char *str_printf(const char *fmt, ...) {
  va_list ap;
  char *out = NULL;
  va_start(ap, fmt);
  if (vasprintf(&out, fmt, ap) < 0) out = NULL;
  va_end(ap);
  return out;
}

static void primary_free(primary *p) {
  if (p == NULL) return;
  if (p->db_fd >= 0) close(p->db_fd);
  if (p->upload_fd >= 0) close(p->upload_fd);
  spool_close(p->sp);
  store_close(p->st);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->progress);
  free(p->db_path);
  free(p->wal_path);
  free(p->url);
  free(p->spool_path);
  free(p);
}

static int open_db_fd(primary *p, ltx_error *err) {
  int fd = open(p->db_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    /* SQLite creates it; ours must be the same inode, so create it here. */
    fd = open(p->db_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  }
  if (fd < 0)
    return ltx_error_set(err, PRIMARY_ERR_IO, "open %s: %s", p->db_path, strerror(errno));
  p->db_fd = fd;
  return LTX_OK;
}

int primary_acquire(const primary_config *cfg, primary **out, ltx_error *err) {
  primary *p = NULL;
  char lock_path[4200];
  int rc = LTX_OK;

  *out = NULL;
  pthread_mutex_lock(&g_mu);
  for (p = g_primaries; p != NULL; p = p->next) {
    if (strcmp(p->db_path, cfg->db_path) != 0) continue;
    if (strcmp(p->url, cfg->replica_url) != 0) {
      rc = ltx_error_set(err, PRIMARY_ERR_CONFIG,
                         "%s is open in this process as a primary of %s, not %s", cfg->db_path,
                         p->url, cfg->replica_url);
      p = NULL;
      goto out;
    }
    p->refs++;
    *out = p;
    goto out;
  }
  p = calloc(1, sizeof *p);
  if (p == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  p->db_fd = p->upload_fd = -1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->progress, NULL);
  p->cfg = *cfg;
  p->db_path = strdup(cfg->db_path);
  p->url = strdup(cfg->replica_url);
  p->wal_path = str_printf("%s-wal", cfg->db_path);
  p->spool_path = cfg->spool_dir ? strdup(cfg->spool_dir) : str_printf("%s-ltvfs", cfg->db_path);
  if (!p->db_path || !p->url || !p->wal_path || !p->spool_path) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto fail;
  }
  p->cfg.db_path = p->db_path;
  p->cfg.replica_url = p->url;
  p->cfg.spool_dir = p->spool_path;
  if (p->cfg.lease_ttl_ms <= 0) p->cfg.lease_ttl_ms = PRIMARY_DEFAULT_LEASE_TTL_MS;
  if (p->cfg.lease_renew_ms <= 0 || p->cfg.lease_renew_ms >= p->cfg.lease_ttl_ms)
    p->cfg.lease_renew_ms = p->cfg.lease_ttl_ms / 3;
  if (p->cfg.spool_max == 0) p->cfg.spool_max = PRIMARY_DEFAULT_SPOOL_MAX;
  if (p->cfg.close_timeout_ms <= 0) p->cfg.close_timeout_ms = PRIMARY_DEFAULT_CLOSE_TIMEOUT_MS;
  if (p->cfg.commit_timeout_ms <= 0) p->cfg.commit_timeout_ms = PRIMARY_DEFAULT_COMMIT_TIMEOUT_MS;
  if (p->cfg.sync_interval_ms < 0) p->cfg.sync_interval_ms = PRIMARY_DEFAULT_SYNC_INTERVAL_MS;
  p->replica_crc = ltx_crc64(0, p->url, strlen(p->url));
  random_owner(p->owner, sizeof p->owner);
  rc = store_open(p->url, &p->st, err);
  if (rc != LTX_OK) goto fail;
  rc = spool_open(p->spool_path, &p->sp, err);
  if (rc != LTX_OK) goto fail;
  snprintf(lock_path, sizeof lock_path, "%s/upload.lock", p->spool_path);
  p->upload_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (p->upload_fd < 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "open %s: %s", lock_path, strerror(errno));
    goto fail;
  }
  /* This host's uploader takes the lease before anything is decided, so
  ** two hosts racing for one replica cannot both start writing it. */
  if (flock(p->upload_fd, LOCK_EX | LOCK_NB) == 0) {
    p->uploader = 1;
    spool_state s;
    spool_lock(p->sp);
    rc = load_state(p, &s, err);
    spool_unlock(p->sp);
    if (rc != LTX_OK) goto fail;
    rc = lease_acquire(p->st, &p->lease, s.owner[0] ? s.owner : p->owner, p->cfg.lease_ttl_ms, err);
    if (rc != LTX_OK) goto fail;
    note_lease_in_state(p, NULL); /* the host holds it (again) */
  }
  rc = start_up(p, err);
  if (rc != LTX_OK) goto fail;
  {
    /* Commits a crash left uncaptured, and changes made outside the VFS,
    ** are taken now, before SQLite writes anything new. */
    ltx_error cerr;
    if (capture(p, 0, 1, &cerr) != LTX_OK) {
      plog(REPLICA_LOG_WARN, "%s: capture at open: %s (retried in the background)", p->db_path,
           cerr.msg);
      set_last_error(p, &cerr);
    }
  }
  if (pthread_create(&p->thread, NULL, primary_thread, p) != 0) {
    rc = ltx_error_set(err, PRIMARY_ERR_IO, "cannot start the primary's thread");
    goto fail;
  }
  p->thread_started = 1;
  p->refs = 1;
  p->next = g_primaries;
  g_primaries = p;
  *out = p;
  goto out;
fail:
  if (p && p->lease.held) lease_release(p->st, &p->lease);
  primary_free(p);
out:
  pthread_mutex_unlock(&g_mu);
  return rc;
}

void primary_release(primary *p) {
  ltx_error err;
  int rc;
  if (p == NULL) return;
  pthread_mutex_lock(&g_mu);
  if (--p->refs > 0) {
    pthread_mutex_unlock(&g_mu);
    return;
  }
  for (primary **pp = &g_primaries; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  }
  pthread_mutex_unlock(&g_mu);
  /* What is left goes up, within the close deadline. */
  rc = primary_sync(p, p->cfg.close_timeout_ms, &err);
  if (rc != LTX_OK && rc != PRIMARY_ERR_LEASE)
    plog(REPLICA_LOG_WARN, "%s: closed with commits not uploaded (%s); the next open uploads them",
         p->db_path, err.msg);
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  if (p->thread_started) pthread_join(p->thread, NULL);
  if (p->uploader && p->lease.held) lease_release(p->st, &p->lease);
  primary_free(p);
}

void primary_get_stats(primary *p, primary_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&p->mu);
  out->txid_spooled = p->txid_spooled;
  out->txid_uploaded = p->txid_uploaded;
  out->spool_files = p->spool_files;
  out->spool_bytes = p->spool_bytes;
  out->uploads = p->uploads;
  out->bytes_uploaded = p->bytes_uploaded;
  out->upload_failures = p->upload_failures;
  out->snapshots = p->snapshots;
  out->captures = p->captures;
  out->oldest_pending_ms = p->oldest_pending_ms;
  out->lease_held = p->lease.held && !p->lease_lost;
  out->uploader = p->uploader;
  snprintf(out->lease_owner, sizeof out->lease_owner, "%s", p->owner);
  out->lease_expires_ms = p->lease.expires_ms;
  snprintf(out->last_error, sizeof out->last_error, "%s", p->last_error);
  pthread_mutex_unlock(&p->mu);
}

uint64_t primary_txid(primary *p) {
  uint64_t t;
  pthread_mutex_lock(&p->mu);
  t = p->txid_uploaded;
  pthread_mutex_unlock(&p->mu);
  return t;
}
