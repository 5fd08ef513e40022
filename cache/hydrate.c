/*
** hydrate.c: the replica's local image and the hydrator thread
** (docs/read-path.md, "The local image"; the on-disk format is image.c).
**
** The image holds the page map of one view, at TXID H (r->img_view), in its
** record; the bytes it holds are pages of that map, each checked against
** its CRC when read. One hydrator thread per replica keeps it:
**
**   rebase   after a cold open or a re-plan: the record takes the new view's
**            map (pages whose file did not change stay held). A "rebase"
**            marker is durable in the meta first; a crash in between
**            discards the image at the next open.
**   apply    each chain the poller published, file by file, in TXID order:
**            the file is fetched whole (8 MiB ranges, in parallel), kept in
**            "staging" (fsynced), the meta says "applying F" (fsynced), its
**            pages are written and remapped, a shrink truncates, the image
**            and record are synced, then the meta moves H to F's TXID. A
**            crash anywhere replays the staged file at the next open: no
**            network needed, idempotent.
**   fill     when there is nothing to apply: the pages of H's map the image
**            does not hold, by runs of frames, streamed by parallel workers
**            (fill.c). It yields while readers are fetching (a reader's
**            miss goes first).
**   check    after a warm open: the CRC of every page an earlier process
**            left, so that readers find them checked.
**
** Readers also write through (replica.c): a page a reader fetched whose
** file is the one the map names goes into the image.
**
** A warm open (rp_image_view) builds the first view from the record alone:
** no listing, no index, no page read; files are loaded when a page the
** image does not hold is needed. The first thing the hydrator does then is
** to ask the store whether the replica is still the one cached (the header
** of the file that ended at H); while the store cannot be reached the
** replica serves what the image holds, at H, and lag grows.
**
** Locks: r->mutex for img_view, img_queue, img_rebase, img_verified; the
** image's own write mutex for its bytes and record. The hydrator holds no
** lock across a store call or a file write.
*/
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/replica_int.h"

#define APPLY_RANGE_BYTES (8u << 20) /* one request of a file being applied */
#define REBASE_MARK 100              /* meta.applying.level of a rebase */
#define CHECK_PAGES 2048             /* pages the CRC check pass takes at a time */
#define DISK_RESERVE (64u << 20)     /* free space the image never takes (or 1/16
                                     ** of a smaller file system) */

/* Sets the image's budget for a map of commit pages: cache_max, and never
** more than the disk's free space (less a reserve) beyond what it holds.
** Returns whether the whole map fits (else: cached partially, read-through
** until the budget, no bulk fill). */
static int budget_fits(replica *r, uint64_t commit, uint32_t page_size) {
  cache_image_stat s;
  uint64_t total = 0, need = commit * page_size, budget;
  uint64_t free_bytes = cache_image_free_bytes(r->img, &total);
  uint64_t reserve = total / 16 < DISK_RESERVE ? total / 16 : DISK_RESERVE;
  cache_image_stats(r->img, &s);
  budget = free_bytes == UINT64_MAX ? UINT64_MAX
           : s.held * page_size + (free_bytes > reserve ? free_bytes - reserve : 0);
  if (r->cfg.cache_max && r->cfg.cache_max < budget) budget = r->cfg.cache_max;
  cache_image_set_budget(r->img, budget >= need ? UINT64_MAX : budget);
  atomic_store(&r->img_budget, budget);
  atomic_store(&r->img_budget_cache_max, r->cfg.cache_max && r->cfg.cache_max == budget);
  int was = atomic_exchange(&r->img_fits, budget >= need);
  if (budget < need) {
    if (was != 0) /* (said once, not at every look) */
      rp_log(REPLICA_LOG_WARN, "%s: the local image gets %" PRIu64 " bytes (%s) of the %" PRIu64
             " the database takes: it is cached partially, as it is read", r->url, budget,
             r->cfg.cache_max && r->cfg.cache_max == budget ? "cache_max" : "free disk space",
             need);
    return 0;
  }
  return 1;
}

/* ---- opening ---- */

