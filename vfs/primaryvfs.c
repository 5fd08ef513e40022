/*
** primaryvfs.c: the write-side VFS "litestream-primary".
**
**   .load ./libltvfs
**   .open 'file:app.db?vfs=litestream-primary&replica=s3://bucket/app'
**
** A shim over the default VFS (cksumvfs's pattern: the real file lives right
** after our struct, szOsFile is the sum). The database stays an ordinary
** local file that plain sqlite3 opens, in whatever journal mode the
** application picks; this file only watches what SQLite does and tells the
** primary layer (primary/primary.h), which captures and uploads.
**
** What is watched, and why there:
**   WAL, xWrite of a 24-byte frame header   a commit frame (non-zero "size
**                          after commit") notes a commit for the capture;
**                          the first frame of a transaction asks whether
**                          writes are allowed (lease, spool bound)
**   WAL, xWrite at offset 0 (the header)    a restart is about to overwrite
**                          the WAL: sealed first (primary_wal_will_reset)
**   WAL, xTruncate to 0; xDelete of a WAL   likewise sealed first
**   main, xWrite outside WAL mode           a rollback-mode page: noted
**   journal finalised (deleted, truncated to 0, header zeroed) or the
**   lock dropped to SHARED                  the rollback-mode transaction is
**                          committed: its pages are captured before the
**                          next writer can get in
**   main, xLock(RESERVED) outside WAL mode  writes allowed?
** A rollback-mode transaction that spilled pages into the database file and
** then rolled back is captured too, as what the file holds after the
** rollback: SQLite restores the pages it journaled but not the free pages
** it reused, so that TXID changes free pages only, and the replica stays
** equal to the database page for page.
**   xShmLock unlock of the WAL write lock   sync=remote: wait for the upload
**                          (after the lock is released, so commits of other
**                          connections share the upload: group commit)
** A main file is in WAL mode while a WAL file of it is open through this
** VFS; SQLite opens the WAL before its first WAL access and closes it
** when it leaves WAL mode.
**
** Not watched (documented limits): locking_mode=EXCLUSIVE with
** journal_mode=MEMORY or OFF has no commit point visible to a VFS until the
** lock drops; such commits are captured at the next lock change or close.
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

#include "vfs/vfs.h"

enum { PV_OTHER = 0, PV_MAIN, PV_WAL, PV_JOURNAL };

typedef struct pv_file pv_file;
struct pv_file {
  sqlite3_file base;
  sqlite3_file *real;        /* the default VFS's file, right after this struct */
  int kind;
  int real_open;
  pv_file *main;             /* WAL and journal: their database's file */
  /* main only: */
  primary *prim;
  int sync_remote;
  int wal_open;              /* a WAL of it is open: WAL mode */
  int lock;
  int txn_checked;           /* WAL mode: this transaction's writes were allowed */
  int checked;               /* the start-up check ran at the first SHARED lock */
  int captured;              /* rollback mode: a commit was captured under this lock */
  int commit_pending;        /* a commit frame was written, not yet waited for */
  uint32_t *dirty;           /* rollback mode: pages written in this transaction */
  size_t n_dirty, cap_dirty;
  int open_rc;
  char *open_err;
  char last_error[600];
};

static sqlite3_vfs *g_base;
extern const sqlite3_io_methods vfs_primary_io_methods;

static int fail(pv_file *p, int code, const ltx_error *err) {
  pv_file *m = p->main ? p->main : p;
  snprintf(m->last_error, sizeof m->last_error, "%s", err->msg);
  vfs_logf(REPLICA_LOG_ERROR, "litestream-primary: %s", err->msg);
  return code;
}

static int code_for(int primary_code) {
  switch (primary_code) {
    case PRIMARY_ERR_SPOOL_FULL: return SQLITE_FULL;
    case PRIMARY_ERR_LEASE:
    case PRIMARY_ERR_CONFLICT: return SQLITE_READONLY;
    default: return SQLITE_IOERR;
  }
}

