/*
** poll.c: listing the replica and the poller thread (cache/replica_int.h).
**
** A poll:
** (1) lists level 0 after the last key seen there; all levels every tenth
**     poll (a cold open's listing counts as the first full one), after a
**     poll the store failed, after a listed file turned out gone, and when
**     the new files leave a gap: each level after what was seen there, in
**     one request while that fits a page (the levels' common prefix from
**     level 0's last key; levels 1..9 are few files);
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

struct list_job {
  replica *r;
  int first_level, last_level;
  store_ltx_file after[STORE_MAX_LEVEL + 1]; /* 0/0 = from the start */
  store_ltx_list lists[STORE_MAX_LEVEL + 1];
  int rcs[STORE_MAX_LEVEL + 1];
  ltx_error errs[STORE_MAX_LEVEL + 1];
  atomic_int next;
};

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
  rp_run_parallel(list_worker, job, (size_t)(last_level + 1 - first_level));
  for (int l = first_level; l <= last_level; l++) {
    if (job->rcs[l] != LTX_OK && rc == LTX_OK) {
      rc = job->rcs[l];
      *err = job->errs[l];
    }
    total += job->lists[l].n;
  }
  if (rc == LTX_OK) {
    store_ltx_file *all = realloc(out->files, (out->n + total + 1) * sizeof(*out->files));
    if (all == NULL) rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    else out->files = all;
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
void rp_note_seen(replica *r, const store_ltx_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    const store_ltx_file *f = &l->files[i];
    store_ltx_file *s = &r->seen[f->level];
    if (f->min_txid > s->min_txid || (f->min_txid == s->min_txid && f->max_txid > s->max_txid))
      *s = *f;
  }
}

/* Every level, each after its entry of after (NULL: from the start): one
** request while what is listed fits a page (store_list_levels_start), the
** levels that page left open in parallel. */
static int list_every_level(replica *r, const store_ltx_file *after, store_ltx_list *out,
                            ltx_error *err) {
  list_job job;
  int open, rc = store_list_levels_start(r->st, 0, after, out, &open, err);
  if (rc != LTX_OK || open > STORE_MAX_LEVEL) return rc;
  memset(&job, 0, sizeof(job));
  if (after) memcpy(job.after, after, sizeof(job.after));
  rc = list_levels(r, &job, open, STORE_MAX_LEVEL, out, err);
  if (rc != LTX_OK) store_ltx_list_free(out);
  return rc;
}

int rp_list_all(replica *r, store_ltx_list *out, ltx_error *err) {
  return list_every_level(r, NULL, out, err);
}

/* Adds f to the candidates, once: a newer listing's entry replaces an older
** one (its size hint is fresher). */
static int cand_add(store_ltx_file **pc, size_t *pn, size_t *pcap, const store_ltx_file *f) {
  for (size_t i = 0; i < *pn; i++) {
    if (rp_same_file(&(*pc)[i], f)) {
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
  rp_file **files = NULL, **held = NULL, **applied = NULL;
  size_t nheld = 0, napplied = 0;
  int replanned = 0;
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
    rc = full ? list_every_level(r, job.after, &fresh, err)
              : list_levels(r, &job, 0, 0, &fresh, err);
    if (rc != LTX_OK) goto out;
    pthread_mutex_lock(&r->mutex);
    rp_note_seen(r, &fresh);
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
  applied = calloc(ncand + 1, sizeof(*applied));
  if (skip == NULL || metas == NULL || files == NULL || held == NULL || rcs == NULL ||
      errs == NULL || applied == NULL)
    goto nomem;
  reach = base;
  for (size_t round = 0; round <= ncand && rc == LTX_OK; round++) {
    size_t k = 0;
    nchain = chain_build(cand, ncand, reach, skip, chain, &(uint64_t){0});
    if (round == 0) first_nchain = nchain;
    if (nchain == 0) break;
    for (size_t i = 0; i < nchain; i++) metas[i] = cand[chain[i]];
    rp_files_load(r, metas, nchain, files, rcs, errs);
    while (k < nchain && files[k] != NULL) k++;
    if (k > 0 && next == NULL && (next = rp_view_clone(cur)) == NULL) rc = LTX_ERR_NOMEM;
    for (size_t i = 0; i < k && rc == LTX_OK; i++) rc = rp_view_apply(next, files[i], err);
    if (rc == LTX_OK && k > 0) reach = files[k - 1]->meta.max_txid;
    for (size_t i = 0; i < nchain; i++) {
      if (i < k && rc == LTX_OK && napplied <= ncand) applied[napplied++] = files[i];
      else if (i > k && files[i] != NULL && nheld <= ncand) held[nheld++] = files[i];
      else rp_file_release(files[i]);
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
  if (next != NULL) rp_view_prune_files(next);

  if (store_err.code == LTX_OK && first_nchain == 0 && any_newer(cand, ncand, base)) {
    /* Newer files exist but none follows our TXID, even after a full
    ** listing: the files in between were removed (retention) or compacted
    ** away. Re-plan from what the store holds. */
    rp_log(REPLICA_LOG_WARN, "%s: newer files do not follow TXID %016" PRIx64 "; re-planning",
         r->url, base);
    rc = replica_view_at(r, 0, -1, &next, err);
    replanned = 1;
  }

  /* (5) */
  if (next != NULL && rc == LTX_OK) {
    rp_log(REPLICA_LOG_DEBUG, "%s: TXID %016" PRIx64 " -> %016" PRIx64 " (commit %u)", r->url,
         base, next->txid, next->commit);
    pthread_mutex_lock(&r->mutex);
    if (r->latest == cur) {
      base = next->txid;
      rp_publish(r, next);
      /* the local image follows: these files in order, or a rebase */
      rp_image_published(r, next, replanned ? NULL : applied, napplied);
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
  for (size_t i = 0; i < r->nheld; i++) rp_file_release(r->held[i]);
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
  for (size_t i = 0; i < napplied; i++) rp_file_release(applied[i]);
  free(applied);
  free(rcs);
  free(errs);
  return rc;
}

/* Records the outcome of a poll for stats and the log. A failure is logged
** as a warning when it is new (another message) or 30 s after the last
** warning; in between at debug level. */
static void poll_report(replica *r, int rc, const ltx_error *err, int failures, int interval) {
  int64_t now = rp_mono_ms();
  int warn = 0;
  pthread_mutex_lock(&r->mutex);
  int closing = r->stop;
  pthread_mutex_unlock(&r->mutex);
  if (closing) return; /* a poll the close interrupted: nothing to report */
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
    atomic_store(&r->last_poll_ok_ms, rp_wall_ms());
    if (failures > 0)
      rp_log(REPLICA_LOG_INFO, "%s: polling recovered after %d failures", r->url, failures);
    return;
  }
  atomic_fetch_add(&r->poll_errors, 1);
  rp_log(warn ? REPLICA_LOG_WARN : REPLICA_LOG_DEBUG,
       "%s: poll failed (%d in a row, next in %d ms): %s", r->url, failures, interval, err->msg);
}

void *rp_poller_main(void *arg) {
  replica *r = arg;
  int interval = r->cfg.poll_ms, failures = 0;
  pthread_mutex_lock(&r->mutex);
  while (!r->stop) {
    struct timespec until = rp_realtime_in(r->poll_now ? 0 : interval);
    r->poll_now = 0; /* a warm open catches up at once */
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
    pthread_cond_broadcast(&r->cond); /* a warm open waits for the first poll */
  }
  pthread_mutex_unlock(&r->mutex);
  rp_thread_exit(r);
  return NULL;
}