void rp_image_open(replica *r) {
  char dir[1200], note[400], identity[1024];
  ltx_error err = {0};
  atomic_store(&r->img_phase, REPLICA_HYDRATE_OFF);
  if (r->cfg.cache_dir == NULL || r->cfg.cache_dir[0] == '\0') return;
  /* the replica, not how it is reached: other timeouts, one image */
  if (store_replica_identity(r->url, identity, sizeof(identity)) != 0 ||
      cache_image_dir(r->cfg.cache_dir, identity, dir, sizeof(dir)) != 0) {
    rp_log(REPLICA_LOG_WARN, "%s: cache directory name too long; no local image", r->url);
    return;
  }
  if (cache_image_open(dir, identity, &r->img, &r->img_meta, note, sizeof(note), &err) != LTX_OK) {
    rp_log(REPLICA_LOG_WARN, "%s: no local image (pages stay in memory): %s", r->url, err.msg);
    r->img = NULL;
    return;
  }
  if (note[0]) rp_log(REPLICA_LOG_WARN, "%s: %s", r->url, note);
  atomic_store(&r->img_phase, REPLICA_HYDRATE_IDLE);
}

static void step_free(rp_img_step *s) {
  for (size_t i = 0; i < s->n; i++) rp_file_release(s->files[i]);
  free(s->files);
  if (s->view) replica_view_release(s->view);
  free(s);
}

/* Drops the queued chains (closing, or a rebase supersedes them). Caller
** holds r->mutex or is the last user. */
static void queue_clear(replica *r) {
  while (r->img_queue) {
    rp_img_step *s = r->img_queue;
    r->img_queue = s->next;
    step_free(s);
  }
}

void rp_image_close(replica *r) {
  rp_fill_early_abort(r); /* (none left unless the hydrator never ran) */
  queue_clear(r);
  if (r->img_view) replica_view_release(r->img_view);
  r->img_view = NULL;
  cache_image_close(r->img);
  r->img = NULL;
}

static int write_meta(replica *r, ltx_error *err) {
  pthread_mutex_lock(&r->mutex);
  memcpy(r->img_meta.seen, r->seen, sizeof(r->seen));
  pthread_mutex_unlock(&r->mutex);
  return cache_image_write_meta(r->img, &r->img_meta, err);
}

/* The state the meta records for view v, whose newest file is head. */
static void meta_at(replica *r, const replica_view *v, const store_ltx_file *head) {
  r->img_meta.page_size = v->page_size;
  r->img_meta.commit = v->commit;
  r->img_meta.txid = v->txid;
  r->img_meta.timestamp_ms = v->timestamp_ms;
  if (head) r->img_meta.head = *head;
  r->img_meta.applying.level = -1;
}

/* The newest file of v (the one that ended at v's TXID), or NULL. */
static const store_ltx_file *head_of(const replica_view *v) {
  const store_ltx_file *best = NULL;
  for (size_t i = 0; i < v->nfiles; i++) {
    const store_ltx_file *m = &v->files[i]->meta;
    if (m->max_txid == v->txid && (best == NULL || m->min_txid < best->min_txid)) best = m;
  }
  return best;
}

/* Applies a whole LTX file in buf to the image and to *vp (a private view,
** copy-on-write): every page written and remapped to f, then a shrink.
** The record and view then say f. */
static int apply_pages(replica *r, const store_ltx_file *meta, const uint8_t *buf, size_t n,
                       uint32_t old_commit, ltx_error *err) {
  ltx_header h;
  ltx_index idx = {0};
  size_t need = 0;
  uint8_t *page = NULL;
  int rc = ltx_verify_buffer(buf, n, &h, NULL, err);
  if (rc == LTX_OK) rc = store_check_ltx_name(meta, &h, err);
  if (rc == LTX_OK) rc = ltx_index_parse_tail(buf, n, n, &idx, &need, err);
  if (rc != LTX_OK) goto out;
  page = malloc(h.page_size);
  if (page == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < idx.n && rc == LTX_OK; i++) {
    const ltx_page_entry *e = &idx.entries[i];
    rc = ltx_frame_decode(buf + e->offset, e->size, e->pgno, h.page_size, page, err);
    if (rc == LTX_OK) rc = cache_image_remap(r->img, e->pgno, meta, page, err);
  }
  if (rc == LTX_OK && h.commit < old_commit)
    rc = cache_image_truncate(r->img, old_commit, h.commit, err);
out:
  ltx_index_free(&idx);
  free(page);
  return rc;
}

