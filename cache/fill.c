/*
** fill.c: filling the local image (docs/read-path.md, "Hydrating"): the
** pages of the image's map it does not hold, fetched by runs of frames and
** written as they arrive. The hydrator (hydrate.c) decides when to fill;
** this file owns how.
**
** A pass walks the files of the map (a fill_cursor) and hands out runs:
** stretches of one file, sized for the pass so that the workers finish
** together (size_runs). FILL_PARALLEL workers each take the next run and
** stream it (store_read_range_sink): frames are decoded as they arrive and
** written a stretch of consecutive pages at a time, so a worker decodes
** and writes while its own request is still on the wire, and holds no run
** in memory. A flusher thread syncs the image every FILL_SYNC_STEP_BYTES,
** so the disk's writeback and flush keep pace and the final sync is
** short: download, decode and disk overlap. Workers stand aside while
** readers fetch (a reader's miss goes first).
**
** Locks: a pass's cursor is its job's mutex's; the image has its own write
** mutex; r->mutex only to look at what the hydrator has queued. No lock is
** held across a store call or a file write.
*/
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cache/replica_int.h"

#define FILL_RUN_MAX (16u << 20)     /* about the largest request of the fill in the VFS */
#define FILL_RUN_MAX_ALONE (32u << 20) /* ... and in `ltvfs hydrate` (no readers to yield to) */
#define FILL_PARALLEL 8              /* fill workers: requests in flight (as the limit's raw GET) */
#define FILL_CHUNK_BYTES (1u << 20)  /* pages a fill worker decodes, then writes at once */
#define FILL_STAGE_BYTES (256u << 10) /* a fill worker's bytes of frames cut short */
#define FILL_SYNC_STEP_BYTES (4u << 20) /* written this much: the flusher syncs */
#define YIELD_MS 5                   /* fill pause while readers fetch */
#define READERS_QUIET_MS 200         /* readers were busy this recently: one fill worker */

typedef struct fill_run {
  rp_file *f;
  uint32_t lo, hi; /* index positions */
} fill_run;


/* The bytes of f a fill would fetch from index position from on: from the
** first frame the image wants to the end of the last (the frames between
** travel along). */
static uint64_t wanted_span(replica *r, const rp_file *f, uint32_t from) {
  const ltx_page_entry *e = f->idx.entries;
  uint64_t first = UINT64_MAX, end = 0;
  for (uint32_t j = from; j < f->idx.n; j++) {
    if (!cache_image_wants(r->img, e[j].pgno, &f->meta)) continue;
    if (first == UINT64_MAX) first = e[j].offset;
    end = e[j].offset + e[j].size;
  }
  return first == UINT64_MAX ? 0 : end - first;
}

/* Sizes the runs of a pass from cur on so that the workers finish
** together: the bytes to fetch are cut into a multiple of FILL_PARALLEL
** runs of about equal size, as few as keep a run under the largest (each
** request costs a round trip and, on the server, a signature check and an
** open; a last round of a few runs leaves most connections idle). A file
** gets a whole number of runs of that size, at least one. Measured on the
** bench's replica (a 107 MB snapshot and three 9.5 MB files): greedy 8 MiB
** runs made 19 requests ending in a round of 3; 8 runs of 17 MB and 3 of
** 9.5 MB hydrate 6-15% faster (docs/read-path.md). */
static void size_runs(replica *r, replica_view *v, fill_cursor *cur) {
  uint64_t total = 0, max = r->cfg.hydrate_alone ? FILL_RUN_MAX_ALONE : FILL_RUN_MAX;
  uint64_t per_round = (uint64_t)FILL_PARALLEL * max, runs;
  for (size_t i = cur->file; i < v->nfiles; i++) {
    ltx_error err = {0};
    if (rp_file_ensure_loaded(r, v->files[i], &err) == LTX_OK)
      total += wanted_span(r, v->files[i], i == cur->file ? cur->pos : 0);
  }
  runs = (total + per_round - 1) / per_round * FILL_PARALLEL;
  cur->run_target = runs ? total / runs : max;
  if (cur->run_target == 0) cur->run_target = 1;
}

