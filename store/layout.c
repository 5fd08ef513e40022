/*
** layout.c: where LTX files live in a replica (docs/replica-layout.md).
**
**   layout  key of level L, TXIDs [min, max]
**   FILE    ltx/<L in decimal>/<%016x min>-<%016x max>.ltx
**   S3      <L as %04x>/<%016x min>-<%016x max>.ltx
**
** Keys are relative to the replica root; the S3 backend adds its PATH itself.
** Listing a level parses the names (the header is not read: the name is the
** contract, store_load_ltx checks it against the header later) and
** takes the object's time as the file's timestamp, which Litestream sets to
** the header timestamp (file mtime, or S3 metadata).
**
** Because names are fixed-width lowercase hex, key order is (min, max) order,
** so "files after (min, max)" is a plain StartAfter on the key. The levels'
** prefixes share one ("000" on S3, "ltx/" in a directory), so listing every
** level from its start begins with one page of that prefix
** (store_list_levels_start): a small replica is listed in one request, a
** large one continues level by level where the page stopped.
**
** This file owns keys, listings and loading a file's header and index
** (store_load_ltx, the one index reader of the tree); store.c opens stores
** and dispatches to the backends, and calls nothing here.
*/
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

char *store_ltx_key(const store *st, int level, uint64_t min_txid, uint64_t max_txid,
                    char *buf, size_t cap) {
  char name[64];
  ltx_file_name(min_txid, max_txid, name);
  if (st->layout == STORE_LAYOUT_S3) {
    snprintf(buf, cap, "%04x/%s", (unsigned)level, name);
  } else {
    snprintf(buf, cap, "ltx/%d/%s", level, name);
  }
  return buf;
}

char *store_level_prefix(const store *st, int level, char *buf, size_t cap) {
  if (st->layout == STORE_LAYOUT_S3) {
    snprintf(buf, cap, "%04x/", (unsigned)level);
  } else {
    snprintf(buf, cap, "ltx/%d/", level);
  }
  return buf;
}

static int cmp_ltx_file(const void *pa, const void *pb) {
  const store_ltx_file *a = pa, *b = pb;
  if (a->level != b->level) return a->level < b->level ? -1 : 1;
  if (a->min_txid != b->min_txid) return a->min_txid < b->min_txid ? -1 : 1;
  if (a->max_txid != b->max_txid) return a->max_txid < b->max_txid ? -1 : 1;
  return 0;
}

/* Appends o, an object of a listing under level's prefix (prefix_len
** bytes), to out (whose capacity is *cap) when it is an LTX file of that
** level named after (after_min, after_max) (0/0: any). */
static int add_listed(const store_object *o, size_t prefix_len, int level, uint64_t after_min,
                      uint64_t after_max, store_ltx_list *out, size_t *cap, ltx_error *err) {
  const char *name = o->key + prefix_len;
  int has_after = after_min != 0 || after_max != 0;
  store_ltx_file f;

  /* (1) only direct children of the level, (2) only LTX names, (3) only
  ** names a valid file can have (docs/ltx-format.md: min != 0, max >= min) */
  if (strchr(name, '/') != NULL) return LTX_OK;
  if (ltx_file_name_parse(name, &f.min_txid, &f.max_txid) != 0) return LTX_OK;
  if (f.min_txid == 0 || f.max_txid < f.min_txid) return LTX_OK;
  /* The backend filtered by key already; repeat it on the numbers in case
  ** a name parsed that does not sort like ltx_file_name's (upper case). */
  if (has_after &&
      (f.min_txid < after_min || (f.min_txid == after_min && f.max_txid <= after_max)))
    return LTX_OK;
  f.level = level;
  f.size = o->size;
  f.timestamp_ms = o->mtime_ms;
  if (out->n == *cap) {
    size_t new_cap = *cap ? *cap * 2 : 64;
    store_ltx_file *grown = realloc(out->files, new_cap * sizeof(*grown));
    if (grown == NULL)
      return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing level %d", level);
    out->files = grown;
    *cap = new_cap;
  }
  out->files[out->n++] = f;
  return LTX_OK;
}

/* Appends the LTX files of one level to out (whose capacity is *cap). */
static int list_level_into(store *st, int level, uint64_t after_min, uint64_t after_max,
                           store_ltx_list *out, size_t *cap, ltx_error *err) {
  store_object_list objs = {0};
  char prefix[32], after_key[128];
  const char *after = NULL;
  size_t prefix_len, start = out->n;
  int rc;

  if (level < 0 || level > STORE_MAX_LEVEL) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "level %d is outside 0..%d", level, STORE_MAX_LEVEL);
    goto out;
  }
  store_level_prefix(st, level, prefix, sizeof(prefix));
  prefix_len = strlen(prefix);
  if (after_min != 0 || after_max != 0)
    after = store_ltx_key(st, level, after_min, after_max, after_key, sizeof(after_key));
  rc = store_list(st, prefix, after, &objs, err);
  for (size_t i = 0; i < objs.n && rc == LTX_OK; i++) {
    if (strncmp(objs.items[i].key, prefix, prefix_len) != 0) continue;
    rc = add_listed(&objs.items[i], prefix_len, level, after_min, after_max, out, cap, err);
  }
  if (rc == LTX_OK && out->n - start > 1) {
    qsort(out->files + start, out->n - start, sizeof(out->files[0]), cmp_ltx_file);
  }