/* Reads a whole file into memory in APPLY_RANGE_BYTES ranges, in parallel. */
static int fetch_file(replica *r, const rp_file *f, uint8_t **out, ltx_error *err) {
  size_t n = (size_t)f->meta.size, nr = (n + APPLY_RANGE_BYTES - 1) / APPLY_RANGE_BYTES;
  uint8_t *buf = malloc(n ? n : 1);
  store_range *rr = calloc(nr ? nr : 1, sizeof(*rr));
  int rc = LTX_OK;
  if (buf == NULL || rr == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for %s", f->key);
    goto out;
  }
  for (size_t i = 0; i < nr; i++) {
    rr[i].key = f->key;
    rr[i].off = (uint64_t)i * APPLY_RANGE_BYTES;
    rr[i].buf = buf + rr[i].off;
    rr[i].n = n - rr[i].off < APPLY_RANGE_BYTES ? n - rr[i].off : APPLY_RANGE_BYTES;
  }
  rc = store_read_ranges(r->st, rr, nr, err);
  if (rc == LTX_OK) atomic_fetch_add(&r->hyd_bytes, n);
out:
  free(rr);
  if (rc != LTX_OK) {
    free(buf);
    buf = NULL;
  }
  *out = buf;
  return rc;
}

/* Applies f on top of the image's map: staged, marked, written, synced,
** then H moves. */
static int apply_file(replica *r, rp_file *f, ltx_error *err) {
  uint8_t *buf = NULL;
  uint32_t old_commit = r->img_meta.commit;
  int rc = rp_file_ensure_loaded(r, f, err);
  if (rc == LTX_OK) rc = fetch_file(r, f, &buf, err);
  if (rc == LTX_OK) rc = cache_image_stage(r->img, buf, (size_t)f->meta.size, err);
  if (rc != LTX_OK) goto out;
  r->img_meta.applying = f->meta;
  rc = write_meta(r, err);
  if (rc == LTX_OK) rc = apply_pages(r, &f->meta, buf, (size_t)f->meta.size, old_commit, err);
  if (rc == LTX_OK) rc = cache_image_sync(r->img, err);
  if (rc != LTX_OK) goto out;
  r->img_meta.applying.level = -1;
  r->img_meta.page_size = f->page_size;
  r->img_meta.commit = f->commit;
  r->img_meta.txid = f->meta.max_txid;
  r->img_meta.timestamp_ms = f->header_ts_ms;
  r->img_meta.head = f->meta;
  rc = write_meta(r, err);
  if (rc == LTX_OK) {
    cache_image_unstage(r->img);
    atomic_store(&r->img_txid, f->meta.max_txid);
    atomic_store(&r->img_commit, f->commit);
  }
out:
  free(buf);
  return rc;
}

/* Gives the record v's map: every page remapped to the file v names
** (pages whose file is unchanged stay held), the rest dropped. */
static int rebase(replica *r, replica_view *v, ltx_error *err) {
  int rc = LTX_OK, fresh = 0;
  uint32_t old_commit = r->img_meta.commit;
  if (r->img_meta.page_size != v->page_size) {
    rc = cache_image_reset(r->img, v->page_size, err);
    old_commit = 0;
    fresh = 1;
    if (rc != LTX_OK) return rc;
  }
  r->img_meta.page_size = v->page_size;
  r->img_meta.applying.level = REBASE_MARK;
  /* The marker protects the pages held; after a reset there is no meta at
  ** all until the one below, so a crash in between finds nothing to trust. */
  if (!fresh) rc = write_meta(r, err);
  for (uint32_t p = 1; p <= v->commit && rc == LTX_OK; p++) {
    const rp_slot *s = rp_view_slot(v, p);
    rc = cache_image_remap(r->img, p, s && s->file ? &s->file->meta : NULL, NULL, err);
  }
  if (rc == LTX_OK && v->commit < old_commit)
    rc = cache_image_truncate(r->img, old_commit, v->commit, err);
  if (rc == LTX_OK && rp_fill_early_pending(r)) {
    /* `ltvfs hydrate`'s first reads (fill.c) wait for this map: they may
    ** write from here on, while it is made durable. The image was empty
    ** (an early pass starts only then): a crash before the meta below
    ** leaves it without a TXID, and the next open starts it afresh. */
    if (budget_fits(r, v->commit, v->page_size) == 1) rp_fill_early_ready(r, v);
    else rp_fill_early_abort(r);
  }
  if (rc == LTX_OK) rc = cache_image_sync(r->img, err);
  if (rc != LTX_OK) return rc;
  meta_at(r, v, head_of(v));
  rc = write_meta(r, err);
  if (rc == LTX_OK) { /* the TXID the image is at, once the meta says so durably */
    atomic_store(&r->img_txid, v->txid);
    atomic_store(&r->img_commit, v->commit);
  }
  return rc;
}

