/*
** readvfs.c: the replica VFS "litestream", its SQL functions and PRAGMAs.
**
**   .load ./libltvfs
**   .open 'file:app.db?vfs=litestream&replica=s3://bucket/app'
**
** Only main databases (and ATTACHed ones) go to the replica; journals, temp
** and sort files are opened by the default VFS, a WAL open is refused. The
** database is read-only: xOpen reports SQLITE_OPEN_READONLY, so SQLite itself
** answers writes with SQLITE_READONLY.
**
** Transactions: xLock(SHARED) from NONE adopts a view (the newest published
** one, or the pinned one) and keeps it until the next such lock, so a read
** transaction sees exactly one TXID. Page 1 is served with bytes 18-19 = 1
** (rollback journal mode, never WAL) and bytes 24-27 and 92-95 = the low 32
** bits of the view's TXID: SQLite keeps its page cache between transactions
** for as long as the TXID does not change, and drops it when it does.
**
** An open that fails (bad URL, unavailable TXID, empty replica past the
** deadline) does not fail xOpen, whose reason SQLite would replace with
** "unable to open database file": the file remembers the reason, and the
** auto-extension, which SQLite runs right after opening a connection, fails
** the open with it. Every later access to such a file fails too.
*/
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include "cache/cache.h"
#include "vfs/vfs.h"

#define DEFAULT_POLL_MS 1000
#define DEFAULT_CACHE_BYTES (32u << 20)
#define DEFAULT_OPEN_TIMEOUT_MS 10000
#define DEFAULT_PREFETCH_MAX (4u << 20)

/* ---- logging (LITESTREAM_LOG_LEVEL, LITESTREAM_LOG_FILE) ---- */

static pthread_mutex_t g_log_mutex = PTHREAD_MUTEX_INITIALIZER;
static int g_log_level = 2; /* warn */
static char g_log_path[1024];

static const char *const kLevelName[] = {"DEBUG", "INFO", "WARN", "ERROR"};

/* Reads the logging environment; called at every open, so a process can
** change it between opens. */
static void log_configure(void) {
  const char *lvl = getenv("LITESTREAM_LOG_LEVEL");
  const char *path = getenv("LITESTREAM_LOG_FILE");
  pthread_mutex_lock(&g_log_mutex);
  g_log_level = 2;
  if (lvl) {
    for (int i = 0; i < 4; i++)
      if (strcasecmp(lvl, kLevelName[i]) == 0 || (i == 2 && strcasecmp(lvl, "warning") == 0))
        g_log_level = i;
  }
  snprintf(g_log_path, sizeof(g_log_path), "%s", path ? path : "");
  pthread_mutex_unlock(&g_log_mutex);
}