/* The next run of frames holding pages of v's map the image does not hold
** (0 when the pass is over). A run is contiguous in its file, about
** cur->run_target bytes (size_runs), and carries the frames in between
** that are not wanted (superseded by a later file, or held already): one
** request for a stretch of a file, never one per page. */
static int next_run(replica *r, replica_view *v, fill_cursor *cur, fill_run *run) {
  if (cur->run_target == 0) size_runs(r, v, cur);
  while (cur->file < v->nfiles) {
    rp_file *f = v->files[cur->file];
    ltx_error err = {0};
    if (rp_file_ensure_loaded(r, f, &err) != LTX_OK) { /* a reader will say why */
      cur->file++;
      cur->pos = 0;
      cur->file_cap = 0;
      continue;
    }
    const ltx_page_entry *e = f->idx.entries;
    uint32_t n = (uint32_t)f->idx.n, j = cur->pos;
    while (j < n && !cache_image_wants(r->img, e[j].pgno, &f->meta)) j++;
    if (j >= n) {
      cur->file++;
      cur->pos = 0;
      cur->file_cap = 0;
      continue;
    }
    if (cur->file_cap == 0) {
      /* the file's whole number of runs, each a frame over its share so
      ** that no sliver is left for one more */
      uint64_t span = wanted_span(r, f, j), k = (span + cur->run_target / 2) / cur->run_target;
      cur->file_cap = span / (k ? k : 1) + ltx_frame_max_size(f->page_size);
    }
    uint32_t lo = j, hi = j + 1, useful_end = j + 1;
    uint64_t bytes = e[lo].size;
    while (hi < n && e[hi].offset == e[hi - 1].offset + e[hi - 1].size &&
           bytes + e[hi].size <= cur->file_cap) {
      bytes += e[hi].size;
      hi++;
      if (cache_image_wants(r->img, e[hi - 1].pgno, &f->meta)) useful_end = hi;
    }
    run->f = f;
    run->lo = lo;
    run->hi = useful_end;
    cur->pos = useful_end;
    return 1;
  }
  return 0;
}

/* One stretch of a fill pass, shared by its workers: each takes the next
** run from the cursor, streams it (one request), decoding and writing as
** it arrives, then takes another; FILL_PARALLEL requests stay in flight,
** decoding runs on every core, and nobody waits for the slowest request of
** a batch. The flusher syncs behind them (fill_flusher), so the sync at
** the end has little left to do. */
typedef struct fill_job {
  replica *r;
  replica_view *v;          /* the map being filled (a reference held by the hydrator) */
  fill_cursor *cur;         /* under mu */
  pthread_mutex_t mu;
  int found;                /* some run was taken */
  atomic_int over;          /* the pass has no more runs, or a fetch failed */
  int rc;                   /* the first failure (err says why); stops the others */
  ltx_error err;
  atomic_int workers_done;  /* the flusher's signal to stop */
} fill_job;

/* Whether the hydrator has better things to do than filling (closing, files
** to apply, a rebase): the workers stop after their current run. */
static int fill_interrupted(replica *r) {
  pthread_mutex_lock(&r->mutex);
  int stop = r->stop || r->img_queue != NULL || r->img_rebase;
  pthread_mutex_unlock(&r->mutex);
  return stop;
}

/* Writes a run as its bytes arrive (store_read_range_sink): frames whole
** in a piece are decoded where they lie, a frame cut by a piece's end is
** gathered in a small stage; the frames the image wants are written
** FILL_CHUNK_BYTES at a time. A worker thus decodes and writes one part of
** its run while the next is on the wire, and holds no buffer the size of a
** run. */
typedef struct run_writer {
  replica *r;
  const fill_run *run;
  uint8_t *stage;     /* bytes of the run from stage_at on, staged of them */
  size_t stage_cap, staged;
  uint64_t stage_at;  /* offset in the run of the first byte not decoded */
  uint8_t *pages;     /* room for chunk pages, decoded, not written yet */
  uint32_t *pgnos;
  uint64_t *crcs;
  uint32_t chunk;
  uint32_t next;      /* index position of the next frame to decode */
  uint32_t n;         /* pages in pages[] */
  int rc;             /* the first failure (err says why): writing stops */
  ltx_error *err;
} run_writer;

static void run_flush(run_writer *w) {
  const rp_file *f = w->run->f;
  if (w->n == 0 || w->rc != LTX_OK) return;
  for (uint32_t k = 0; k < w->n; k++) /* here, not under the image's write lock */
    w->crcs[k] = ltx_crc64(0, w->pages + (size_t)k * f->page_size, f->page_size);
  w->rc = cache_image_put_pages(w->r->img, &f->meta, w->pgnos, w->pages, w->crcs, w->n, w->err);
  cache_image_written(w->r->img, (uint64_t)w->n * f->page_size);
  w->n = 0;
}