/* ---- the warm open ---- */

/* Replays a file whose apply a crash interrupted, from its staged copy. */
static int replay_staged(replica *r, ltx_error *err) {
  uint8_t *buf = NULL;
  size_t n = 0;
  store_ltx_file f = r->img_meta.applying;
  ltx_header h;
  int rc = cache_image_read_staged(r->img, &buf, &n, err);
  if (rc == LTX_OK) rc = ltx_header_decode(buf, &h, err);
  if (rc == LTX_OK) rc = apply_pages(r, &f, buf, n, r->img_meta.commit, err);
  if (rc == LTX_OK) rc = cache_image_sync(r->img, err);
  if (rc == LTX_OK) {
    r->img_meta.applying.level = -1;
    r->img_meta.commit = h.commit;
    r->img_meta.txid = f.max_txid;
    r->img_meta.timestamp_ms = h.timestamp_ms;
    r->img_meta.head = f;
    rc = cache_image_write_meta(r->img, &r->img_meta, err);
  }
  if (rc == LTX_OK) cache_image_unstage(r->img);
  free(buf);
  return rc;
}

/* The view of the record's map, at the meta's TXID: files named by the
** record, loaded when a page the image does not hold is needed. NULL when
** out of memory (logged). */
static replica_view *record_view(replica *r) {
  replica_view *v = rp_view_new();
  if (v == NULL) return NULL;
  v->txid = r->img_meta.txid;
  v->commit = r->img_meta.commit;
  v->page_size = r->img_meta.page_size;
  v->timestamp_ms = r->img_meta.timestamp_ms;
  pthread_mutex_lock(&r->mutex);
  for (uint32_t p = 1; p <= v->commit; p++) {
    store_ltx_file id;
    rp_file *f;
    if (!cache_image_entry(r->img, p, &id, NULL)) continue;
    f = rp_registry_get_lazy(r, &id);
    if (f == NULL || rp_view_set(v, p, f, IPOS_UNKNOWN) != LTX_OK) {
      if (f) rp_file_release(f);
      pthread_mutex_unlock(&r->mutex);
      goto nomem;
    }
    /* one reference per distinct file in the view's list */
    int have = v->nfiles > 0 && v->files[v->nfiles - 1] == f;
    for (size_t i = 0; !have && i < v->nfiles; i++) have = v->files[i] == f;
    if (!have && rp_view_add_file(v, f) != LTX_OK) {
      rp_file_release(f);
      pthread_mutex_unlock(&r->mutex);
      goto nomem;
    }
    rp_file_release(f);
  }
  pthread_mutex_unlock(&r->mutex);
  return v;
nomem:
  rp_log(REPLICA_LOG_ERROR, "%s: out of memory building the view of the local image", r->url);
  replica_view_release(v);
  return NULL;
}

replica_view *rp_image_pinned_view(replica *r, uint64_t txid) {
  replica_view *v = NULL;
  pthread_mutex_lock(&r->mutex);
  int quiet = !r->hydrator_started;
  pthread_mutex_unlock(&r->mutex);
  if (quiet && r->img != NULL && r->img_meta.txid == txid && r->img_meta.page_size != 0 &&
      r->img_meta.applying.level == -1)
    v = record_view(r);
  return v;
}

