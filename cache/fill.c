/*
** fill.c: filling the local image (docs/read-path.md, "Hydrating"): the
** pages of the image's map it does not hold, fetched by runs of frames and
** written as they arrive. The hydrator (hydrate.c) decides when to fill;
** this file owns how.
**
** A pass walks the files of the map (a fill_cursor) and hands out runs:
** stretches of one file, sized for the pass so that the workers finish
** together (run_target). FILL_PARALLEL workers each take the next run and
** stream it (store_read_range_sink): frames are decoded as they arrive and
** written a stretch of consecutive pages at a time, so a worker decodes
** and writes while its own request is still on the wire, and holds no run
** in memory. A worker that finds no run left takes the second half of the
** largest run still in flight (steal_run), so that the pass does not end
** with one connection busy and seven idle. A flusher thread syncs the
** image every FILL_SYNC_STEP_BYTES, so the disk's writeback and flush keep
** pace and the final sync is short: download, decode and disk overlap.
** Workers stand aside while readers fetch (a reader's miss goes first).
**
** `ltvfs hydrate` into an empty image starts with the early pass (at the
** end of this file): reads sent from the listing alone, before the map.
**
** Locks: a pass's cursor is its job's mutex's. A run in flight is its
** worker's slot's: the worker decodes each piece of it under the slot's
** mutex, and a thief moves the run's end (run.hi) under it, never below
** the frame the worker decodes next; the worker's read stops once its
** frames are done. The image has its own write mutex; r->mutex only to
** look at what the hydrator has queued. No lock is held across a store
** call; a slot's is held across the image writes of one piece.
*/
#include "config.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cache/replica_int.h"

#define FILL_RUN_MAX (32u << 20)     /* about the largest request of the fill */
#define FILL_RUN_MIN (1u << 20)      /* the smallest run a pass is cut into */
#define FILL_PARALLEL 8              /* fill workers: requests in flight (as the limit's raw GET) */
#define FILL_CHUNK_BYTES (1u << 20)  /* pages a fill worker decodes, then writes at once */
#define FILL_STAGE_BYTES (256u << 10) /* a fill worker's bytes of frames cut short */
#define FILL_SYNC_STEP_BYTES (4u << 20) /* written this much: the flusher syncs */
#define STEAL_MIN_BYTES (2u << 20)   /* the least an idle worker takes of a run in flight */
#define STOP_WORTH_BYTES (1u << 20)  /* a read whose run is done stops if this much is left
                                     ** (less is read on: the connection is kept) */
