/*
** replica_file.h: the open replica file, shared by readvfs.c (the VFS and
** its I/O methods) and functions.c (the SQL functions and PRAGMAs that
** report on it). Private to vfs/.
**
** A file belongs to one connection, which SQLite never uses from two
** threads at once; what it shares with other connections lives in the
** replica object (cache/), which has its own locks.
*/
#ifndef LTVFS_VFS_REPLICA_FILE_H
#define LTVFS_VFS_REPLICA_FILE_H

#include <sqlite3ext.h>

#include "cache/cache.h"

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

/* The I/O methods of every replica file: a file is one of ours when its
** pMethods is this table. */
extern const sqlite3_io_methods vfs_replica_io_methods;

/* The view reads go to: the transaction's, else the pinned or newest one
** (then kept as the transaction's); an SQLite code. */
int vfs_current_view(lt_file *p, replica_view **out);
/* The SQLite code for an error code of the layers below. */
int vfs_sqlite_code_for(int code);
/* SQLITE_FCNTL_PRAGMA: the litestream_* and ltvfs_* PRAGMAs (functions.c);
** SQLITE_NOTFOUND for any other. */
int vfs_file_pragma(lt_file *p, char **azArg);

#endif /* LTVFS_VFS_REPLICA_FILE_H */