replica_view *rp_image_view(replica *r) {
  replica_view *v = NULL;
  ltx_error err = {0};
  if (r->img == NULL || r->img_meta.txid == 0 || r->img_meta.page_size == 0) return NULL;
  if (r->img_meta.applying.level == REBASE_MARK) {
    rp_log(REPLICA_LOG_WARN, "%s: the local image was being rebased when the last process "
           "stopped; starting it afresh", r->url);
    goto discard;
  }
  if (r->img_meta.applying.level >= 0) {
    if (replay_staged(r, &err) != LTX_OK) {
      rp_log(REPLICA_LOG_WARN, "%s: replaying the staged file of the local image failed (%s); "
             "starting it afresh", r->url, err.msg);
      goto discard;
    }
    rp_log(REPLICA_LOG_INFO, "%s: replayed the file being applied when the last process stopped "
           "(now at TXID %016" PRIx64 ")", r->url, r->img_meta.txid);
  }
  v = record_view(r);
  if (v == NULL) return NULL;
  pthread_mutex_lock(&r->mutex);
  /* The poller goes on listing after the file that ended at H, not after
  ** what an earlier poller had listed: that may be ahead of H (files seen
  ** but not applied to the image yet), and listing after it would skip the
  ** files between, leave a gap and force a re-plan. */
  memset(r->seen, 0, sizeof(r->seen));
  if (r->img_meta.head.max_txid != 0 && r->img_meta.head.level >= 0 &&
      r->img_meta.head.level <= STORE_MAX_LEVEL)
    r->seen[r->img_meta.head.level] = r->img_meta.head;
  replica_view_ref(v);
  r->img_view = v;
  pthread_mutex_unlock(&r->mutex);
  atomic_store(&r->img_txid, v->txid);
  atomic_store(&r->img_commit, v->commit);
  cache_image_stat is;
  cache_image_stats(r->img, &is);
  rp_log(REPLICA_LOG_INFO, "%s: opened from the local image at TXID %016" PRIx64 " (%" PRIu64
         " of %u pages held)", r->url, v->txid, is.held, v->commit);
  return v;
discard:
  if (cache_image_reset(r->img, 0, &err) != LTX_OK) {
    rp_log(REPLICA_LOG_WARN, "%s: %s; no local image", r->url, err.msg);
    cache_image_close(r->img);
    r->img = NULL;
    atomic_store(&r->img_phase, REPLICA_HYDRATE_OFF);
  }
  memset(&r->img_meta.txid, 0, sizeof(r->img_meta.txid));
  r->img_meta.page_size = 0;
  r->img_meta.commit = 0;
  r->img_meta.applying.level = -1;
  return NULL;
}

/* ---- what the poller tells us ---- */

void rp_image_published(replica *r, replica_view *view, rp_file **files, size_t n) {
  rp_img_step *s;
  if (r->img == NULL) return;
  if (files == NULL) {
    r->img_rebase = 1;
  } else if ((s = calloc(1, sizeof(*s))) != NULL && (s->files = calloc(n ? n : 1, sizeof(*s->files))) != NULL) {
    for (size_t i = 0; i < n; i++) {
      s->files[i] = files[i];
      atomic_fetch_add(&files[i]->refs, 1);
    }
    s->n = n;
    s->view = view;
    replica_view_ref(view);
    if (r->img_queue == NULL) r->img_queue_tail = &r->img_queue;
    *r->img_queue_tail = s;
    r->img_queue_tail = &s->next;
  } else {
    free(s);
    r->img_rebase = 1; /* could not queue it: rebase onto the latest instead */
  }
  pthread_cond_broadcast(&r->hyd_cond);
}

/* ---- the thread ---- */

