/*
** replica.c: the replica object of the read path (docs/read-path.md): its
** life (acquire, the first open, release), pinned views, and reading a page
** (page cache, runs of frames, coalescing, re-plans after retention). The
** registry of files is files.c, views and page maps view.c, listing and the
** poller poll.c; cache/replica_int.h says who owns what and which lock
** guards it.
**
** Fetching: a miss reads a run of neighbouring frames of the same file in one
** range request and puts every page of it into the page cache; the run
** doubles while a reader moves forward (a scan) and falls back on a jump.
** Concurrent misses inside a run in flight wait for it instead of fetching
** again. A file that has gone from the store (retention after compaction)
** makes the read re-plan at the view's TXID from a fresh listing.
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

#include "cache/replica_int.h"

/* ---- logging ---- */

/* Set by the VFS at any time, read by background threads: atomic. */
static _Atomic(replica_log_fn) g_log;

void replica_set_log(replica_log_fn fn) { atomic_store(&g_log, fn); }

void rp_log(int level, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  replica_log_fn fn = atomic_load(&g_log);
  if (fn == NULL) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fn(level, msg);
}

static pthread_mutex_t g_registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static replica *g_replicas;

int64_t rp_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rp_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec rp_realtime_in(int ms) {
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

void rp_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- opening, pinning ---- */

/* The view the listing all plans at txid or time_ms. For the first open
** (first_open), `ltvfs hydrate` into an empty image starts fetching the
** planned files (fill.c's early pass) before their indexes are read. */
static int plan_view(replica *r, const store_ltx_list *all, uint64_t txid, int64_t time_ms,
                     int first_open, replica_view **out, ltx_error *err) {
  store_plan plan = {0};
  int rc = store_plan_build(all->files, all->n, txid, time_ms, &plan, err);
  if (rc == LTX_OK && first_open && r->img != NULL && r->cfg.hydrate && r->cfg.hydrate_alone &&
      r->img_meta.txid == 0 && !rp_fill_early_pending(r))
    rp_fill_early_start(r, plan.files, plan.n);
  if (rc == LTX_OK) rc = rp_view_from_plan(r, &plan, out, err);
  store_plan_free(&plan);
  return rc;
}

/* A view at txid or time_ms from a fresh listing; with from_image, a local
** image at exactly txid serves when the store does not answer (an open;
** a re-plan needs what the store holds now). */
static int view_at(replica *r, uint64_t txid, int64_t time_ms, int from_image,
                   replica_view **out, ltx_error *err) {
  store_ltx_list all = {0};
  int rc = rp_list_all(r, &all, err);
  if (rc == LTX_OK) {
    rc = plan_view(r, &all, txid, time_ms, 0, out, err);
  } else if (txid != 0 && from_image) {
    /* The store does not answer: a local image at exactly that TXID
    ** (ltvfs hydrate --txid) serves it, as a warm open serves the latest.
    ** (init_mutex: no first open replays or rebuilds the image meanwhile.) */
    pthread_mutex_lock(&r->init_mutex);
    replica_view *v = rp_image_pinned_view(r, txid);
    pthread_mutex_unlock(&r->init_mutex);
    if (v != NULL) {
      rp_log(REPLICA_LOG_WARN, "%s: opened TXID %016" PRIx64 " from the local image: the store "
             "did not answer (%s)", r->url, txid, err->msg);
      *out = v;
      rc = LTX_OK;
    }
  }
  if (rc != LTX_OK) ltx_error_prefix(err, "%s", r->url);
  store_ltx_list_free(&all);
  return rc;
}

int replica_view_at(replica *r, uint64_t txid, int64_t time_ms, replica_view **out,
                    ltx_error *err) {
  return view_at(r, txid, time_ms, 1, out, err);
}

int replica_newest_txid(replica *r, uint64_t *txid, ltx_error *err) {
  store_ltx_list all = {0};
  store_plan plan = {0};
  int rc = rp_list_all(r, &all, err);
  if (rc == LTX_OK) rc = store_plan_build(all.files, all.n, 0, -1, &plan, err);
  if (rc == LTX_OK) *txid = plan.txid;
  else ltx_error_prefix(err, "%s", r->url);
  store_plan_free(&plan);
  store_ltx_list_free(&all);
  return rc;
}


void rp_publish(replica *r, replica_view *v) {
  replica_view *old = r->latest;
  r->latest = v;
  if (old) replica_view_release(old);
  rp_registry_prune(r);
}

/* Starts the poller once. Caller holds r->mutex. */
static void start_poller(replica *r) {
  if (r->poller_started || r->cfg.poll_ms <= 0 || r->stop) return;
  if (pthread_create(&r->poller, NULL, rp_poller_main, r) == 0) {
    r->poller_started = 1;
    r->threads_running++;
  } else {
    rp_log(REPLICA_LOG_ERROR, "%s: cannot start the poller thread; the view stays at open time", r->url);
  }
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

  /* Opened at a TXID (ltvfs hydrate --txid): an image at another one is
  ** refused, not rewritten backwards nor moved on. */
  if (r->cfg.open_txid != 0 && r->img != NULL && r->img_meta.txid != 0 &&
      r->img_meta.txid != r->cfg.open_txid) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "%s: the local image in %s is at TXID %016" PRIx64
                       ", not %016" PRIx64 ": an image at a TXID is made in an empty cache "
                       "directory (it never moves back; opening the latest moves it forward)",
                       r->url, cache_image_path(r->img), r->img_meta.txid, r->cfg.open_txid);
    goto out;
  }
  /* A warm open: the local image's map at its TXID, no store request. The
  ** poller catches up at once; the hydrator checks the replica is the one
  ** cached. With the store down the replica serves what the image holds. */
  v = rp_image_view(r);
  if (v != NULL) {
    uint64_t polls = atomic_load(&r->polls);
    int64_t until = rp_mono_ms() + (r->cfg.open_timeout_ms < WARM_CATCHUP_MS ? r->cfg.open_timeout_ms
                                                                            : WARM_CATCHUP_MS);
    pthread_mutex_lock(&r->mutex);
    replica_view_ref(v);
    rp_publish(r, v);
    atomic_store(&r->last_poll_ok_ms, rp_wall_ms());
    r->poll_now = 1;
    start_poller(r);
    pthread_mutex_unlock(&r->mutex);
    rp_hydrator_start(r);
    pthread_mutex_lock(&r->mutex);
    /* The first query sees what the replica holds now, not what the image
    ** held when the last process closed: the open waits, for a short while,
    ** for the poller's first listing (only what is new, after the image's
    ** TXID) and for the hydrator's check that the replica is still the one
    ** cached (else it publishes a fresh view). With the store down it
    ** serves the image's TXID. */
    while (((r->poller_started && atomic_load(&r->polls) == polls) || !r->img_checked) &&
           !r->stop && rp_mono_ms() < until) {
      struct timespec ts = rp_realtime_in(20);
      pthread_cond_timedwait(&r->cond, &r->mutex, &ts);
    }
    replica_view_ref(r->latest);
    *out = r->latest;
    pthread_mutex_unlock(&r->mutex);
    replica_view_release(v);
    v = NULL;
    goto out;
  }

  deadline = rp_mono_ms() + r->cfg.open_timeout_ms;
  for (int wait_ms = 100;; wait_ms = wait_ms < 1000 ? wait_ms * 2 : 1000) {
    store_ltx_list_free(&all);
    rc = rp_list_all(r, &all, err);
    if (rc == LTX_OK) rc = plan_view(r, &all, r->cfg.open_txid, -1, 1, &v, err);
    if (rc != STORE_ERR_EMPTY) break;
    if (rp_mono_ms() >= deadline) {
      rc = ltx_error_set(err, CACHE_ERR_TIMEOUT,
                         "replica holds no LTX files after waiting %d ms (open_timeout)",
                         r->cfg.open_timeout_ms);
      break;
    }
    rp_log(REPLICA_LOG_INFO, "%s: replica is empty, waiting for a first LTX file", r->url);
    rp_sleep_ms(wait_ms);
  }
  if (rc != LTX_OK) {
    rp_fill_early_abort(r);
    ltx_error_prefix(err, "%s", r->url);
    goto out;
  }
  pthread_mutex_lock(&r->mutex);
  rp_note_seen(r, &all);
  /* That was a listing of every level: the poller's first polls list level
  ** 0 only, the full one comes at its tenth (a hydration under way does
  ** not pay for eleven LISTs a second after the open). */
  r->poll_count = 1;
  replica_view_ref(v);
  rp_publish(r, v);
  r->img_verified = 1;             /* what the store just said */
  rp_image_published(r, v, NULL, 0); /* the image takes this view's map */
  atomic_store(&r->last_poll_ok_ms, rp_wall_ms());
  *out = v;
  v = NULL;
  start_poller(r);
  pthread_mutex_unlock(&r->mutex);
  rp_hydrator_start(r);
