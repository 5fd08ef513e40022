/*
** passthru.c: the system methods of a VFS that wraps another (dynamic
** loading, randomness, sleep, time, the last error), handed on unchanged.
** Both of our VFSes wrap the default VFS ("litestream" in readvfs.c,
** "litestream-primary" in primaryvfs.c); each keeps what it wraps in its
** pAppData, set once at registration before sqlite3_vfs_register, so these
** methods need no state of their own and no lock.
*/
#include "config.h"

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include "vfs/vfs.h"

static sqlite3_vfs *base_of(sqlite3_vfs *vfs) { return (sqlite3_vfs *)vfs->pAppData; }

static void *pt_dlopen(sqlite3_vfs *vfs, const char *z) {
  return base_of(vfs)->xDlOpen(base_of(vfs), z);
}
static void pt_dlerror(sqlite3_vfs *vfs, int n, char *z) {
  base_of(vfs)->xDlError(base_of(vfs), n, z);
}
static void (*pt_dlsym(sqlite3_vfs *vfs, void *h, const char *z))(void) {
  return base_of(vfs)->xDlSym(base_of(vfs), h, z);
}
static void pt_dlclose(sqlite3_vfs *vfs, void *h) { base_of(vfs)->xDlClose(base_of(vfs), h); }
static int pt_randomness(sqlite3_vfs *vfs, int n, char *z) {
  return base_of(vfs)->xRandomness(base_of(vfs), n, z);
}
static int pt_sleep(sqlite3_vfs *vfs, int us) { return base_of(vfs)->xSleep(base_of(vfs), us); }
static int pt_current_time(sqlite3_vfs *vfs, double *t) {
  return base_of(vfs)->xCurrentTime(base_of(vfs), t);
}
static int pt_get_last_error(sqlite3_vfs *vfs, int n, char *z) {
  sqlite3_vfs *b = base_of(vfs);
  return b->xGetLastError ? b->xGetLastError(b, n, z) : 0;
}
static int pt_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *t) {
  sqlite3_vfs *b = base_of(vfs);
  double d;
  int rc;
  if (b->iVersion >= 2 && b->xCurrentTimeInt64) return b->xCurrentTimeInt64(b, t);
  rc = b->xCurrentTime(b, &d);
  *t = (sqlite3_int64)(d * 86400000.0);
  return rc;
}

void vfs_passthru_init(sqlite3_vfs *vfs, sqlite3_vfs *base) {
  vfs->pAppData = base;
  vfs->xDlOpen = pt_dlopen;
  vfs->xDlError = pt_dlerror;
  vfs->xDlSym = pt_dlsym;
  vfs->xDlClose = pt_dlclose;
  vfs->xRandomness = pt_randomness;
  vfs->xSleep = pt_sleep;
  vfs->xCurrentTime = pt_current_time;
  vfs->xGetLastError = pt_get_last_error;
  vfs->xCurrentTimeInt64 = pt_current_time_int64;
}
