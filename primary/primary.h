/*
** primary.h: the write side below SQLite, the layer the "litestream-primary"
** VFS (vfs/primaryvfs.c) stands on. No SQLite here: the VFS tells this layer
** what SQLite does to the database, its WAL and its journal (hooks below),
** and this layer turns committed transactions into L0 LTX files in a spool
** beside the database and ships them to the replica in TXID order.
**
** Layering: vfs -> primary -> cache -> store -> ltx. docs/write-path.md is
** the manual; the rules each file keeps are in its header comment.
*/
#ifndef LTVFS_PRIMARY_H
#define LTVFS_PRIMARY_H

#include <stdint.h>

#include "ltx/ltx.h"
#include "store/store.h"

/* Error codes of this layer (beside ltx, store 100.., cache 200..). */
enum {
  PRIMARY_ERR_IO = 300,        /* local I/O on the spool or database */
  PRIMARY_ERR_WAL = 301,       /* the WAL does not hold what was captured */
  PRIMARY_ERR_AHEAD = 302,     /* the replica is ahead of this database */
  PRIMARY_ERR_LEASE = 303,     /* another primary holds the lease, or it was lost */
  PRIMARY_ERR_SPOOL_FULL = 304,/* the spool is at spool_max: the store is not draining it */
  PRIMARY_ERR_CONFLICT = 305,  /* a TXID this primary wrote holds other bytes */
  PRIMARY_ERR_TIMEOUT = 306,   /* a wait for an upload ran out */
  PRIMARY_ERR_CONFIG = 307     /* a bad setting */
};

typedef struct primary_config {
  const char *db_path;       /* absolute path of the database file */
  const char *replica_url;
  const char *spool_dir;     /* NULL: db_path + "-ltvfs" */
  long sync_interval_ms;     /* batching: commits of one interval share a TXID; 0 = per commit */
  int sync_remote;           /* a commit returns once the file holding it is uploaded */
  uint64_t spool_max;        /* bytes waiting for upload before writes fail */
  int bootstrap_restore;     /* a replica ahead of the database: restore it first */
  long lease_ttl_ms;         /* 30000 */
  long lease_renew_ms;       /* ttl / 3 */
  long close_timeout_ms;     /* the last close drains the spool for at most this long */
  long commit_timeout_ms;    /* sync_remote: how long a commit waits for its upload */
} primary_config;

#define PRIMARY_DEFAULT_SYNC_INTERVAL_MS 1000
#define PRIMARY_DEFAULT_SPOOL_MAX (512ull << 20)
#define PRIMARY_DEFAULT_LEASE_TTL_MS 30000
#define PRIMARY_DEFAULT_CLOSE_TIMEOUT_MS 10000
#define PRIMARY_DEFAULT_COMMIT_TIMEOUT_MS 30000

typedef struct primary primary;

/* The primary of cfg->db_path in this process: a new one (start-up against
** the replica: snapshot, continue, refuse or restore; the lease) or the one
** already open, counted. Runs before SQLite opens the database file, so a
** bootstrap restore can put the file in place. */
int primary_acquire(const primary_config *cfg, primary **out, ltx_error *err);
/* Drops a reference; the last one captures what is left, drains the spool
** within close_timeout_ms, releases the lease and stops the thread. */
void primary_release(primary *p);

/* ---- hooks: what SQLite is doing (called by the VFS, any thread) ---- */

/* A WAL frame was written (its 24-byte header is hdr): notes commits. */
void primary_wal_frame_written(primary *p, const uint8_t hdr[24]);
/* SQLite is about to overwrite the WAL from its start (a restart: hdr is the
** new 32-byte header), truncate it, or delete it: everything committed in it
** is captured and the state records the change first. */
int primary_wal_will_reset(primary *p, const uint8_t *new_header, ltx_error *err);
/* A rollback-mode transaction wrote these pages of the database and is now
** committed (its journal finalised or its lock dropped): captured at once,
** durably, before SQLite lets another writer in. */
int primary_rollback_committed(primary *p, const uint32_t *pgnos, size_t n, ltx_error *err);
/* The rollback-mode transaction captured under this lock is finished
** (SQLite truncated the file after its journal, if it shrank): the state
** records the file as it is now, before the lock drops. */
int primary_rollback_settled(primary *p, ltx_error *err);
/* Before a write transaction: PRIMARY_ERR_LEASE (lost or held elsewhere) or
** PRIMARY_ERR_SPOOL_FULL stop it with a message. */
int primary_write_allowed(primary *p, int rollback_mode, ltx_error *err);
/* The connection took its first SHARED lock: the start-up check for
** changes made outside the VFS (a snapshot when the database is not as
** last captured), now that the file is consistent. */
int primary_check(primary *p, ltx_error *err);
/* After a commit with sync=remote: waits until its file is uploaded. */
int primary_commit_wait(primary *p, ltx_error *err);

/* Captures what is committed and waits until it is in the replica, at most
** timeout_ms. */
int primary_sync(primary *p, long timeout_ms, ltx_error *err);

typedef struct primary_stats {
  uint64_t txid_spooled, txid_uploaded;
  uint64_t spool_files, spool_bytes;
  uint64_t uploads, upload_failures, snapshots, captures, bytes_uploaded;
  int64_t oldest_pending_ms;   /* commit time of the oldest file not uploaded, 0 if none */
  int lease_held;
  int uploader;                /* this process uploads (holds the host's upload lock) */
  char lease_owner[40];
  int64_t lease_expires_ms;
  char last_error[512];
} primary_stats;
void primary_get_stats(primary *p, primary_stats *out);
/* Where the primary's background work reports (the replica's log type:
** level, message); NULL drops the messages. */
typedef void (*primary_log_fn)(int level, const char *msg);
void primary_set_log(primary_log_fn fn);

/* The replica's TXID as this primary last uploaded it. */
uint64_t primary_txid(primary *p);

#endif /* LTVFS_PRIMARY_H */