out:
  pthread_mutex_unlock(&r->init_mutex);
  store_ltx_list_free(&all);
  return rc;
}

/* ---- reading ---- */

/* The view to read from: v, or what replaced it after a file vanished. No
** lock: a replacement is set once (under r->mutex) and never changes, and
** the view holds a reference to it. */
static replica_view *resolve(replica *r, replica_view *v) {
  replica_view *next;
  (void)r;
  while ((next = atomic_load_explicit(&v->replacement, memory_order_acquire)) != NULL) v = next;
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
void rp_keep_page(replica *r, rp_file *f, uint32_t pgno, const uint8_t *page) {
  ltx_error err = {0};
  if (r->img != NULL && cache_image_wants(r->img, pgno, &f->meta)) {
    /* Read-through: the image takes the pages of its map; the page cache
    ** keeps only what the image cannot (other versions). */
    if (cache_image_put(r->img, pgno, &f->meta, page, &err) == LTX_OK) return;
    rp_log(REPLICA_LOG_WARN, "%s: %s", r->url, err.msg);
  } else if (r->img != NULL && cache_image_holds(r->img, pgno, &f->meta)) {
    return; /* the hydrator wrote it meanwhile: the image serves it */
  }
  page_cache_put(r->pc, f->id, pgno, page, f->page_size);
}

static int fetch_run(replica *r, const replica_view *v, rp_file *f, uint32_t lo, uint32_t hi,
                     uint8_t *out, ltx_error *err) {
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
    /* A frame the view maps to another file (a bridge over superseded
    ** pages) is kept only where the image wants it: in the page cache it
    ** would only push out pages this view reads. */
    const rp_slot *s = j == lo || e[j].pgno > v->commit ? NULL : rp_view_slot(v, e[j].pgno);
    if (j == lo || (s != NULL && s->file == f) ||
        (r->img != NULL && cache_image_wants(r->img, e[j].pgno, &f->meta)))
      rp_keep_page(r, f, e[j].pgno, dst);
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
    rc = rp_verify_whole(f, buf, n, &h, err);
    if (rc != LTX_OK) ltx_error_prefix(err, "corrupt LTX file %s", f->key);
  }
  if (rc == LTX_OK && h.page_size != f->page_size)
    rc = ltx_error_set(err, LTX_ERR_PAGE_SIZE, "corrupt LTX file %s: page size %u, was %u",
                       f->key, h.page_size, f->page_size);
  if (rc == LTX_OK) {
    memset(out, 0, f->page_size);
    rp_cache_all_pages(r, f, buf, pgno, out);
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

  if (pgno == 0 || pgno > v->commit || (s = rp_view_slot(v, pgno)) == NULL || s->file == NULL) {
    memset(out, 0, v->page_size);
    return LTX_OK;
  }
  f = s->file;
  if (r->img != NULL && cache_image_get(r->img, pgno, &f->meta, out, ra ? &ra->img : NULL))
    return LTX_OK;
  rc = rp_file_ensure_loaded(r, f, err); /* a file only the local image named so far */
  if (rc != LTX_OK) return rc;
  lo = rp_slot_ipos(s, pgno);
  if (lo == IPOS_UNKNOWN)
    return ltx_error_set(err, LTX_ERR_INDEX, "%s holds no page %u although the local image "
                         "says it does", f->key, pgno);
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
      const rp_slot *ns = e[hi].pgno <= v->commit ? rp_view_slot(v, e[hi].pgno) : NULL;
      int useful = ns != NULL && ns->file == f && (ns->ipos == hi || ns->ipos == IPOS_UNKNOWN) &&
                   !page_cache_contains(r->pc, f->id, e[hi].pgno) &&
                   !(r->img && cache_image_holds(r->img, e[hi].pgno, &f->meta));
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

  atomic_fetch_add(&r->readers_fetching, 1);
  rc = whole ? fetch_whole(r, f, pgno, out, err) : fetch_run(r, v, f, lo, hi, out, err);
  atomic_fetch_sub(&r->readers_fetching, 1);
  atomic_store(&r->readers_fetched_ms, rp_mono_ms());

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
  rp_log(REPLICA_LOG_WARN, "%s: %s; re-planning TXID %016" PRIx64, r->url, err->msg, cur->txid);
  rc = view_at(r, cur->txid, -1, 0, &fresh, err);
  if (rc != LTX_OK) {
    ltx_error_prefix(err, "a file of TXID %016" PRIx64 " vanished and re-planning failed",
                     cur->txid);
    return rc;
  }
  pthread_mutex_lock(&r->mutex);
  if (cur->replacement == NULL) {
    atomic_store_explicit(&cur->replacement, fresh, memory_order_release);
    if (r->latest == cur) {
      replica_view_ref(fresh);
      rp_publish(r, fresh);
      rp_image_published(r, fresh, NULL, 0); /* other files now: the image rebases */
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
  r->cfg.cache_dir = cfg->cache_dir && cfg->cache_dir[0] ? strdup(cfg->cache_dir) : NULL;
  r->pc = page_cache_new(cfg->cache_bytes);
  pthread_mutex_init(&r->mutex, NULL);
  pthread_mutex_init(&r->init_mutex, NULL);
  pthread_cond_init(&r->cond, NULL);
  pthread_cond_init(&r->hyd_cond, NULL);
  atomic_init(&r->last_poll_ok_ms, -1);
  atomic_init(&r->img_fits, -1);
  rp_image_open(r);
  r->refs = 1;
  r->next = g_replicas;
  g_replicas = r;
  *out = r;
out:
  pthread_mutex_unlock(&g_registry_mutex);
  return rc;
}

/* Frees everything of r; its threads have ended. */
void rp_replica_free(replica *r) {
  rp_image_close(r);
  if (r->latest) replica_view_release(r->latest);
  r->latest = NULL;
  for (size_t i = 0; i < r->nheld; i++) rp_file_release(r->held[i]);
  free(r->held);
  while (r->registry) {
    rp_file *f = r->registry;
    r->registry = f->next;
    rp_file_release(f);
  }
  free(r->pending);
  page_cache_free(r->pc);
  store_close(r->st);
  pthread_cond_destroy(&r->cond);
  pthread_cond_destroy(&r->hyd_cond);
  pthread_mutex_destroy(&r->mutex);
  pthread_mutex_destroy(&r->init_mutex);
  free((char *)r->cfg.cache_dir);
  free(r->url);
  free(r);
}

void rp_thread_exit(replica *r) {
  int last;
  pthread_mutex_lock(&r->mutex);
  last = --r->threads_running == 0 && r->orphaned;
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->mutex);
  /* replica_release waits a bounded time for the threads; if it gave up
  ** waiting, the replica is the last one's to free. */
  if (last) rp_replica_free(r);
}

/* The last release stops the poller and the hydrator. A store call in
** flight is interrupted (store_interrupt: S3 requests give up within about
** 200 ms) and the threads are waited for up to CLOSE_WAIT_MS; a thread
** still running then (a store call that does not look at the interrupt)
** finishes in the background and the last one frees the replica. So
** closing the last connection never takes much longer than CLOSE_WAIT_MS,
** whatever the store is doing. */
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
  pthread_cond_broadcast(&r->hyd_cond);
  if (r->threads_running > 0) store_interrupt(r->st);
  until = rp_realtime_in(CLOSE_WAIT_MS);
  while (r->threads_running > 0 &&
         pthread_cond_timedwait(&r->cond, &r->mutex, &until) != ETIMEDOUT) {
  }
  if (r->threads_running > 0) {
    /* From the unlock on, r belongs to the threads still running. */
    char url[600];
    snprintf(url, sizeof(url), "%s", r->url);
    r->orphaned = 1;
    if (r->poller_started) pthread_detach(r->poller);
    if (r->hydrator_started) pthread_detach(r->hydrator);
    pthread_mutex_unlock(&r->mutex);
    rp_log(REPLICA_LOG_WARN, "%s: closed while a store call was in flight; it ends in the "
           "background", url);
    return;
  }
  pthread_mutex_unlock(&r->mutex);
  if (r->poller_started) pthread_join(r->poller, NULL);
  if (r->hydrator_started) pthread_join(r->hydrator, NULL);
  rp_replica_free(r);
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
  out->hydrate_phase = atomic_load(&r->img_phase);
  out->image_txid = atomic_load(&r->img_txid);
  out->image_commit = atomic_load(&r->img_commit);
  memset(&out->image, 0, sizeof(out->image));
  out->image_dir[0] = '\0';
  if (r->img) {
    cache_image_stats(r->img, &out->image);
    snprintf(out->image_dir, sizeof(out->image_dir), "%s", cache_image_path(r->img));
  }
  page_cache_stats(r->pc, &out->cache);
  out->fill_runs = atomic_load(&r->fill_runs);
  out->fill_runs_early = atomic_load(&r->fill_runs_early);
  out->fill_steals = atomic_load(&r->fill_steals);
  out->fill_bytes = atomic_load(&r->hyd_bytes);
  out->image_fits = atomic_load(&r->img_fits);
  out->image_budget = atomic_load(&r->img_budget);
  out->image_budget_cache_max = atomic_load(&r->img_budget_cache_max);
}

int64_t replica_lag_seconds(replica *r) {
  int64_t ok = atomic_load(&r->last_poll_ok_ms);
  if (ok < 0) return -1;
  int64_t lag = (rp_wall_ms() - ok) / 1000;
  return lag < 0 ? 0 : lag;
}
