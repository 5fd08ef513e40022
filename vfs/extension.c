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
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "ltx/ltx.h"
#include "vfs/vfs.h"

/* sqlite3_api is set once, by the first entry point that runs: every
** connection's auto-extension call passes the same routines, and
** rewriting the global under readers on other threads is a data race. */
static pthread_mutex_t g_api_mutex = PTHREAD_MUTEX_INITIALIZER;

static void api_set_once(const sqlite3_api_routines *pApi) {
  pthread_mutex_lock(&g_api_mutex);
  if (sqlite3_api == NULL) SQLITE_EXTENSION_INIT2(pApi);
  pthread_mutex_unlock(&g_api_mutex);
}

static void sql_version(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3_result_text(ctx, ltvfs_version(), -1, SQLITE_STATIC);
}

/* ltvfs_restore(url, out_path [, txid_hex [, 'force']]) -> the TXID
** reached, as 16 hex digits like litestream_txid(). txid NULL = latest. An
** existing out_path is refused unless the fourth argument is 'force' (or 1),
** as the CLI refuses without --force. Registered SQLITE_DIRECTONLY: it writes
** a file, so only SQL the application itself runs may call it, never a view
** or trigger stored in a database. */
static void sql_restore(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *url = (const char *)sqlite3_value_text(argv[0]);
  const char *out = (const char *)sqlite3_value_text(argv[1]);
  uint64_t txid = 0, reached = 0;
  unsigned flags = 0;
  char *msg = NULL;
  char hex[17];

  if (!url || !out) {
    sqlite3_result_error(ctx, "ltvfs_restore(url, out_path [, txid [, 'force']]): url and "
                              "out_path must not be NULL", -1);
    return;
  }
  if (argc >= 3 && sqlite3_value_type(argv[2]) != SQLITE_NULL &&
      ltx_txid_parse((const char *)sqlite3_value_text(argv[2]), &txid) != 0) {
    sqlite3_result_error(ctx, "ltvfs_restore: txid must be a non-zero hex TXID (or NULL)", -1);
    return;
  }
  if (argc >= 4 && sqlite3_value_type(argv[3]) != SQLITE_NULL) {
    const char *f = (const char *)sqlite3_value_text(argv[3]);
    if (f && (strcasecmp(f, "force") == 0 || strcmp(f, "1") == 0)) {
      flags |= LTVFS_RESTORE_REPLACE;
    } else if (!f || strcmp(f, "0") != 0) {
      sqlite3_result_error(ctx, "ltvfs_restore: the fourth argument is 'force' (or 1, or 0)",
                           -1);
      return;
    }
  }
  if (ltvfs_restore(url, out, txid, flags, &reached, &msg) != 0) {
    char *full = sqlite3_mprintf("ltvfs_restore: %s%s", msg ? msg : "failed",
                                 msg && strstr(msg, "already exists") ? "; pass 'force' as the "
                                 "fourth argument to replace it" : "");
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
  for (int nArg = 2; nArg <= 4 && rc == SQLITE_OK; nArg++)
    rc = sqlite3_create_function(db, "ltvfs_restore", nArg, SQLITE_UTF8 | SQLITE_DIRECTONLY,
                                 NULL, sql_restore, NULL, NULL);
  if (rc == SQLITE_OK) rc = vfs_register_functions(db);
  if (rc == SQLITE_OK) rc = vfs_open_error(db, pzErrMsg);
  if (rc == SQLITE_OK) rc = vfs_primary_open_error(db, pzErrMsg);
  return rc;
}

/* The auto-extension: SQLite runs it on every connection opened after the
** library was loaded or registered. It returns int (an error fails that
** open with its message); it never touches connections that are not
** replicas beyond adding functions, so plain files and :memory: open as
** before. */
int vfs_auto_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  api_set_once(pApi);
  return init_connection(db, pzErrMsg);
}

/* `.load ./libltvfs`: registers the VFS and the auto-extension, adds the
** functions to the loading connection, and asks SQLite to keep the library
** loaded after that connection closes (the VFS outlives it). */
int sqlite3_ltvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  int rc;
  api_set_once(pApi);
  rc = vfs_register_vfs();
  if (rc == SQLITE_OK) rc = vfs_register_primary_vfs();
  if (rc == SQLITE_OK) rc = sqlite3_auto_extension((void (*)(void))vfs_auto_init);
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
  api_set_once(pApi);
  rc = vfs_register_vfs();
  if (rc == SQLITE_OK) rc = vfs_register_primary_vfs();
  if (rc == SQLITE_OK) rc = init_connection(db, pzErrMsg);
  return rc;
}
