/*
** store.h: replica storage, the layer above ltx/.
**
** One small interface over an object store (list, ranged reads, puts with
** conditions, delete) with backends file:// and s3://, the
** replica layout that maps (level, min TXID, max TXID) to a key per backend
** (docs/replica-layout.md), and the restore planner (docs/restore-plan.md).
**
** A store is not thread-safe unless the backend says so; the layers above
** serialise or open one store per thread.
*/
#ifndef LTVFS_STORE_H
#define LTVFS_STORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"

/* Error codes of this layer (ltx_error.code), beside the ltx_err ones. */
enum {
  STORE_ERR_URL = 100,          /* malformed or unsupported replica URL */
  STORE_ERR_NOT_FOUND = 101,    /* object or directory does not exist */
  STORE_ERR_PRECONDITION = 102, /* conditional put lost (exists / etag moved) */
  STORE_ERR_IO = 103,           /* local I/O failed (errno in the message) */
  STORE_ERR_NETWORK = 104,      /* connect, timeout, reset, after retries */
  STORE_ERR_HTTP = 105,         /* unexpected HTTP status */
  STORE_ERR_AUTH = 106,         /* 401/403, missing credentials */
  STORE_ERR_NONCONTIGUOUS = 107,/* plan: gap before the newest file */
  STORE_ERR_TXID_UNAVAILABLE = 108, /* plan: pinned TXID not reachable */
  STORE_ERR_EMPTY = 109,        /* replica holds no LTX files */
  STORE_ERR_SHORT_READ = 110,   /* object shorter than the range asked */
  STORE_ERR_MISMATCH = 111,     /* an LTX file's header disagrees with its name */
  STORE_ERR_STOPPED = 112       /* a streamed read's sink asked it to stop */
};

#define STORE_MAX_LEVEL 9
#define STORE_SNAPSHOT_LEVEL 9

/* ---- objects (raw keys, relative to the replica root) ---- */

typedef struct store_object {
  char *key;            /* relative key, e.g. "ltx/0/0000...-0000....ltx" */
  uint64_t size;
  int64_t mtime_ms;     /* file mtime or S3 litestream-timestamp/LastModified */
} store_object;

typedef struct store_object_list {
  store_object *items;
  size_t n;
} store_object_list;
void store_object_list_free(store_object_list *l);

/* An etag buffer of this size holds any backend's etag. */
#define STORE_ETAG_CAP 128

/* The bytes of a put: in memory, or a seekable file read with pread (so an
** object of any size goes up in bounded memory, and can be sent again on a
** retry). */
typedef struct store_body {
  const uint8_t *data;  /* memory, when fd < 0 */
  int fd;               /* a file, from offset 0, when >= 0 */
  uint64_t size;
} store_body;
/* Reads n bytes of body at off into buf (memory or pread); LTX_OK, or
** STORE_ERR_IO naming what (the file shrank, or a read failed). */
int store_body_read(const store_body *b, uint64_t off, uint8_t *buf, size_t n, ltx_error *err);

/* Conditions for a put. */
typedef enum store_put_cond {
  STORE_PUT_ALWAYS = 0,
  STORE_PUT_IF_ABSENT = 1,  /* If-None-Match: * */
  STORE_PUT_IF_MATCH = 2    /* If-Match: etag */
} store_put_cond;

typedef enum store_layout {
  STORE_LAYOUT_FILE = 0,    /* DIR/ltx/<L decimal>/<name> */
  STORE_LAYOUT_S3 = 1       /* PATH/<L %04x>/<name> */
} store_layout;

typedef struct store store;

/* One range of a batch read (store_ops.read_ranges): exactly n bytes of key
** at off into buf; rc is that range's own result (LTX_OK or a code). */
typedef struct store_range {
  const char *key;
  uint64_t off;
  uint8_t *buf;
  size_t n;
  int rc;
} store_range;

/* The consumer of a streamed range (store_read_range_sink): told each
** piece of the range as it arrives, in order; at is the piece's offset in
** the range. Only bytes the answer says are the range asked are told. A
** retry starts again at 0 with the same bytes (objects are immutable), so a
** consumer skips what it has had. Called on the reading thread; the bytes
** are the store's until the call returns. fn returns 0 to go on; anything
** else ends the read at once (the connection is dropped, not drained) and
** it returns STORE_ERR_STOPPED, never retried: a consumer that has what it
** needs, or no longer wants the rest, does not pay for it. */
typedef struct store_sink {
  int (*fn)(void *arg, uint64_t at, const uint8_t *data, size_t n);
  void *arg;
} store_sink;

