/*
** primary_int.h: what the files of primary/ share. Private to primary/.
**
**   walscan.c   committed transactions out of a WAL file (SQLite's recovery rules)
**   spool.c     the spool directory beside the database: its state record,
**               its lock, the LTX files waiting for upload, and the capture
**               (WAL frames, rollback-mode pages, snapshots -> one LTX file)
**   lease.c     the replica's lock.json: one primary host at a time
**   primary.c   the primary object: start-up against the replica, the
**               background thread (flush, upload in order, lease renewal),
**               the hooks the VFS calls, stats
*/
#ifndef LTVFS_PRIMARY_INT_H
#define LTVFS_PRIMARY_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "primary/primary.h"

/* ---- walscan.c ---- */

#define WAL_HEADER_SIZE 32
#define WAL_FRAME_HEADER_SIZE 24

typedef struct wal_header {
  uint32_t page_size;
  uint32_t salt1, salt2;
  uint32_t cksum[2];     /* the header's checksum: where the frame chain starts */
  int big_endian;        /* checksums in big-endian words (magic 0x377f0683) */
} wal_header;

typedef struct wal_commit {
  uint32_t frame;        /* the commit frame, 1-based */
  uint32_t db_pages;     /* database size after it */
} wal_commit;

/* The committed frames after from_frame: pgnos[i] is the page of frame
** from_frame + 1 + i, up to the last commit frame. */
typedef struct wal_scan {
  uint32_t from_frame;
  uint32_t *pgnos;
  size_t n_frames, cap_frames;
  wal_commit *commits;
  size_t n_commits, cap_commits;
  uint32_t last_cksum[2];
} wal_scan;

/* LTX_OK with the header; LTX_DONE when the file holds no valid header
** (empty, being created, torn): no frames to take. */
int wal_read_header(int fd, wal_header *out, ltx_error *err);
/* The committed frames after from_frame (0: from the start). PRIMARY_ERR_WAL
** when frame from_frame is not this WAL's any more. */
int wal_scan_from(int fd, const wal_header *wh, uint32_t from_frame, wal_scan *sc,
                  ltx_error *err);
void wal_scan_free(wal_scan *sc);
/* File offset of the page bytes of frame (1-based). */
off_t wal_frame_page_offset(const wal_header *wh, uint32_t frame);

/* ---- spool.c ---- */

/* Where the database stood when it was last seen through the VFS: what
** tells a change made outside it (another program, a copy, a restore). */
typedef struct db_fingerprint {
  uint64_t ino, size;
  int64_t mtime_ns, ctime_ns;
  uint32_t change_counter; /* page 1 bytes 24-27 */
} db_fingerprint;

/* A WAL generation (its salts) and how far it is captured. salt1 = salt2 = 0:
** none. */
typedef struct wal_pos {
  uint32_t salt1, salt2;
  uint32_t frame;
} wal_pos;

/* The spool's durable record (two checksummed slots, the newer valid one
** wins, so a torn write leaves the previous record). */
typedef struct spool_state {
  uint64_t seq;
  char owner[40];          /* this spool's identity: the lease owner */
  uint64_t replica_crc;    /* which replica the TXIDs are of */
  uint32_t page_size;
  uint64_t txid_spooled;   /* last TXID assigned: its file is spooled or uploaded */
  uint64_t txid_uploaded;  /* last TXID known to be in the replica */
  uint32_t db_pages;       /* database size at txid_spooled */
  wal_pos wal;             /* the WAL generation being captured */
  wal_pos wal_prev;        /* the one before, sealed (restart not yet seen) */
  db_fingerprint fp;       /* when wal is none: the database as last captured */
  int64_t last_commit_ms;  /* timestamp of txid_spooled */
  uint64_t seg_first, seg_next; /* rollback-mode captures of this sync
                           ** interval not merged into a TXID yet: seg/[first, next) */
  char lease_lost[200];    /* why this host lost the lease ("": it has not):
                           ** the uploader says so here for the host's other
                           ** processes, which then refuse writes too */
} spool_state;

typedef struct spool spool;

int spool_open(const char *dir, spool **out, ltx_error *err);
void spool_close(spool *sp);
/* The spool lock: a process mutex and an flock, so threads and processes
** exclude each other. Taken by every capture, seal and state change. */
void spool_lock(spool *sp);
void spool_unlock(spool *sp);
/* LTX_DONE when no state was ever written. (Under the lock.) */
int spool_read_state(spool *sp, spool_state *st, ltx_error *err);
int spool_write_state(spool *sp, spool_state *st, ltx_error *err);
const char *spool_dir(const spool *sp);
/* Path of the spooled file of txid. */
void spool_file_path(const spool *sp, uint64_t txid, char *buf, size_t cap);
/* Path of the rollback-mode capture (segment) seq. */
void spool_segment_path(const spool *sp, uint64_t seq, char *buf, size_t cap);
/* Removes segments outside [first, next). */
void spool_prune_segments(spool *sp, uint64_t first, uint64_t next);
/* Bytes and files in the spool waiting for upload. */
void spool_usage(spool *sp, uint64_t *bytes, uint64_t *files);
/* Removes spooled files above txid (captured but never recorded) and at or
** below uploaded. */
void spool_prune(spool *sp, uint64_t uploaded, uint64_t spooled);

/* Syncs the spooled file open at fd, the spool directory and the state:
** what must be durable before that file is uploaded. */
int spool_make_durable(spool *sp, int fd, ltx_error *err);

/* One page for the encoder: where its bytes are. */
typedef struct page_src {
  uint32_t pgno;
  int from_wal;          /* 1: WAL frame `at`, 0: database file */
  off_t at;              /* byte offset of the page in that file */
} page_src;

/* Encodes pages (ascending pgno, unique) as the L0 file [txid, txid] with
** commit db_pages into the spool (renamed into place, not synced: see
** spool.c), or with segment set as the segment txid (a capture to be
** merged). Returns its size in *size. */
int spool_write_ltx(spool *sp, int segment, uint64_t txid, uint32_t page_size, uint32_t db_pages,
                    int64_t timestamp_ms, const page_src *pages, size_t n, int db_fd,
                    int wal_fd, uint64_t *size, ltx_error *err);

int db_fingerprint_read(int db_fd, db_fingerprint *fp, ltx_error *err);
int db_fingerprint_equal(const db_fingerprint *a, const db_fingerprint *b);

/* ---- lease.c ---- */

typedef struct lease {
  char owner[40];
  uint64_t generation;
  int64_t expires_ms;
  char etag[128];
  int held;
} lease;

/* Takes or renews the lease for owner; PRIMARY_ERR_LEASE naming the holder
** and its expiry when another owner holds an unexpired one. */
int lease_acquire(store *st, lease *l, const char *owner, long ttl_ms, ltx_error *err);
/* Renews a held lease with If-Match; PRIMARY_ERR_LEASE when it was taken. */
int lease_renew(store *st, lease *l, long ttl_ms, ltx_error *err);
/* Gives it up (expires now), best effort. */
void lease_release(store *st, lease *l);

#endif /* LTVFS_PRIMARY_INT_H */