/* Decodes the frames whole in p[0, len), bytes of the run from at on (at
** is where the next frame starts); returns the bytes they took. */
static size_t run_decode(run_writer *w, uint64_t at, const uint8_t *p, size_t len) {
  const rp_file *f = w->run->f;
  const ltx_page_entry *e = f->idx.entries;
  uint64_t base = e[w->run->lo].offset, used = 0;
  for (; w->next < w->run->hi && w->rc == LTX_OK; w->next++) {
    const ltx_page_entry *x = &e[w->next];
    uint64_t start = x->offset - base - at; /* frames are contiguous (ltx_index_parse) */
    if (start + x->size > len) break;        /* not whole yet */
    used = start + x->size;
    if (!cache_image_wants(w->r->img, x->pgno, &f->meta)) continue; /* bridged over */
    ltx_error derr = {0};
    uint8_t *page = w->pages + (size_t)w->n * f->page_size;
    if (ltx_frame_decode(p + start, x->size, x->pgno, f->page_size, page, &derr) != LTX_OK) {
      atomic_fetch_add(&w->r->fill_decode_failures, 1); /* a reader of it will see the error */
      continue;
    }
    /* a chunk is a stretch of consecutive pages: one write */
    if (w->n > 0 && x->pgno != w->pgnos[w->n - 1] + 1) {
      run_flush(w);
      if (w->rc != LTX_OK) break;
      memcpy(w->pages, page, f->page_size);
    }
    w->pgnos[w->n++] = x->pgno;
    if (w->n == w->chunk) run_flush(w);
  }
  return (size_t)used;
}

/* store_sink: data holds bytes [at, at + n) of the run. Stops the read
** once writing has failed (the rest would be thrown away). */
static int run_sink(void *arg, uint64_t at, const uint8_t *data, size_t n) {
  run_writer *w = arg;
  uint64_t have = w->stage_at + w->staged; /* bytes of the run had so far */
  if (at + n <= have) return w->rc != LTX_OK; /* a retry going over them again */
  if (at > have) {                            /* cannot be: a store tells them in order */
    if (w->rc == LTX_OK)
      w->rc = ltx_error_set(w->err, LTX_ERR_IO, "%s: bytes of a run told out of order",
                            w->run->f->key);
    return 1;
  }
  data += have - at;
  n -= (size_t)(have - at);
  while (n > 0 && w->rc == LTX_OK) {
    size_t used;
    if (w->staged == 0) { /* nothing cut short before: decode where they lie */
      used = run_decode(w, w->stage_at, data, n);
      data += used;
      n -= used;
      w->stage_at += used;
      if (n == 0) break;
    }
    size_t take = w->stage_cap - w->staged < n ? w->stage_cap - w->staged : n;
    memcpy(w->stage + w->staged, data, take);
    w->staged += take;
    data += take;
    n -= take;
    used = run_decode(w, w->stage_at, w->stage, w->staged);
    memmove(w->stage, w->stage + used, w->staged - used);
    w->staged -= used;
    w->stage_at += used;
    if (used == 0 && w->staged == w->stage_cap) /* cannot be: the stage holds any frame */
      w->rc = ltx_error_set(w->err, LTX_ERR_FRAME, "%s: a frame larger than %zu bytes",
                            w->run->f->key, w->stage_cap);
  }
  return w->rc != LTX_OK;
}

/* What a worker saw of the readers: the image's hits, and when they last
** changed. */
typedef struct reader_watch {
  uint64_t hits;
  int64_t changed_ms;
} reader_watch;

/* Whether readers fetched, or read from the image, in the last
** READERS_QUIET_MS (no cost on their side: the counters exist anyway). */
static int readers_busy(replica *r, reader_watch *w) {
  cache_image_stat s;
  int64_t now = rp_mono_ms();
  cache_image_stats(r->img, &s);
  if (s.hits != w->hits) {
    w->hits = s.hits;
    w->changed_ms = now;
  }
  return now - w->changed_ms < READERS_QUIET_MS ||
         now - atomic_load(&r->readers_fetched_ms) < READERS_QUIET_MS;
}

/* A worker: its job, and its number (0: the hydrator's own thread, the one
** that never stands aside for readers). */
typedef struct fill_worker_arg {
  fill_job *j;
  int self;
} fill_worker_arg;