/* Backend method table. Every method returns LTX_OK or a code with err set;
** messages name the object (never credentials). */
typedef struct store_ops {
  const char *scheme;   /* "file", "s3" */
  /* Objects whose key starts with prefix, sorted by key, only keys > after
  ** when after is non-NULL. */
  int (*list)(store *st, const char *prefix, const char *after, store_object_list *out,
              ltx_error *err);
  /* Exactly n bytes at off; a shorter object is STORE_ERR_SHORT_READ. */
  int (*read_range)(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                    ltx_error *err);
  /* The last min(n, size) bytes into buf; *nread and *object_size set. */
  int (*read_suffix)(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                     uint64_t *object_size, ltx_error *err);
  /* Size and etag (etag may be NULL). */
  int (*head)(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
              ltx_error *err);
  /* Atomic put: readers see the old object or the whole new one. mtime_ms,
  ** when >= 0, becomes the object's timestamp. etag_out (may be NULL)
  ** receives the new etag. */
  int (*put)(store *st, const char *key, const store_body *body, int64_t mtime_ms,
             store_put_cond cond, const char *if_match_etag, char *etag_out,
             size_t etag_cap, ltx_error *err);
  /* Deletes keys; a missing key is not an error. */
  int (*del)(store *st, const char *const *keys, size_t n, ltx_error *err);
  void (*close)(store *st);
  /* Optional (NULL: callers loop over read_range). Reads every range, many
  ** at once where the backend can; sets each ranges[i].rc and returns the
  ** first failure (with err) or LTX_OK. */
  int (*read_ranges)(store *st, store_range *ranges, size_t n, ltx_error *err);
  /* Optional (NULL: read_range into memory, then one call of the sink).
  ** read_range with the bytes handed to sink as they arrive, never held
  ** whole. */
  int (*read_range_sink)(store *st, const char *key, uint64_t off, size_t n,
                         const store_sink *sink, ltx_error *err);
  /* Optional (NULL: list answers in one go, as a local directory walk
  ** does). One request of list: the first objects (up to max_keys; 0: as
  ** many as the server gives in one answer) whose key starts with prefix,
  ** sorted by key, keys > after only when after is non-NULL; *more says
  ** whether more keys follow. */
  int (*list_page)(store *st, const char *prefix, const char *after, unsigned max_keys,
                   store_object_list *out, int *more, ltx_error *err);
  /* Optional (NULL: calls are short anyway). Makes calls in flight give up
  ** soon (within about 200 ms) and later calls fail at once; for closing. */
  void (*interrupt)(store *st);
} store_ops;

struct store {
  const store_ops *ops;
  store_layout layout;
  char *url;            /* as given, for messages */
  void *impl;           /* backend state */
};

/* Opens a replica by URL: "file:///abs/dir", "file://rel/dir" or a plain
** path, later "s3://bucket/path?...". STORE_ERR_URL names what is wrong. */
int store_open(const char *url, store **out, ltx_error *err);
void store_close(store *st);

/* Backend constructors (used by store_open). */
int store_file_open(const char *dir, const char *url, store **out, ltx_error *err);
/* "s3://BUCKET/PATH?endpoint=...&region=..." (see store/s3.c); thread-safe. */
int store_s3_open(const char *url, store **out, ltx_error *err);
/* store_replica_identity of an s3:// URL (s3_config.c). */
int store_s3_identity(const char *url, char *out, size_t cap);

/* Requests and bytes read through a counting store. */
typedef struct store_counters {
  atomic_uint_fast64_t requests; /* every call: LIST, GET, HEAD, PUT, DELETE; a batch counts each range */
  atomic_uint_fast64_t bytes;    /* bytes read */
} store_counters;
/* Wraps inner (owned from now on, also on error) in a store that adds what
** each call asks of inner to *c. */
int store_counting_wrap(store *inner, store_counters *c, store **out, ltx_error *err);