static void capture_rollback(pv_file *m) {
  ltx_error err = {0};
  if (m->n_dirty == 0 || m->prim == NULL || m->wal_open) return;
  if (primary_rollback_committed(m->prim, m->dirty, m->n_dirty, &err) != LTX_OK)
    fail(m, SQLITE_IOERR, &err); /* committed locally: the next capture is a snapshot */
  m->n_dirty = 0;
  m->captured = 1;
  if (m->sync_remote) m->commit_pending = 1;
}

static void wait_remote(pv_file *m) {
  ltx_error err = {0};
  if (!m->commit_pending || m->prim == NULL) return;
  m->commit_pending = 0;
  if (m->sync_remote && primary_commit_wait(m->prim, &err) != LTX_OK) fail(m, SQLITE_IOERR, &err);
}

/* ---- I/O methods ---- */

static int pv_close(sqlite3_file *pf) {
  pv_file *p = (pv_file *)pf;
  int rc = SQLITE_OK;
  if (p->real_open) rc = p->real->pMethods->xClose(p->real);
  if (p->kind == PV_WAL && p->main) p->main->wal_open = 0;
  if (p->kind == PV_MAIN) {
    capture_rollback(p);
    primary_release(p->prim);
    free(p->dirty);
    free(p->open_err);
  }
  return rc;
}

static int pv_read(sqlite3_file *pf, void *buf, int amt, sqlite3_int64 off) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) {
    /* SQLite reads the header at open, before any lock; reading "nothing"
    ** lets the open get as far as the auto-extension, which reports why. */
    memset(buf, 0, (size_t)amt);
    return SQLITE_IOERR_SHORT_READ;
  }
  return p->real->pMethods->xRead(p->real, buf, amt, off);
}

static int note_dirty(pv_file *m, uint32_t pgno) {
  if (m->n_dirty == m->cap_dirty) {
    size_t cap = m->cap_dirty ? m->cap_dirty * 2 : 64;
    uint32_t *d = realloc(m->dirty, cap * sizeof *d);
    if (d == NULL) return SQLITE_NOMEM;
    m->dirty = d;
    m->cap_dirty = cap;
  }
  m->dirty[m->n_dirty++] = pgno;
  return SQLITE_OK;
}

static int pv_write(sqlite3_file *pf, const void *buf, int amt, sqlite3_int64 off) {
  pv_file *p = (pv_file *)pf;
  pv_file *m = p->main;
  ltx_error err = {0};
  int rc;
  if (!p->real_open) return p->open_rc;
  if (p->kind == PV_WAL && m && m->prim) {
    if (off == 0 && amt >= 32) {
      /* (a restart or a new WAL) the generation before is sealed first */
      if (primary_wal_will_reset(m->prim, buf, &err) != LTX_OK) return fail(p, SQLITE_IOERR_WRITE, &err);
    } else if (amt == 24 && !m->txn_checked) {
      rc = primary_write_allowed(m->prim, 0, &err);
      if (rc != LTX_OK) return fail(p, code_for(rc), &err);
      m->txn_checked = 1;
    }
  }
  if (p->kind == PV_MAIN && !p->wal_open && p->prim && amt > 0 && off % amt == 0) {
    rc = note_dirty(p, (uint32_t)(off / amt) + 1);
    if (rc != SQLITE_OK) return rc;
  }
  rc = p->real->pMethods->xWrite(p->real, buf, amt, off);
  if (rc == SQLITE_OK && p->kind == PV_WAL && m && m->prim && amt == 24) {
    const uint8_t *h = buf;
    primary_wal_frame_written(m->prim, h);
    if (h[4] | h[5] | h[6] | h[7]) {
      m->txn_checked = 0;
      if (m->sync_remote) m->commit_pending = 1;
    }
  }
  if (rc == SQLITE_OK && p->kind == PV_JOURNAL && m && off == 0 && amt >= 8) {
    static const uint8_t zero[8];
    if (memcmp(buf, zero, 8) == 0) capture_rollback(m); /* PERSIST: header zeroed = committed */
  }
  return rc;
}