/* Whether the replica in the store is the one cached: the file that ended
** at H is listed with the size (and time, where both are known) it had.
** One LIST, starting just before that file. When the file is gone
** (compacted away), the replica must still reach H: a replica whose newest
** TXID is below the image's is another history (a replica deleted and
** written again), one more LIST of every level. 1 yes, 0 no, -1 the store
** did not answer. */
static int verify_replica(replica *r, ltx_error *err) {
  const store_ltx_file *f = &r->img_meta.head;
  store_ltx_list l = {0};
  int same = 1, found = 0;
  if (f->max_txid == 0) return 1;
  if (store_list_level(r->st, f->level, f->min_txid, f->max_txid - 1, &l, err) != LTX_OK)
    return -1;
  if (l.n > 0 && rp_same_file(&l.files[0], f)) {
    const store_ltx_file *g = &l.files[0];
    found = 1;
    same = (f->size == 0 || g->size == f->size) &&
           (f->timestamp_ms < 0 || g->timestamp_ms < 0 || g->timestamp_ms == f->timestamp_ms);
  }
  store_ltx_list_free(&l);
  if (!found) {
    uint64_t newest = 0;
    if (store_list_all(r->st, &l, err) != LTX_OK) return -1;
    for (size_t i = 0; i < l.n; i++)
      if (l.files[i].max_txid > newest) newest = l.files[i].max_txid;
    store_ltx_list_free(&l);
    same = newest >= f->max_txid;
  }
  return same;
}

