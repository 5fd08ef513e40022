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

#include "cache/cache.h"
#include "primary/primary.h"
#include "ltvfs.h"

struct sqlite3;

/* ---- config.c: URI parameter, then environment, then default (pure) ---- */

typedef struct vfs_config {
  const char *url;      /* replica= / LITESTREAM_REPLICA_URL */
  uint64_t txid;        /* txid=; 0 = not pinned */
  int64_t time_ms;      /* time=; -1 = not pinned */
  replica_config rc;    /* poll, cache_size, open_timeout, prefetch_max,
                        ** hydrate, cache_dir (-> cache_root) */
  char cache_root[1024]; /* "" = no disk cache */
} vfs_config;

/* Looks up a URI parameter (NULL when absent). */
typedef const char *(*vfs_param_fn)(void *ctx, const char *key);
/* Fills c from the URI parameters (uri may be NULL: environment only) and
** the environment; LTX_ERR_ARG / STORE_ERR_URL naming the setting and its
** value when one is malformed. Strings point into what uri and getenv
** returned. */
int vfs_config_read(vfs_param_fn uri, void *ctx, vfs_config *c, ltx_error *err);
/* The primary VFS's settings (URI parameter, then environment, then
** default): replica=, sync_interval=, sync=remote, spool_max=, spool=,
** bootstrap=restore, lease_ttl=, lease_renew=, close_timeout=,
** commit_timeout=. Strings point into what uri and getenv returned.
** bootstrap_restore is bootstrap='s default: 1 for the Go VFS's write mode,
** where a new machine takes over a replica in one open, 0 otherwise. */
int vfs_primary_config_read(vfs_param_fn uri, void *ctx, int bootstrap_restore, primary_config *c,
                            ltx_error *err);
/* The Go VFS's write mode: LITESTREAM_WRITE_ENABLED is true. Then the
** "litestream" VFS hands its files to "litestream-primary" on a local
** database (bootstrap=restore). */
int vfs_write_mode(void);
/* That local database's path: LITESTREAM_BUFFER_PATH + ".ltvfs.db", else
** beside the replica's image under the cache root (CACHE_ROOT/<replica>.primary.db). */
int vfs_write_mode_db_path(char *out, size_t cap, ltx_error *err);
/* primaryvfs.c: the "litestream-primary" VFS (registered), for delegation. */
struct sqlite3_vfs;
struct sqlite3_file;
struct sqlite3_vfs *vfs_primary_vfs(void);
/* passthru.c: gives vfs, which wraps base, base's system methods (dynamic
** loading, randomness, sleep, time, last error); base goes in pAppData. */
void vfs_passthru_init(struct sqlite3_vfs *vfs, struct sqlite3_vfs *base);
/* Its xOpen for the Go VFS's write mode: bootstrap=restore by default (a
** new machine takes over a replica in one open; a direct
** "litestream-primary" open defaults to none, whatever the environment). */
int vfs_primary_open_write_mode(const char *zName, struct sqlite3_file *pf, int flags, int *pOutFlags);
/* The root directory of local images, as the VFS picks it (uri may be NULL:
** the environment only): cache_dir=, else LITESTREAM_CACHE_DIR, else
** LITESTREAM_HYDRATION_PATH + ".ltvfs", else $XDG_CACHE_HOME/ltvfs, else
** ~/.cache/ltvfs, else $TMPDIR/ltvfs-UID. "" when the disk cache is off
** ("off", "none", "0" or empty). The CLI calls it too, so `ltvfs hydrate`
** fills the very cache the VFS will read. */
int vfs_cache_root(vfs_param_fn uri, void *ctx, char *out, size_t cap, ltx_error *err);
/* LITESTREAM_LOG_LEVEL as a REPLICA_LOG_* level: debug, info, warn (or
** warning), error, any case; REPLICA_LOG_WARN when unset or unknown. The VFS's
** log and the CLI's both read it here. */
int vfs_log_level_env(void);
/* "250", "250ms", "1s", "1.5s", "2m", "1h" -> ms; -1 if malformed. */
long vfs_parse_duration_ms(const char *z);
/* "33554432", "64K", "32M", "1G" (also KB/MB/GB, KiB/MiB/GiB) -> bytes; -1
** if malformed. */
long long vfs_parse_size(const char *z);

/* readvfs.c: registers the replica VFS "litestream" once per process
** (wrapping the default VFS); SQLITE_OK or an SQLite code. */
int vfs_register_vfs(void);
/* primaryvfs.c: registers the write-side VFS "litestream-primary" once per
** process (wrapping the default VFS). */
int vfs_register_primary_vfs(void);
/* primaryvfs.c: when the main database of db (schema) is a primary file,
** its primary (else NULL); its open error in *open_err when that failed. */
primary *vfs_primary_of(struct sqlite3 *db, const char *schema, const char **open_err);
/* primaryvfs.c: as vfs_open_error, for a primary whose open failed. */
int vfs_primary_open_error(struct sqlite3 *db, char **pzErrMsg);
/* primaryvfs.c: the last error of db's primary main file ("" or NULL: none). */
const char *vfs_primary_last_error(struct sqlite3 *db);
/* functions.c: the litestream_* and ltvfs_* SQL functions on db. */
int vfs_register_functions(struct sqlite3 *db);
/* functions.c: when db's main database is a litestream file whose open failed,
** its SQLite code and "ltvfs: reason" in *pzErrMsg (sqlite3_malloc'd);
** else SQLITE_OK. */
int vfs_open_error(struct sqlite3 *db, char **pzErrMsg);
/* ---- log.c ---- */

/* Reads LITESTREAM_LOG_LEVEL and LITESTREAM_LOG_FILE (at every open, so a
** process can change them between opens; reopens a rotated log file). */
void vfs_log_configure(void);
/* One log line at a REPLICA_LOG_* level to LITESTREAM_LOG_FILE or stderr,
** filtered by LITESTREAM_LOG_LEVEL; errors also to sqlite3_log. */
void vfs_log(int level, const char *msg);
void vfs_logf(int level, const char *fmt, ...) LTX_PRINTF(2, 3);

#endif /* LTVFS_VFS_H */