static int pv_truncate(sqlite3_file *pf, sqlite3_int64 size) {
  pv_file *p = (pv_file *)pf;
  ltx_error err = {0};
  int rc;
  if (!p->real_open) return p->open_rc;
  if (p->kind == PV_WAL && size == 0 && p->main && p->main->prim &&
      primary_wal_will_reset(p->main->prim, NULL, &err) != LTX_OK)
    return fail(p, SQLITE_IOERR_TRUNCATE, &err);
  rc = p->real->pMethods->xTruncate(p->real, size);
  if (rc == SQLITE_OK && p->kind == PV_JOURNAL && size == 0 && p->main) capture_rollback(p->main);
  return rc;
}

static int pv_sync(sqlite3_file *pf, int flags) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) return p->open_rc;
  return p->real->pMethods->xSync(p->real, flags);
}

static int pv_file_size(sqlite3_file *pf, sqlite3_int64 *size) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) {
    *size = 0;
    return SQLITE_OK;
  }
  return p->real->pMethods->xFileSize(p->real, size);
}

static int pv_lock(sqlite3_file *pf, int level) {
  pv_file *p = (pv_file *)pf;
  int rc;
  if (!p->real_open) return p->open_rc;
  if (p->kind == PV_MAIN && p->prim && level == SQLITE_LOCK_RESERVED && !p->wal_open) {
    ltx_error err = {0};
    rc = primary_write_allowed(p->prim, 1, &err);
    if (rc != LTX_OK) return fail(p, code_for(rc), &err);
  }
  rc = p->real->pMethods->xLock(p->real, level);
  if (rc == SQLITE_OK) p->lock = level;
  if (rc == SQLITE_OK && p->kind == PV_MAIN && p->prim && level == SQLITE_LOCK_SHARED && !p->checked) {
    ltx_error err = {0};
    p->checked = 1;
    if (primary_check(p->prim, &err) != LTX_OK) fail(p, SQLITE_IOERR, &err);
  }
  return rc;
}

static int pv_unlock(sqlite3_file *pf, int level) {
  pv_file *p = (pv_file *)pf;
  int rc;
  if (!p->real_open) return p->open_rc;
  if (p->kind == PV_MAIN && level <= SQLITE_LOCK_SHARED) {
    capture_rollback(p);
    if (p->captured && p->prim) {
      ltx_error err = {0};
      p->captured = 0;
      if (primary_rollback_settled(p->prim, &err) != LTX_OK) fail(p, SQLITE_IOERR, &err);
    }
  }
  rc = p->real->pMethods->xUnlock(p->real, level);
  if (rc == SQLITE_OK) p->lock = level;
  if (p->kind == PV_MAIN && level <= SQLITE_LOCK_SHARED) wait_remote(p);
  return rc;
}

static int pv_check_reserved(sqlite3_file *pf, int *out) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) return p->open_rc;
  return p->real->pMethods->xCheckReservedLock(p->real, out);
}

/* PRAGMA litestream_sync / litestream_txid / ltvfs_primary on a primary. */
static int primary_pragma(pv_file *p, char **azArg) {
  const char *name = azArg[1];
  ltx_error err = {0};
  if (sqlite3_stricmp(name, "litestream_sync") == 0) {
    long timeout = azArg[2] ? vfs_parse_duration_ms(azArg[2]) : 30000;
    if (timeout <= 0) {
      azArg[0] = sqlite3_mprintf("litestream_sync=%s: a timeout (ms, or 30s)", azArg[2]);
      return SQLITE_ERROR;
    }
    if (primary_sync(p->prim, timeout, &err) != LTX_OK) {
      fail(p, SQLITE_IOERR, &err);
      azArg[0] = sqlite3_mprintf("litestream_sync: %s", err.msg);
      return SQLITE_ERROR;
    }
    azArg[0] = sqlite3_mprintf("%016llx", (unsigned long long)primary_txid(p->prim));
    return SQLITE_OK;
  }
  if (sqlite3_stricmp(name, "litestream_txid") == 0) {
    azArg[0] = sqlite3_mprintf("%016llx", (unsigned long long)primary_txid(p->prim));
    return SQLITE_OK;
  }
  return SQLITE_NOTFOUND;
}