/* Convenience wrappers over st->ops. */
int store_list(store *st, const char *prefix, const char *after, store_object_list *out,
               ltx_error *err);
/* One request's page of store_list (ops.list_page): *more when it did not
** reach the end. A store that lists in one go answers it all, *more 0. */
int store_list_page(store *st, const char *prefix, const char *after, unsigned max_keys,
                    store_object_list *out, int *more, ltx_error *err);
int store_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                     ltx_error *err);
/* The part of a replica URL that names the replica: the URL without the
** parameters that only say how it is reached (s3://: ltvfs's concurrency,
** timeouts and retries, skip-verify, sign-payload), so that one replica
** opened with different tuning is one local image. Into out; 0, or -1
** when it does not fit. */
int store_replica_identity(const char *url, char *out, size_t cap);
/* store_read_range with the bytes handed to sink as they arrive: a
** consumer works on the first bytes of a large range while the rest is on
** the wire, and needs no buffer the size of the range (the hydrator decodes
** and writes as it downloads). LTX_OK once all n bytes were told. */
int store_read_range_sink(store *st, const char *key, uint64_t off, size_t n,
                          const store_sink *sink, ltx_error *err);
int store_read_suffix(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                      uint64_t *object_size, ltx_error *err);
/* Reads every range (in parallel where the backend can); each range's rc is
** set; returns the first failure (with err) or LTX_OK. */
int store_read_ranges(store *st, store_range *ranges, size_t n, ltx_error *err);
int store_put(store *st, const char *key, const uint8_t *data, size_t n, int64_t mtime_ms,
              store_put_cond cond, const char *if_match_etag, char *etag_out,
              size_t etag_cap, ltx_error *err);
/* store_put of the size bytes of the file fd (from offset 0, read with
** pread: fd's position is not used). */
int store_put_fd(store *st, const char *key, int fd, uint64_t size, int64_t mtime_ms,
                 store_put_cond cond, const char *if_match_etag, char *etag_out,
                 size_t etag_cap, ltx_error *err);
int store_delete(store *st, const char *const *keys, size_t n, ltx_error *err);
/* The object's size now (and etag, when etag is non-NULL). */
int store_head(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
               ltx_error *err);
/* Makes every call in flight on st give up soon with STORE_ERR_NETWORK
** ("interrupted") and every later call fail at once: a closing replica
** does not wait for a hung server. The store must still be closed. */
void store_interrupt(store *st);

/* The one rule for "is this corruption or a store failure": whether code
** says an object's bytes are not a valid LTX file (or are shorter than its
** index says), as opposed to a failure of the store, the network or the
** caller. Corruption is retried only when the object may have changed;
** store failures are retried with backoff. */
int store_error_is_corrupt(int code);

/* ---- LTX files in the replica layout ---- */

typedef struct store_ltx_file {
  int level;
  uint64_t min_txid;
  uint64_t max_txid;
  uint64_t size;
  int64_t timestamp_ms;
} store_ltx_file;

typedef struct store_ltx_list {
  store_ltx_file *files;
  size_t n;
} store_ltx_list;
void store_ltx_list_free(store_ltx_list *l);

/* STORE_ERR_MISMATCH (with a message giving both) unless h, a header read
** from the file f names, has f's TXIDs: the name is what the planner
** trusted, so an object whose header disagrees is not the file the listing
** promised. */
int store_check_ltx_name(const store_ltx_file *f, const ltx_header *h, ltx_error *err);

/* Key of an LTX file in st's layout into buf (>= 64 bytes); returns buf. */
char *store_ltx_key(const store *st, int level, uint64_t min_txid, uint64_t max_txid,
                    char *buf, size_t cap);
/* Prefix of a level, e.g. "ltx/0/" or "0000/". */
char *store_level_prefix(const store *st, int level, char *buf, size_t cap);
/* Lists the LTX files of one level, sorted by min TXID, optionally only those
** named after after_min_txid/after_max_txid (0/0 = all). Names that are not
** LTX file names are skipped. A missing level is an empty list. */
int store_list_level(store *st, int level, uint64_t after_min_txid, uint64_t after_max_txid,
                     store_ltx_list *out, ltx_error *err);
