/*
** replica_int.h: the replica object's insides, shared by the files of the
** read path in cache/ (private: cache.h is the layer's one face).
**
**   replica.c  the object: acquire and release, the first open, pinned views,
**              reading a page (page cache, runs, coalescing, re-plans)
**   files.c    the registry of LTX files whose header and index are loaded
**   view.c     views and their copy-on-write page maps
**   poll.c     listing and the poller thread
**   hydrate.c  the local image's hydrator thread: rebase, apply, warm open
**   fill.c     filling the image: runs, workers, the flusher
**
** Locks: r->mutex guards the mutable fields of struct replica (latest,
** registry, inflight, seen, pending, held, the poll error, the thread
** flags); it is never held across a store call, a file write or a sleep.
** r->init_mutex serialises first opens. g_registry_mutex (replica.c) guards
** the process-wide list and the reference counts of replicas. Views, chunks
** and files are immutable once published and reference counted (atomics).
*/
#ifndef LTVFS_CACHE_REPLICA_INT_H
#define LTVFS_CACHE_REPLICA_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "cache/cache.h"

#define CHUNK_SHIFT 12
#define CHUNK_PAGES (1u << CHUNK_SHIFT)
#define RUN_MIN 16u                 /* frames fetched by an isolated miss */
#define RUN_MAX 4096u               /* frames fetched by one request of a scan */
#define RUN_MAX_BYTES (8u << 20)    /* bytes fetched by one request */
#define RUN_MAX_BRIDGE 32u          /* unneeded frames a run may carry along */
#define POLL_BACKOFF_MAX_MS 30000
#define WARM_CATCHUP_MS 3000        /* a warm open waits this long at most for the store */
#define FULL_LIST_EVERY 10          /* polls between listings of levels 1..9 */
#define POLL_WARN_EVERY_MS 30000    /* a failure that persists is logged this often */
#define CLOSE_WAIT_MS 1000          /* replica_release waits this long for a poll */
#define LOAD_THREADS 16


typedef struct rp_file {
  atomic_int refs;
  uint64_t id;                  /* unique in the replica: the page cache key */
  store_ltx_file meta;
  uint32_t page_size;
  uint32_t commit;
  int64_t header_ts_ms;         /* the LTX header's timestamp */
  ltx_index idx;                /* valid once loaded is set */
  atomic_int loaded;            /* header and index loaded (0: named by the
                                ** local image's record only, loaded on first use) */
  int loading;                  /* a thread is loading it (r->mutex, r->cond) */
  atomic_int verified;          /* read whole and verified (small files) */
  uint8_t *whole;               /* bytes read whole at load, until cached */
  char key[128];
  struct rp_file *next;         /* registry list */
} rp_file;

typedef struct rp_slot {
  rp_file *file;                /* NULL: no file holds the page */
  uint32_t ipos;                /* position in file->idx.entries, or
                                ** IPOS_UNKNOWN (a view built from the local
                                ** image: found in the index when needed) */
} rp_slot;

#define IPOS_UNKNOWN UINT32_MAX

typedef struct rp_chunk {
  atomic_int refs;
  rp_slot slot[CHUNK_PAGES];
} rp_chunk;

struct replica_view {
  atomic_int refs;
  uint64_t txid;
  uint32_t commit;
  uint32_t page_size;
  int64_t timestamp_ms;
  uint32_t nchunk;
  rp_chunk **chunks;
  rp_file **files;              /* every file a slot may name (refs held) */
  size_t nfiles, cap_files;
  size_t files_after_prune;     /* nfiles after the last prune */
  _Atomic(replica_view *) replacement; /* same TXID rebuilt after a file vanished:
                                ** set once under r->mutex, read without it */
};

typedef struct rp_inflight {
  uint64_t file_id;
  uint32_t lo, hi;              /* index positions [lo, hi) being fetched */
  struct rp_inflight *next;
} rp_inflight;

struct replica {
  char *url;
  store *st;
  int refs;                     /* guarded by g_registry_mutex */
  replica_config cfg;
  page_cache *pc;

  pthread_mutex_t mutex;        /* everything below */
  pthread_cond_t cond;          /* in-flight fetches done, poller stop */
  pthread_mutex_t init_mutex;   /* one first open at a time */
  replica_view *latest;
  rp_file *registry;
  uint64_t next_file_id;
  rp_inflight *inflight;
  store_ltx_file seen[STORE_MAX_LEVEL + 1]; /* last file listed per level */
  store_ltx_file *pending;      /* listed, newer than latest, not applied yet */
  size_t npending;
  rp_file **held;               /* loaded by the last poll, not applied yet */
  size_t nheld;
  int list_all_next;            /* the next poll lists every level */
  int poll_now;                 /* the next poll does not wait (a warm open) */
  char poll_error[512];         /* the last poll's failure, "" after a good one */
  int64_t poll_warned_ms;       /* when a poll failure was last logged as a warning */
  int poller_started;           /* r->poller was created (join it) */
  int threads_running;          /* poller and hydrator threads not ended yet */
  int orphaned;                 /* released while they ran: the last one frees r */
  int stop;
  pthread_t poller;
  uint64_t poll_count;

