/*
** view.c: views of a replica and their page maps (cache/replica_int.h).
**
** A view is immutable once published: {TXID, commit, page size, page map,
** the files its slots name}. The page map is an array of 4096-slot chunks
** shared copy-on-write between a view and the next one, so a poll that
** changes ten pages copies one chunk, not the map. A slot names the file
** that holds the newest version of its page at the view's TXID and the
** page's position in that file's index.
**
** Building a map from files (a plan, or new files on top of the last view)
** follows docs/restore-plan.md: write each file's pages, then drop the slots
** above its commit. A page no file holds (never written, or the lock page)
** reads as zeros.
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

static void chunk_release(rp_chunk *c) {
  if (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1) free(c);
}

static void view_free(replica_view *v) {
  for (uint32_t i = 0; i < v->nchunk; i++) chunk_release(v->chunks[i]);
  free(v->chunks);
  for (size_t i = 0; i < v->nfiles; i++) rp_file_release(v->files[i]);
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

replica_view *rp_view_new(void) {
  replica_view *v = calloc(1, sizeof(*v));
  if (v) atomic_init(&v->refs, 1);
  return v;
}

/* A new view sharing prev's chunks and files. */
replica_view *rp_view_clone(const replica_view *prev) {
  replica_view *v = rp_view_new();
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

const rp_slot *rp_view_slot(const replica_view *v, uint32_t pgno) {
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

int rp_view_add_file(replica_view *v, rp_file *f) {
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
int rp_view_apply(replica_view *v, rp_file *f, ltx_error *err) {
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
  if (rp_view_add_file(v, f) != LTX_OK)
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
void rp_view_prune_files(replica_view *v) {
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
    else rp_file_release(v->files[i]);
  }
  v->nfiles = n;
  v->files_after_prune = n;
  free(used);
}

/* A view of exactly the files of plan, in order. */
int rp_view_from_plan(replica *r, const store_plan *plan, replica_view **out,
                          ltx_error *err) {
  rp_file **files = NULL;
  replica_view *v = rp_view_new();
  int rc;
  if (v == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  rc = rp_files_get(r, plan->files, plan->n, &files, err);
  if (rc != LTX_OK) goto out;
  for (size_t i = 0; i < plan->n && rc == LTX_OK; i++) rc = rp_view_apply(v, files[i], err);
  if (rc == LTX_OK) rp_view_prune_files(v);
out:
  if (files) {
    for (size_t i = 0; i < plan->n; i++) rp_file_release(files[i]);
    free(files);
  }
  if (rc != LTX_OK) {
    view_free(v);
    return rc;
  }
  *out = v;
  return LTX_OK;
}

uint32_t rp_slot_ipos(const rp_slot *s, uint32_t pgno) {
  const ltx_page_entry *e;
  if (s->ipos != IPOS_UNKNOWN) return s->ipos;
  e = ltx_index_find(&s->file->idx, pgno);
  return e ? (uint32_t)(e - s->file->idx.entries) : IPOS_UNKNOWN;
}

int rp_view_set(replica_view *v, uint32_t pgno, rp_file *f, uint32_t ipos) {
  rp_slot *s = view_slot_mut(v, pgno);
  if (s == NULL) return LTX_ERR_NOMEM;
  s->file = f;
  s->ipos = ipos;
  return LTX_OK;
}
