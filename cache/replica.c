/*
** replica.c: the replica object of the read path (docs/read-path.md).
**
** One replica per URL per process: one store, one page cache, one poller, one
** registry of LTX files whose page indexes are loaded. Readers hold views:
** immutable, refcounted {TXID, commit, page size, page map}. The page map is
** an array of 4096-slot chunks, shared copy-on-write between a view and the
** next one, so a poll that changes ten pages copies one chunk, not the map.
** A slot names the file that holds the newest version of its page at the
** view's TXID and the page's position in that file's index.
**
** Building a map from files (a plan, or new files on top of the last view)
** follows docs/restore-plan.md: write each file's pages, then drop the slots
** above its commit. A page no file holds (never written, or the lock page)
** reads as zeros.
**
** Fetching: a miss reads a run of neighbouring frames of the same file in one
** range request and puts every page of it into the page cache; the run
** doubles while a reader moves forward (a scan) and falls back on a jump.
** Concurrent misses inside a run in flight wait for it instead of fetching
** again. A file that has gone from the store (retention after compaction)
** makes the read re-plan at the view's TXID from a fresh listing.
**
** Polling: every poll lists level 0 after the last key seen there; every
** tenth poll, or when the new files leave a gap, the other levels too. New
** files are chained onto the last view's TXID the way the planner chains
** them (highest max first), which also handles a compacted file that
** straddles the current TXID. Failing polls back off up to 30 s and recover
** by themselves.
*/
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/cache.h"

#define CHUNK_SHIFT 12
#define CHUNK_PAGES (1u << CHUNK_SHIFT)
#define RUN_MIN 16u                 /* frames fetched by an isolated miss */
#define RUN_MAX 4096u               /* frames fetched by one request of a scan */
#define RUN_MAX_BYTES (8u << 20)    /* bytes fetched by one request */
#define RUN_MAX_BRIDGE 32u          /* unneeded frames a run may carry along */
#define POLL_BACKOFF_MAX_MS 30000
#define FULL_LIST_EVERY 10          /* polls between listings of levels 1..9 */
#define POLL_WARN_EVERY_MS 30000    /* a failure that persists is logged this often */
#define CLOSE_WAIT_MS 1000          /* replica_release waits this long for a poll */
#define LOAD_THREADS 16

/* ---- logging ---- */

/* Set by the VFS at any time, read by background threads: atomic. */
static _Atomic(replica_log_fn) g_log;

void replica_set_log(replica_log_fn fn) { atomic_store(&g_log, fn); }

static void rlog(int level, const char *fmt, ...) LTX_PRINTF(2, 3);
static void rlog(int level, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  replica_log_fn fn = atomic_load(&g_log);
  if (fn == NULL) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fn(level, msg);
}

/* ---- types ---- */

typedef struct rp_file {
  atomic_int refs;
  uint64_t id;                  /* unique in the replica: the page cache key */
  store_ltx_file meta;
  uint32_t page_size;
  uint32_t commit;
  int64_t header_ts_ms;         /* the LTX header's timestamp */
  ltx_index idx;
  atomic_int verified;          /* read whole and verified (small files) */
  uint8_t *whole;               /* bytes read whole at load, until cached */
  char key[128];
  struct rp_file *next;         /* registry list */
} rp_file;

typedef struct rp_slot {
  rp_file *file;                /* NULL: no file holds the page */
  uint32_t ipos;                /* position in file->idx.entries */
} rp_slot;

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
  replica_view *replacement;    /* same TXID rebuilt after a file vanished */
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
  char poll_error[512];         /* the last poll's failure, "" after a good one */
  int64_t poll_warned_ms;       /* when a poll failure was last logged as a warning */
  int poller_started;           /* r->poller was created (join it) */
  int poller_running;           /* ... and has not ended */
  int orphaned;                 /* released while polling: the poller frees r */
  int stop;
  pthread_t poller;
  uint64_t poll_count;

  store_counters io;            /* requests and bytes, counted by the store */
  atomic_uint_fast64_t polls, poll_errors, coalesced;
  atomic_int_fast64_t last_poll_ok_ms;

  struct replica *next;         /* process-wide list */
};