#define YIELD_MS 5                   /* fill pause while readers fetch */
#define READERS_QUIET_MS 50          /* readers were busy this recently: one fill worker
                                     ** (an application's queries come closer together; 200
                                     ** ms cost the VFS's hydration ~10% on the bench) */

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

/* The size of a pass's runs, so that the workers finish together: the
** total bytes to fetch cut into a multiple of FILL_PARALLEL runs of about
** equal size, as few as keep a run under max (each request costs a round
** trip and, on the server, a signature check and an open; a last round of
** a few runs leaves most connections idle), and none under FILL_RUN_MIN.
** A file then gets a whole number of runs of that size, at least one. On
** the bench's replica (a 107 MB snapshot and three 9.5 MB files) greedy 8
** MiB runs made 19 requests ending in a round of three small ones; now 6
** runs of 17.8 MB and 3 of 9.5 MB (docs/read-path.md, "Hydrating"). */
static uint64_t run_target(uint64_t total, uint64_t max) {
  uint64_t per_round = (uint64_t)FILL_PARALLEL * max;
  uint64_t runs = (total + per_round - 1) / per_round * FILL_PARALLEL;
  uint64_t target = runs ? total / runs : max;
  return target > FILL_RUN_MIN ? target : FILL_RUN_MIN; /* a small database: fewer runs */
}

/* How many runs of about target bytes a file's span of bytes gets. */
static uint64_t runs_of(uint64_t span, uint64_t target) {
  uint64_t k = (span + target / 2) / target;
  return k ? k : 1;
}

/* Sizes the runs of a pass from cur on (run_target over what it will fetch). */
static void size_runs(replica *r, replica_view *v, fill_cursor *cur) {
  uint64_t total = 0;
  for (size_t i = cur->file; i < v->nfiles; i++) {
    ltx_error err = {0};
    if (rp_file_ensure_loaded(r, v->files[i], &err) == LTX_OK)
      total += wanted_span(r, v->files[i], i == cur->file ? cur->pos : 0);
  }
  cur->run_target = run_target(total, FILL_RUN_MAX);
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
      uint64_t span = wanted_span(r, f, j);
      cur->file_cap = span / runs_of(span, cur->run_target) + ltx_frame_max_size(f->page_size);
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

/* What the flusher of a pass looks at (fill_flusher). */
typedef struct fill_sync {
  cache_image *img;
  atomic_int over;          /* the pass has no more runs (or failed): sync all */
  atomic_int workers_done;  /* the flusher's signal to stop */
} fill_sync;

/* A worker's run in flight (a thief may take the end of it: steal_run). */
typedef struct fill_slot {
  pthread_mutex_t mu;      /* its writer decodes under it; a thief moves run->hi under it */
  struct run_writer *w;    /* NULL: none */
  struct early_read *early; /* an early pass's read whose frames are not found yet:
                           ** a thief finds them (early_claim) once the map is known */
} fill_slot;

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
  int rc;                   /* the first failure (err says why); stops the others */
  ltx_error err;
  fill_sync sync;
  fill_slot slots[FILL_PARALLEL];
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
  fill_run *run;      /* run->hi may move down (steal_run, under the slot's mutex) */
  uint64_t read_end;  /* where the read ends, in bytes from the run's first frame */
  uint64_t got;       /* bytes of the read told so far, from the same origin */
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

/* A worker's buffers for one page size (a stage for frames cut short, and
** a chunk of decoded pages). */
typedef struct fill_bufs {
  uint32_t page_size;       /* 0: none yet */
  uint8_t *stage, *pages;
  size_t stage_cap;
  uint32_t *pgnos;
  uint64_t *crcs;
  uint32_t chunk;
} fill_bufs;

static void bufs_free(fill_bufs *b) {
  free(b->stage);
  free(b->pages);
  free(b->pgnos);
  free(b->crcs);
  memset(b, 0, sizeof(*b));
}

/* Makes b fit pages of ps bytes; LTX_ERR_NOMEM. */
static int bufs_for(fill_bufs *b, uint32_t ps, ltx_error *err) {
  size_t frame2 = 2 * ltx_frame_max_size(ps);
  if (b->page_size == ps) return LTX_OK;
  bufs_free(b);
  b->chunk = FILL_CHUNK_BYTES / ps ? FILL_CHUNK_BYTES / ps : 1;
  b->stage_cap = frame2 > FILL_STAGE_BYTES ? frame2 : FILL_STAGE_BYTES;
  b->stage = malloc(b->stage_cap);
  b->pages = malloc((size_t)b->chunk * ps);
  b->pgnos = malloc(b->chunk * sizeof(*b->pgnos));
  b->crcs = malloc(b->chunk * sizeof(*b->crcs));
  if (b->stage == NULL || b->pages == NULL || b->pgnos == NULL || b->crcs == NULL) {
    bufs_free(b);
    return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  }
  b->page_size = ps;
  return LTX_OK;
}

static void writer_init(run_writer *w, replica *r, fill_run *run, fill_bufs *b,
                        ltx_error *werr) {
  *w = (run_writer){.r = r, .run = run, .stage = b->stage, .stage_cap = b->stage_cap,
                    .pages = b->pages, .pgnos = b->pgnos, .crcs = b->crcs, .chunk = b->chunk,
                    .next = run->lo, .rc = LTX_OK, .err = werr};
}

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

/* Whether w's read, done with the run's frames, has enough left to be
** worth stopping (which drops its connection). */
static int run_stop(const run_writer *w) {
  return w->rc != LTX_OK || (w->next >= w->run->hi && w->read_end > w->got + STOP_WORTH_BYTES);
}

/* store_sink: data holds bytes [at, at + n) of the run. Stops the read
** once writing has failed (the rest would be thrown away), or when the
** run's frames are done and much of the read is left (another worker took
** the rest of the run). */
static int run_sink(void *arg, uint64_t at, const uint8_t *data, size_t n) {
  run_writer *w = arg;
  uint64_t have = w->stage_at + w->staged; /* bytes of the run had so far */
  if (at + n > w->got) w->got = at + n;
  if (at + n <= have || w->next >= w->run->hi) return run_stop(w); /* a retry going over
                                                                   ** them again, or done */
  if (at > have) {                            /* cannot be: a store tells them in order */
    if (w->rc == LTX_OK)
      w->rc = ltx_error_set(w->err, LTX_ERR_IO, "%s: bytes of a run told out of order",
                            w->run->f->key);
    return 1;
  }
  data += have - at;
  n -= (size_t)(have - at);
  while (n > 0 && w->rc == LTX_OK && w->next < w->run->hi) {
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
  return run_stop(w);
}

/* ---- runs in flight, and taking half of one ---- */

static void slots_init(fill_slot *s) {
  for (int i = 0; i < FILL_PARALLEL; i++) {
    pthread_mutex_init(&s[i].mu, NULL);
    s[i].w = NULL;
    s[i].early = NULL;
  }
}

static void slots_destroy(fill_slot *s) {
  for (int i = 0; i < FILL_PARALLEL; i++) pthread_mutex_destroy(&s[i].mu);
}

static void slot_set(fill_slot *s, run_writer *w) {
  pthread_mutex_lock(&s->mu);
  s->w = w;
  s->early = NULL;
  pthread_mutex_unlock(&s->mu);
}

/* Bytes of the run in flight in s not decoded yet. Caller holds s->mu. */
static uint64_t slot_left(const fill_slot *s) {
  const run_writer *w = s->w;
  if (w == NULL || w->rc != LTX_OK || w->next >= w->run->hi) return 0;
  const ltx_page_entry *e = w->run->f->idx.entries;
  return e[w->run->hi - 1].offset + e[w->run->hi - 1].size - e[w->next].offset;
}

/* The first index position of f whose frame starts at or after off. */
static uint32_t first_frame_from(const rp_file *f, uint64_t off) {
  uint32_t lo = 0, hi = (uint32_t)f->idx.n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (f->idx.entries[mid].offset < off) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static int early_claim(struct early_read *rd); /* (the early pass, below) */

/* A run for an idle worker (self) when no run is left to hand out: the
** second half of what the largest run in flight has not decoded yet, if
** each half is worth a request (STEAL_MIN_BYTES). Its worker's read stops
** where its run now ends. */
static int steal_run(fill_slot *slots, int self, fill_run *out) {
  int best = -1, got = 0;
  uint64_t most = 0;
  for (int i = 0; i < FILL_PARALLEL; i++) {
    if (i == self) continue;
    pthread_mutex_lock(&slots[i].mu);
    /* a read still waiting for its first byte (a straggler) is split too */
    if (slots[i].w == NULL && slots[i].early != NULL) early_claim(slots[i].early);
    uint64_t left = slot_left(&slots[i]);
    pthread_mutex_unlock(&slots[i].mu);
    if (left > most) {
      most = left;
      best = i;
    }
  }
  if (best < 0 || most < 2 * (uint64_t)STEAL_MIN_BYTES) return 0;
  fill_slot *s = &slots[best];
  pthread_mutex_lock(&s->mu);
  uint64_t left = slot_left(s);
  if (left >= 2 * (uint64_t)STEAL_MIN_BYTES) {
    run_writer *w = s->w;
    uint32_t cut = first_frame_from(w->run->f, w->run->f->idx.entries[w->next].offset + left / 2);
    if (cut > w->next && cut < w->run->hi) {
      *out = (fill_run){w->run->f, cut, w->run->hi};
      w->run->hi = cut;
      got = 1;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return got;
}

/* store_sink of a run in flight in a slot: run_sink under the slot's mutex. */
typedef struct slot_sink_arg {
  fill_slot *slot;
  run_writer *w;
} slot_sink_arg;

static int slot_sink(void *arg, uint64_t at, const uint8_t *data, size_t n) {
  slot_sink_arg *a = arg;
  pthread_mutex_lock(&a->slot->mu);
  int stop = run_sink(a->w, at, data, n);
  pthread_mutex_unlock(&a->slot->mu);
  return stop;
}

/* What a run's read left, once it is out of its slot: the pages decoded
** are written (they are right whatever became of the read), a read
** stopped because a thief took the end of the run is a success, and
** writing that failed is logged and sets *full (the image stopped growing:
** not the fill's failure). Returns the read's failure. */
static int run_done(replica *r, run_writer *w, int rc, int *full) {
  if (rc == STORE_ERR_STOPPED && w->rc == LTX_OK) rc = LTX_OK;
  run_flush(w);
  atomic_fetch_add(&r->hyd_bytes, w->got);
  if (w->rc != LTX_OK) {
    rp_log(REPLICA_LOG_WARN, "%s: %s", r->url, w->err->msg);
    *full = 1;
    return LTX_OK;
  }
  return rc;
}

/* Streams run (one request) into the image as slot's run in flight (a
** thief may take the end of it): run_done's result. */
static int stream_run(replica *r, fill_slot *slot, fill_run *run, fill_bufs *bufs, int *full,
                      ltx_error *err) {
  const ltx_page_entry *e = run->f->idx.entries;
  uint64_t off = e[run->lo].offset;
  size_t len = (size_t)(e[run->hi - 1].offset + e[run->hi - 1].size - off);
  ltx_error werr = {0};
  run_writer w;
  int rc = bufs_for(bufs, run->f->page_size, err);
  if (rc != LTX_OK) return rc;
  writer_init(&w, r, run, bufs, &werr);
  w.read_end = len;
  slot_sink_arg a = {slot, &w};
  store_sink sink = {slot_sink, &a};
  slot_set(slot, &w);
  atomic_fetch_add(&r->fill_runs, 1);
  rc = store_read_range_sink(r->st, run->f->key, off, len, &sink, err);
  slot_set(slot, NULL);
  return run_done(r, &w, rc, full);
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
  fill_bufs bufs = {0};
  ltx_error err = {0};
  int rc = bufs_for(&bufs, j->v->page_size, &err);
  if (rc != LTX_OK) goto out;
  for (;;) {
    fill_run run;
    int got = 0, full = 0;
    /* Readers first: nobody fills while one fetches, and while readers
    ** are busy (a scan) only the first worker does, so the fill's buffers
    ** and requests stay out of their way. */
    while ((atomic_load(&r->readers_fetching) > 0 || (self > 0 && readers_busy(r, &seen))) &&
           !atomic_load(&j->sync.over) && !fill_interrupted(r))
      rp_sleep_ms(YIELD_MS);
    if (fill_interrupted(r)) break;
    pthread_mutex_lock(&j->mu);
    if (j->rc == LTX_OK && !atomic_load(&j->sync.over)) {
      got = next_run(r, j->v, j->cur, &run);
      if (got) j->found = 1;
      else atomic_store(&j->sync.over, 1);
    }
    int failed = j->rc != LTX_OK;
    pthread_mutex_unlock(&j->mu);
    if (!got && !failed && (got = steal_run(j->slots, self, &run)) != 0)
      atomic_fetch_add(&r->fill_steals, 1);
    if (!got) break;
    rc = stream_run(r, &j->slots[self], &run, &bufs, &full, &err);
    if (rc != LTX_OK || full) break;
  }
out:
  if (rc != LTX_OK) {
    atomic_store(&j->sync.over, 1);
    pthread_mutex_lock(&j->mu);
    if (j->rc == LTX_OK) {
      j->rc = rc;
      j->err = err;
    }
    pthread_mutex_unlock(&j->mu);
  }
  bufs_free(&bufs);
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
  fill_sync *s = arg;
  while (!atomic_load(&s->workers_done)) {
    uint64_t step = atomic_load(&s->over) ? 1 : FILL_SYNC_STEP_BYTES;
    if (!cache_image_sync_step(s->img, step)) rp_sleep_ms(YIELD_MS);
  }
  return NULL;
}

int rp_fill_some(replica *r, replica_view *v, fill_cursor *cur, int *found, ltx_error *err) {
  fill_job j = {.r = r, .v = v, .cur = cur, .rc = LTX_OK, .sync = {.img = r->img}};
  slots_init(j.slots);
  fill_worker_arg args[FILL_PARALLEL];
  pthread_t th[FILL_PARALLEL], flusher;
  int started[FILL_PARALLEL] = {0}, flushing;
  pthread_mutex_init(&j.mu, NULL);
  atomic_init(&j.sync.over, 0);
  atomic_init(&j.sync.workers_done, 0);
  for (int i = 0; i < FILL_PARALLEL; i++) args[i] = (fill_worker_arg){&j, i};
  for (int i = 1; i < FILL_PARALLEL; i++)
    started[i] = pthread_create(&th[i], NULL, fill_worker, &args[i]) == 0;
  flushing = pthread_create(&flusher, NULL, fill_flusher, &j.sync) == 0;
  fill_worker(&args[0]);
  for (int i = 1; i < FILL_PARALLEL; i++)
    if (started[i]) pthread_join(th[i], NULL);
  atomic_store(&j.sync.workers_done, 1);
  if (flushing) pthread_join(flusher, NULL);
  pthread_mutex_destroy(&j.mu);
  slots_destroy(j.slots);
  if (j.found) *found = 1;
  if (j.rc != LTX_OK) *err = j.err;
  return j.rc;
}

/* ---- the early pass: `ltvfs hydrate` of an empty image ---- */

/* `ltvfs hydrate` into an empty image has nothing to yield to and every
** page to fetch, so its first requests need not wait for the map: right
** after the open's listing has been planned (the files and their sizes,
** no index yet), the early pass cuts the planned files into runs of bytes
** (sized as size_runs does, from the listed sizes) and its workers send
** their requests at once. Each read's sink then waits for the map (the
** hydrator adopts the pass once the open has read the indexes and the
** rebase has given the record the view's map) and from then on is an
** ordinary run: the frames that start in its bytes are decoded and the
** ones the image wants written. So the indexes' round trip, the rebase
** and the requests' own round trip overlap instead of following each
** other. While the sinks wait, the reads stall (TCP flow control); they
** hold no more than a stage each.
**
** The reads go out once the open's index reads have: a server that takes
** requests in turn (the test server does) then answers the indexes first,
** which is what the map waits for.
**
** A run owns the frames that start in [a, b); it asks for b + a frame's
** largest size (page size 65536: the page size is not known yet), so that
** its last frame is whole. Runs taken once the map is known ask for
** exactly their frames. Frames a run could not cover (a file larger than
** listed) and runs that failed are left to the hydrator's next pass, which
** fetches whatever the image still wants: the early pass only ever saves
** time. A pass that is abandoned (the open failed, the map does not fit
** the budget, the replica closes) stops every read at once. */

#define EARLY_OVERSHOOT_MAX_PAGE 65536u

typedef struct early_run {
  store_ltx_file meta;       /* the file as listed (its size a hint) */
  uint64_t a, b;             /* the frames that start in [a, b) are this run's */
} early_run;

enum { EARLY_WAITING, EARLY_READY, EARLY_ABORTED };

struct fill_early {
  replica *r;
  early_run *runs;
  size_t n;
  atomic_size_t next;        /* the next run to take */
  pthread_mutex_t mu;        /* the changes of gate and state, and v */
  pthread_cond_t cond;       /* gate opened, or state left EARLY_WAITING */
  int gate;                  /* the open's index reads are under way: send */
  atomic_int state;          /* EARLY_*: WAITING -> READY or ABORTED, READY -> ABORTED */
  replica_view *v;           /* the map, from EARLY_READY on (a reference) */
  fill_sync sync;
  pthread_t th[FILL_PARALLEL], flusher;
  int nthreads, flushing;
  atomic_int failures;       /* reads that failed (the first is logged as a warning) */
  fill_slot slots[FILL_PARALLEL]; /* the runs in flight, once their frames are known */
  struct early_worker_arg {
    struct fill_early *x;
    int self;
  } args[FILL_PARALLEL];
};

/* One read of an early run: what it asked, and once the map is known which
** of its bytes are the run's frames. */
typedef struct early_read {
  struct fill_early *x;
  fill_slot *slot;           /* its worker's */
  const early_run *er;
  uint64_t base, len;        /* the read: bytes [base, base + len) of the file */
  int resolved;              /* 0 not yet, 1 writing, -1 nothing to write (stopped):
                             ** set under the slot's mutex (by a thief, maybe) */
  fill_run run;
  uint64_t skip, end;        /* the run's frames are bytes [skip, end) of the read */
  fill_bufs *bufs;
  run_writer w;
  ltx_error werr;
} early_read;

/* Waits until the reads may go out: the gate opened or the map known (or
** the pass abandoned). */
static void early_wait_gate(struct fill_early *x) {
  pthread_mutex_lock(&x->mu);
  while (!x->gate && atomic_load(&x->state) == EARLY_WAITING) pthread_cond_wait(&x->cond, &x->mu);
  pthread_mutex_unlock(&x->mu);
}

/* Finds the run's frames in the map's file (the map is known): 1, or 0
** when it has none the image wants within the read. Caller holds the
** slot's mutex. */
static int early_resolve(early_read *rd) {
  replica_view *v = rd->x->v;
  rp_file *f = NULL;
  ltx_error err = {0};
  for (size_t i = 0; i < v->nfiles && f == NULL; i++)
    if (rp_same_file(&v->files[i]->meta, &rd->er->meta)) f = v->files[i];
  if (f == NULL || !atomic_load(&f->loaded)) return 0; /* a later view's map: not this file's */
  const ltx_page_entry *e = f->idx.entries;
  uint32_t lo = first_frame_from(f, rd->er->a), hi = first_frame_from(f, rd->er->b), want = 0;
  while (hi > lo && e[hi - 1].offset + e[hi - 1].size > rd->base + rd->len) hi--;
  for (uint32_t j = lo; j < hi && !want; j++) want = cache_image_wants(rd->x->r->img, e[j].pgno, &f->meta);
  if (!want || e[lo].offset < rd->base || bufs_for(rd->bufs, f->page_size, &err) != LTX_OK) return 0;
  rd->run = (fill_run){f, lo, hi};
  rd->skip = e[lo].offset - rd->base;
  rd->end = e[hi - 1].offset + e[hi - 1].size - rd->base;
  writer_init(&rd->w, rd->x->r, &rd->run, rd->bufs, &rd->werr);
  rd->w.read_end = rd->len - rd->skip;
  return 1;
}

/* Settles a read waiting in its slot once the map is known (by its worker
** at its first byte, or by a thief): its writer goes into the slot, where
** a thief may take the end of its run. Caller holds the slot's mutex. */
static int early_claim(early_read *rd) {
  if (rd->resolved == 0 && atomic_load(&rd->x->state) != EARLY_WAITING) {
    rd->resolved = atomic_load(&rd->x->state) == EARLY_READY && early_resolve(rd) ? 1 : -1;
    if (rd->resolved == 1) rd->slot->w = &rd->w;
    rd->slot->early = NULL;
  }
  return rd->resolved;
}

/* store_sink of an early read: waits for the map at the first bytes, then
** hands the run's frames to its writer; stops the read when there is
** nothing to write (the pass abandoned, or no frame wanted). */
static int early_sink(void *arg, uint64_t at, const uint8_t *data, size_t n) {
  early_read *rd = arg;
  struct fill_early *x = rd->x;
  int resolved;
  pthread_mutex_lock(&rd->slot->mu);
  resolved = rd->resolved;
  pthread_mutex_unlock(&rd->slot->mu);
  if (resolved == 0) {
    pthread_mutex_lock(&x->mu);
    while (atomic_load(&x->state) == EARLY_WAITING) pthread_cond_wait(&x->cond, &x->mu);
    pthread_mutex_unlock(&x->mu);
    pthread_mutex_lock(&rd->slot->mu);
    resolved = early_claim(rd);
    pthread_mutex_unlock(&rd->slot->mu);
  }
  if (resolved < 0 || atomic_load(&x->state) == EARLY_ABORTED) return 1;
  if (at + n <= rd->skip) return 0; /* before its first frame */
  if (at < rd->skip) {
    data += rd->skip - at;
    n -= (size_t)(rd->skip - at);
    at = rd->skip;
  }
  slot_sink_arg a = {rd->slot, &rd->w};
  return slot_sink(&a, at - rd->skip, data, n); /* (past its last frame: run_sink's to stop) */
}

/* Once the early runs are all taken and the map is known, a worker takes
** the ends of runs still in flight (steal_run) as any fill worker does. */
static void early_steal(struct fill_early *x, int self, fill_bufs *bufs) {
  replica *r = x->r;
  fill_run run;
  int full = 0;
  ltx_error err = {0};
  while (atomic_load(&x->state) == EARLY_READY && !fill_interrupted(r) &&
         steal_run(x->slots, self, &run)) {
    atomic_fetch_add(&r->fill_steals, 1);
    atomic_fetch_add(&r->fill_runs_early, 1);
    if (stream_run(r, &x->slots[self], &run, bufs, &full, &err) != LTX_OK || full) break;
  }
}

static void *early_worker(void *arg) {
  struct fill_early *x = ((struct early_worker_arg *)arg)->x;
  int self = ((struct early_worker_arg *)arg)->self;
  replica *r = x->r;
  fill_bufs bufs = {0};
  early_wait_gate(x);
  for (;;) {
    size_t i = atomic_fetch_add(&x->next, 1);
    if (i >= x->n) {
      atomic_store(&x->sync.over, 1);
      early_steal(x, self, &bufs);
      break;
    }
    int state = atomic_load(&x->state);
    if (state == EARLY_ABORTED || (state == EARLY_READY && fill_interrupted(r))) break;
    early_read rd = {.x = x, .slot = &x->slots[self], .er = &x->runs[i], .bufs = &bufs,
                     .base = x->runs[i].a};
    rd.len = x->runs[i].b - rd.base + ltx_frame_max_size(EARLY_OVERSHOOT_MAX_PAGE);
    if (rd.base + rd.len > rd.er->meta.size) rd.len = rd.er->meta.size - rd.base;
    pthread_mutex_lock(&rd.slot->mu);
    if (state == EARLY_READY) { /* the map is known: ask for exactly the run's frames */
      rd.resolved = early_resolve(&rd) ? 1 : -1;
      if (rd.resolved == 1) {
        rd.base += rd.skip;
        rd.len = rd.end - rd.skip;
        rd.end -= rd.skip;
        rd.skip = 0;
        rd.w.read_end = rd.len;
        rd.slot->w = &rd.w;
      }
    } else {
      rd.slot->early = &rd; /* its frames are found once the map is known */
    }
    pthread_mutex_unlock(&rd.slot->mu);
    if (rd.resolved < 0) continue;
    char key[128];
    ltx_error err = {0};
    store_sink sink = {early_sink, &rd};
    store_ltx_key(r->st, rd.er->meta.level, rd.er->meta.min_txid, rd.er->meta.max_txid, key,
                  sizeof(key));
    atomic_fetch_add(&r->fill_runs, 1);
    atomic_fetch_add(&r->fill_runs_early, 1);
    int rc = store_read_range_sink(r->st, key, rd.base, (size_t)rd.len, &sink, &err), full = 0;
    slot_set(rd.slot, NULL);
    if (rd.resolved == 1) rc = run_done(r, &rd.w, rc, &full);
    if (full) break;
    if (rc != LTX_OK && rc != STORE_ERR_STOPPED) /* the next pass fetches those pages */
      rp_log(atomic_fetch_add(&x->failures, 1) == 0 ? REPLICA_LOG_WARN : REPLICA_LOG_DEBUG,
             "%s: local image: %s (retrying)", r->url, err.msg);
  }
  bufs_free(&bufs);
  return NULL;
}

/* Moves x to state: READY once, with the map v (a reference taken), or
** ABORTED; wakes whoever waits. */
static void early_set(struct fill_early *x, int state, replica_view *v) {
  pthread_mutex_lock(&x->mu);
  if (state == EARLY_ABORTED || atomic_load(&x->state) == EARLY_WAITING) {
    if (state == EARLY_READY) {
      replica_view_ref(v);
      x->v = v;
    }
    atomic_store(&x->state, state);
    pthread_cond_broadcast(&x->cond);
  }
  pthread_mutex_unlock(&x->mu);
}

/* Ends a pass taken from r (moved to state first): joins the workers and
** the flusher, frees it. */
static void early_end(struct fill_early *x, int state, replica_view *v) {
  early_set(x, state, v);
  for (int i = 0; i < x->nthreads; i++) pthread_join(x->th[i], NULL);
  atomic_store(&x->sync.workers_done, 1);
  if (x->flushing) pthread_join(x->flusher, NULL);
  if (x->v) replica_view_release(x->v);
  pthread_mutex_destroy(&x->mu);
  pthread_cond_destroy(&x->cond);
  slots_destroy(x->slots);
  free(x->runs);
  free(x);
}

static struct fill_early *early_take(replica *r) {
  pthread_mutex_lock(&r->mutex);
  struct fill_early *x = r->img_early;
  r->img_early = NULL;
  pthread_mutex_unlock(&r->mutex);
  return x;
}

void rp_fill_early_start(replica *r, const store_ltx_file *files, size_t n) {
  struct fill_early *x = calloc(1, sizeof(*x));
  uint64_t total = 0, target;
  size_t nruns = 0;
  if (x == NULL) return;
  for (size_t i = 0; i < n; i++) total += files[i].size;
  target = run_target(total, FILL_RUN_MAX);
  for (size_t i = 0; i < n; i++) nruns += (size_t)runs_of(files[i].size, target);
  if (total == 0 || (x->runs = calloc(nruns, sizeof(*x->runs))) == NULL) {
    free(x);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    uint64_t k = runs_of(files[i].size, target);
    for (uint64_t q = 0; q < k; q++)
      x->runs[x->n++] = (early_run){files[i], files[i].size * q / k, files[i].size * (q + 1) / k};
  }
  x->r = r;
  atomic_init(&x->state, EARLY_WAITING);
  x->sync.img = r->img;
  atomic_init(&x->next, 0);
  atomic_init(&x->failures, 0);
  atomic_init(&x->sync.over, 0);
  atomic_init(&x->sync.workers_done, 0);
  pthread_mutex_init(&x->mu, NULL);
  pthread_cond_init(&x->cond, NULL);
  slots_init(x->slots);
  for (int i = 0; i < FILL_PARALLEL; i++) {
    x->args[i] = (struct early_worker_arg){x, i};
    if (pthread_create(&x->th[x->nthreads], NULL, early_worker, &x->args[i]) == 0) x->nthreads++;
  }
  x->flushing = pthread_create(&x->flusher, NULL, fill_flusher, &x->sync) == 0;
  pthread_mutex_lock(&r->mutex);
  r->img_early = x;
  pthread_mutex_unlock(&r->mutex);
  rp_log(REPLICA_LOG_DEBUG, "%s: early fill: %zu runs of about %" PRIu64 " bytes from the listing",
         r->url, x->n, target);
}

int rp_fill_early_pending(replica *r) {
  pthread_mutex_lock(&r->mutex);
  int pending = r->img_early != NULL;
  pthread_mutex_unlock(&r->mutex);
  return pending;
}

/* Calls fn on r's early pass, if any, under r->mutex (it is taken from r
** only under it, so it stays while fn runs). */
static void early_with(replica *r, void (*fn)(struct fill_early *x, replica_view *v),
                       replica_view *v) {
  pthread_mutex_lock(&r->mutex);
  if (r->img_early) fn(r->img_early, v);
  pthread_mutex_unlock(&r->mutex);
}

static void early_open_gate(struct fill_early *x, replica_view *v) {
  (void)v;
  pthread_mutex_lock(&x->mu);
  x->gate = 1;
  pthread_cond_broadcast(&x->cond);
  pthread_mutex_unlock(&x->mu);
}

static void early_ready(struct fill_early *x, replica_view *v) { early_set(x, EARLY_READY, v); }

void rp_fill_early_go(replica *r) { early_with(r, early_open_gate, NULL); }

void rp_fill_early_ready(replica *r, replica_view *v) { early_with(r, early_ready, v); }

void rp_fill_early_adopt(replica *r, replica_view *v) {
  struct fill_early *x = early_take(r);
  if (x != NULL) early_end(x, EARLY_READY, v); /* returns once every run is done */
}

void rp_fill_early_abort(replica *r) {
  struct fill_early *x = early_take(r);
  if (x != NULL) early_end(x, EARLY_ABORTED, NULL);
}
