/*
** ltvfs.h: the public interface of libltvfs.
**
** libltvfs turns a Litestream v0.5 replica (a file:// directory of LTX files
** now; s3:// next) into a SQLite database. Link with `pkg-config --libs ltvfs`
** or load it into any SQLite with `.load ./libltvfs`.
**
** Loaded as an extension it adds the SQL functions
**   ltvfs_version()                      the library version
**   ltvfs_restore(url, out_path [, txid])  restores a replica to a file and
**                                        returns the TXID it reached (hex)
** The replica VFS "litestream" comes with the read-replica work.
*/
#ifndef LTVFS_H
#define LTVFS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
const char *ltvfs_version(void);

/* Restores the replica at url into out_path (atomically: a temporary file,
** fsync, rename). txid 0 = the latest state, otherwise exactly that TXID.
** Returns 0 on success with *reached_txid set (may be NULL); otherwise a
** non-zero code and, when errmsg is non-NULL, a malloc'd message naming what
** failed and where, for the caller to free(). */
int ltvfs_restore(const char *url, const char *out_path, uint64_t txid,
                  uint64_t *reached_txid, char **errmsg);

/* The entry point of the loadable extension (`.load ./libltvfs`). */
struct sqlite3;
struct sqlite3_api_routines;
int sqlite3_ltvfs_init(struct sqlite3 *db, char **pzErrMsg,
                       const struct sqlite3_api_routines *pApi);

#ifdef __cplusplus
}
#endif

#endif /* LTVFS_H */