static int pv_file_control(sqlite3_file *pf, int op, void *arg) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) return op == SQLITE_FCNTL_PRAGMA ? SQLITE_NOTFOUND : p->open_rc;
  if (op == SQLITE_FCNTL_PRAGMA && p->kind == PV_MAIN && p->prim) {
    int rc = primary_pragma(p, (char **)arg);
    if (rc != SQLITE_NOTFOUND) return rc;
  }
  return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int pv_sector_size(sqlite3_file *pf) {
  pv_file *p = (pv_file *)pf;
  return p->real_open ? p->real->pMethods->xSectorSize(p->real) : 4096;
}

static int pv_device_characteristics(sqlite3_file *pf) {
  pv_file *p = (pv_file *)pf;
  return p->real_open ? p->real->pMethods->xDeviceCharacteristics(p->real) : 0;
}

static int pv_shm_map(sqlite3_file *pf, int pg, int pgsz, int extend, void volatile **pp) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) return p->open_rc;
  return p->real->pMethods->xShmMap(p->real, pg, pgsz, extend, pp);
}

static int pv_shm_lock(sqlite3_file *pf, int offset, int n, int flags) {
  pv_file *p = (pv_file *)pf;
  int rc;
  if (!p->real_open) return p->open_rc;
  rc = p->real->pMethods->xShmLock(p->real, offset, n, flags);
  /* offset 0 is WAL_WRITE_LOCK: its release ends a write transaction */
  if (rc == SQLITE_OK && p->kind == PV_MAIN && offset == 0 &&
      flags == (SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE)) {
    p->txn_checked = 0;
    wait_remote(p);
  }
  return rc;
}

static void pv_shm_barrier(sqlite3_file *pf) {
  pv_file *p = (pv_file *)pf;
  if (p->real_open) p->real->pMethods->xShmBarrier(p->real);
}

static int pv_shm_unmap(sqlite3_file *pf, int del) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) return SQLITE_OK;
  return p->real->pMethods->xShmUnmap(p->real, del);
}

static int pv_fetch(sqlite3_file *pf, sqlite3_int64 off, int amt, void **pp) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) return p->open_rc;
  return p->real->pMethods->xFetch(p->real, off, amt, pp);
}

static int pv_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *ptr) {
  pv_file *p = (pv_file *)pf;
  if (!p->real_open) return SQLITE_OK;
  return p->real->pMethods->xUnfetch(p->real, off, ptr);
}

const sqlite3_io_methods vfs_primary_io_methods = {
    .iVersion = 3,
    .xClose = pv_close,
    .xRead = pv_read,
    .xWrite = pv_write,
    .xTruncate = pv_truncate,
    .xSync = pv_sync,
    .xFileSize = pv_file_size,
    .xLock = pv_lock,
    .xUnlock = pv_unlock,
    .xCheckReservedLock = pv_check_reserved,
    .xFileControl = pv_file_control,
    .xSectorSize = pv_sector_size,
    .xDeviceCharacteristics = pv_device_characteristics,
    .xShmMap = pv_shm_map,
    .xShmLock = pv_shm_lock,
    .xShmBarrier = pv_shm_barrier,
    .xShmUnmap = pv_shm_unmap,
    .xFetch = pv_fetch,
    .xUnfetch = pv_unfetch,
};

