/*
** layout.c: where LTX files live in a replica (LTX.md section 2).
**
**   layout  key of level L, TXIDs [min, max]
**   FILE    ltx/<L in decimal>/<%016x min>-<%016x max>.ltx
**   S3      <L as %04x>/<%016x min>-<%016x max>.ltx
**
** Keys are relative to the replica root; the S3 backend adds its PATH itself.
** Listing a level parses the names (the header is not read: the name is the
** contract, store_read_ltx_index checks it against the header later) and
** takes the object's time as the file's timestamp, which Litestream sets to
** the header timestamp (file mtime, or S3 metadata).
**
** Because names are fixed-width lowercase hex, key order is (min, max) order,
** so "files after (min, max)" is a plain StartAfter on the key.
*/
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

char *store_ltx_key(const store *st, int level, uint64_t min_txid, uint64_t max_txid,
                    char *buf, size_t cap) {
  char zName[64];
  ltx_file_name(min_txid, max_txid, zName);
  if (st->layout == STORE_LAYOUT_S3) {
    snprintf(buf, cap, "%04x/%s", (unsigned)level, zName);
  } else {
    snprintf(buf, cap, "ltx/%d/%s", level, zName);
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

/* Appends the LTX files of one level to out (whose capacity is *pnAlloc). */
static int list_level_into(store *st, int level, uint64_t after_min, uint64_t after_max,
                           store_ltx_list *out, size_t *pnAlloc, ltx_error *err) {
  store_object_list objs = {0};
  char zPrefix[32], zAfter[128];
  const char *after = NULL;
  size_t nPrefix, nStart = out->n;
  int bAfter = after_min != 0 || after_max != 0;
  int rc;

  if (level < 0 || level > STORE_MAX_LEVEL) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "level %d is outside 0..%d", level, STORE_MAX_LEVEL);
    goto out;
  }
  store_level_prefix(st, level, zPrefix, sizeof(zPrefix));
  nPrefix = strlen(zPrefix);
  if (bAfter) after = store_ltx_key(st, level, after_min, after_max, zAfter, sizeof(zAfter));
  rc = store_list(st, zPrefix, after, &objs, err);
  if (rc != LTX_OK) goto out;

  for (size_t i = 0; i < objs.n; i++) {
    const store_object *o = &objs.items[i];
    const char *zName = o->key + nPrefix;
    store_ltx_file f;

    /* (1) only direct children of the level, (2) only LTX names, (3) only
    ** names a valid file can have (LTX.md section 1: min != 0, max >= min) */
    if (strncmp(o->key, zPrefix, nPrefix) != 0 || strchr(zName, '/') != NULL) continue;
    if (ltx_file_name_parse(zName, &f.min_txid, &f.max_txid) != 0) continue;
    if (f.min_txid == 0 || f.max_txid < f.min_txid) continue;
    /* The backend filtered by key already; repeat it on the numbers in case
    ** a name parsed that does not sort like ltx_file_name's (upper case). */
    if (bAfter && (f.min_txid < after_min || (f.min_txid == after_min && f.max_txid <= after_max)))
      continue;
    f.level = level;
    f.size = o->size;
    f.timestamp_ms = o->mtime_ms;
    if (out->n == *pnAlloc) {
      size_t nNew = *pnAlloc ? *pnAlloc * 2 : 64;
      store_ltx_file *aNew = realloc(out->files, nNew * sizeof(*aNew));
      if (aNew == NULL) {
        rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing level %d", level);
        goto out;
      }
      out->files = aNew;
      *pnAlloc = nNew;
    }
    out->files[out->n++] = f;
  }
  if (out->n - nStart > 1) {
    qsort(out->files + nStart, out->n - nStart, sizeof(out->files[0]), cmp_ltx_file);
  }
out:
  store_object_list_free(&objs);
  return rc;
}

int store_list_level(store *st, int level, uint64_t after_min_txid, uint64_t after_max_txid,
                     store_ltx_list *out, ltx_error *err) {
  size_t nAlloc = 0;
  int rc;

  out->files = NULL;
  out->n = 0;
  rc = list_level_into(st, level, after_min_txid, after_max_txid, out, &nAlloc, err);
  if (rc != LTX_OK) store_ltx_list_free(out);
  return rc;
}

int store_list_all(store *st, store_ltx_list *out, ltx_error *err) {
  size_t nAlloc = 0;
  int rc = LTX_OK;

  out->files = NULL;
  out->n = 0;
  for (int level = 0; level <= STORE_MAX_LEVEL && rc == LTX_OK; level++) {
    rc = list_level_into(st, level, 0, 0, out, &nAlloc, err);
  }
  if (rc != LTX_OK) store_ltx_list_free(out);
  return rc;
}
