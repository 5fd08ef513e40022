/*
** ltvfs.h: the public interface of libltvfs.
**
** libltvfs turns a Litestream v0.5 replica (file:// or s3://) into a SQLite
** database. Load it into any SQLite with `.load ./libltvfs`, or link it
** (`pkg-config --libs ltvfs`) and call ltvfs_register().
**
** The replica VFS "litestream":
**   file:app.db?vfs=litestream&replica=s3://bucket/app[&txid=HEX|&time=RFC3339]
**     [&poll=MS][&cache_size=BYTES][&open_timeout=MS]
** SQL functions (optional last argument: the schema, e.g. 'main'):
**   litestream_txid() litestream_lag() litestream_time()
**   litestream_set_time(ts | 'LATEST') ltvfs_pinned_txid() ltvfs_stats()
**   ltvfs_last_error()
** PRAGMAs litestream_txid, litestream_lag, litestream_time [= ts],
**   ltvfs_pinned_txid, ltvfs_stats, ltvfs_last_error.
** Helpers: ltvfs_version(), ltvfs_restore(url, out_path [, txid [, 'force']]).
** Functions with effects outside the statement (ltvfs_restore writes a file)
** are SQLITE_DIRECTONLY: a view or trigger of a database someone else made
** cannot call them.
*/
#ifndef LTVFS_H
#define LTVFS_H

#include <stdint.h>

#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
const char *ltvfs_version(void);

/* ltvfs_restore flags: replace an existing out_path (default: refuse). */
#define LTVFS_RESTORE_REPLACE 1u

/* Restores the replica at url into out_path (atomically: a temporary file,
** fsync, rename). txid 0 = the latest state, otherwise exactly that TXID.
** An existing out_path is left alone and the call fails, unless flags has
** LTVFS_RESTORE_REPLACE. Returns 0 on success with *reached_txid set (may
** be NULL); otherwise a non-zero code and, when errmsg is non-NULL, a
** malloc'd message naming what failed and where, for the caller to free(). */
int ltvfs_restore(const char *url, const char *out_path, uint64_t txid, unsigned flags,
                  uint64_t *reached_txid, char **errmsg);

/* The entry point of the loadable extension (`.load ./libltvfs`), and its
** alias under the Go VFS's name. */
int sqlite3_ltvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);
int sqlite3_litestreamvfs_init(sqlite3 *db, char **pzErrMsg,
                               const sqlite3_api_routines *pApi);
/* The auto-extension behind ltvfs_register(). */
int ltvfs_auto_register(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

/* For applications linked with libltvfs: registers the VFS "litestream" and
** the SQL functions for every connection opened afterwards. Call once before
** sqlite3_open_v2(..., "litestream"). Returns an SQLite code. (Inline, so the
** library itself never links a copy of SQLite: it is your SQLite that loads
** it, exactly as `.load` would.) */
static inline int ltvfs_register(void) {
  sqlite3 *db = NULL;
  int rc = sqlite3_auto_extension((void (*)(void))ltvfs_auto_register);
  if (rc == SQLITE_OK) rc = sqlite3_open(":memory:", &db);
  sqlite3_close(db);
  return rc;
}

#ifdef __cplusplus
}
#endif

#endif /* LTVFS_H */
