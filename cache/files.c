/*
** files.c: the replica's registry of LTX files (cache/replica_int.h).
**
** A file is loaded once per replica: its header and page index (or, when it
** is small, the whole file, verified, whose pages go into the page cache),
** through store_load_ltx, which treats a listed size as a hint. Views hold
** references to the files their slots name; the registry holds one more
** until no view uses the file (rp_registry_prune at each publish).
**
** Integrity. Litestream writes NoChecksum (0x2) files: the file checksum
** over every byte is their only checksum. A file up to cfg.prefetch_max is
** therefore fetched whole the first time a read needs one of its pages, and
** verified completely before any of its pages is served (replica.c). Files
** small enough that reading their index is reading all of them are verified
** at load. Frames of larger files are read by runs and checked by LZ4 and
** the frame header (pgno) only.
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

void rp_file_release(rp_file *f) {
  if (f == NULL) return;
  if (atomic_fetch_sub(&f->refs, 1) == 1) {
    ltx_index_free(&f->idx);
    free(f->whole);
    free(f);
  }
}

int rp_same_file(const store_ltx_file *a, const store_ltx_file *b) {
  return a->level == b->level && a->min_txid == b->min_txid && a->max_txid == b->max_txid;
}

/* A registry file with a new reference, or NULL. Caller holds r->mutex. */
rp_file *rp_registry_find(replica *r, const store_ltx_file *meta) {
  for (rp_file *f = r->registry; f; f = f->next) {
    if (rp_same_file(&f->meta, meta)) {
      atomic_fetch_add(&f->refs, 1);
      return f;
    }
  }
  return NULL;
}

