/*
** vfs.h: the SQLite side of ltvfs, the top layer. Nothing here is public;
** ltvfs.h at the top of the tree is the library's public interface.
**
** Files of this layer that call SQLite include <sqlite3ext.h> and use the
** routines the host SQLite handed to the extension entry point
** (extension.c defines them); they are built into libltvfs only, never into
** the CLI, which links SQLite directly.
*/
#ifndef LTVFS_VFS_H
#define LTVFS_VFS_H

#include "ltvfs.h"

struct sqlite3;

/* readvfs.c: registers the replica VFS "litestream" once per process
** (wrapping the default VFS); SQLITE_OK or an SQLite code. */
int vfs_register_vfs(void);
/* readvfs.c: the litestream_* and ltvfs_* SQL functions on db. */
int vfs_register_functions(struct sqlite3 *db);
/* readvfs.c: when db's main database is a litestream file whose open failed,
** its SQLite code and "ltvfs: reason" in *pzErrMsg (sqlite3_malloc'd);
** else SQLITE_OK. */
int vfs_open_error(struct sqlite3 *db, char **pzErrMsg);
/* readvfs.c: one log line at level 0..3 (debug..error) to
** LITESTREAM_LOG_FILE or stderr, filtered by LITESTREAM_LOG_LEVEL. */
void vfs_log(int level, const char *msg);

#endif /* LTVFS_VFS_H */