static void hydrator_work(replica *r) {
  fill_cursor cursor = FILL_CURSOR_START;
  int pass_found = 0;        /* the fill's pass from page 1 found pages to fetch */
  unsigned pass_fails = 0;   /* frames that failed to decode when that pass began */
  int stuck = 0;             /* a pass fetched pages but the image took none */
  int fits = -1;             /* the map fits the budget (-1: not checked yet) */
  int failures = 0;
  uint32_t check_next = 1;   /* the next page whose CRC the check pass looks at */
  pthread_mutex_lock(&r->mutex);
  while (!r->stop) {
    ltx_error err = {0};
    rp_img_step *step = NULL;
    replica_view *target = NULL;
    int rc = LTX_OK;

    if (!r->img_verified) {
      pthread_mutex_unlock(&r->mutex);
      int ok = r->img_meta.txid == 0 ? 1 : verify_replica(r, &err);
      pthread_mutex_lock(&r->mutex);
      if (ok == 1) {
        r->img_verified = 1;
      } else if (ok == 0) {
        /* Another replica lives at this URL now: start over from it. */
        rp_log(REPLICA_LOG_WARN, "%s: the replica is not the one the local image holds (TXID "
               "%016" PRIx64 " differs); starting the image afresh", r->url, r->img_meta.txid);
        r->img_verified = 1;
        r->img_rebase = 1;
        /* The listing positions came from the image's history: the poller
        ** lists this replica from its start again. */
        memset(r->seen, 0, sizeof r->seen);
        pthread_mutex_unlock(&r->mutex);
        cache_image_reset(r->img, 0, &err);
        r->img_meta.page_size = 0;
        r->img_meta.commit = 0;
        r->img_meta.txid = 0;
        pthread_mutex_lock(&r->mutex);
        /* what readers saw came from the image; a fresh plan replaces it */
        replica_view *fresh = NULL;
        pthread_mutex_unlock(&r->mutex);
        if (replica_view_at(r, 0, -1, &fresh, &err) == LTX_OK) {
          pthread_mutex_lock(&r->mutex);
          rp_publish(r, fresh);
          pthread_mutex_unlock(&r->mutex);
        }
        pthread_mutex_lock(&r->mutex);
      } else {
        /* The store is down: serve the image, try again later. */
        struct timespec until = rp_realtime_in(failures < 5 ? 200 << failures : 5000);
        failures++;
        pthread_cond_timedwait(&r->hyd_cond, &r->mutex, &until);
        continue;
      }
      r->img_checked = 1; /* a warm open waits for this (and a fresh view, if any) */
      pthread_cond_broadcast(&r->cond);
    }

    if (r->img_rebase) {
      r->img_rebase = 0;
      queue_clear(r); /* the rebase supersedes them */
      target = r->latest;
      if (target) replica_view_ref(target);
      pthread_mutex_unlock(&r->mutex);
      if (target) {
        atomic_store(&r->img_phase, REPLICA_HYDRATE_APPLYING);
        rc = rebase(r, target, &err);
        pthread_mutex_lock(&r->mutex);
        if (rc == LTX_OK) {
          if (r->img_view) replica_view_release(r->img_view);
          r->img_view = target;
          target = NULL;
          cursor = FILL_CURSOR_START;
          stuck = 0;
          fits = -1;
        } else {
          r->img_rebase = 1; /* the record is wherever the failure left it: again, after the backoff */
        }
        pthread_mutex_unlock(&r->mutex);
        if (target) replica_view_release(target);
      }
      if (rp_fill_early_pending(r)) {
        /* `ltvfs hydrate`'s first reads (fill.c), writing since the rebase
        ** gave the record its map: the pass that follows fetches whatever
        ** they left */
        if (rc == LTX_OK && target == NULL) {
          atomic_store(&r->img_phase, REPLICA_HYDRATE_FILLING);
          rp_fill_early_adopt(r, r->img_view);
        }
        rp_fill_early_abort(r);
      }
    } else if (r->img_queue) {
      step = r->img_queue;
      r->img_queue = step->next;
      pthread_mutex_unlock(&r->mutex);
      atomic_store(&r->img_phase, REPLICA_HYDRATE_APPLYING);
      for (size_t i = 0; i < step->n && rc == LTX_OK; i++) rc = apply_file(r, step->files[i], &err);
      pthread_mutex_lock(&r->mutex);
      if (rc == LTX_OK) {
        if (r->img_view) replica_view_release(r->img_view);
        r->img_view = step->view;
        step->view = NULL;
        cursor = FILL_CURSOR_START;
        stuck = 0;
        fits = -1;
      } else {
        r->img_rebase = 1; /* the map is wherever the failure left it */
      }
      pthread_mutex_unlock(&r->mutex);
      step_free(step);
    } else if (r->img_view && check_next <= r->img_meta.commit) {
      /* Pages an earlier process left: their CRCs checked here, on this
      ** thread, so that readers find them checked (a reader checks a page
      ** it reads first; both is harmless). */
      pthread_mutex_unlock(&r->mutex);
      uint32_t at = cache_image_check(r->img, check_next, CHECK_PAGES);
      check_next = at > check_next ? at : UINT32_MAX; /* past the record: done */
      pthread_mutex_lock(&r->mutex);
      continue;
    } else if (r->cfg.hydrate && r->img_view && fits < 0) {
      uint64_t commit = r->img_view->commit;
      uint32_t ps = r->img_view->page_size;
      pthread_mutex_unlock(&r->mutex);
      fits = budget_fits(r, commit, ps);
      pthread_mutex_lock(&r->mutex);
      continue;
    } else if (r->cfg.hydrate && r->img_view && cursor.file < r->img_view->nfiles && !stuck &&
               fits) {
      target = r->img_view;
      replica_view_ref(target);
      pthread_mutex_unlock(&r->mutex);
      atomic_store(&r->img_phase, REPLICA_HYDRATE_FILLING);
      if (cursor.file == 0 && cursor.pos == 0) { /* a pass begins */
        cache_image_stat is;
        cache_image_stats(r->img, &is);
        pass_fails = atomic_load(&r->fill_decode_failures);
        pass_found = 0;
        /* The image holds the whole map (a warm open of a hydrated image):
        ** nothing to fetch, and no file's index to read to find that out. */
        if (is.held >= target->commit) cursor.file = target->nfiles;
      }
      if (cursor.file < target->nfiles) rc = rp_fill_some(r, target, &cursor, &pass_found, &err);
      if (cursor.file >= target->nfiles && pass_found) {
        /* a pass that fetched something: one more to find what it missed
        ** (pages a racing change left out); a pass that finds nothing means
        ** the image holds the whole map. Frames that did not decode would
        ** be fetched again by every pass: the fill stops until the map
        ** changes (reads of those pages go to the store and say why). */
        if (atomic_load(&r->fill_decode_failures) != pass_fails) {
          stuck = 1;
          rp_log(REPLICA_LOG_WARN, "%s: some frames of the replica do not decode; the local "
                 "image leaves those pages out (reads of them go to the store)", r->url);
        }
        cursor = FILL_CURSOR_START;
      }
      replica_view_release(target);
      pthread_mutex_lock(&r->mutex);
      if (rc != LTX_OK) cursor = FILL_CURSOR_START; /* start over, after the backoff below */
      pthread_mutex_unlock(&r->mutex);
    } else {
      cache_image_stat is;
      cache_image_stats(r->img, &is);
      int held_all = r->img_view && cursor.file >= r->img_view->nfiles && !stuck && fits == 1 &&
                     !is.disabled;
      if (held_all && r->cfg.hydrate) {
        /* durable before saying done; then sleep until there is work */
        if (atomic_load(&r->img_phase) != REPLICA_HYDRATE_DONE) {
          pthread_mutex_unlock(&r->mutex);
          int synced = cache_image_sync(r->img, &err) == LTX_OK;
          pthread_mutex_lock(&r->mutex);
          if (!synced) { /* tried again at the next wake-up */
            rp_log(REPLICA_LOG_WARN, "%s: local image: %s", r->url, err.msg);
          } else {
            atomic_store(&r->img_phase, REPLICA_HYDRATE_DONE);
            pthread_cond_broadcast(&r->cond); /* replica_hydration_wait */
          }
        }
      } else {
        atomic_store(&r->img_phase, REPLICA_HYDRATE_IDLE);
      }
      if (!r->stop && !r->img_rebase && !r->img_queue) {
        struct timespec until = rp_realtime_in(1000);
        pthread_cond_timedwait(&r->hyd_cond, &r->mutex, &until);
      }
      continue;
    }
    if (rc != LTX_OK) {
      failures++;
      pthread_mutex_lock(&r->mutex);
      if (r->stop) break; /* a store call the close interrupted: nothing to report */
      pthread_mutex_unlock(&r->mutex);
      rp_log(failures == 1 ? REPLICA_LOG_WARN : REPLICA_LOG_DEBUG,
             "%s: local image: %s (retrying)", r->url, err.msg);
      pthread_mutex_lock(&r->mutex);
      struct timespec until = rp_realtime_in(failures < 6 ? 100 << failures : 5000);
      if (!r->stop) pthread_cond_timedwait(&r->hyd_cond, &r->mutex, &until);
      continue;
    }
    failures = 0;
    pthread_mutex_lock(&r->mutex);
  }
  pthread_mutex_unlock(&r->mutex);
}

