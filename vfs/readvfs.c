/*
** readvfs.c: the replica VFS "litestream" and the I/O methods of its files.
** (Its configuration is config.c, its SQL functions and PRAGMAs functions.c,
** its logging log.c.)
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
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include "vfs/replica_file.h"
#include "vfs/vfs.h"

/* ---- the file ---- */

static sqlite3_vfs *g_base; /* the default VFS we wrap */

int vfs_sqlite_code_for(int code) {
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
  if (store_error_is_corrupt(code)) return SQLITE_IOERR_CORRUPTFS;
  if (code == CACHE_ERR_PAGE_SIZE) return SQLITE_IOERR_CORRUPTFS;
  return SQLITE_IOERR_READ;
}

int vfs_current_view(lt_file *p, replica_view **out) {
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
      vfs_logf(REPLICA_LOG_ERROR, "%s", err.msg);
      return vfs_sqlite_code_for(rc);
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
  rc = vfs_current_view(p, &v);
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
      vfs_logf(REPLICA_LOG_ERROR, "%s", p->last_error);
      return vfs_sqlite_code_for(lrc) == SQLITE_CANTOPEN ? SQLITE_IOERR_READ : vfs_sqlite_code_for(lrc);
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
  vfs_logf(REPLICA_LOG_WARN, "write refused: a litestream replica is read-only");
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
  rc = vfs_current_view(p, &v);
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
    int rc = vfs_current_view(p, &v);
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

static int lt_file_control(sqlite3_file *pf, int op, void *arg) {
  lt_file *p = (lt_file *)pf;
  switch (op) {
    case SQLITE_FCNTL_PRAGMA:
      return vfs_file_pragma(p, (char **)arg);
    case SQLITE_FCNTL_VFSNAME:
      *(char **)arg = sqlite3_mprintf("litestream");
      return SQLITE_OK;
    default:
      return SQLITE_NOTFOUND;
  }
}

const sqlite3_io_methods vfs_replica_io_methods = {
    .iVersion = 1, /* no xShm*: WAL mode cannot be entered */
    .xClose = lt_close,
    .xRead = lt_read,
    .xWrite = lt_write,
    .xTruncate = lt_truncate,
    .xSync = lt_sync,
    .xFileSize = lt_file_size,
    .xLock = lt_lock,
    .xUnlock = lt_unlock,
    .xCheckReservedLock = lt_check_reserved,
    .xFileControl = lt_file_control,
    .xSectorSize = lt_sector_size,
    .xDeviceCharacteristics = lt_device_characteristics,
};

/* ---- the VFS ---- */

/* The lookup config.c reads URI parameters with. */
static const char *uri_param(void *zName, const char *key) {
  return zName ? sqlite3_uri_parameter((const char *)zName, key) : NULL;
}

static int open_replica(lt_file *p, const char *zName, ltx_error *err) {
  vfs_config c;
  int rc = vfs_config_read(uri_param, (void *)zName, &c, err);
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

/* The Go VFS's write mode (LITESTREAM_WRITE_ENABLED=true): every file of
** this VFS is the primary VFS's, on the local database that
** lt_full_pathname named (vfs_write_mode_db_path). */
static sqlite3_vfs *write_mode_vfs(void) { return vfs_write_mode() ? vfs_primary_vfs() : NULL; }

static int lt_open(sqlite3_vfs *vfs, const char *zName, sqlite3_file *pf, int flags,
                   int *pOutFlags) {
  lt_file *p = (lt_file *)pf;
  ltx_error err = {0};
  sqlite3_vfs *w = write_mode_vfs();
  int rc;
  (void)vfs;
  if (w != NULL) return vfs_primary_open_write_mode(zName, pf, flags, pOutFlags);
  if (!(flags & SQLITE_OPEN_MAIN_DB)) {
    if (flags & SQLITE_OPEN_WAL) {
      vfs_logf(REPLICA_LOG_ERROR, "%s: WAL mode is not available on a litestream replica", zName ? zName : "?");
      return SQLITE_CANTOPEN;
    }
    /* Journals, temp databases, sort and statement files stay local. */
    return g_base->xOpen(g_base, zName, pf, flags, pOutFlags);
  }
  vfs_log_configure();
  memset(p, 0, sizeof(*p));
  p->base.pMethods = &vfs_replica_io_methods;
  p->pin_time_ms = -1;
  rc = open_replica(p, zName, &err);
  if (rc != LTX_OK) {
    p->open_rc = SQLITE_CANTOPEN;
    p->open_err = strdup(err.msg[0] ? err.msg : ltx_err_name(rc));
    vfs_logf(REPLICA_LOG_ERROR, "cannot open %s: %s", zName ? zName : "?", p->open_err ? p->open_err : "");
  }
  if (pOutFlags)
    *pOutFlags = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_READONLY;
  return SQLITE_OK;
}

static int lt_delete(sqlite3_vfs *vfs, const char *zName, int syncDir) {
  sqlite3_vfs *w = write_mode_vfs();
  (void)vfs;
  if (w != NULL) return w->xDelete(w, zName, syncDir);
  return g_base->xDelete(g_base, zName, syncDir);
}

static int ends_with(const char *z, const char *suffix) {
  size_t n = strlen(z), m = strlen(suffix);
  return n >= m && strcmp(z + n - m, suffix) == 0;
}

static int lt_access(sqlite3_vfs *vfs, const char *zName, int flags, int *pResOut) {
  sqlite3_vfs *w = write_mode_vfs();
  (void)vfs;
  if (w != NULL) return w->xAccess(w, zName, flags, pResOut);
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
  if (vfs_write_mode() && zName && zName[0] && strcmp(zName, ":memory:") != 0) {
    /* The name the application gave stands for the replica (as in the Go
    ** VFS); what SQLite opens, and names its WAL and journal after, is the
    ** local database. */
    char path[4096], *slash;
    ltx_error err = {0};
    if (vfs_write_mode_db_path(path, sizeof path, &err) != LTX_OK) {
      vfs_logf(REPLICA_LOG_ERROR, "litestream (write mode): %s", err.msg);
      return SQLITE_CANTOPEN;
    }
    if ((slash = strrchr(path, '/')) != NULL) {
      *slash = '\0';
      if (cache_make_dirs(path, &err) != LTX_OK) {
        vfs_logf(REPLICA_LOG_ERROR, "litestream (write mode): %s", err.msg);
        return SQLITE_CANTOPEN;
      }
      *slash = '/';
    }
    return g_base->xFullPathname(g_base, path, nOut, zOut);
  }
  return g_base->xFullPathname(g_base, zName, nOut, zOut);
}

static sqlite3_vfs g_vfs = {
    .iVersion = 2,
    .szOsFile = 0,       /* set at registration: the larger of ours and the base's */
    .mxPathname = 1024,  /* likewise the base's */
    .zName = "litestream",
    .xOpen = lt_open,
    .xDelete = lt_delete,
    .xAccess = lt_access,
    .xFullPathname = lt_full_pathname,
    /* the system methods: the base's (vfs_passthru_init, at registration) */
};

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
    vfs_passthru_init(&g_vfs, base);
    g_vfs.szOsFile = base->szOsFile > (int)sizeof(lt_file) ? base->szOsFile : (int)sizeof(lt_file);
    /* Write mode hands files to the primary VFS: room for its files too. */
    rc = vfs_register_primary_vfs();
    if (rc != SQLITE_OK) goto out;
    if (vfs_primary_vfs()->szOsFile > g_vfs.szOsFile) g_vfs.szOsFile = vfs_primary_vfs()->szOsFile;
    g_vfs.mxPathname = base->mxPathname;
    replica_set_log(vfs_log);
    rc = sqlite3_vfs_register(&g_vfs, 0);
    if (rc != SQLITE_OK) g_base = NULL;
  }
out:
  pthread_mutex_unlock(&g_register_mutex);
  return rc;
}