out:
  store_object_list_free(&objs);
  return rc;
}

int store_list_level(store *st, int level, uint64_t after_min_txid, uint64_t after_max_txid,
                     store_ltx_list *out, ltx_error *err) {
  size_t cap = 0;
  int rc;

  out->files = NULL;
  out->n = 0;
  rc = list_level_into(st, level, after_min_txid, after_max_txid, out, &cap, err);
  if (rc != LTX_OK) store_ltx_list_free(out);
  return rc;
}

int store_list_levels_start(store *st, unsigned page_keys, const store_ltx_file *after,
                            store_ltx_list *out, int *open, ltx_error *err) {
  char prefix[STORE_MAX_LEVEL + 1][32], common[32], after_key[128];
  const char *start_after = NULL;
  size_t len[STORE_MAX_LEVEL + 1], common_len = 0, cap = 0;
  store_object_list objs = {0};
  const char *last = NULL;
  int more = 0, rc;

  out->files = NULL;
  out->n = 0;
  *open = 0;
  for (int l = 0; l <= STORE_MAX_LEVEL; l++) {
    store_level_prefix(st, l, prefix[l], sizeof(prefix[l]));
    len[l] = strlen(prefix[l]);
  }
  while (prefix[0][common_len] && prefix[0][common_len] == prefix[STORE_MAX_LEVEL][common_len])
    common_len++;
  memcpy(common, prefix[0], common_len);
  common[common_len] = '\0';
  if (after != NULL && (after[0].min_txid != 0 || after[0].max_txid != 0))
    start_after = store_ltx_key(st, 0, after[0].min_txid, after[0].max_txid, after_key,
                                sizeof(after_key));
  rc = store_list_page(st, common, start_after, page_keys, &objs, &more, err);
  if (rc != LTX_OK) goto out;
  /* A page that did not reach the end stops at its greatest key: a level
  ** whose keys all sort before it is whole; the first level with keys
  ** that may sort after it (those under that key's own level, or a level
  ** the page did not reach) and every level after it are left open. */
  *open = STORE_MAX_LEVEL + 1;
  if (more) {
    for (size_t i = 0; i < objs.n; i++)
      if (last == NULL || strcmp(objs.items[i].key, last) > 0) last = objs.items[i].key;
    *open = 0;
    while (last != NULL && *open <= STORE_MAX_LEVEL &&
           strncmp(last, prefix[*open], len[*open]) != 0 && strcmp(last, prefix[*open]) > 0)
      (*open)++;
  }
  for (size_t i = 0; i < objs.n && rc == LTX_OK; i++) {
    for (int l = 0; l < *open; l++) {
      if (strncmp(objs.items[i].key, prefix[l], len[l]) != 0) continue;
      rc = add_listed(&objs.items[i], len[l], l, after ? after[l].min_txid : 0,
                      after ? after[l].max_txid : 0, out, &cap, err);
      break;
    }
  }
  if (rc == LTX_OK && out->n > 1) qsort(out->files, out->n, sizeof(out->files[0]), cmp_ltx_file);
out:
  store_object_list_free(&objs);
  if (rc != LTX_OK) store_ltx_list_free(out);
  return rc;
}

int store_list_all(store *st, store_ltx_list *out, ltx_error *err) {
  size_t cap;
  int open, rc = store_list_levels_start(st, 0, NULL, out, &open, err);

  cap = out->n;
  for (int level = open; level <= STORE_MAX_LEVEL && rc == LTX_OK; level++) {
    rc = list_level_into(st, level, 0, 0, out, &cap, err);
  }
  if (rc != LTX_OK) store_ltx_list_free(out);
  return rc;
}

/* ---- loading one file (store.h: store_load_ltx) ---- */

/* The smallest valid LTX file: header, terminator, empty index, trailer. */
#define LTX_MIN_FILE (LTX_HEADER_SIZE + LTX_TERMINATOR_SIZE + 1 + 8 + LTX_TRAILER_SIZE)

/* How much of a large file's tail to read for its index at first. An entry
** takes about 10 bytes (three varints) and a page at least ~30 in the file,
** so no fraction of the size covers every index; size/128 covers pages that
** keep a third of their 4 KiB or more (most databases). Up to 1 MiB: a
** larger index is read once more, exactly (its length is in the tail), one
** round trip instead of megabytes of frames fetched for nothing (a 1 GB
** database's index is ~3 MB; size/32 fetched 15). A file this guess covers
** whole is read whole. */
static size_t index_guess(uint64_t size) {
  uint64_t g = size / 128;
  if (g < LTX_INDEX_TAIL_GUESS) g = LTX_INDEX_TAIL_GUESS;
  if (g > (1u << 20)) g = 1u << 20;
  if (g > size) g = size;
  return (size_t)g;
}