  /* The local image (hydrate.c); img is NULL without a disk cache. The
  ** hydrator thread owns img_meta and the image's map; img_view (the map
  ** the record holds, TXID H), img_queue and img_rebase are r->mutex's. */
  cache_image *img;
  cache_image_meta img_meta;
  replica_view *img_view;
  struct rp_img_step *img_queue, **img_queue_tail; /* chains the poller published */
  int img_rebase;               /* the latest view was re-planned: rebase the map */
  int img_verified;             /* the store confirmed the cached replica */
  int img_checked;              /* ... or it did not, and a fresh view replaced the image's */
  int hydrator_started;
  struct fill_early *img_early; /* an early pass waiting for its map (fill.c) */
  pthread_t hydrator;
  pthread_cond_t hyd_cond;      /* work for the hydrator, or stop */
  atomic_int readers_fetching;  /* reader fetches in flight: bulk fill yields */
  atomic_int_fast64_t readers_fetched_ms; /* when a reader's fetch last ended (the
                                ** fill runs one worker while readers are busy) */
  atomic_int img_phase;         /* REPLICA_HYDRATE_* */
  atomic_uint_fast64_t img_txid, img_commit, hyd_bytes;
  atomic_uint_fast64_t fill_runs, fill_runs_early, fill_steals; /* replica_stat's */
  atomic_int img_fits;          /* replica_stat's image_fits (budget_fits) */
  atomic_int img_budget_cache_max;
  atomic_uint_fast64_t img_budget;
  atomic_uint fill_decode_failures; /* frames the fill could not decode */

  store_counters io;            /* requests and bytes, counted by the store */
  atomic_uint_fast64_t polls, poll_errors, coalesced;
  atomic_int_fast64_t last_poll_ok_ms;

  struct replica *next;         /* process-wide list */
};

/* A chain the poller published: its files in order and the view they made. */
typedef struct rp_img_step {
  rp_file **files;
  size_t n;
  replica_view *view;
  struct rp_img_step *next;
} rp_img_step;

/* ---- replica.c ---- */
void rp_log(int level, const char *fmt, ...) LTX_PRINTF(2, 3);
int64_t rp_wall_ms(void);
int64_t rp_mono_ms(void);
/* CLOCK_REALTIME ms from now, for pthread_cond_timedwait. */
struct timespec rp_realtime_in(int ms);
void rp_sleep_ms(int ms);
/* Publishes v as the latest view (takes the reference). Caller holds r->mutex. */
void rp_publish(replica *r, replica_view *v);
/* A page fetched from f: into the local image when its map names f for it,
** else into the page cache. */
void rp_keep_page(replica *r, rp_file *f, uint32_t pgno, const uint8_t *page);
/* Frees everything of r; its threads have ended. */
void rp_replica_free(replica *r);

/* ---- files.c ---- */
void rp_file_release(rp_file *f);
int rp_same_file(const store_ltx_file *a, const store_ltx_file *b);
/* A registry file with a new reference, or NULL. Caller holds r->mutex. */
rp_file *rp_registry_find(replica *r, const store_ltx_file *meta);
/* Drops registry files no view uses any more. Caller holds r->mutex. */
void rp_registry_prune(replica *r);
/* Runs fn over job with up to LOAD_THREADS threads (inline when n is 1). */
void rp_run_parallel(void *(*fn)(void *), void *job, size_t n);
/* References to the files of metas, from the registry or loaded in parallel;
** each file its own result (out[i] NULL where rcs[i]/errs[i] say why). */
void rp_files_load(replica *r, const store_ltx_file *metas, size_t n, rp_file **out, int *rcs,
                   ltx_error *errs);
/* rp_files_load for a plan: every file or the first failure. */
int rp_files_get(replica *r, const store_ltx_file *metas, size_t n, rp_file ***pout,
                 ltx_error *err);
/* Verifies a whole file in buf and that its header names f's TXIDs. */
int rp_verify_whole(const rp_file *f, const uint8_t *buf, size_t n, ltx_header *h, ltx_error *err);
/* Puts every page of a verified whole file into the page cache; out (may be
** NULL) receives page pgno. */
void rp_cache_all_pages(replica *r, rp_file *f, const uint8_t *buf, uint32_t pgno, uint8_t *out);