/* All levels 0..9, appended into one list (level, then min TXID). */
int store_list_all(store *st, store_ltx_list *out, ltx_error *err);
/* The start of store_list_all in one request: a page (up to page_keys
** objects; 0: the store's page) of the levels' common prefix ("000" on S3,
** "ltx/" in a directory). Levels 0..*open-1 are in out, whole; levels
** *open..9 (none when *open is 10) are the caller's to list, level by level
** (store_list_level): the page ended inside or before them. A replica of
** fewer than a page of files is listed in one request instead of ten.
** after (NULL, or one file per level, 0/0 for "from the start") keeps, per
** level, only the files named after its entry, as store_list_level does,
** and the page starts after level 0's: a poll that lists every level again
** is one request too. */
int store_list_levels_start(store *st, unsigned page_keys, const store_ltx_file *after,
                            store_ltx_list *out, int *open, ltx_error *err);

/* Loading one LTX file for random access: its header and page index, or
** (small files) the whole file, verified.
**
** The listed size is a hint, never a fact: stores list objects that are
** still being written (a file filled in place by cp, rsync --inplace or an
** NFS client; an S3-compatible server listing an upload in progress) and
** listings can be stale. So a load that fails on the bytes asks the store
** for the object's size now (HEAD) and, when it differs from the size the
** load used, loads once more at the new size. A file that fails at the
** size the store still gives is reported as corrupt, naming its key; a
** caller that retries later (the poller) goes through the same rule and
** applies the file as soon as it is complete.
**
** Bounded memory: the index is read in at most two rounds and never takes
** more than LTX_INDEX_MAX_BYTES(header commit), whatever the tail claims. */
typedef struct store_ltx_loaded {
  ltx_header header;    /* its TXIDs are the name's (checked) */
  ltx_index idx;
  uint64_t size;        /* the object's size the load used (the store's own
                        ** when the listed size was wrong) */
  uint8_t *whole;       /* the whole file, verified (frames, index, file
                        ** checksum), when it was small enough to read whole
                        ** in one request (<= LTX_INDEX_TAIL_GUESS); else NULL */
} store_ltx_loaded;
/* f names the file (level, TXIDs) and its listed size. Errors name the key:
** STORE_ERR_NOT_FOUND (gone), corruption (store_error_is_corrupt), or a
** store failure. On error out holds nothing. Requests: one (whole), or two
** ranges at once (header and tail; a third for an index bigger than the
** guess), plus a HEAD and a second load when the listed size was wrong. */
int store_load_ltx(store *st, const store_ltx_file *f, store_ltx_loaded *out, ltx_error *err);
void store_ltx_loaded_free(store_ltx_loaded *l);

/* ---- restore planner (docs/restore-plan.md) ---- */

typedef struct store_plan {
  store_ltx_file *files;  /* in apply order */
  size_t n;
  uint64_t txid;          /* TXID the plan reaches */
} store_plan;
void store_plan_free(store_plan *p);

/* Plans from a listing (any order, any levels). target_txid 0 = latest.
** target_time_ms >= 0 restricts to files whose timestamp is strictly before
** it (pass -1 for none). Errors: STORE_ERR_EMPTY, STORE_ERR_NONCONTIGUOUS
** (naming the gap), STORE_ERR_TXID_UNAVAILABLE (naming the nearest TXIDs
** that are available below and above). Pure: no I/O. */
int store_plan_build(const store_ltx_file *files, size_t n, uint64_t target_txid,
                     int64_t target_time_ms, store_plan *out, ltx_error *err);
/* The file a plan takes next on top of a state at txid: among files (any
** order) that extend it (min <= txid+1 and max > txid), the one
** docs/restore-plan.md prefers; files whose skip[i] is set (skip may be NULL) are left
** out. NULL when none extends txid. The planner's own rule, for callers
** that chain new files onto a state they have (the poller). */
const store_ltx_file *store_plan_next(const store_ltx_file *files, size_t n, uint64_t txid,
                                      const unsigned char *skip);
/* TXIDs at which a pinned read is possible (where some file ends exactly and
** a plan reaches it), ascending, for messages and `ltvfs ls`. */
int store_plan_available_txids(const store_ltx_file *files, size_t n, uint64_t **txids,
                               size_t *n_txids, ltx_error *err);

#endif /* LTVFS_STORE_H */