/* ---- the VFS ---- */

static const char *uri_param(void *zName, const char *key) {
  return zName ? sqlite3_uri_parameter((const char *)zName, key) : NULL;
}

/* The database file of a WAL or journal SQLite opens, when it is ours. */
static pv_file *main_of(const char *zName) {
  sqlite3_file *f = sqlite3_database_file_object(zName);
  return f && f->pMethods == &vfs_primary_io_methods ? (pv_file *)f : NULL;
}

/* xOpen, with bootstrap='s default (vfs_primary_config_read). */
static int open_file(const char *zName, sqlite3_file *pf, int flags, int *pOutFlags,
                     int bootstrap_restore) {
  pv_file *p = (pv_file *)pf;
  int rc;
  memset(p, 0, sizeof *p);
  p->real = (sqlite3_file *)(p + 1);
  p->base.pMethods = &vfs_primary_io_methods;
  if (flags & SQLITE_OPEN_MAIN_DB) {
    primary_config c;
    ltx_error err = {0};
    p->kind = PV_MAIN;
    vfs_log_configure();
    rc = vfs_primary_config_read(uri_param, (void *)zName, bootstrap_restore, &c, &err);
    if (rc == LTX_OK) {
      c.db_path = zName;
      rc = primary_acquire(&c, &p->prim, &err);
    }
    if (rc != LTX_OK) {
      /* The reason reaches the application through the auto-extension
      ** (vfs_open_error), not as SQLite's "unable to open database file". */
      p->open_rc = rc == PRIMARY_ERR_LEASE ? SQLITE_BUSY : SQLITE_CANTOPEN;
      p->open_err = strdup(err.msg[0] ? err.msg : ltx_err_name(rc));
      vfs_logf(REPLICA_LOG_ERROR, "litestream-primary: cannot open %s for writing: %s",
               zName ? zName : "?", p->open_err ? p->open_err : "");
      if (pOutFlags) *pOutFlags = flags;
      return SQLITE_OK;
    }
    p->sync_remote = c.sync_remote;
  } else if (flags & SQLITE_OPEN_WAL) {
    p->kind = PV_WAL;
    p->main = main_of(zName);
  } else if (flags & SQLITE_OPEN_MAIN_JOURNAL) {
    p->kind = PV_JOURNAL;
    p->main = main_of(zName);
  }
  rc = g_base->xOpen(g_base, zName, p->real, flags, pOutFlags);
  if (rc != SQLITE_OK) {
    if (p->kind == PV_MAIN) {
      primary_release(p->prim);
      p->prim = NULL;
    }
    p->base.pMethods = NULL; /* SQLite does not close a file whose open failed */
    return rc;
  }
  p->real_open = 1;
  if (p->kind == PV_WAL && p->main) p->main->wal_open = 1;
  return SQLITE_OK;
}

static int pv_open(sqlite3_vfs *vfs, const char *zName, sqlite3_file *pf, int flags,
                   int *pOutFlags) {
  (void)vfs;
  return open_file(zName, pf, flags, pOutFlags, 0);
}

int vfs_primary_open_write_mode(const char *zName, sqlite3_file *pf, int flags, int *pOutFlags) {
  return open_file(zName, pf, flags, pOutFlags, 1);
}

static int ends_with(const char *z, const char *suffix) {
  size_t n = strlen(z), m = strlen(suffix);
  return n >= m && strcmp(z + n - m, suffix) == 0;
}