replica_view *rp_view_new(void);
/* A new view sharing prev's chunks and files. */
replica_view *rp_view_clone(const replica_view *prev);
const rp_slot *rp_view_slot(const replica_view *v, uint32_t pgno);
/* Writes f's pages into v's map, then drops the slots above f's commit. */
int rp_view_apply(replica_view *v, rp_file *f, ltx_error *err);
/* Releases the files no slot names any more (when the list has doubled). */
void rp_view_prune_files(replica_view *v);
/* A view of exactly the files of plan, in order. */
int rp_view_from_plan(replica *r, const store_plan *plan, replica_view **out, ltx_error *err);

/* Makes f's header and index loaded (a file the local image named); an
** error of store_load_ltx otherwise. */
int rp_file_ensure_loaded(replica *r, rp_file *f, ltx_error *err);
/* A registry file for meta with a new reference, created unloaded when
** absent (NULL on OOM). Caller holds r->mutex. */
rp_file *rp_registry_get_lazy(replica *r, const store_ltx_file *meta);

/* ---- view.c ---- */
/* A slot's position in its file's index (found there when IPOS_UNKNOWN;
** the file is loaded). */
uint32_t rp_slot_ipos(const rp_slot *s, uint32_t pgno);
/* Sets page pgno of v to (f, ipos) (copy-on-write); LTX_ERR_NOMEM. */
int rp_view_set(replica_view *v, uint32_t pgno, rp_file *f, uint32_t ipos);
/* Adds f to the files v names (a reference). */
int rp_view_add_file(replica_view *v, rp_file *f);

/* ---- hydrate.c ---- */
/* Opens the local image of r (cfg.cache_dir) at acquire; logs and goes on
** without one when it cannot. */
void rp_image_open(replica *r);
/* The first view from the local image (warm open, no store I/O), or NULL
** when the image has none. Replays a staged apply first. */
replica_view *rp_image_view(replica *r);
/* A view at txid from the local image when it is at exactly txid and
** nothing in this process moves it (no hydrator yet, no apply staged), or
** NULL: a pinned open while the store does not answer. */
replica_view *rp_image_pinned_view(replica *r, uint64_t txid);
/* Starts the hydrator thread (once; after the first view is published). */
void rp_hydrator_start(replica *r);
/* The poller published view after applying files[0..n) on top of the
** previous latest (chain), or a re-planned view (files NULL). Caller holds
** r->mutex. */
void rp_image_published(replica *r, replica_view *view, rp_file **files, size_t n);
/* Closes the image (threads ended). */
void rp_image_close(replica *r);
/* Ends a background thread: the last one of an orphaned replica frees it. */
void rp_thread_exit(replica *r);

/* ---- fill.c ---- */
/* Where a fill pass is: file index in v->files and position in its index. A
** pass walks every file of the view once; file by file, so that a run is a
** stretch of one file, whatever the page numbers. run_target and file_cap
** size its runs; 0 until computed. */
typedef struct fill_cursor {
  size_t file;
  uint32_t pos;
  uint64_t run_target;  /* bytes a run should take, for the whole pass */
  uint64_t file_cap;    /* bytes a run of the current file takes at most */
} fill_cursor;

#define FILL_CURSOR_START ((fill_cursor){0, 0, 0, 0})

/* Fills v's map from *cur on, with FILL_PARALLEL workers (this thread one
** of them), until the pass is over, the hydrator is needed elsewhere or a
** fetch fails. *found: some run was taken. */
int rp_fill_some(replica *r, replica_view *v, fill_cursor *cur, int *found, ltx_error *err);

/* The early pass of `ltvfs hydrate` into an empty image: starts fetching
** the planned files (n, as listed) before their indexes are read; the
** reads wait for the map. */
void rp_fill_early_start(replica *r, const store_ltx_file *files, size_t n);
/* Whether an early pass waits to be adopted or abandoned. */
int rp_fill_early_pending(replica *r);
/* Lets its reads go out: the open's index reads are under way (files.c). */
void rp_fill_early_go(replica *r);
/* Gives it the map v (the record has v's map): its reads write from now. */
void rp_fill_early_ready(replica *r, replica_view *v);
/* Gives it the map v, if not yet, and returns once it is done. The
** hydrator, after the first rebase. */
void rp_fill_early_adopt(replica *r, replica_view *v);
/* Abandons an early pass, if any: its reads stop at once. */
void rp_fill_early_abort(replica *r);

/* ---- poll.c ---- */
typedef struct list_job list_job;
/* Lists all levels into out. */
int rp_list_all(replica *r, store_ltx_list *out, ltx_error *err);
/* Remembers the last file of each level in a listing. Caller holds r->mutex. */
void rp_note_seen(replica *r, const store_ltx_list *l);
void *rp_poller_main(void *arg);

#endif /* LTVFS_CACHE_REPLICA_INT_H */