void vfs_log(int level, const char *msg) {
  char ts[LTX_TIME_CAP];
  struct timespec now;
  FILE *out = stderr;
  if (level >= 3) sqlite3_log(SQLITE_IOERR, "ltvfs: %s", msg);
  pthread_mutex_lock(&g_log_mutex);
  if (level < g_log_level) goto out;
  clock_gettime(CLOCK_REALTIME, &now);
  ltx_time_format((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, ts, sizeof(ts));
  if (g_log_path[0]) out = fopen(g_log_path, "a");
  if (out == NULL) out = stderr;
  fprintf(out, "%s %s ltvfs: %s\n", ts, kLevelName[level < 0 ? 0 : level > 3 ? 3 : level], msg);
  if (out != stderr) fclose(out);
  else fflush(out);
out:
  pthread_mutex_unlock(&g_log_mutex);
}

static void vlog(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void vlog(int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  vfs_log(level, msg);
}

/* ---- configuration: URI parameter, then environment, then default ---- */

typedef struct lt_config {
  const char *url;
  uint64_t txid;        /* 0 = not pinned */
  int64_t time_ms;      /* -1 = not pinned */
  replica_config rc;
} lt_config;

/* "250", "250ms", "1s", "1.5s", "2m", "1h" -> ms; -1 if malformed. */
static long parse_duration_ms(const char *z) {
  char *end = NULL;
  double v;
  errno = 0;
  v = strtod(z, &end);
  if (errno || end == z || v < 0) return -1;
  if (*end == '\0' || strcmp(end, "ms") == 0) return (long)v;
  if (strcmp(end, "s") == 0) return (long)(v * 1000);
  if (strcmp(end, "m") == 0) return (long)(v * 60000);
  if (strcmp(end, "h") == 0) return (long)(v * 3600000);
  if (strcmp(end, "us") == 0 || strcmp(end, "µs") == 0) return (long)(v / 1000);
  return -1;
}

/* "33554432", "64K", "32M", "1G" (also KB/MB/GB, KiB/MiB/GiB) -> bytes. */
static long long parse_size(const char *z) {
  char *end = NULL;
  long long v;
  errno = 0;
  v = strtoll(z, &end, 10);
  if (errno || end == z || v < 0) return -1;
  switch (toupper((unsigned char)*end)) {
    case '\0': return v;
    case 'K': v <<= 10; break;
    case 'M': v <<= 20; break;
    case 'G': v <<= 30; break;
    default: return -1;
  }
  end++;
  if (*end == '\0' || strcasecmp(end, "B") == 0 || strcasecmp(end, "iB") == 0) return v;
  return -1;
}

static const char *param(const char *zName, const char *key, const char *env) {
  const char *v = zName ? sqlite3_uri_parameter(zName, key) : NULL;
  if (v == NULL && env != NULL) v = getenv(env);
  return v && *v ? v : NULL;
}

static int config_read(const char *zName, lt_config *c, ltx_error *err) {
  const char *v;
  memset(c, 0, sizeof(*c));
  c->time_ms = -1;
  c->rc.poll_ms = DEFAULT_POLL_MS;
  c->rc.cache_bytes = DEFAULT_CACHE_BYTES;
  c->rc.open_timeout_ms = DEFAULT_OPEN_TIMEOUT_MS;
  c->rc.prefetch_max = DEFAULT_PREFETCH_MAX;

  c->url = param(zName, "replica", "LITESTREAM_REPLICA_URL");
  if (c->url == NULL)
    return ltx_error_set(err, STORE_ERR_URL,
                         "no replica URL: add replica=URL to the file: URI or set "
                         "LITESTREAM_REPLICA_URL");
  if ((v = param(zName, "txid", NULL)) != NULL && ltx_txid_parse(v, &c->txid) != 0)
    return ltx_error_set(err, LTX_ERR_ARG, "txid=%s: not a non-zero hex TXID", v);
  if ((v = param(zName, "time", NULL)) != NULL) {
    c->time_ms = ltx_time_parse(v);
    if (c->time_ms < 0)
      return ltx_error_set(err, LTX_ERR_ARG,
                           "time=%s: not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", v);
    if (c->txid)
      return ltx_error_set(err, LTX_ERR_ARG, "txid= and time= cannot both pin the view");
  }
  if ((v = param(zName, "poll", "LITESTREAM_POLL_INTERVAL")) != NULL) {
    long ms = parse_duration_ms(v);
    if (ms < 10 || ms > 86400000L)
      return ltx_error_set(err, LTX_ERR_ARG,
                           "poll=%s: not an interval between 10 ms and 1 day (ms, or 1s, 500ms)", v);
    c->rc.poll_ms = (int)ms;
  }
  if ((v = param(zName, "cache_size", "LTVFS_CACHE_SIZE")) != NULL) {
    long long n = parse_size(v);
    if (n < 0)
      return ltx_error_set(err, LTX_ERR_ARG, "cache_size=%s: not a size (bytes, or 64M, 1G)", v);
    c->rc.cache_bytes = (size_t)n;
  }
  if ((v = param(zName, "prefetch_max", "LTVFS_PREFETCH_MAX")) != NULL) {
    long long n = parse_size(v);
    if (n < 0)
      return ltx_error_set(err, LTX_ERR_ARG, "prefetch_max=%s: not a size (bytes, or 4M)", v);
    c->rc.prefetch_max = (size_t)n;
  }
  if ((v = param(zName, "open_timeout", "LTVFS_OPEN_TIMEOUT")) != NULL) {
    long ms = parse_duration_ms(v);
    if (ms < 0 || ms > 86400000L)
      return ltx_error_set(err, LTX_ERR_ARG, "open_timeout=%s: not a duration (ms, or 10s)", v);
    c->rc.open_timeout_ms = (int)ms;
  }
  return LTX_OK;
}

/* ---- the file ---- */

typedef struct lt_file {
  sqlite3_file base;
  replica *rep;
  replica_view *view;   /* of the current (or last) read transaction */
  replica_view *pin;    /* txid=, time= or litestream_set_time(); NULL = latest */
  int64_t pin_time_ms;  /* the time asked for, -1 when pinned by TXID or latest */
  int lock;
  replica_readahead ra;
  uint8_t *page;        /* one LTX page, for reads that are not whole pages */
  uint32_t page_cap;
  int open_rc;          /* SQLITE_OK, or why the open failed (deferred) */
  char *open_err;
  char last_error[600]; /* the last read failure, for ltvfs_last_error() */
} lt_file;

static sqlite3_vfs *g_base; /* the default VFS we wrap */
static const sqlite3_io_methods lt_io_methods;

static int sqlite_code_for(int code) {
  switch (code) {
    case LTX_ERR_NOMEM: return SQLITE_IOERR_NOMEM;
    case STORE_ERR_URL:
    case LTX_ERR_ARG:
    case STORE_ERR_TXID_UNAVAILABLE:
    case STORE_ERR_EMPTY:
    case STORE_ERR_NONCONTIGUOUS:
    case CACHE_ERR_TIMEOUT: return SQLITE_CANTOPEN;
    case STORE_ERR_AUTH: return SQLITE_AUTH;
    default: break;
  }
  if (code >= LTX_ERR_MAGIC && code <= LTX_ERR_CONTIGUITY) return SQLITE_IOERR_CORRUPTFS;
  if (code == CACHE_ERR_PAGE_SIZE || code == CACHE_ERR_MISMATCH) return SQLITE_IOERR_CORRUPTFS;
  return SQLITE_IOERR_READ;
}

/* The view reads go to: the transaction's, else a fresh one. */
static int current_view(lt_file *p, replica_view **out) {
  ltx_error err = {0};
  int rc;
  if (p->open_rc != SQLITE_OK) return p->open_rc;
  if (p->view) {
    *out = p->view;
    return SQLITE_OK;
  }
  if (p->pin) {
    replica_view_ref(p->pin);
    p->view = p->pin;
  } else {
    rc = replica_latest(p->rep, &p->view, &err);
    if (rc != LTX_OK) {
      vlog(3, "%s", err.msg);
      return sqlite_code_for(rc);
    }
  }
  *out = p->view;
  return SQLITE_OK;
}

static int lt_close(sqlite3_file *pf) {
  lt_file *p = (lt_file *)pf;
  if (p->view) replica_view_release(p->view);
  if (p->pin) replica_view_release(p->pin);
  if (p->rep) replica_release(p->rep);
  free(p->page);
  free(p->open_err);
  memset(p, 0, sizeof(*p));
  return SQLITE_OK;
}

static void be32(uint8_t *at, uint32_t v) {
  at[0] = (uint8_t)(v >> 24);
  at[1] = (uint8_t)(v >> 16);
  at[2] = (uint8_t)(v >> 8);
  at[3] = (uint8_t)v;
}

/* Patches the header bytes of page 1 that fall inside buf (file bytes
** [off, off + n)). */
static void patch_page1(uint8_t *buf, sqlite3_int64 off, size_t n, uint64_t txid) {
  uint8_t hdr[96];
  if (off >= 96) return;
  memset(hdr, 0, sizeof(hdr));
  hdr[18] = 1;
  hdr[19] = 1;
  be32(hdr + 24, (uint32_t)txid);
  be32(hdr + 92, (uint32_t)txid);
  static const int kAt[] = {18, 19, 24, 25, 26, 27, 92, 93, 94, 95};
  for (size_t i = 0; i < sizeof(kAt) / sizeof(kAt[0]); i++) {
    sqlite3_int64 k = kAt[i];
    if (k >= off && k < off + (sqlite3_int64)n) buf[k - off] = hdr[k];
  }
}

static int lt_read(sqlite3_file *pf, void *out, int amt, sqlite3_int64 off) {
  lt_file *p = (lt_file *)pf;
  replica_view *v;
  uint8_t *dst = out;
  uint32_t ps;
  sqlite3_int64 size, n, done = 0;
  int rc;
  if (p->open_rc != SQLITE_OK) {
    /* SQLite reads the header at open, before any lock; reading "nothing"
    ** lets the open get as far as the auto-extension, which reports why. */
    memset(out, 0, (size_t)amt);
    return SQLITE_IOERR_SHORT_READ;
  }
  rc = current_view(p, &v);
  if (rc != SQLITE_OK) return rc;
  ps = replica_view_page_size(v);
  size = (sqlite3_int64)replica_view_commit(v) * ps;
  n = off >= size ? 0 : (off + amt > size ? size - off : amt);
  if (n > 0 && p->page_cap < ps) {
    uint8_t *np = realloc(p->page, ps);
    if (np == NULL) return SQLITE_IOERR_NOMEM;
    p->page = np;
    p->page_cap = ps;
  }
  while (done < n) {
    sqlite3_int64 at = off + done;
    uint32_t pgno = (uint32_t)(at / ps) + 1;
    uint32_t inpage = (uint32_t)(at % ps);
    uint32_t take = ps - inpage;
    ltx_error err = {0};
    if (take > n - done) take = (uint32_t)(n - done);
    uint8_t *into = (inpage == 0 && take == ps) ? dst + done : p->page;
    int lrc = replica_read_page(p->rep, v, pgno, into, &p->ra, &err);
    if (lrc != LTX_OK) {
      snprintf(p->last_error, sizeof(p->last_error), "read of page %u (TXID %016" PRIx64
               ") failed: %s", pgno, replica_view_txid(v), err.msg);
      vlog(3, "%s", p->last_error);
      return sqlite_code_for(lrc) == SQLITE_CANTOPEN ? SQLITE_IOERR_READ : sqlite_code_for(lrc);
    }
    if (into != dst + done) memcpy(dst + done, p->page + inpage, take);
    done += take;
  }
  patch_page1(dst, off, (size_t)n, replica_view_txid(v));
  if (n < amt) {
    memset(dst + n, 0, (size_t)(amt - n));
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

static int lt_write(sqlite3_file *pf, const void *buf, int amt, sqlite3_int64 off) {
  (void)pf;
  (void)buf;
  (void)amt;
  (void)off;
  vlog(2, "write refused: a litestream replica is read-only");
  return SQLITE_READONLY;
}

static int lt_truncate(sqlite3_file *pf, sqlite3_int64 size) {
  (void)pf;
  (void)size;
  return SQLITE_READONLY;
}

static int lt_sync(sqlite3_file *pf, int flags) {
  (void)pf;
  (void)flags;
  return SQLITE_OK;
}

static int lt_file_size(sqlite3_file *pf, sqlite3_int64 *pSize) {
  lt_file *p = (lt_file *)pf;
  replica_view *v;
  int rc;
  if (p->open_rc != SQLITE_OK) {
    *pSize = 0;
    return SQLITE_OK;
  }
  rc = current_view(p, &v);
  if (rc != SQLITE_OK) return rc;
  *pSize = (sqlite3_int64)replica_view_commit(v) * replica_view_page_size(v);
  return SQLITE_OK;
}

static int lt_lock(sqlite3_file *pf, int level) {
  lt_file *p = (lt_file *)pf;
  if (p->open_rc != SQLITE_OK) return p->open_rc;
  if (level > SQLITE_LOCK_SHARED) return SQLITE_READONLY;
  if (p->lock == SQLITE_LOCK_NONE && level >= SQLITE_LOCK_SHARED) {
    /* A new read transaction: adopt the newest view (or the pinned one). */
    replica_view *v;
    if (p->view) replica_view_release(p->view);
    p->view = NULL;
    int rc = current_view(p, &v);
    if (rc != SQLITE_OK) return rc;
  }
  p->lock = level;
  return SQLITE_OK;
}

static int lt_unlock(sqlite3_file *pf, int level) {
  lt_file *p = (lt_file *)pf;
  if (level < p->lock) p->lock = level;
  return SQLITE_OK;
}

static int lt_check_reserved(sqlite3_file *pf, int *pResOut) {
  (void)pf;
  *pResOut = 0;
  return SQLITE_OK;
}

static int lt_sector_size(sqlite3_file *pf) {
  (void)pf;
  return 4096;
}

static int lt_device_characteristics(sqlite3_file *pf) {
  (void)pf;
  return 0;
}

/* ---- what the SQL functions and PRAGMAs report ---- */

static char *fmt_txid(uint64_t txid) { return sqlite3_mprintf("%016llx", (unsigned long long)txid); }

static char *fmt_time(int64_t ms) {
  char ts[LTX_TIME_CAP];
  return sqlite3_mprintf("%s", ltx_time_format(ms, ts, sizeof(ts)));
}

/* s as the body of a JSON string (quotes, backslashes, control bytes
** escaped) into out. */
static void json_escape(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c < 0x20) {
      n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
    } else {
      out[n++] = (char)c;
    }
  }
  out[n] = '\0';
}

static char *fmt_stats(lt_file *p) {
  replica_stat s;
  replica_view *v = NULL;
  char poll_error[sizeof(s.last_poll_error) * 2];
  current_view(p, &v);
  replica_stats(p->rep, &s);
  json_escape(s.last_poll_error, poll_error, sizeof(poll_error));
  typedef unsigned long long ull;
  return sqlite3_mprintf(
      "{\"txid\":\"%016llx\",\"commit\":%u,\"page_size\":%u,\"pinned\":%d,"
      "\"cache_hits\":%llu,\"cache_misses\":%llu,\"cache_bytes\":%llu,"
      "\"cache_limit\":%llu,\"cache_entries\":%llu,\"cache_evictions\":%llu,"
      "\"requests\":%llu,\"bytes_fetched\":%llu,\"coalesced\":%llu,"
      "\"polls\":%llu,\"poll_errors\":%llu,\"lag\":%lld,\"pending_files\":%llu,"
      "\"last_poll_error\":\"%s\"}",
      (ull)(v ? replica_view_txid(v) : 0), v ? replica_view_commit(v) : 0,
      v ? replica_view_page_size(v) : 0, p->pin != NULL, (ull)s.cache.hits, (ull)s.cache.misses,
      (ull)s.cache.bytes, (ull)s.cache.limit, (ull)s.cache.entries, (ull)s.cache.evictions,
      (ull)s.requests, (ull)s.bytes_fetched, (ull)s.coalesced, (ull)s.polls,
      (ull)s.poll_errors, (long long)replica_lag_seconds(p->rep), (ull)s.pending_files,
      poll_error);
}

/* Moves the connection to the state at ts ('LATEST' = follow the newest);
** the next read transaction sees it. NULL or a message to sqlite3_free. */
static char *set_time(lt_file *p, const char *ts) {
  ltx_error err = {0};
  replica_view *v = NULL;
  int64_t ms;
  if (ts == NULL) return sqlite3_mprintf("litestream_set_time: NULL time");
  if (strcasecmp(ts, "LATEST") == 0) {
    if (p->pin) replica_view_release(p->pin);
    p->pin = NULL;
    p->pin_time_ms = -1;
    return NULL;
  }
  ms = ltx_time_parse(ts);
  if (ms < 0)
    return sqlite3_mprintf("litestream_set_time: '%s' is not an RFC 3339 time or 'LATEST'", ts);
  /* The newest state whose files were all written strictly before ts, as
  ** restore --timestamp has it (LTX.md section 3). */
  if (replica_view_at(p->rep, 0, ms, &v, &err) != LTX_OK)
    return sqlite3_mprintf("litestream_set_time: %s", err.msg);
  if (p->pin) replica_view_release(p->pin);
  p->pin = v;
  p->pin_time_ms = ms;
  return NULL;
}

/* PRAGMA litestream_txid | litestream_lag | litestream_time [= ts] |
** ltvfs_stats | ltvfs_pinned_txid. */
static int file_pragma(lt_file *p, char **azArg) {
  const char *name = azArg[1], *val = azArg[2];
  replica_view *v = NULL;
  int rc;
  if (strcasecmp(name, "litestream_txid") && strcasecmp(name, "litestream_lag") &&
      strcasecmp(name, "litestream_time") && strcasecmp(name, "ltvfs_stats") &&
      strcasecmp(name, "ltvfs_pinned_txid") && strcasecmp(name, "ltvfs_last_error"))
    return SQLITE_NOTFOUND;
  if (strcasecmp(name, "ltvfs_last_error") == 0 && val == NULL) {
    /* SQLite words every I/O error "disk I/O error"; the reason is here.
    ** Without a failure of its own, the connection reports why the replica
    ** is not following (the poller's last error), which it also reads. */
    const char *e = p->open_rc != SQLITE_OK ? p->open_err : p->last_error;
    if (e && *e) {
      azArg[0] = sqlite3_mprintf("%s", e);
    } else if (p->rep == NULL) {
      azArg[0] = NULL;
    } else {
      replica_stat s;
      replica_stats(p->rep, &s);
      azArg[0] = s.last_poll_error[0] ? sqlite3_mprintf("poll: %s", s.last_poll_error) : NULL;
    }
    return SQLITE_OK;
  }
  if (p->open_rc != SQLITE_OK) {
    azArg[0] = sqlite3_mprintf("%s", p->open_err ? p->open_err : "open failed");
    return SQLITE_ERROR;
  }
  if (strcasecmp(name, "litestream_time") == 0 && val != NULL) {
    char *e = set_time(p, val);
    if (e) {
      azArg[0] = e;
      return SQLITE_ERROR;
    }
    return SQLITE_OK;
  }
  if (val != NULL) {
    azArg[0] = sqlite3_mprintf("PRAGMA %s is read-only", name);
    return SQLITE_ERROR;
  }
  if (strcasecmp(name, "litestream_lag") == 0) {
    azArg[0] = sqlite3_mprintf("%lld", (long long)replica_lag_seconds(p->rep));
    return SQLITE_OK;
  }
  if (strcasecmp(name, "ltvfs_stats") == 0) {
    azArg[0] = fmt_stats(p);
    return SQLITE_OK;
  }
  if (strcasecmp(name, "ltvfs_pinned_txid") == 0) {
    azArg[0] = p->pin ? fmt_txid(replica_view_txid(p->pin)) : NULL;
    return SQLITE_OK;
  }
  if (p->pin) {
    v = p->pin;
  } else {
    /* Outside a read transaction, report what the next one will see. */
    if (p->lock == SQLITE_LOCK_NONE && p->view) {
      replica_view_release(p->view);
      p->view = NULL;
    }
    if ((rc = current_view(p, &v)) != SQLITE_OK) return rc;
  }
  azArg[0] = strcasecmp(name, "litestream_txid") == 0
                 ? fmt_txid(replica_view_txid(v))
                 : fmt_time(replica_view_timestamp_ms(v));
  return SQLITE_OK;
}

static int lt_file_control(sqlite3_file *pf, int op, void *arg) {
  lt_file *p = (lt_file *)pf;
  switch (op) {
    case SQLITE_FCNTL_PRAGMA:
      return file_pragma(p, (char **)arg);
    case SQLITE_FCNTL_VFSNAME:
      *(char **)arg = sqlite3_mprintf("litestream");
      return SQLITE_OK;
    default:
      return SQLITE_NOTFOUND;
  }
}

static const sqlite3_io_methods lt_io_methods = {
    1, /* no xShm*: WAL mode cannot be entered */
    lt_close, lt_read, lt_write, lt_truncate, lt_sync, lt_file_size, lt_lock, lt_unlock,
    lt_check_reserved, lt_file_control, lt_sector_size, lt_device_characteristics,
    NULL, NULL, NULL, NULL, NULL, NULL};

/* ---- the VFS ---- */

static int open_replica(lt_file *p, const char *zName, ltx_error *err) {
  lt_config c;
  int rc = config_read(zName, &c, err);
  if (rc != LTX_OK) return rc;
  rc = replica_acquire(c.url, &c.rc, &p->rep, err);
  if (rc != LTX_OK) return rc;
  p->pin_time_ms = c.time_ms;
  if (c.txid || c.time_ms >= 0) {
    /* time=: files written strictly before it, as in set_time. */
    rc = replica_view_at(p->rep, c.txid, c.time_ms, &p->pin, err);
  } else {
    rc = replica_latest(p->rep, &p->view, err);
  }
  return rc;
}

static int lt_open(sqlite3_vfs *vfs, const char *zName, sqlite3_file *pf, int flags,
                   int *pOutFlags) {
  lt_file *p = (lt_file *)pf;
  ltx_error err = {0};
  int rc;
  (void)vfs;
  if (!(flags & SQLITE_OPEN_MAIN_DB)) {
    if (flags & SQLITE_OPEN_WAL) {
      vlog(3, "%s: WAL mode is not available on a litestream replica", zName ? zName : "?");
      return SQLITE_CANTOPEN;
    }
    /* Journals, temp databases, sort and statement files stay local. */
    return g_base->xOpen(g_base, zName, pf, flags, pOutFlags);
  }
  log_configure();
  {
    const char *h = getenv("LITESTREAM_HYDRATION_ENABLED");
    if (h && (strcmp(h, "true") == 0 || strcmp(h, "1") == 0))
      vlog(2, "LITESTREAM_HYDRATION_ENABLED: a hydrated local image is not built yet; "
              "pages are served through the in-memory page cache (cache_size)");
  }
  memset(p, 0, sizeof(*p));
  p->base.pMethods = &lt_io_methods;
  p->pin_time_ms = -1;
  rc = open_replica(p, zName, &err);
  if (rc != LTX_OK) {
    p->open_rc = SQLITE_CANTOPEN;
    p->open_err = strdup(err.msg[0] ? err.msg : ltx_err_name(rc));
    vlog(3, "cannot open %s: %s", zName ? zName : "?", p->open_err ? p->open_err : "");
  }
  if (pOutFlags)
    *pOutFlags = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_READONLY;
  return SQLITE_OK;
}

static int lt_delete(sqlite3_vfs *vfs, const char *zName, int syncDir) {
  (void)vfs;
  return g_base->xDelete(g_base, zName, syncDir);
}

static int ends_with(const char *z, const char *suffix) {
  size_t n = strlen(z), m = strlen(suffix);
  return n >= m && strcmp(z + n - m, suffix) == 0;
}

static int lt_access(sqlite3_vfs *vfs, const char *zName, int flags, int *pResOut) {
  (void)vfs;
  /* A replica has no journal or WAL: a stray local file of that name must
  ** not make SQLite attempt a hot-journal rollback or a WAL recovery. */
  if (ends_with(zName, "-journal") || ends_with(zName, "-wal")) {
    *pResOut = 0;
    return SQLITE_OK;
  }
  return g_base->xAccess(g_base, zName, flags, pResOut);
}

static int lt_full_pathname(sqlite3_vfs *vfs, const char *zName, int nOut, char *zOut) {
  (void)vfs;
  return g_base->xFullPathname(g_base, zName, nOut, zOut);
}

static void *lt_dlopen(sqlite3_vfs *vfs, const char *z) {
  (void)vfs;
  return g_base->xDlOpen(g_base, z);
}
static void lt_dlerror(sqlite3_vfs *vfs, int n, char *z) {
  (void)vfs;
  g_base->xDlError(g_base, n, z);
}
static void (*lt_dlsym(sqlite3_vfs *vfs, void *h, const char *z))(void) {
  (void)vfs;
  return g_base->xDlSym(g_base, h, z);
}
static void lt_dlclose(sqlite3_vfs *vfs, void *h) {
  (void)vfs;
  g_base->xDlClose(g_base, h);
}
static int lt_randomness(sqlite3_vfs *vfs, int n, char *z) {
  (void)vfs;
  return g_base->xRandomness(g_base, n, z);
}
static int lt_sleep(sqlite3_vfs *vfs, int us) {
  (void)vfs;
  return g_base->xSleep(g_base, us);
}
static int lt_current_time(sqlite3_vfs *vfs, double *t) {
  (void)vfs;
  return g_base->xCurrentTime(g_base, t);
}
static int lt_get_last_error(sqlite3_vfs *vfs, int n, char *z) {
  (void)vfs;
  return g_base->xGetLastError ? g_base->xGetLastError(g_base, n, z) : 0;
}
static int lt_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *t) {
  (void)vfs;
  if (g_base->iVersion >= 2 && g_base->xCurrentTimeInt64)
    return g_base->xCurrentTimeInt64(g_base, t);
  double d;
  int rc = g_base->xCurrentTime(g_base, &d);
  *t = (sqlite3_int64)(d * 86400000.0);
  return rc;
}

static sqlite3_vfs g_vfs = {
    2, 0, 1024, NULL, "litestream", NULL,
    lt_open, lt_delete, lt_access, lt_full_pathname, lt_dlopen, lt_dlerror, lt_dlsym,
    lt_dlclose, lt_randomness, lt_sleep, lt_current_time, lt_get_last_error,
    lt_current_time_int64, NULL, NULL, NULL};

static pthread_mutex_t g_register_mutex = PTHREAD_MUTEX_INITIALIZER;

int vfs_register_vfs(void) {
  int rc = SQLITE_OK;
  pthread_mutex_lock(&g_register_mutex);
  if (g_base == NULL) {
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (base == NULL) {
      rc = SQLITE_ERROR;
      goto out;
    }
    g_base = base;
    g_vfs.szOsFile = base->szOsFile > (int)sizeof(lt_file) ? base->szOsFile : (int)sizeof(lt_file);
    g_vfs.mxPathname = base->mxPathname;
    replica_set_log(vfs_log);
    rc = sqlite3_vfs_register(&g_vfs, 0);
    if (rc != SQLITE_OK) g_base = NULL;
  }
out:
  pthread_mutex_unlock(&g_register_mutex);
  return rc;
}

/* ---- SQL functions ---- */

/* The litestream file of schema (or the first litestream database). */
static lt_file *file_of(sqlite3 *db, const char *schema) {
  sqlite3_file *pf = NULL;
  if (schema != NULL) {
    if (sqlite3_file_control(db, schema, SQLITE_FCNTL_FILE_POINTER, &pf) == SQLITE_OK && pf &&
        pf->pMethods == &lt_io_methods)
      return (lt_file *)pf;
    return NULL;
  }
  for (int i = 0;; i++) {
    const char *name = sqlite3_db_name(db, i);
    if (name == NULL) break;
    pf = NULL;
    if (sqlite3_file_control(db, name, SQLITE_FCNTL_FILE_POINTER, &pf) == SQLITE_OK && pf &&
        pf->pMethods == &lt_io_methods)
      return (lt_file *)pf;
  }
  return NULL;
}

/* Finds the file for a function call whose optional last argument (index
** schema_arg) names the schema; reports the error itself when there is none. */
static lt_file *call_file(sqlite3_context *ctx, int argc, sqlite3_value **argv, int schema_arg,
                          const char *fn) {
  const char *schema = argc > schema_arg ? (const char *)sqlite3_value_text(argv[schema_arg]) : NULL;
  lt_file *p = file_of(sqlite3_context_db_handle(ctx), schema);
  if (p == NULL) {
    char *m = schema ? sqlite3_mprintf("%s: database '%s' is not a litestream replica", fn, schema)
                     : sqlite3_mprintf("%s: no litestream replica is open on this connection", fn);
    sqlite3_result_error(ctx, m ? m : fn, -1);
    sqlite3_free(m);
    return NULL;
  }
  if (p->open_rc != SQLITE_OK) {
    char *m = sqlite3_mprintf("%s: %s", fn, p->open_err ? p->open_err : "open failed");
    sqlite3_result_error(ctx, m ? m : fn, -1);
    sqlite3_free(m);
    return NULL;
  }
  return p;
}

static void result_owned_text(sqlite3_context *ctx, char *z) {
  if (z == NULL) sqlite3_result_null(ctx);
  else sqlite3_result_text(ctx, z, -1, sqlite3_free);
}

static void fn_pragma_like(sqlite3_context *ctx, int argc, sqlite3_value **argv, const char *name) {
  lt_file *p = call_file(ctx, argc, argv, 0, name);
  char *az[3] = {NULL, (char *)name, NULL};
  if (p == NULL) return;
  int rc = file_pragma(p, az);
  if (rc != SQLITE_OK) {
    sqlite3_result_error(ctx, az[0] ? az[0] : name, -1);
    sqlite3_result_error_code(ctx, rc == SQLITE_ERROR ? SQLITE_ERROR : rc);
    sqlite3_free(az[0]);
    return;
  }
  result_owned_text(ctx, az[0]);
}

static void fn_txid(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "litestream_txid");
}
static void fn_time(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "litestream_time");
}
static void fn_stats(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "ltvfs_stats");
}
static void fn_pinned(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "ltvfs_pinned_txid");
}
static void fn_last_error(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *schema = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : NULL;
  lt_file *p = file_of(sqlite3_context_db_handle(ctx), schema);
  char *az[3] = {NULL, (char *)"ltvfs_last_error", NULL};
  if (p == NULL) { /* no replica here: no replica error either */
    sqlite3_result_null(ctx);
    return;
  }
  file_pragma(p, az);
  result_owned_text(ctx, az[0]);
}
static void fn_lag(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  lt_file *p = call_file(ctx, argc, argv, 0, "litestream_lag");
  if (p) sqlite3_result_int64(ctx, replica_lag_seconds(p->rep));
}
static void fn_set_time(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  lt_file *p = call_file(ctx, argc, argv, 1, "litestream_set_time");
  char *e;
  if (p == NULL) return;
  e = set_time(p, (const char *)sqlite3_value_text(argv[0]));
  if (e) {
    sqlite3_result_error(ctx, e, -1);
    sqlite3_free(e);
    return;
  }
  sqlite3_result_null(ctx);
}