static int pv_delete(sqlite3_vfs *vfs, const char *zName, int syncDir) {
  (void)vfs;
  if (zName && (ends_with(zName, "-wal") || ends_with(zName, "-journal"))) {
    /* SQLite deletes a WAL after its last checkpoint, and a journal at a
    ** DELETE-mode commit: the seal and the rollback-mode capture. */
    pv_file *m = main_of(zName);
    if (m && m->prim && ends_with(zName, "-wal")) {
      ltx_error err = {0};
      if (primary_wal_will_reset(m->prim, NULL, &err) != LTX_OK) return fail(m, SQLITE_IOERR_DELETE, &err);
    }
    int rc = g_base->xDelete(g_base, zName, syncDir);
    if (rc == SQLITE_OK && m && ends_with(zName, "-journal")) capture_rollback(m);
    return rc;
  }
  return g_base->xDelete(g_base, zName, syncDir);
}

static int pv_access(sqlite3_vfs *vfs, const char *zName, int flags, int *pResOut) {
  (void)vfs;
  return g_base->xAccess(g_base, zName, flags, pResOut);
}
static int pv_full_pathname(sqlite3_vfs *vfs, const char *zName, int nOut, char *zOut) {
  (void)vfs;
  return g_base->xFullPathname(g_base, zName, nOut, zOut);
}

static sqlite3_vfs g_vfs = {
    .iVersion = 2,
    .szOsFile = 0,  /* set at registration: ours plus the base's */
    .mxPathname = 1024,
    .zName = "litestream-primary",
    .xOpen = pv_open,
    .xDelete = pv_delete,
    .xAccess = pv_access,
    .xFullPathname = pv_full_pathname,
    /* the system methods: the base's (vfs_passthru_init, at registration) */
};

static pthread_mutex_t g_register_mutex = PTHREAD_MUTEX_INITIALIZER;

int vfs_register_primary_vfs(void) {
  int rc = SQLITE_OK;
  pthread_mutex_lock(&g_register_mutex);
  if (g_base == NULL) {
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (base == NULL || base->iVersion < 2 || base->xCurrentTimeInt64 == NULL) {
      rc = SQLITE_ERROR;
      goto out;
    }
    g_base = base;
    vfs_passthru_init(&g_vfs, base);
    g_vfs.szOsFile = (int)sizeof(pv_file) + base->szOsFile;
    g_vfs.mxPathname = base->mxPathname;
    primary_set_log(vfs_log);
    rc = sqlite3_vfs_register(&g_vfs, 0);
    if (rc != SQLITE_OK) g_base = NULL;
  }
out:
  pthread_mutex_unlock(&g_register_mutex);
  return rc;
}

sqlite3_vfs *vfs_primary_vfs(void) { return g_base ? &g_vfs : NULL; }

primary *vfs_primary_of(sqlite3 *db, const char *schema, const char **open_err) {
  sqlite3_file *pf = NULL;
  pv_file *p;
  if (open_err) *open_err = NULL;
  if (sqlite3_file_control(db, schema ? schema : "main", SQLITE_FCNTL_FILE_POINTER, &pf) != SQLITE_OK ||
      pf == NULL || pf->pMethods != &vfs_primary_io_methods)
    return NULL;
  p = (pv_file *)pf;
  if (p->open_rc != SQLITE_OK && open_err) *open_err = p->open_err ? p->open_err : "open failed";
  return p->prim;
}

int vfs_primary_open_error(sqlite3 *db, char **pzErrMsg) {
  sqlite3_file *pf = NULL;
  pv_file *p;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &pf) != SQLITE_OK || pf == NULL ||
      pf->pMethods != &vfs_primary_io_methods)
    return SQLITE_OK;
  p = (pv_file *)pf;
  if (p->open_rc == SQLITE_OK) return SQLITE_OK;
  if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("ltvfs: %s", p->open_err ? p->open_err : "open failed");
  return p->open_rc;
}

/* The last error of a primary connection, for ltvfs_last_error(). */
const char *vfs_primary_last_error(sqlite3 *db) {
  sqlite3_file *pf = NULL;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &pf) != SQLITE_OK || pf == NULL ||
      pf->pMethods != &vfs_primary_io_methods)
    return NULL;
  return ((pv_file *)pf)->last_error;
}
