/*
** cache.h: the local image of a replica, the layer above store/.
**
** Applying LTX files to a database image file, which is what a restore does
** (docs/restore-plan.md, "Applying a plan"); the in-memory page cache; and the
** replica object of the read path (views, page map, fetching, polling).
** No SQLite here: vfs/ puts SQLite's face on the replica object.
*/
#ifndef LTVFS_CACHE_H
#define LTVFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"
#include "store/store.h"

enum {
  CACHE_ERR_IO = 200,        /* local file I/O failed */
  CACHE_ERR_PAGE_SIZE = 201, /* files of one plan disagree on page size */
  CACHE_ERR_TIMEOUT = 203,   /* the replica stayed empty past the deadline */
  CACHE_ERR_EXISTS = 204,    /* a restore's output exists and may not be replaced */
  CACHE_ERR_BUSY = 205       /* a cache directory is in use by another process */
};

/* Progress of a long job: called after each chunk; done <= total bytes. */
typedef void (*cache_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* What an apply needs to know of the image and reports back. */
typedef struct cache_apply_state {
  uint32_t page_size;   /* 0 before the first file (set from it), then enforced */
  uint32_t commit;      /* database size in pages after the last file applied */
  cache_progress_fn progress;
  void *progress_ctx;
  uint64_t bytes_done;  /* LTX bytes fetched so far, for progress */
  uint64_t bytes_total;
} cache_apply_state;

/* Applies one LTX file from the store to the image open at fd: streams it in
** chunks (bounded memory), verifies header, frames, index and file checksum,
** and writes each page at (pgno-1)*page_size. It does not truncate: the
** caller decides when pages above state->commit go (see cache_restore). */
int cache_apply_ltx(int fd, store *st, const store_ltx_file *f, cache_apply_state *state,
                    ltx_error *err);

/* Restores the plan into out_path atomically: a temporary file beside it,
** every file applied in order, fsync, rename, fsync of the directory. An
** existing out_path is replaced only when replace is set; otherwise the
** restore fails with CACHE_ERR_EXISTS and the file is untouched (the check
** and the rename are one step: link-or-fail). On error nothing is left at
** out_path (an existing file is untouched). */
int cache_restore(store *st, const store_plan *plan, const char *out_path, int replace,
                  cache_progress_fn progress, void *progress_ctx, ltx_error *err);


/* ---- snapshots (snapshot.c) ---- */

/* An ltx_write_fn that writes everything to a file descriptor (retrying
** short writes and EINTR), counting the bytes: for encoders that stream to
** a file. */
typedef struct cache_fd_sink {
  int fd;
  uint64_t written;
} cache_fd_sink;
int cache_fd_sink_write(void *ctx, const uint8_t *buf, size_t n, ltx_error *err);

/* Encodes the database file open at db_fd (a consistent copy) as the LTX
** snapshot [1, txid] (flags 0x2, Litestream's format) and writes it to
** out_fd as it goes: bounded memory whatever the size. *out_header and
** *out_size (each may be NULL) receive the header and the bytes written. */
int cache_snapshot_encode(int db_fd, uint64_t txid, int64_t timestamp_ms, int out_fd,
                          ltx_header *out_header, uint64_t *out_size, ltx_error *err);

/* ---- the local image on disk (image.c; docs/read-path.md) ---- */

/* One replica's directory under a cache root: the image file in page
** layout, the page record (per page: the file whose version the map at H
** names, whether the image holds it, its CRC-64), the meta, and the staged
** file being applied. One process at a time (flock). */
typedef struct cache_image cache_image;

typedef struct cache_image_meta {
  char identity[1100];        /* the replica URL */
  uint32_t page_size;         /* 0 before the first map */
  uint32_t commit;            /* of the map at txid */
  uint64_t txid;              /* H: the TXID of the page map the record holds; 0 = none */
  int64_t timestamp_ms;       /* H's header timestamp */
  store_ltx_file head;        /* the file that ended at H, as listed */
  store_ltx_file seen[STORE_MAX_LEVEL + 1]; /* the poller's listing positions */
  store_ltx_file applying;    /* the file being applied (level -1: none) */
} cache_image_meta;

typedef struct cache_image_stat {
  uint64_t held;              /* pages the image holds */
  uint64_t hits, misses, bad; /* reads served, not served, failing their CRC */
  uint64_t bytes_written;
  uint64_t evicted;           /* pages given back to keep within the budget */
  int disabled;               /* writes stopped: 1 disk full or I/O error, 2 budget reached */
} cache_image_stat;

/* mkdir -p, mode 0700 for what it creates (the cache's own rule). */
int cache_make_dirs(const char *path, ltx_error *err);
/* ROOT/<readable part of url>-<hash of url> into out; 0 on success. */
int cache_image_dir(const char *root, const char *url, char *out, size_t cap);
/* Opens (creating) the image in dir for the replica identity; *meta
** receives its state (txid 0: nothing usable). A damaged image, one of
** another format or another replica is discarded, and note says why (for
** the log). CACHE_ERR_BUSY when another process has it open. */
int cache_image_open(const char *dir, const char *identity, cache_image **out,
                     cache_image_meta *meta, char *note, size_t note_cap, ltx_error *err);
void cache_image_close(cache_image *im);
const char *cache_image_path(const cache_image *im);
/* Empties the image for a new page map of page_size. */
int cache_image_reset(cache_image *im, uint32_t page_size, ltx_error *err);
/* Where a reader moving forward through the image started and is (so that
** a scan gives back the mapping behind it). Start from {0}. */
typedef struct cache_image_stream {
  uint32_t from, last;
} cache_image_stream;
/* 1 and page pgno into out when the image holds it at version (the file
** the reader's view names for it) and its bytes pass their CRC; else 0.
** st (may be NULL) follows the reader, so that a scan of an image still
** filling (or kept partial by a budget) does not leave it all mapped, that
** is resident. */
int cache_image_get(cache_image *im, uint32_t pgno, const store_ltx_file *version, uint8_t *out,
                    cache_image_stream *st);
/* Checks the CRC of held pages [pgno, pgno + n) that this process has not
** read or written yet, so that readers find them checked; a page that
** fails is no longer held. Returns the page after the last one looked at
** (past the record: fewer). */
uint32_t cache_image_check(cache_image *im, uint32_t pgno, uint32_t n);
/* Whether the image holds page pgno at version (no read, no CRC check). */
int cache_image_holds(cache_image *im, uint32_t pgno, const store_ltx_file *version);
/* Whether the image would take page pgno of version (the map names it and
** the image does not hold it yet). */
int cache_image_wants(cache_image *im, uint32_t pgno, const store_ltx_file *version);
/* Stores page pgno of version when the map names that version and the image
** does not hold it yet (fill, read-through); else does nothing. An error
** (disk full) stops further writes; the image goes on serving what it holds. */
int cache_image_put(cache_image *im, uint32_t pgno, const store_ltx_file *version,
                    const uint8_t *page, ltx_error *err);
/* cache_image_put for n pages of one version at once (pages[i] is page
** pgnos[i], pgnos ascending, crcs[i] its CRC-64): one write per stretch of
** consecutive pages the image wants. */
int cache_image_put_pages(cache_image *im, const store_ltx_file *version, const uint32_t *pgnos,
                          const uint8_t *pages, const uint64_t *crcs, size_t n, ltx_error *err);
/* Changes the map: page pgno is now version (NULL: no file). The page stops
** being held unless page is given, whose bytes are then written as held. */
int cache_image_remap(cache_image *im, uint32_t pgno, const store_ltx_file *version,
                      const uint8_t *page, ltx_error *err);
/* The map shrank from old_commit to commit: entries above go, the file too. */
int cache_image_truncate(cache_image *im, uint32_t old_commit, uint32_t commit, ltx_error *err);
/* What the map names for pgno (level, TXIDs) and whether it is held; 0 when
** nothing. */
int cache_image_entry(cache_image *im, uint32_t pgno, store_ltx_file *version, int *held);
/* Counts bytes a fill wrote; cache_image_sync_step makes the image durable
** so far (fdatasync) once min_bytes were written since the last step, and
** says whether it did. A fill calls it on a thread of its own, so that the
** sync at the end has little left to do (disk writes overlap the download)
** and no download waits for a flush. */
void cache_image_written(cache_image *im, uint64_t bytes);
int cache_image_sync_step(cache_image *im, uint64_t min_bytes);
/* Makes the image's bytes and record durable (before the meta moves). */
int cache_image_sync(cache_image *im, ltx_error *err);
int cache_image_write_meta(cache_image *im, const cache_image_meta *m, ltx_error *err);
/* The file being applied, kept locally in full (fsynced) before its first
** page is written, so a replay after a crash needs no network. */
int cache_image_stage(cache_image *im, const uint8_t *buf, size_t n, ltx_error *err);
int cache_image_read_staged(cache_image *im, uint8_t **buf, size_t *n, ltx_error *err);
void cache_image_unstage(cache_image *im);
void cache_image_stats(cache_image *im, cache_image_stat *out);
/* Free bytes of the file system the image is on (*total: its size). */
uint64_t cache_image_free_bytes(const cache_image *im, uint64_t *total);
void cache_image_disable(cache_image *im);
/* Holds at most bytes of pages (UINT64_MAX: no limit); at the limit, writes stop
** (disabled = 2) and the image serves what it holds. */
void cache_image_set_budget(cache_image *im, uint64_t bytes);

/* ---- in-memory page cache (pagecache.c) ---- */

/* Pages keyed by (file id, pgno), bounded by bytes, least recently used out
** first. Thread-safe. */
typedef struct page_cache page_cache;
typedef struct page_cache_stat {
  uint64_t hits, misses, evictions;
  size_t bytes, limit, entries;
} page_cache_stat;

page_cache *page_cache_new(size_t limit_bytes);
void page_cache_free(page_cache *pc);
/* 1 and the page copied into out on a hit, else 0. */
int page_cache_get(page_cache *pc, uint64_t file_id, uint32_t pgno, uint8_t *out,
                   uint32_t page_size);
int page_cache_contains(page_cache *pc, uint64_t file_id, uint32_t pgno);
void page_cache_put(page_cache *pc, uint64_t file_id, uint32_t pgno, const uint8_t *page,
                    uint32_t page_size);
void page_cache_set_limit(page_cache *pc, size_t limit_bytes);
size_t page_cache_limit(page_cache *pc);
void page_cache_stats(page_cache *pc, page_cache_stat *out);

/* ---- the replica object of the read path (replica.c) ---- */

/* One per replica URL per process, shared by every connection: one store,
** one poller thread, one page cache. Readers hold views: immutable,
** refcounted snapshots {TXID, commit, page size, page map} that never change
** under a read transaction. */
typedef struct replica replica;
typedef struct replica_view replica_view;

typedef struct replica_config {
  int poll_ms;           /* poll interval of the latest view */
  size_t cache_bytes;    /* page cache limit */
  int open_timeout_ms;   /* how long the first view waits for an empty replica */
  size_t prefetch_max;   /* files up to this size are fetched whole when first
                         ** needed, verified (file checksum) and cached; larger
                         ** ones are read by runs of frames on demand */
  const char *cache_dir; /* root of the local image directories; NULL or ""
                         ** keeps pages in memory only */
  uint64_t cache_max;    /* most bytes the image may hold (0: no limit but the
                         ** disk's free space, less a reserve) */
  int hydrate;           /* fill the local image in the background */
  int hydrate_alone;     /* nothing but the fill will read (ltvfs hydrate): it
                         ** runs all its workers at once, and into an empty
                         ** image it starts reading before the indexes are
                         ** read (the early pass); otherwise the extra workers
                         ** wait until readers have been quiet a while */
  uint64_t open_txid;    /* the first view is at this TXID, not the latest (0);
                         ** a local image elsewhere is refused (it never moves
                         ** back); with poll_ms 0 the image stays there
                         ** (ltvfs hydrate --txid) */
} replica_config;

/* What the hydrator is doing (replica_stat.hydrate_phase). */
enum {
  REPLICA_HYDRATE_OFF = 0,     /* no local image */
  REPLICA_HYDRATE_IDLE = 1,    /* read-through only (hydrate off), or waiting */
  REPLICA_HYDRATE_FILLING = 2, /* fetching the pages of the map it holds */
  REPLICA_HYDRATE_APPLYING = 3,/* applying new LTX files */
  REPLICA_HYDRATE_DONE = 4     /* holds every page of the latest view */
};

/* What a reader tracks to grow read-ahead on sequential access. */
typedef struct replica_readahead {
  uint32_t last_pgno;
  uint32_t run;          /* frames per fetch, 0 = start small */
  cache_image_stream img; /* the same reader's pages from the local image */
} replica_readahead;

typedef struct replica_stat {
  uint64_t requests;     /* store reads: LISTs, index and page ranges */
  uint64_t bytes_fetched;
  uint64_t polls, poll_errors;
  uint64_t coalesced;    /* misses served by another reader's fetch */
  int64_t last_poll_ok_ms; /* -1 before the first good poll */
  char last_poll_error[512]; /* why the last poll failed, "" if it did not */
  size_t pending_files;  /* listed, newer than the latest view, not applied */
  page_cache_stat cache;
  /* the local image: its phase, TXID H, pages it holds of H's commit */
  int hydrate_phase;
  uint64_t image_txid, image_commit;
  cache_image_stat image;
  char image_dir[1100];  /* "" without one */
  /* the hydrator's own reads: runs of the fill (requests), of them the
  ** early pass's (`ltvfs hydrate` into an empty image), and bytes (applies
  ** included) */
  uint64_t fill_runs, fill_runs_early, fill_bytes;
  uint64_t fill_steals;  /* runs an idle worker split off a run in flight */
  /* whether the database fits the image's budget (-1: not known yet), the
  ** budget in bytes, and whether cache_max set it (else the free space) */
  int image_fits;
  uint64_t image_budget;
  int image_budget_cache_max;
} replica_stat;

/* Finds or opens the replica of url (the store only; no I/O beyond what
** store_open does). The first caller's config is used; the cache limit grows
** to the largest any caller asks for. Pair with replica_release. */
int replica_acquire(const char *url, const replica_config *cfg, replica **out,
                    ltx_error *err);
void replica_release(replica *r);
const char *replica_url(const replica *r);

/* The newest published view (a new reference): on first use it lists,
** plans, reads every planned index and starts the poller; an empty replica
** is waited for up to open_timeout_ms. */
int replica_latest(replica *r, replica_view **out, ltx_error *err);
/* A view pinned at exactly txid (non-zero), or at the newest state whose
** files are all strictly older than time_ms (time_ms >= 0). Fresh listing;
** STORE_ERR_TXID_UNAVAILABLE names the nearest available TXIDs. When the
** store does not answer, a local image at exactly txid (ltvfs hydrate
** --txid) serves the view, if nothing in this process moves the image. */
int replica_view_at(replica *r, uint64_t txid, int64_t time_ms, replica_view **out,
                    ltx_error *err);
/* The TXID the store's newest restore plan reaches: one listing (no index
** read), as a fresh open would plan it. */
int replica_newest_txid(replica *r, uint64_t *txid, ltx_error *err);
void replica_view_ref(replica_view *v);
void replica_view_release(replica_view *v);

uint64_t replica_view_txid(const replica_view *v);
uint32_t replica_view_commit(const replica_view *v);
uint32_t replica_view_page_size(const replica_view *v);
int64_t replica_view_timestamp_ms(const replica_view *v);

/* Reads page pgno (1-based, LTX page size bytes) of view v into out. Pages
** no file holds (beyond every file, or the lock page) read as zeros. A miss
** fetches a run of neighbouring frames of the same file in one range read,
** its length grown by ra on sequential access; identical in-flight fetches
** are shared. A file removed by retention makes it re-plan at v's TXID. */
int replica_read_page(replica *r, replica_view *v, uint32_t pgno, uint8_t *out,
                      replica_readahead *ra, ltx_error *err);

void replica_stats(replica *r, replica_stat *out);

/* Where the replica's background work reports; NULL (the default) drops
** the messages. */
enum {
  REPLICA_LOG_DEBUG = 0,
  REPLICA_LOG_INFO = 1,
  REPLICA_LOG_WARN = 2,
  REPLICA_LOG_ERROR = 3
};
typedef void (*replica_log_fn)(int level, const char *msg);
void replica_set_log(replica_log_fn fn);
/* Percent of the latest view's pages the local image holds (0 without
** one, 100 once hydrated). */
int replica_hydration_percent(replica *r);
/* Waits up to ms for the image to be fully hydrated (and durable); 1 when
** it is. */
int replica_hydration_wait(replica *r, int ms);
/* Seconds since the last successful poll, -1 before one. */
int64_t replica_lag_seconds(replica *r);

#endif /* LTVFS_CACHE_H */