static void *fill_worker(void *arg) {
  fill_job *j = ((fill_worker_arg *)arg)->j;
  int self = ((fill_worker_arg *)arg)->self;
  replica *r = j->r;
  /* readers may be about to start (an application opened the replica):
  ** the extra workers first wait to see them quiet */
  reader_watch seen = {0, r->cfg.hydrate_alone ? 0 : rp_mono_ms()};
  uint8_t *stage = NULL, *pages = NULL;
  uint32_t *pgnos = NULL;
  uint64_t *crcs = NULL;
  uint32_t ps = j->v->page_size, chunk = FILL_CHUNK_BYTES / ps ? FILL_CHUNK_BYTES / ps : 1;
  size_t stage_cap = 2 * ltx_frame_max_size(ps) > FILL_STAGE_BYTES ? 2 * ltx_frame_max_size(ps)
                                                                   : FILL_STAGE_BYTES;
  ltx_error err = {0};
  int rc = LTX_OK;
  stage = malloc(stage_cap);
  pages = malloc((size_t)chunk * ps);
  pgnos = malloc(chunk * sizeof(*pgnos));
  crcs = malloc(chunk * sizeof(*crcs));
  if (stage == NULL || pages == NULL || pgnos == NULL || crcs == NULL) {
    rc = ltx_error_set(&err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (;;) {
    fill_run run;
    /* Readers first: nobody fills while one fetches, and while readers
    ** are busy (a scan) only the first worker does, so the fill's buffers
    ** and requests stay out of their way. */
    while ((atomic_load(&r->readers_fetching) > 0 || (self > 0 && readers_busy(r, &seen))) &&
           !atomic_load(&j->over) && !fill_interrupted(r))
      rp_sleep_ms(YIELD_MS);
    if (atomic_load(&j->over) || fill_interrupted(r)) break;
    pthread_mutex_lock(&j->mu);
    int got = j->rc == LTX_OK && next_run(r, j->v, j->cur, &run);
    if (got) j->found = 1;
    else atomic_store(&j->over, 1);
    pthread_mutex_unlock(&j->mu);
    if (!got) break;
    const ltx_page_entry *e = run.f->idx.entries;
    uint64_t off = e[run.lo].offset;
    size_t len = (size_t)(e[run.hi - 1].offset + e[run.hi - 1].size - off);
    ltx_error werr = {0};
    run_writer w = {.r = r, .run = &run, .stage = stage, .stage_cap = stage_cap, .pages = pages,
                    .pgnos = pgnos, .crcs = crcs, .chunk = chunk, .next = run.lo, .rc = LTX_OK,
                    .err = &werr};
    store_sink sink = {run_sink, &w};
    rc = store_read_range_sink(r->st, run.f->key, off, len, &sink, &err);
    if (rc == LTX_OK) {
      atomic_fetch_add(&r->hyd_bytes, len);
      run_flush(&w);
    }
    if (w.rc != LTX_OK) { /* the sink stopped the read, or the last write failed */
      rp_log(REPLICA_LOG_WARN, "%s: %s", r->url, werr.msg);
      rc = LTX_OK; /* the image stopped growing; that is not the fill's failure */
      break;
    }
    if (rc != LTX_OK) break;
  }
out:
  if (rc != LTX_OK) {
    atomic_store(&j->over, 1);
    pthread_mutex_lock(&j->mu);
    if (j->rc == LTX_OK) {
      j->rc = rc;
      j->err = err;
    }
    pthread_mutex_unlock(&j->mu);
  }
  free(stage);
  free(pages);
  free(pgnos);
  free(crcs);
  return NULL;
}

/* The fill's flusher: makes the image durable every FILL_SYNC_STEP_BYTES
** written, on its own thread, so that writeback and the disk's flush run
** while the workers download (a worker that synced would hold its
** connection still for the flush: ~80 ms per step here). Once the last
** runs are handed out it syncs whatever is written, so that the sync at
** the end of the pass finds little left. Steps of 4 MiB left 40-60 ms of
** sync after the last byte here, 16 MiB steps 60-100 ms (an fdatasync of
** this VM's disk costs 20-50 ms whatever its size, so smaller steps only
** add syncs). */
static void *fill_flusher(void *arg) {
  fill_job *j = arg;
  while (!atomic_load(&j->workers_done)) {
    uint64_t step = atomic_load(&j->over) ? 1 : FILL_SYNC_STEP_BYTES;
    if (!cache_image_sync_step(j->r->img, step)) rp_sleep_ms(YIELD_MS);
  }
  return NULL;
}

int rp_fill_some(replica *r, replica_view *v, fill_cursor *cur, int *found, ltx_error *err) {
  fill_job j = {.r = r, .v = v, .cur = cur, .rc = LTX_OK};
  fill_worker_arg args[FILL_PARALLEL];
  pthread_t th[FILL_PARALLEL], flusher;
  int started[FILL_PARALLEL] = {0}, flushing;
  pthread_mutex_init(&j.mu, NULL);
  atomic_init(&j.workers_done, 0);
  for (int i = 0; i < FILL_PARALLEL; i++) args[i] = (fill_worker_arg){&j, i};
  for (int i = 1; i < FILL_PARALLEL; i++)
    started[i] = pthread_create(&th[i], NULL, fill_worker, &args[i]) == 0;
  flushing = pthread_create(&flusher, NULL, fill_flusher, &j) == 0;
  fill_worker(&args[0]);
  for (int i = 1; i < FILL_PARALLEL; i++)
    if (started[i]) pthread_join(th[i], NULL);
  atomic_store(&j.workers_done, 1);
  if (flushing) pthread_join(flusher, NULL);
  pthread_mutex_destroy(&j.mu);
  if (j.found) *found = 1;
  if (j.rc != LTX_OK) *err = j.err;
  return j.rc;
}