/* Parses the index from *ptail, the last n bytes of an object of size
** bytes; an index longer than that is read once more, whole, if the header's
** commit allows an index that long. */
static int index_from_tail(store *st, const char *key, uint32_t commit, uint8_t **ptail,
                           size_t n, uint64_t size, ltx_index *idx, ltx_error *err) {
  size_t need = 0;
  uint8_t *bigger;
  int rc = ltx_index_parse_tail(*ptail, n, size, idx, &need, err);
  if (rc != LTX_ERR_TRUNCATED || need <= n || need > size) return rc;
  if (need > LTX_INDEX_MAX_BYTES(commit))
    return ltx_error_set(err, LTX_ERR_INDEX,
                         "the tail claims a %zu-byte page index; %u pages need at most %" PRIu64,
                         need, commit, LTX_INDEX_MAX_BYTES(commit));
  bigger = realloc(*ptail, need);
  if (bigger == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for a %zu-byte index", need);
  *ptail = bigger;
  rc = store_read_range(st, key, size - need, bigger, need, err);
  if (rc == LTX_OK) rc = ltx_index_parse_tail(bigger, need, size, idx, &need, err);
  return rc;
}

/* One load with out->size taken as the object's size. */
static int load_sized(store *st, const char *key, const store_ltx_file *f, store_ltx_loaded *out,
                      ltx_error *err) {
  uint64_t size = out->size;
  size_t n_tail = index_guess(size);
  uint8_t hdr[LTX_HEADER_SIZE], *tail = NULL;
  size_t need = 0;
  int rc;

  if (size < LTX_MIN_FILE)
    return ltx_error_set(err, LTX_ERR_TRUNCATED,
                         "%" PRIu64 " bytes, shorter than any LTX file (%d)", size, LTX_MIN_FILE);
  tail = malloc(n_tail);
  if (tail == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for %zu bytes", n_tail);
  if (n_tail == size) {
    rc = store_read_range(st, key, 0, tail, n_tail, err);
    if (rc == LTX_OK) rc = ltx_verify_buffer(tail, n_tail, &out->header, NULL, err);
    if (rc == LTX_OK) rc = store_check_ltx_name(f, &out->header, err);
    if (rc == LTX_OK) rc = ltx_index_parse_tail(tail, n_tail, n_tail, &out->idx, &need, err);
    if (rc == LTX_OK) {
      out->whole = tail;
      tail = NULL;
    }
    goto out;
  }
  {
    store_range rr[2] = {{key, 0, hdr, sizeof(hdr), 0}, {key, size - n_tail, tail, n_tail, 0}};
    rc = store_read_ranges(st, rr, 2, err);
  }
  if (rc == LTX_OK) rc = ltx_header_decode(hdr, &out->header, err);
  if (rc == LTX_OK) rc = store_check_ltx_name(f, &out->header, err);
  if (rc == LTX_OK)
    rc = index_from_tail(st, key, out->header.commit, &tail, n_tail, size, &out->idx, err);
out:
  free(tail);
  if (rc != LTX_OK) {
    ltx_index_free(&out->idx);
    free(out->whole);
    out->whole = NULL;
  }
  return rc;
}

int store_load_ltx(store *st, const store_ltx_file *f, store_ltx_loaded *out, ltx_error *err) {
  char key[128];
  uint64_t now_size = 0;
  ltx_error herr = {0};
  int rc;

  memset(out, 0, sizeof(*out));
  store_ltx_key(st, f->level, f->min_txid, f->max_txid, key, sizeof(key));
  out->size = f->size;
  rc = load_sized(st, key, f, out, err);
  if (rc == LTX_OK || !store_error_is_corrupt(rc)) goto out;
  /* The bytes are wrong at the listed size: is that the size? */
  if (store_head(st, key, &now_size, NULL, 0, &herr) != LTX_OK) {
    *err = herr; /* gone (retention), or the store failed: that is the news */
    rc = herr.code;
    goto out;
  }
  if (now_size == f->size) {
    ltx_error_prefix(err, "corrupt LTX file %s (%" PRIu64 " bytes)", key, now_size);
    goto out;
  }
  out->size = now_size;
  rc = load_sized(st, key, f, out, err);
  if (rc != LTX_OK && store_error_is_corrupt(rc))
    ltx_error_prefix(err, "LTX file %s is incomplete or corrupt (listed at %" PRIu64
                          " bytes, %" PRIu64 " now)", key, f->size, now_size);
out:
  if (rc != LTX_OK && strstr(err->msg, key) == NULL) ltx_error_prefix(err, "%s", key);
  if (rc != LTX_OK) store_ltx_loaded_free(out);
  return rc;
}

void store_ltx_loaded_free(store_ltx_loaded *l) {
  ltx_index_free(&l->idx);
  free(l->whole);
  l->whole = NULL;
}