static void *hydrator_main(void *arg) {
  replica *r = arg;
  hydrator_work(r);
  rp_fill_early_abort(r); /* closing before the first rebase */
  rp_thread_exit(r);
  return NULL;
}

void rp_hydrator_start(replica *r) {
  int started = 0;
  pthread_mutex_lock(&r->mutex);
  if (r->img != NULL && !r->hydrator_started && !r->stop) {
    if (pthread_create(&r->hydrator, NULL, hydrator_main, r) == 0) {
      r->hydrator_started = started = 1;
      r->threads_running++;
    } else {
      rp_log(REPLICA_LOG_ERROR, "%s: cannot start the hydrator thread", r->url);
    }
  }
  pthread_mutex_unlock(&r->mutex);
  if (!started) rp_fill_early_abort(r); /* nobody would adopt it */
}

int replica_hydration_wait(replica *r, int ms) {
  struct timespec until = rp_realtime_in(ms);
  int done;
  pthread_mutex_lock(&r->mutex);
  while (!(done = atomic_load(&r->img_phase) == REPLICA_HYDRATE_DONE) && r->img != NULL &&
         pthread_cond_timedwait(&r->cond, &r->mutex, &until) != ETIMEDOUT) {
  }
  pthread_mutex_unlock(&r->mutex);
  return done;
}

int replica_hydration_percent(replica *r) {
  cache_image_stat s;
  uint64_t commit = atomic_load(&r->img_commit);
  if (r->img == NULL || commit == 0) return 0;
  cache_image_stats(r->img, &s);
  if (atomic_load(&r->img_phase) == REPLICA_HYDRATE_DONE && !s.disabled) return 100;
  return s.held >= commit ? 100 : (int)(s.held * 100 / commit);
}