static pthread_mutex_t g_registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static replica *g_replicas;

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_REALTIME ms from now, for pthread_cond_timedwait. */
static struct timespec realtime_in(int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- files ---- */

static void file_release(rp_file *f) {
  if (f == NULL) return;
  if (atomic_fetch_sub(&f->refs, 1) == 1) {
    ltx_index_free(&f->idx);
    free(f->whole);
    free(f);
  }
}

static int same_file(const store_ltx_file *a, const store_ltx_file *b) {
  return a->level == b->level && a->min_txid == b->min_txid && a->max_txid == b->max_txid;
}

/* A registry file with a new reference, or NULL. Caller holds r->mutex. */
static rp_file *registry_find(replica *r, const store_ltx_file *meta) {
  for (rp_file *f = r->registry; f; f = f->next) {
    if (same_file(&f->meta, meta)) {
      atomic_fetch_add(&f->refs, 1);
      return f;
    }
  }
  return NULL;
}

/* Drops registry files no view uses any more (only the registry's own
** reference is left). Caller holds r->mutex. */
static void registry_prune(replica *r) {
  rp_file **pp = &r->registry;
  while (*pp) {
    rp_file *f = *pp;
    if (atomic_load(&f->refs) == 1) {
      *pp = f->next;
      file_release(f);
    } else {
      pp = &f->next;
    }
  }
}

typedef struct load_job {
  replica *r;
  const store_ltx_file *metas;
  rp_file **out;
  int *rcs;
  ltx_error *errs;
  atomic_size_t next;
  size_t n;
} load_job;

/* Integrity. Litestream writes NoChecksum (0x2) files: the file checksum
** over every byte is their only checksum. A file up to cfg.prefetch_max is
** therefore fetched whole the first time a read needs one of its pages, and
** verified completely (frames, index, file checksum) before any of its pages
** is served; all its pages then go into the page cache. Files small enough
** that reading their index is reading all of them are verified at load.
** Frames of larger files are read by runs and checked by LZ4 and the frame
** header (pgno) only. */

/* Verifies a whole file in buf (frames, index, file checksum) and that its
** header names f's TXIDs; h receives the header. */
static int verify_whole(const rp_file *f, const uint8_t *buf, size_t n, ltx_header *h,
                        ltx_error *err) {
  int rc = ltx_verify_buffer(buf, n, h, NULL, err);
  if (rc == LTX_OK) rc = store_check_ltx_name(&f->meta, h, err);
  return rc;
}

/* Puts every page of a verified whole file into the page cache; out (may be
** NULL) receives page pgno. */
static void cache_all_pages(replica *r, rp_file *f, const uint8_t *buf, uint32_t pgno,
                            uint8_t *out) {
  uint8_t *page = malloc(f->page_size);
  for (size_t i = 0; page != NULL && i < f->idx.n; i++) {
    const ltx_page_entry *e = &f->idx.entries[i];
    uint8_t *dst = (out != NULL && e->pgno == pgno) ? out : page;
    if (ltx_frame_decode(buf + e->offset, e->size, e->pgno, f->page_size, dst, NULL) == LTX_OK)
      page_cache_put(r->pc, f->id, e->pgno, dst, f->page_size);
  }
  free(page);
}

/* Loads the file a listing named: header and index, or the whole file
** verified when it is small (store_load_ltx, which treats the listed size as
** a hint and names the key of a file that is corrupt). */
static int load_one(replica *r, const store_ltx_file *meta, rp_file **out, ltx_error *err) {
  store_ltx_loaded l;
  rp_file *f = calloc(1, sizeof(*f));
  int rc;
  if (f == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  rc = store_load_ltx(r->st, meta, &l, err);
  if (rc != LTX_OK) {
    free(f);
    return rc;
  }
  atomic_init(&f->refs, 1);
  f->meta = *meta;
  store_ltx_key(r->st, meta->level, meta->min_txid, meta->max_txid, f->key, sizeof(f->key));
  if (l.size != meta->size) {
    rlog(REPLICA_LOG_DEBUG, "%s: listed at %" PRIu64 " bytes, loaded at %" PRIu64, f->key,
         meta->size, l.size);
    f->meta.size = l.size;
  }
  f->page_size = l.header.page_size;
  f->commit = l.header.commit;
  /* The header's time, not the listing's: immutable, to the millisecond
  ** (S3 lists LastModified in whole seconds, at upload). */
  f->header_ts_ms = l.header.timestamp_ms;
  if (f->meta.timestamp_ms < 0) f->meta.timestamp_ms = l.header.timestamp_ms;
  f->idx = l.idx;
  f->whole = l.whole; /* verified whole: its pages go to the page cache */
  atomic_init(&f->verified, l.whole != NULL);
  *out = f;
  return LTX_OK;
}

static void *load_worker(void *arg) {
  load_job *job = arg;
  for (;;) {
    size_t i = atomic_fetch_add(&job->next, 1);
    if (i >= job->n) break;
    if (job->out[i] != NULL) continue; /* already in the registry */
    job->rcs[i] = load_one(job->r, &job->metas[i], &job->out[i], &job->errs[i]);
  }
  return NULL;
}

/* Runs fn over a job with up to LOAD_THREADS threads (inline when n is 1). */
static void run_parallel(void *(*fn)(void *), void *job, size_t n) {
  pthread_t th[LOAD_THREADS];
  size_t nth = n < LOAD_THREADS ? n : LOAD_THREADS, started = 0;
  for (size_t i = 1; i < nth; i++) {
    if (pthread_create(&th[started], NULL, fn, job) != 0) break;
    started++;
  }
  fn(job);
  for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
}

/* References to the files of metas (n of them), from the registry or loaded
** in parallel (index and header, one or two reads each) and registered.
** Each file has its own result: out[i] is NULL where rcs[i]/errs[i] say why
** it failed; files that loaded are registered whatever became of the others,
** so a retry does not fetch them again. */
static void files_load(replica *r, const store_ltx_file *metas, size_t n, rp_file **out,
                       int *rcs, ltx_error *errs) {
  load_job job;
  size_t nmiss = 0;

  pthread_mutex_lock(&r->mutex);
  for (size_t i = 0; i < n; i++) {
    rcs[i] = LTX_OK;
    out[i] = registry_find(r, &metas[i]);
    if (out[i] == NULL) nmiss++;
  }
  pthread_mutex_unlock(&r->mutex);

  if (nmiss > 0) {
    job.r = r;
    job.metas = metas;
    job.out = out;
    job.rcs = rcs;
    job.errs = errs;
    atomic_init(&job.next, 0);
    job.n = n;
    run_parallel(load_worker, &job, nmiss);
  }

  /* Register what was loaded (another thread may have loaded it too). */
  pthread_mutex_lock(&r->mutex);
  for (size_t i = 0; i < n; i++) {
    if (out[i] == NULL || out[i]->id != 0) continue;
    rp_file *have = registry_find(r, &metas[i]);
    if (have != NULL) {
      file_release(out[i]);
      out[i] = have;
      continue;
    }
    out[i]->id = ++r->next_file_id;
    atomic_fetch_add(&out[i]->refs, 1);
    out[i]->next = r->registry;
    r->registry = out[i];
  }
  pthread_mutex_unlock(&r->mutex);
  for (size_t i = 0; i < n; i++) {
    if (out[i] != NULL && out[i]->whole) {
      cache_all_pages(r, out[i], out[i]->whole, 0, NULL);
      free(out[i]->whole);
      out[i]->whole = NULL;
    }
  }
}

/* files_load for a plan: every file or an error (the first failure). */
static int files_get(replica *r, const store_ltx_file *metas, size_t n, rp_file ***pout,
                     ltx_error *err) {
  rp_file **out = calloc(n ? n : 1, sizeof(*out));
  int *rcs = calloc(n ? n : 1, sizeof(int));
  ltx_error *errs = calloc(n ? n : 1, sizeof(ltx_error));
  int rc = LTX_OK;

  if (out == NULL || rcs == NULL || errs == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  files_load(r, metas, n, out, rcs, errs);
  for (size_t i = 0; i < n && rc == LTX_OK; i++) {
    if (rcs[i] != LTX_OK) {
      rc = rcs[i];
      *err = errs[i];
    }
  }
  if (rc != LTX_OK) goto out;
  *pout = out;
  out = NULL;
out:
  if (out != NULL) {
    for (size_t i = 0; i < n; i++) file_release(out[i]);
    free(out);
  }
  free(rcs);
  free(errs);
  return rc;
}

/* ---- views ---- */

static void chunk_release(rp_chunk *c) {
  if (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1) free(c);
}

static void view_free(replica_view *v) {
  for (uint32_t i = 0; i < v->nchunk; i++) chunk_release(v->chunks[i]);
  free(v->chunks);
  for (size_t i = 0; i < v->nfiles; i++) file_release(v->files[i]);
  free(v->files);
  if (v->replacement) replica_view_release(v->replacement);
  free(v);
}

void replica_view_ref(replica_view *v) { atomic_fetch_add(&v->refs, 1); }

void replica_view_release(replica_view *v) {
  if (v != NULL && atomic_fetch_sub(&v->refs, 1) == 1) view_free(v);
}

uint64_t replica_view_txid(const replica_view *v) { return v->txid; }
uint32_t replica_view_commit(const replica_view *v) { return v->commit; }
uint32_t replica_view_page_size(const replica_view *v) { return v->page_size; }
int64_t replica_view_timestamp_ms(const replica_view *v) { return v->timestamp_ms; }

static replica_view *view_new(void) {
  replica_view *v = calloc(1, sizeof(*v));
  if (v) atomic_init(&v->refs, 1);
  return v;
}

/* A new view sharing prev's chunks and files. */
static replica_view *view_clone(const replica_view *prev) {
  replica_view *v = view_new();
  if (v == NULL) return NULL;
  v->txid = prev->txid;
  v->commit = prev->commit;
  v->page_size = prev->page_size;
  v->timestamp_ms = prev->timestamp_ms;
  v->chunks = calloc(prev->nchunk ? prev->nchunk : 1, sizeof(*v->chunks));
  v->files = calloc(prev->nfiles ? prev->nfiles : 1, sizeof(*v->files));
  if (v->chunks == NULL || v->files == NULL) {
    view_free(v);
    return NULL;
  }
  v->nchunk = prev->nchunk;
  for (uint32_t i = 0; i < prev->nchunk; i++) {
    v->chunks[i] = prev->chunks[i];
    if (v->chunks[i]) atomic_fetch_add(&v->chunks[i]->refs, 1);
  }
  v->cap_files = prev->nfiles ? prev->nfiles : 1;
  v->nfiles = prev->nfiles;
  v->files_after_prune = prev->files_after_prune;
  for (size_t i = 0; i < prev->nfiles; i++) {
    v->files[i] = prev->files[i];
    atomic_fetch_add(&v->files[i]->refs, 1);
  }
  return v;
}

/* The slot of pgno, made private to v (copy-on-write); NULL on OOM. */
static rp_slot *view_slot_mut(replica_view *v, uint32_t pgno) {
  uint32_t ci = (pgno - 1) >> CHUNK_SHIFT;
  rp_chunk *c;
  if (ci >= v->nchunk) {
    rp_chunk **nc = realloc(v->chunks, (size_t)(ci + 1) * sizeof(*nc));
    if (nc == NULL) return NULL;
    memset(nc + v->nchunk, 0, (size_t)(ci + 1 - v->nchunk) * sizeof(*nc));
    v->chunks = nc;
    v->nchunk = ci + 1;
  }
  c = v->chunks[ci];
  if (c == NULL || atomic_load(&c->refs) > 1) {
    rp_chunk *copy = malloc(sizeof(*copy));
    if (copy == NULL) return NULL;
    if (c) memcpy(copy->slot, c->slot, sizeof(copy->slot));
    else memset(copy->slot, 0, sizeof(copy->slot));
    atomic_init(&copy->refs, 1);
    chunk_release(c);
    v->chunks[ci] = copy;
    c = copy;
  }
  return &c->slot[(pgno - 1) & (CHUNK_PAGES - 1)];
}

static const rp_slot *view_slot(const replica_view *v, uint32_t pgno) {
  uint32_t ci = (pgno - 1) >> CHUNK_SHIFT;
  if (pgno == 0 || ci >= v->nchunk || v->chunks[ci] == NULL) return NULL;
  return &v->chunks[ci]->slot[(pgno - 1) & (CHUNK_PAGES - 1)];
}

/* Drops every slot above commit. */
static int view_truncate(replica_view *v, uint32_t commit) {
  uint32_t keep = (commit + CHUNK_PAGES - 1) >> CHUNK_SHIFT; /* chunks that stay */
  for (uint32_t i = keep; i < v->nchunk; i++) chunk_release(v->chunks[i]);
  if (v->nchunk > keep) v->nchunk = keep;
  if (commit % CHUNK_PAGES != 0 && keep > 0 && keep <= v->nchunk && v->chunks[keep - 1]) {
    const rp_chunk *c = v->chunks[keep - 1];
    uint32_t first = commit % CHUNK_PAGES; /* slot index of page commit+1 */
    int dirty = 0;
    for (uint32_t s = first; s < CHUNK_PAGES && !dirty; s++) dirty = c->slot[s].file != NULL;
    if (dirty) {
      rp_slot *base = view_slot_mut(v, (keep - 1) * CHUNK_PAGES + 1);
      if (base == NULL) return LTX_ERR_NOMEM;
      memset(base + first, 0, (CHUNK_PAGES - first) * sizeof(rp_slot));
    }
  }
  return LTX_OK;
}

static int view_add_file(replica_view *v, rp_file *f) {
  if (v->nfiles == v->cap_files) {
    size_t cap = v->cap_files ? v->cap_files * 2 : 8;
    rp_file **nf = realloc(v->files, cap * sizeof(*nf));
    if (nf == NULL) return LTX_ERR_NOMEM;
    v->files = nf;
    v->cap_files = cap;
  }
  atomic_fetch_add(&f->refs, 1);
  v->files[v->nfiles++] = f;
  return LTX_OK;
}

/* Writes f's pages into v's map, then drops the slots above f's commit. */
static int view_apply(replica_view *v, rp_file *f, ltx_error *err) {
  if (v->page_size != 0 && f->page_size != v->page_size)
    return ltx_error_set(err, CACHE_ERR_PAGE_SIZE,
                         "%s: page size %u differs from %u of the files before it", f->key,
                         f->page_size, v->page_size);
  v->page_size = f->page_size;
  for (size_t i = 0; i < f->idx.n; i++) {
    rp_slot *s = view_slot_mut(v, f->idx.entries[i].pgno);
    if (s == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for the page map");
    s->file = f;
    s->ipos = (uint32_t)i;
  }
  if (view_truncate(v, f->commit) != LTX_OK)
    return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for the page map");
  if (view_add_file(v, f) != LTX_OK)
    return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for the page map");
  v->commit = f->commit;
  v->txid = f->meta.max_txid;
  /* The header's time, not the listing's: immutable, to the millisecond
  ** (S3 lists LastModified in whole seconds, at upload; a file store lists
  ** an mtime a writer may still be setting). */
  v->timestamp_ms = f->header_ts_ms;
  return LTX_OK;
}

static int ptr_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t) * (rp_file *const *)a, y = (uintptr_t) * (rp_file *const *)b;
  return x < y ? -1 : x > y;
}

/* Releases the files no slot names any more, so a long-polling view does
** not pin every L0 file it ever applied. O(commit): run only when the file
** list has doubled since the last prune. */
static void view_prune_files(replica_view *v) {
  unsigned char *used;
  size_t n = 0;
  if (v->nfiles < 32 || v->nfiles < 2 * v->files_after_prune) return;
  qsort(v->files, v->nfiles, sizeof(*v->files), ptr_cmp);
  used = calloc(v->nfiles, 1);
  if (used == NULL) return;
  for (uint32_t ci = 0; ci < v->nchunk; ci++) {
    const rp_chunk *c = v->chunks[ci];
    rp_file *last = NULL;
    if (c == NULL) continue;
    for (uint32_t s = 0; s < CHUNK_PAGES; s++) {
      rp_file *f = c->slot[s].file;
      if (f == NULL || f == last) continue;
      last = f;
      rp_file **hit = bsearch(&f, v->files, v->nfiles, sizeof(*v->files), ptr_cmp);
      if (hit) used[hit - v->files] = 1;
    }
  }
  for (size_t i = 0; i < v->nfiles; i++) {
    if (used[i]) v->files[n++] = v->files[i];
    else file_release(v->files[i]);
  }
  v->nfiles = n;
  v->files_after_prune = n;
  free(used);
}

/* A view of exactly the files of plan, in order. */
static int view_from_plan(replica *r, const store_plan *plan, replica_view **out,
                          ltx_error *err) {
  rp_file **files = NULL;
  replica_view *v = view_new();
  int rc;
  if (v == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  rc = files_get(r, plan->files, plan->n, &files, err);
  if (rc != LTX_OK) goto out;
  for (size_t i = 0; i < plan->n && rc == LTX_OK; i++) rc = view_apply(v, files[i], err);
  if (rc == LTX_OK) view_prune_files(v);
out:
  if (files) {
    for (size_t i = 0; i < plan->n; i++) file_release(files[i]);
    free(files);
  }
  if (rc != LTX_OK) {
    view_free(v);
    return rc;
  }
  *out = v;
  return LTX_OK;
}

/* ---- listing ---- */

typedef struct list_job {
  replica *r;
  int first_level, last_level;
  store_ltx_file after[STORE_MAX_LEVEL + 1]; /* 0/0 = from the start */
  store_ltx_list lists[STORE_MAX_LEVEL + 1];
  int rcs[STORE_MAX_LEVEL + 1];
  ltx_error errs[STORE_MAX_LEVEL + 1];
  atomic_int next;
} list_job;

static void *list_worker(void *arg) {
  list_job *job = arg;
  for (;;) {
    int level = job->first_level + atomic_fetch_add(&job->next, 1);
    if (level > job->last_level) break;
    job->rcs[level] = store_list_level(job->r->st, level, job->after[level].min_txid,
                                       job->after[level].max_txid, &job->lists[level],
                                       &job->errs[level]);
  }
  return NULL;
}

/* Lists levels first_level..last_level in parallel (each after
** job->after[level]) and appends every file into out. */
static int list_levels(replica *r, list_job *job, int first_level, int last_level,
                       store_ltx_list *out, ltx_error *err) {
  size_t total = 0;
  int rc = LTX_OK;
  job->r = r;
  job->first_level = first_level;
  job->last_level = last_level;
  memset(job->lists, 0, sizeof(job->lists));
  memset(job->rcs, 0, sizeof(job->rcs));
  atomic_init(&job->next, 0);
  run_parallel(list_worker, job, (size_t)(last_level + 1 - first_level));
  for (int l = first_level; l <= last_level; l++) {
    if (job->rcs[l] != LTX_OK && rc == LTX_OK) {
      rc = job->rcs[l];
      *err = job->errs[l];
    }
    total += job->lists[l].n;
  }
  if (rc == LTX_OK) {
    out->files = malloc((total ? total : 1) * sizeof(*out->files));
    out->n = 0;
    if (out->files == NULL) rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    for (int l = first_level; l <= last_level && rc == LTX_OK; l++) {
      if (job->lists[l].n == 0) continue;
      memcpy(out->files + out->n, job->lists[l].files, job->lists[l].n * sizeof(*out->files));
      out->n += job->lists[l].n;
    }
  }
  for (int l = first_level; l <= last_level; l++) store_ltx_list_free(&job->lists[l]);
  return rc;
}

/* Remembers the last file of each level in a listing for StartAfter. Caller
** holds r->mutex. */
static void note_seen(replica *r, const store_ltx_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    const store_ltx_file *f = &l->files[i];
    store_ltx_file *s = &r->seen[f->level];
    if (f->min_txid > s->min_txid || (f->min_txid == s->min_txid && f->max_txid > s->max_txid))
      *s = *f;
  }
}

static int list_all(replica *r, store_ltx_list *out, ltx_error *err) {
  list_job job;
  memset(&job, 0, sizeof(job));
  return list_levels(r, &job, 0, STORE_MAX_LEVEL, out, err);
}

/* ---- opening, pinning ---- */

static int plan_view(replica *r, const store_ltx_list *all, uint64_t txid, int64_t time_ms,
                     replica_view **out, ltx_error *err) {
  store_plan plan = {0};
  int rc = store_plan_build(all->files, all->n, txid, time_ms, &plan, err);
  if (rc == LTX_OK) rc = view_from_plan(r, &plan, out, err);
  store_plan_free(&plan);
  return rc;
}

int replica_view_at(replica *r, uint64_t txid, int64_t time_ms, replica_view **out,
                    ltx_error *err) {
  store_ltx_list all = {0};
  int rc = list_all(r, &all, err);
  if (rc == LTX_OK) rc = plan_view(r, &all, txid, time_ms, out, err);
  if (rc != LTX_OK) ltx_error_prefix(err, "%s", r->url);
  store_ltx_list_free(&all);
  return rc;
}

static void *poller_main(void *arg);
static void replica_free(replica *r);

/* Publishes v as the latest view (takes the reference). Caller holds
** r->mutex. */
static void publish(replica *r, replica_view *v) {
  replica_view *old = r->latest;
  r->latest = v;
  if (old) replica_view_release(old);
  registry_prune(r);
}

int replica_latest(replica *r, replica_view **out, ltx_error *err) {
  store_ltx_list all = {0};
  replica_view *v = NULL;
  int64_t deadline;
  int rc = LTX_OK;

  pthread_mutex_lock(&r->mutex);
  if (r->latest) {
    replica_view_ref(r->latest);
    *out = r->latest;
    pthread_mutex_unlock(&r->mutex);
    return LTX_OK;
  }
  pthread_mutex_unlock(&r->mutex);

  pthread_mutex_lock(&r->init_mutex);
  pthread_mutex_lock(&r->mutex);
  if (r->latest) { /* another connection finished the first open meanwhile */
    replica_view_ref(r->latest);
    *out = r->latest;
    pthread_mutex_unlock(&r->mutex);
    goto out;
  }
  pthread_mutex_unlock(&r->mutex);

  deadline = mono_ms() + r->cfg.open_timeout_ms;
  for (int wait_ms = 100;; wait_ms = wait_ms < 1000 ? wait_ms * 2 : 1000) {
    store_ltx_list_free(&all);
    rc = list_all(r, &all, err);
    if (rc == LTX_OK) rc = plan_view(r, &all, 0, -1, &v, err);
    if (rc != STORE_ERR_EMPTY) break;
    if (mono_ms() >= deadline) {
      rc = ltx_error_set(err, CACHE_ERR_TIMEOUT,
                         "replica holds no LTX files after waiting %d ms (open_timeout)",
                         r->cfg.open_timeout_ms);
      break;
    }
    rlog(REPLICA_LOG_INFO, "%s: replica is empty, waiting for a first LTX file", r->url);
    sleep_ms(wait_ms);
  }
  if (rc != LTX_OK) {
    ltx_error_prefix(err, "%s", r->url);
    goto out;
  }
  pthread_mutex_lock(&r->mutex);
  note_seen(r, &all);
  replica_view_ref(v);
  publish(r, v);
  atomic_store(&r->last_poll_ok_ms, wall_ms());
  *out = v;
  v = NULL;
  if (!r->poller_running && r->cfg.poll_ms > 0) {
    if (pthread_create(&r->poller, NULL, poller_main, r) == 0)
      r->poller_started = r->poller_running = 1;
    else rlog(REPLICA_LOG_ERROR, "%s: cannot start the poller thread; the view stays at open time", r->url);
  }
  pthread_mutex_unlock(&r->mutex);
out:
  pthread_mutex_unlock(&r->init_mutex);
  store_ltx_list_free(&all);
  return rc;
}

/* ---- polling ----
**
** A poll:
** (1) lists level 0 after the last key seen there; all levels every tenth
**     poll, after a poll the store failed, after a listed file turned out
**     gone, and when the new files leave a gap;
** (2) takes as candidates every file newer than the latest view: those still
**     pending from earlier polls and those just listed. The listing moves
**     past a file once it has seen it, so a file stays pending, by name,
**     until a published view covers its TXIDs; its listed size is only a
**     hint (load_one asks the store again when a load fails);
** (3) chains candidates onto the view's TXID by the planner's own rule
**     (store_plan_next) and loads the chain's files in parallel;
** (4) applies the chain up to its first file that failed and chains again
**     without that file, so a compacted file or a snapshot that covers it
**     lets the replica move on; otherwise the failed file stays pending and
**     is tried again at the next poll. Files of the chain that loaded are
**     held (r->held) until the next poll, so a retry does not fetch them
**     again;
** (5) publishes the new view, if any.
** A store failure fails the poll and polling backs off; a file that fails
** its checks (store_error_is_corrupt) is reported (poll_errors, the last
** poll error, the log) without slowing polling, and lag grows until the
** replica is current again.
**
** Locks: r->mutex guards seen, pending, held, latest and the poll error; it
** is never held across a store call. Only the poller thread changes
** pending and held.
*/

/* Adds f to the candidates, once: a newer listing's entry replaces an older
** one (its size hint is fresher). */
static int cand_add(store_ltx_file **pc, size_t *pn, size_t *pcap, const store_ltx_file *f) {
  for (size_t i = 0; i < *pn; i++) {
    if (same_file(&(*pc)[i], f)) {
      (*pc)[i] = *f;
      return LTX_OK;
    }
  }
  if (*pn == *pcap) {
    size_t cap = *pcap ? *pcap * 2 : 16;
    store_ltx_file *nc = realloc(*pc, cap * sizeof(*nc));
    if (nc == NULL) return LTX_ERR_NOMEM;
    *pc = nc;
    *pcap = cap;
  }
  (*pc)[(*pn)++] = *f;
  return LTX_OK;
}

/* Chains candidates onto txid (skipping those marked in skip) into chain
** (indices into cand, room for ncand); returns the chain's length and sets
** *reach to the TXID it ends at. */
static size_t chain_build(const store_ltx_file *cand, size_t ncand, uint64_t txid,
                          const unsigned char *skip, size_t *chain, uint64_t *reach) {
  size_t n = 0;
  for (const store_ltx_file *f; n < ncand && (f = store_plan_next(cand, ncand, txid, skip)) != NULL;) {
    chain[n++] = (size_t)(f - cand);
    txid = f->max_txid;
  }
  *reach = txid;
  return n;
}

static int any_newer(const store_ltx_file *cand, size_t ncand, uint64_t txid) {
  for (size_t i = 0; i < ncand; i++)
    if (cand[i].max_txid > txid) return 1;
  return 0;
}

/* Marks on a candidate (poll_once's skip array). */
enum { CAND_OK = 0, CAND_FAILED = 1, CAND_GONE = 2 };

static int poll_once(replica *r, ltx_error *err) {
  list_job job;
  store_ltx_list fresh = {0};
  store_ltx_file *cand = NULL, *metas = NULL;
  size_t ncand = 0, capcand = 0, *chain = NULL, nchain = 0, first_nchain = 0;
  unsigned char *skip = NULL;
  rp_file **files = NULL, **held = NULL;
  size_t nheld = 0;
  int *rcs = NULL;
  ltx_error *errs = NULL, file_err = {0}, store_err = {0};
  replica_view *cur = NULL, *next = NULL;
  int full, rc = LTX_OK, list_all_next = 0;
  uint64_t reach, base;

  memset(&job, 0, sizeof(job));
  pthread_mutex_lock(&r->mutex);
  cur = r->latest;
  replica_view_ref(cur);
  base = cur->txid;
  full = (r->poll_count++ % FULL_LIST_EVERY) == 0 || r->list_all_next;
  for (size_t i = 0; i < r->npending && rc == LTX_OK; i++)
    rc = cand_add(&cand, &ncand, &capcand, &r->pending[i]);
  pthread_mutex_unlock(&r->mutex);
  if (rc != LTX_OK) goto nomem;

  /* (1), (2) */
  for (int attempt = 0; attempt < 2; attempt++) {
    pthread_mutex_lock(&r->mutex);
    memcpy(job.after, r->seen, sizeof(job.after));
    pthread_mutex_unlock(&r->mutex);
    rc = list_levels(r, &job, 0, full ? STORE_MAX_LEVEL : 0, &fresh, err);
    if (rc != LTX_OK) goto out;
    pthread_mutex_lock(&r->mutex);
    note_seen(r, &fresh);
    pthread_mutex_unlock(&r->mutex);
    for (size_t i = 0; i < fresh.n && rc == LTX_OK; i++)
      if (fresh.files[i].max_txid > base) rc = cand_add(&cand, &ncand, &capcand, &fresh.files[i]);
    store_ltx_list_free(&fresh);
    if (rc != LTX_OK) goto nomem;
    free(chain);
    chain = malloc((ncand + 1) * sizeof(*chain));
    if (chain == NULL) goto nomem;
    chain_build(cand, ncand, base, NULL, chain, &reach);
    if (!any_newer(cand, ncand, reach) || full) break;
    full = 1; /* new files beyond a gap: what fills it may sit in a higher level */
  }

  /* (3), (4) */
  skip = calloc(ncand + 1, 1);
  metas = malloc((ncand + 1) * sizeof(*metas));
  files = calloc(ncand + 1, sizeof(*files));
  held = calloc(ncand + 1, sizeof(*held));
  rcs = calloc(ncand + 1, sizeof(*rcs));
  errs = calloc(ncand + 1, sizeof(*errs));
  if (skip == NULL || metas == NULL || files == NULL || held == NULL || rcs == NULL || errs == NULL)
    goto nomem;
  reach = base;
  for (size_t round = 0; round <= ncand && rc == LTX_OK; round++) {
    size_t k = 0;
    nchain = chain_build(cand, ncand, reach, skip, chain, &(uint64_t){0});
    if (round == 0) first_nchain = nchain;
    if (nchain == 0) break;
    for (size_t i = 0; i < nchain; i++) metas[i] = cand[chain[i]];
    files_load(r, metas, nchain, files, rcs, errs);
    while (k < nchain && files[k] != NULL) k++;
    if (k > 0 && next == NULL && (next = view_clone(cur)) == NULL) rc = LTX_ERR_NOMEM;
    for (size_t i = 0; i < k && rc == LTX_OK; i++) rc = view_apply(next, files[i], err);
    if (rc == LTX_OK && k > 0) reach = files[k - 1]->meta.max_txid;
    for (size_t i = 0; i < nchain; i++) {
      if (i > k && files[i] != NULL && nheld <= ncand) held[nheld++] = files[i];
      else file_release(files[i]);
      files[i] = NULL;
    }
    if (rc != LTX_OK || k == nchain) break;
    if (rcs[k] == STORE_ERR_NOT_FOUND) {
      /* Gone since the listing (retention): a full listing next time finds
      ** what replaced it. */
      skip[chain[k]] = CAND_GONE;
      list_all_next = 1;
    } else if (store_error_is_corrupt(rcs[k])) {
      skip[chain[k]] = CAND_FAILED;
      if (file_err.code == LTX_OK) file_err = errs[k];
    } else {
      store_err = errs[k]; /* the store failed: publish what we have, then back off */
      break;
    }
  }
  if (rc == LTX_ERR_NOMEM) goto nomem;
  if (rc != LTX_OK) goto out;
  if (next != NULL) view_prune_files(next);

  if (store_err.code == LTX_OK && first_nchain == 0 && any_newer(cand, ncand, base)) {
    /* Newer files exist but none follows our TXID, even after a full
    ** listing: the files in between were removed (retention) or compacted
    ** away. Re-plan from what the store holds. */
    rlog(REPLICA_LOG_WARN, "%s: newer files do not follow TXID %016" PRIx64 "; re-planning",
         r->url, base);
    rc = replica_view_at(r, 0, -1, &next, err);
  }

  /* (5) */
  if (next != NULL && rc == LTX_OK) {
    rlog(REPLICA_LOG_DEBUG, "%s: TXID %016" PRIx64 " -> %016" PRIx64 " (commit %u)", r->url,
         base, next->txid, next->commit);
    pthread_mutex_lock(&r->mutex);
    if (r->latest == cur) {
      base = next->txid;
      publish(r, next);
      next = NULL;
    }
    pthread_mutex_unlock(&r->mutex);
  }
  if (rc == LTX_OK && store_err.code != LTX_OK) file_err = store_err;
  if (rc == LTX_OK && file_err.code != LTX_OK) {
    rc = file_err.code;
    *err = file_err;
  }
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory while polling");
out:
  /* What stays pending: every candidate newer than the latest view, unless
  ** it is gone; and the loaded files not applied yet. */
  pthread_mutex_lock(&r->mutex);
  r->npending = 0;
  for (size_t i = 0; i < ncand; i++) {
    if (cand[i].max_txid <= base || (skip != NULL && skip[i] == CAND_GONE)) continue;
    cand[r->npending++] = cand[i];
  }
  free(r->pending);
  r->pending = cand;
  cand = NULL;
  for (size_t i = 0; i < r->nheld; i++) file_release(r->held[i]);
  free(r->held);
  r->held = held;
  r->nheld = nheld;
  held = NULL;
  /* After a store failure the listing may have missed something: list every
  ** level next time. A bad file alone does not need that (the tenth-poll
  ** listing finds a compaction that covers it), and would cost ten LISTs a
  ** poll for as long as the file stays bad. */
  r->list_all_next = list_all_next || (rc != LTX_OK && !store_error_is_corrupt(rc));
  pthread_mutex_unlock(&r->mutex);

  if (next) replica_view_release(next);
  replica_view_release(cur);
  store_ltx_list_free(&fresh);
  free(cand);
  free(chain);
  free(skip);
  free(metas);
  free(files);
  free(held);
  free(rcs);
  free(errs);
  return rc;
}

/* Records the outcome of a poll for stats and the log. A failure is logged
** as a warning when it is new (another message) or 30 s after the last
** warning; in between at debug level. */
static void poll_report(replica *r, int rc, const ltx_error *err, int failures, int interval) {
  int64_t now = mono_ms();
  int warn = 0;
  atomic_fetch_add(&r->polls, 1);
  pthread_mutex_lock(&r->mutex);
  if (rc == LTX_OK) {
    r->poll_error[0] = '\0';
  } else {
    warn = strcmp(r->poll_error, err->msg) != 0 || now - r->poll_warned_ms >= POLL_WARN_EVERY_MS;
    if (warn) r->poll_warned_ms = now;
    snprintf(r->poll_error, sizeof(r->poll_error), "%s", err->msg);
  }
  pthread_mutex_unlock(&r->mutex);
  if (rc == LTX_OK) {
    atomic_store(&r->last_poll_ok_ms, wall_ms());
    if (failures > 0)
      rlog(REPLICA_LOG_INFO, "%s: polling recovered after %d failures", r->url, failures);
    return;
  }
  atomic_fetch_add(&r->poll_errors, 1);
  rlog(warn ? REPLICA_LOG_WARN : REPLICA_LOG_DEBUG,
       "%s: poll failed (%d in a row, next in %d ms): %s", r->url, failures, interval, err->msg);
}

static void *poller_main(void *arg) {
  replica *r = arg;
  int interval = r->cfg.poll_ms, failures = 0, orphaned;
  pthread_mutex_lock(&r->mutex);
  while (!r->stop) {
    struct timespec until = realtime_in(interval);
    while (!r->stop && pthread_cond_timedwait(&r->cond, &r->mutex, &until) != ETIMEDOUT) {
    }
    if (r->stop) break;
    pthread_mutex_unlock(&r->mutex);

    ltx_error err = {0};
    int rc = poll_once(r, &err);
    if (rc == LTX_OK) {
      failures = 0;
      interval = r->cfg.poll_ms;
    } else if (store_error_is_corrupt(rc)) {
      /* The store answered; a file is bad or incomplete. Backing off would
      ** only delay the file's completion being seen. */
      failures++;
      interval = r->cfg.poll_ms;
    } else {
      failures++;
      long backoff = (long)r->cfg.poll_ms << (failures < 16 ? failures : 16);
      interval = backoff > POLL_BACKOFF_MAX_MS ? POLL_BACKOFF_MAX_MS : (int)backoff;
    }
    poll_report(r, rc, &err, failures, interval);
    pthread_mutex_lock(&r->mutex);
  }
  /* replica_release waits a bounded time for this; if it gave up waiting,
  ** the replica is this thread's to free. */
  r->poller_running = 0;
  orphaned = r->orphaned;
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->mutex);
  if (orphaned) replica_free(r);
  return NULL;
}

/* ---- reading ---- */

/* The view to read from: v, or what replaced it after a file vanished. */
static replica_view *resolve(replica *r, replica_view *v) {
  pthread_mutex_lock(&r->mutex);
  while (v->replacement) v = v->replacement;
  pthread_mutex_unlock(&r->mutex);
  return v;
}

static uint32_t next_run(replica *r, replica_readahead *ra, uint32_t pgno, uint32_t page_size) {
  uint32_t run = RUN_MIN, cap;
  if (ra != NULL) {
    if (ra->run != 0 && pgno > ra->last_pgno && pgno - ra->last_pgno <= 2 * ra->run + RUN_MIN)
      run = ra->run * 2 > RUN_MAX ? RUN_MAX : ra->run * 2;
    ra->run = run;
    ra->last_pgno = pgno;
  }
  /* Never fetch more than half the page cache at once: the run would evict
  ** its own first pages before they are read. */
  cap = (uint32_t)(page_cache_limit(r->pc) / 2 / (page_size + 64));
  if (run > cap) run = cap ? cap : 1;
  return run;
}

/* Whether an in-flight fetch covers position ipos of file_id. Caller holds
** r->mutex. */
static const rp_inflight *inflight_find(const replica *r, uint64_t file_id, uint32_t ipos) {
  for (const rp_inflight *x = r->inflight; x; x = x->next)
    if (x->file_id == file_id && ipos >= x->lo && ipos < x->hi) return x;
  return NULL;
}

/* Fetches frames [lo, hi) of f in one range read, puts them into the page
** cache and the page at lo into out. */
static int fetch_run(replica *r, rp_file *f, uint32_t lo, uint32_t hi, uint8_t *out,
                     ltx_error *err) {
  const ltx_page_entry *e = f->idx.entries;
  uint64_t off = e[lo].offset;
  size_t len = (size_t)(e[hi - 1].offset + e[hi - 1].size - off);
  uint8_t *buf = malloc(len), *page = NULL;
  int rc;
  if (buf == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for a %zu-byte read", len);
  rc = store_read_range(r->st, f->key, off, buf, len, err);
  if (rc != LTX_OK) goto out;
  page = malloc(f->page_size);
  if (page == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (uint32_t j = lo; j < hi; j++) {
    uint8_t *dst = j == lo ? out : page;
    ltx_error derr = {0};
    int drc = ltx_frame_decode(buf + (e[j].offset - off), e[j].size, e[j].pgno, f->page_size,
                               dst, &derr);
    if (drc != LTX_OK) {
      if (j == lo) {
        rc = drc;
        *err = derr;
        ltx_error_prefix(err, "%s: page %u at offset %" PRIu64, f->key, e[j].pgno, e[j].offset);
        goto out;
      }
      break; /* the neighbours are a bonus; the reader of that page will see the error */
    }
    page_cache_put(r->pc, f->id, e[j].pgno, dst, f->page_size);
  }
out:
  free(page);
  free(buf);
  return rc;
}

/* Fetches the whole of a small file, verifies it, caches all its pages and
** the page pgno into out. */
static int fetch_whole(replica *r, rp_file *f, uint32_t pgno, uint8_t *out, ltx_error *err) {
  size_t n = (size_t)f->meta.size;
  uint8_t *buf = malloc(n ? n : 1);
  ltx_header h;
  int rc;
  if (buf == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for %s", f->key);
  rc = store_read_range(r->st, f->key, 0, buf, n, err);
  if (rc == LTX_OK) {
    rc = verify_whole(f, buf, n, &h, err);
    if (rc != LTX_OK) ltx_error_prefix(err, "corrupt LTX file %s", f->key);
  }
  if (rc == LTX_OK && h.page_size != f->page_size)
    rc = ltx_error_set(err, LTX_ERR_PAGE_SIZE, "corrupt LTX file %s: page size %u, was %u",
                       f->key, h.page_size, f->page_size);
  if (rc == LTX_OK) {
    memset(out, 0, f->page_size);
    cache_all_pages(r, f, buf, pgno, out);
    atomic_store(&f->verified, 1);
  }
  free(buf);
  return rc;
}

static int read_from_view(replica *r, replica_view *v, uint32_t pgno, uint8_t *out,
                          replica_readahead *ra, ltx_error *err) {
  const rp_slot *s;
  rp_file *f;
  uint32_t lo, hi, run;
  rp_inflight me;
  int rc;

  if (pgno == 0 || pgno > v->commit || (s = view_slot(v, pgno)) == NULL || s->file == NULL) {
    memset(out, 0, v->page_size);
    return LTX_OK;
  }
  f = s->file;
  lo = s->ipos;
  for (int tries = 0;; tries++) {
    if (page_cache_get(r->pc, f->id, pgno, out, f->page_size)) return LTX_OK;
    pthread_mutex_lock(&r->mutex);
    if (tries < 3 && inflight_find(r, f->id, lo) != NULL) {
      /* Someone is fetching this page already: wait for it, then look again. */
      atomic_fetch_add(&r->coalesced, 1);
      while (inflight_find(r, f->id, lo) != NULL) pthread_cond_wait(&r->cond, &r->mutex);
      pthread_mutex_unlock(&r->mutex);
      continue;
    }
    break; /* holding r->mutex */
  }
  int whole = !atomic_load(&f->verified) && f->meta.size <= r->cfg.prefetch_max;
  if (whole) {
    lo = 0;
    hi = (uint32_t)f->idx.n;
  } else {
    /* The run: following contiguous frames of the same file. Frames the
    ** view no longer maps to this file, or that are cached already, are
    ** worth fetching only as a short bridge between useful ones (a request
    ** costs more than a few KB); a longer stretch of them ends the run. */
    const ltx_page_entry *e = f->idx.entries;
    uint64_t bytes = e[lo].size;
    uint32_t useful_end = lo + 1, skipped = 0;
    run = next_run(r, ra, pgno, f->page_size);
    hi = lo + 1;
    while (hi < f->idx.n && hi - lo < run && e[hi].offset == e[hi - 1].offset + e[hi - 1].size &&
           bytes + e[hi].size <= RUN_MAX_BYTES && inflight_find(r, f->id, hi) == NULL) {
      const rp_slot *ns = e[hi].pgno <= v->commit ? view_slot(v, e[hi].pgno) : NULL;
      int useful = ns != NULL && ns->file == f && ns->ipos == hi &&
                   !page_cache_contains(r->pc, f->id, e[hi].pgno);
      if (!useful && ++skipped > RUN_MAX_BRIDGE) break;
      bytes += e[hi].size;
      hi++;
      if (useful) {
        skipped = 0;
        useful_end = hi;
      }
    }
    hi = useful_end;
  }
  me.file_id = f->id;
  me.lo = lo;
  me.hi = hi;
  me.next = r->inflight;
  r->inflight = &me;
  pthread_mutex_unlock(&r->mutex);

  rc = whole ? fetch_whole(r, f, pgno, out, err) : fetch_run(r, f, lo, hi, out, err);

  pthread_mutex_lock(&r->mutex);
  for (rp_inflight **pp = &r->inflight; *pp; pp = &(*pp)->next) {
    if (*pp == &me) {
      *pp = me.next;
      break;
    }
  }
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->mutex);
  return rc;
}

int replica_read_page(replica *r, replica_view *v, uint32_t pgno, uint8_t *out,
                      replica_readahead *ra, ltx_error *err) {
  replica_view *cur = resolve(r, v), *fresh = NULL;
  int rc = read_from_view(r, cur, pgno, out, ra, err);
  if (rc != STORE_ERR_NOT_FOUND) return rc;

  /* A file of the view is gone: compaction and retention replaced it. The
  ** same TXID rebuilt from what the store holds now serves the same bytes. */
  rlog(REPLICA_LOG_WARN, "%s: %s; re-planning TXID %016" PRIx64, r->url, err->msg, cur->txid);
  rc = replica_view_at(r, cur->txid, -1, &fresh, err);
  if (rc != LTX_OK) {
    ltx_error_prefix(err, "a file of TXID %016" PRIx64 " vanished and re-planning failed",
                     cur->txid);
    return rc;
  }
  pthread_mutex_lock(&r->mutex);
  if (cur->replacement == NULL) {
    cur->replacement = fresh;
    if (r->latest == cur) {
      replica_view_ref(fresh);
      publish(r, fresh);
    }
  } else {
    replica_view_release(fresh);
  }
  fresh = cur->replacement;
  pthread_mutex_unlock(&r->mutex);
  return read_from_view(r, fresh, pgno, out, ra, err);
}

/* ---- the process-wide registry ---- */

int replica_acquire(const char *url, const replica_config *cfg, replica **out,
                    ltx_error *err) {
  replica *r;
  int rc = LTX_OK;
  pthread_mutex_lock(&g_registry_mutex);
  for (r = g_replicas; r; r = r->next) {
    if (strcmp(r->url, url) == 0) {
      r->refs++;
      /* The limit lives in the page cache (under its lock): r->cfg is
      ** read by other threads without r's registry lock. */
      if (cfg->cache_bytes > page_cache_limit(r->pc)) page_cache_set_limit(r->pc, cfg->cache_bytes);
      *out = r;
      goto out;
    }
  }
  r = calloc(1, sizeof(*r));
  if (r == NULL || (r->url = strdup(url)) == NULL) {
    free(r);
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  store *inner = NULL;
  rc = store_open(url, &inner, err);
  if (rc == LTX_OK) rc = store_counting_wrap(inner, &r->io, &r->st, err);
  if (rc != LTX_OK) {
    free(r->url);
    free(r);
    goto out;
  }
  r->cfg = *cfg;
  r->pc = page_cache_new(cfg->cache_bytes);
  pthread_mutex_init(&r->mutex, NULL);
  pthread_mutex_init(&r->init_mutex, NULL);
  pthread_cond_init(&r->cond, NULL);
  atomic_init(&r->last_poll_ok_ms, -1);
  r->refs = 1;
  r->next = g_replicas;
  g_replicas = r;
  *out = r;
out:
  pthread_mutex_unlock(&g_registry_mutex);
  return rc;
}

/* Frees everything of r; the poller has ended. */
static void replica_free(replica *r) {
  if (r->latest) replica_view_release(r->latest);
  r->latest = NULL;
  for (size_t i = 0; i < r->nheld; i++) file_release(r->held[i]);
  free(r->held);
  while (r->registry) {
    rp_file *f = r->registry;
    r->registry = f->next;
    file_release(f);
  }
  free(r->pending);
  page_cache_free(r->pc);
  store_close(r->st);
  pthread_cond_destroy(&r->cond);
  pthread_mutex_destroy(&r->mutex);
  pthread_mutex_destroy(&r->init_mutex);
  free(r->url);
  free(r);
}

/* The last release stops the poller. A poll in flight is interrupted
** (store_interrupt: S3 requests give up within about 200 ms) and waited for
** up to CLOSE_WAIT_MS; a poll still running then (a store call that does
** not look at the interrupt) finishes in the background and its thread
** frees the replica. So closing the last connection never takes much
** longer than CLOSE_WAIT_MS, whatever the store is doing. */
void replica_release(replica *r) {
  struct timespec until;
  if (r == NULL) return;
  pthread_mutex_lock(&g_registry_mutex);
  if (--r->refs > 0) {
    pthread_mutex_unlock(&g_registry_mutex);
    return;
  }
  for (replica **pp = &g_replicas; *pp; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      break;
    }
  }
  pthread_mutex_unlock(&g_registry_mutex);

  pthread_mutex_lock(&r->mutex);
  r->stop = 1;
  pthread_cond_broadcast(&r->cond);
  if (r->poller_running) store_interrupt(r->st);
  until = realtime_in(CLOSE_WAIT_MS);
  while (r->poller_running && pthread_cond_timedwait(&r->cond, &r->mutex, &until) != ETIMEDOUT) {
  }
  if (r->poller_running) {
    /* From the unlock on, r belongs to the poller thread. */
    pthread_t poller = r->poller;
    char url[600];
    snprintf(url, sizeof(url), "%s", r->url);
    r->orphaned = 1;
    pthread_mutex_unlock(&r->mutex);
    pthread_detach(poller);
    rlog(REPLICA_LOG_WARN, "%s: closed while a poll was in flight; it ends in the background",
         url);
    return;
  }
  pthread_mutex_unlock(&r->mutex);
  if (r->poller_started) pthread_join(r->poller, NULL);
  replica_free(r);
}

const char *replica_url(const replica *r) { return r->url; }

void replica_stats(replica *r, replica_stat *out) {
  out->requests = atomic_load(&r->io.requests);
  out->bytes_fetched = atomic_load(&r->io.bytes);
  out->polls = atomic_load(&r->polls);
  out->poll_errors = atomic_load(&r->poll_errors);
  out->coalesced = atomic_load(&r->coalesced);
  out->last_poll_ok_ms = atomic_load(&r->last_poll_ok_ms);
  pthread_mutex_lock(&r->mutex);
  snprintf(out->last_poll_error, sizeof(out->last_poll_error), "%s", r->poll_error);
  out->pending_files = r->npending;
  pthread_mutex_unlock(&r->mutex);
  page_cache_stats(r->pc, &out->cache);
}

int64_t replica_lag_seconds(replica *r) {
  int64_t ok = atomic_load(&r->last_poll_ok_ms);
  if (ok < 0) return -1;
  int64_t lag = (wall_ms() - ok) / 1000;
  return lag < 0 ? 0 : lag;
}
