/*
** extension.c: the loadable-extension entry point of libltvfs.
**
**   sqlite3 -cmd '.load ./libltvfs'
**   sqlite> SELECT ltvfs_restore('file:///backups/app', '/tmp/app.db');
**   0000000000000003
**
** The files of vfs/ include sqlite3ext.h: every SQLite call goes through
** the routines the host SQLite passes in (defined here), so the library
** never drags a second copy of SQLite into a process.
*/
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "vfs/vfs.h"

static void sql_version(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3_result_text(ctx, ltvfs_version(), -1, SQLITE_STATIC);
}

/* ltvfs_restore(url, out_path [, txid_hex]) -> the TXID reached, as 16 hex
** digits like litestream_txid(). */
static void sql_restore(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *url = (const char *)sqlite3_value_text(argv[0]);
  const char *out = (const char *)sqlite3_value_text(argv[1]);
  uint64_t txid = 0, reached = 0;
  char *msg = NULL;
  char hex[17];

  if (!url || !out) {
    sqlite3_result_error(ctx, "ltvfs_restore(url, out_path [, txid]): url and out_path "
                              "must not be NULL", -1);
    return;
  }
  if (argc == 3 && sqlite3_value_type(argv[2]) != SQLITE_NULL) {
    const char *s = (const char *)sqlite3_value_text(argv[2]);
    char *end = NULL;
    txid = s ? strtoull(s, &end, 16) : 0;
    if (!s || !*s || *end || txid == 0) {
      sqlite3_result_error(ctx, "ltvfs_restore: txid must be a non-zero hex TXID", -1);
      return;
    }
  }
  if (ltvfs_restore(url, out, txid, &reached, &msg) != 0) {
    char *full = sqlite3_mprintf("ltvfs_restore: %s", msg ? msg : "failed");
    sqlite3_result_error(ctx, full ? full : "ltvfs_restore failed", -1);
    sqlite3_free(full);
    free(msg);
    return;
  }
  snprintf(hex, sizeof hex, "%016" PRIx64, reached);
  sqlite3_result_text(ctx, hex, -1, SQLITE_TRANSIENT);
}

/* Everything a connection gets: the helper functions, the litestream
** functions, and the verdict on its main database when that is a replica
** whose open failed. */
static int init_connection(sqlite3 *db, char **pzErrMsg) {
  int rc = sqlite3_create_function(db, "ltvfs_version", 0, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                   NULL, sql_version, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_create_function(db, "ltvfs_restore", 2, SQLITE_UTF8, NULL, sql_restore,
                                 NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_create_function(db, "ltvfs_restore", 3, SQLITE_UTF8, NULL, sql_restore,
                                 NULL, NULL);
  if (rc == SQLITE_OK) rc = ltvfs_register_functions(db);
  if (rc == SQLITE_OK) rc = ltvfs_open_error(db, pzErrMsg);
  return rc;
}

/* The auto-extension: SQLite runs it on every connection opened after the
** library was loaded or registered. It returns int (an error fails that
** open with its message); it never touches connections that are not
** replicas beyond adding functions, so plain files and :memory: open as
** before. */
int ltvfs_auto_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  SQLITE_EXTENSION_INIT2(pApi);
  return init_connection(db, pzErrMsg);
}

/* `.load ./libltvfs`: registers the VFS and the auto-extension, adds the
** functions to the loading connection, and asks SQLite to keep the library
** loaded after that connection closes (the VFS outlives it). */
int sqlite3_ltvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  int rc;
  SQLITE_EXTENSION_INIT2(pApi);
  rc = ltvfs_register_vfs();
  if (rc == SQLITE_OK) rc = sqlite3_auto_extension((void (*)(void))ltvfs_auto_init);
  if (rc == SQLITE_OK) rc = init_connection(db, pzErrMsg);
  return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}

/* The Go VFS's entry point name, so scripts that loaded it load us. */
int sqlite3_litestreamvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  return sqlite3_ltvfs_init(db, pzErrMsg, pApi);
}

/* For ltvfs_register() (ltvfs.h): the auto-extension registers the VFS the
** first time SQLite runs it. */
int ltvfs_auto_register(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  int rc;
  SQLITE_EXTENSION_INIT2(pApi);
  rc = ltvfs_register_vfs();
  if (rc == SQLITE_OK) rc = init_connection(db, pzErrMsg);
  return rc;
}