int vfs_register_functions(sqlite3 *db) {
  static const struct {
    const char *name;
    int nmin, nmax;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
  } kFn[] = {
      {"litestream_txid", 0, 1, fn_txid},     {"litestream_lag", 0, 1, fn_lag},
      {"litestream_time", 0, 1, fn_time},     {"litestream_set_time", 1, 2, fn_set_time},
      {"ltvfs_pinned_txid", 0, 1, fn_pinned}, {"ltvfs_stats", 0, 1, fn_stats},
      {"ltvfs_last_error", 0, 1, fn_last_error},
  };
  int rc = SQLITE_OK;
  for (size_t i = 0; i < sizeof(kFn) / sizeof(kFn[0]) && rc == SQLITE_OK; i++)
    for (int n = kFn[i].nmin; n <= kFn[i].nmax && rc == SQLITE_OK; n++)
      rc = sqlite3_create_function(db, kFn[i].name, n, SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL,
                                   kFn[i].fn, NULL, NULL);
  return rc;
}

int vfs_open_error(sqlite3 *db, char **pzErrMsg) {
  sqlite3_file *pf = NULL;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &pf) != SQLITE_OK || pf == NULL ||
      pf->pMethods != &lt_io_methods)
    return SQLITE_OK;
  lt_file *p = (lt_file *)pf;
  if (p->open_rc == SQLITE_OK) return SQLITE_OK;
  if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("ltvfs: %s", p->open_err ? p->open_err : "open failed");
  return p->open_rc;
}