/* Drops registry files no view uses any more (only the registry's own
** reference is left). Caller holds r->mutex. */
void rp_registry_prune(replica *r) {
  rp_file **pp = &r->registry;
  while (*pp) {
    rp_file *f = *pp;
    if (atomic_load(&f->refs) == 1) {
      *pp = f->next;
      rp_file_release(f);
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

/* Verifies a whole file in buf (frames, index, file checksum) and that its
** header names f's TXIDs; h receives the header. */
int rp_verify_whole(const rp_file *f, const uint8_t *buf, size_t n, ltx_header *h,
                        ltx_error *err) {
  int rc = ltx_verify_buffer(buf, n, h, NULL, err);
  if (rc == LTX_OK) rc = store_check_ltx_name(&f->meta, h, err);
  return rc;
}

/* Puts every page of a verified whole file into the page cache; out (may be
** NULL) receives page pgno. */
void rp_cache_all_pages(replica *r, rp_file *f, const uint8_t *buf, uint32_t pgno,
                            uint8_t *out) {
  uint8_t *page = malloc(f->page_size);
  for (size_t i = 0; page != NULL && i < f->idx.n; i++) {
    const ltx_page_entry *e = &f->idx.entries[i];
    uint8_t *dst = (out != NULL && e->pgno == pgno) ? out : page;
    if (ltx_frame_decode(buf + e->offset, e->size, e->pgno, f->page_size, dst, NULL) == LTX_OK)
      rp_keep_page(r, f, e->pgno, dst);
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
    rp_log(REPLICA_LOG_DEBUG, "%s: listed at %" PRIu64 " bytes, loaded at %" PRIu64, f->key,
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
  atomic_init(&f->loaded, 1);
  *out = f;
  return LTX_OK;
}

rp_file *rp_registry_get_lazy(replica *r, const store_ltx_file *meta) {
  rp_file *f = rp_registry_find(r, meta);
  if (f != NULL) return f;
  f = calloc(1, sizeof(*f));
  if (f == NULL) return NULL;
  atomic_init(&f->refs, 2); /* the registry's and the caller's */
  f->meta = *meta;
  f->meta.size = 0;         /* unknown: the loader asks the store */
  f->meta.timestamp_ms = -1;
  store_ltx_key(r->st, meta->level, meta->min_txid, meta->max_txid, f->key, sizeof(f->key));
  f->id = ++r->next_file_id;
  f->next = r->registry;
  r->registry = f;
  return f;
}

int rp_file_ensure_loaded(replica *r, rp_file *f, ltx_error *err) {
  store_ltx_loaded l;
  int rc;
  if (atomic_load(&f->loaded)) return LTX_OK;
  pthread_mutex_lock(&r->mutex);
  while (f->loading) pthread_cond_wait(&r->cond, &r->mutex);
  if (atomic_load(&f->loaded)) {
    pthread_mutex_unlock(&r->mutex);
    return LTX_OK;
  }
  f->loading = 1;
  pthread_mutex_unlock(&r->mutex);
  rc = store_load_ltx(r->st, &f->meta, &l, err);
  if (rc == LTX_OK) {
    f->meta.size = l.size;
    f->page_size = l.header.page_size;
    f->commit = l.header.commit;
    f->header_ts_ms = l.header.timestamp_ms; /* (meta keeps the listing's time: unknown) */
    f->idx = l.idx;
    atomic_store(&f->verified, l.whole != NULL);
  }
  pthread_mutex_lock(&r->mutex);
  f->loading = 0;
  if (rc == LTX_OK) atomic_store(&f->loaded, 1);
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->mutex);
  if (rc == LTX_OK && l.whole != NULL) {
    rp_cache_all_pages(r, f, l.whole, 0, NULL);
    free(l.whole);
  }
  return rc;
}

static void *load_worker(void *arg) {
  load_job *job = arg;
  for (;;) {
    size_t i = atomic_fetch_add(&job->next, 1);
    if (i >= job->n) break;
    if (i + 1 == job->n) rp_fill_early_go(job->r); /* the last load starts: its reads may follow */
    if (job->out[i] != NULL || job->rcs[i] != LTX_OK) continue; /* in the registry, or failed */
    job->rcs[i] = load_one(job->r, &job->metas[i], &job->out[i], &job->errs[i]);
  }
  return NULL;
}

/* Runs fn over a job with up to LOAD_THREADS threads (inline when n is 1). */
void rp_run_parallel(void *(*fn)(void *), void *job, size_t n) {
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
void rp_files_load(replica *r, const store_ltx_file *metas, size_t n, rp_file **out,
                       int *rcs, ltx_error *errs) {
  load_job job;
  size_t nmiss = 0;

  pthread_mutex_lock(&r->mutex);
  for (size_t i = 0; i < n; i++) {
    rcs[i] = LTX_OK;
    out[i] = rp_registry_find(r, &metas[i]);
    if (out[i] == NULL) nmiss++;
  }
  pthread_mutex_unlock(&r->mutex);
  /* Files the local image named but nobody loaded yet (a warm open). */
  for (size_t i = 0; i < n; i++) {
    if (out[i] == NULL || atomic_load(&out[i]->loaded)) continue;
    rcs[i] = rp_file_ensure_loaded(r, out[i], &errs[i]);
    if (rcs[i] != LTX_OK) {
      rp_file_release(out[i]);
      out[i] = NULL;
    }
  }

  if (nmiss > 0) {
    job.r = r;
    job.metas = metas;
    job.out = out;
    job.rcs = rcs;
    job.errs = errs;
    atomic_init(&job.next, 0);
    job.n = n;
    rp_run_parallel(load_worker, &job, nmiss);
  }

  /* Register what was loaded (another thread may have loaded it too). */
  pthread_mutex_lock(&r->mutex);
  for (size_t i = 0; i < n; i++) {
    if (out[i] == NULL || out[i]->id != 0) continue;
    rp_file *have = rp_registry_find(r, &metas[i]);
    if (have != NULL) {
      rp_file_release(out[i]);
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
      rp_cache_all_pages(r, out[i], out[i]->whole, 0, NULL);
      free(out[i]->whole);
      out[i]->whole = NULL;
    }
  }
}

/* files_load for a plan: every file or an error (the first failure). */
int rp_files_get(replica *r, const store_ltx_file *metas, size_t n, rp_file ***pout,
                     ltx_error *err) {
  rp_file **out = calloc(n ? n : 1, sizeof(*out));
  int *rcs = calloc(n ? n : 1, sizeof(int));
  ltx_error *errs = calloc(n ? n : 1, sizeof(ltx_error));
  int rc = LTX_OK;

  if (out == NULL || rcs == NULL || errs == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  rp_files_load(r, metas, n, out, rcs, errs);
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
    for (size_t i = 0; i < n; i++) rp_file_release(out[i]);
    free(out);
  }
  free(rcs);
  free(errs);
  return rc;
}
