/*
** count.c: a store that counts what it asks of another.
**
** The read path reports how many requests and bytes it cost (ltvfs_stats(),
** the benchmarks); counting at the store interface, where every request
** passes, is exact whatever the caller does (an index read that needed a
** second suffix read, a batch of ranges, a paginated LIST counts as one).
*/
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "store/store.h"

typedef struct counting {
  store *inner;
  store_counters *c;
} counting;

static store *inner_of(store *st) { return ((counting *)st->impl)->inner; }

static void count(store *st, uint64_t requests, uint64_t bytes) {
  store_counters *c = ((counting *)st->impl)->c;
  atomic_fetch_add(&c->requests, requests);
  atomic_fetch_add(&c->bytes, bytes);
}

static int c_list(store *st, const char *prefix, const char *after, store_object_list *out,
                  ltx_error *err) {
  count(st, 1, 0);
  return store_list(inner_of(st), prefix, after, out, err);
}

static int c_list_page(store *st, const char *prefix, const char *after, unsigned max_keys,
                       store_object_list *out, int *more, ltx_error *err) {
  count(st, 1, 0);
  return store_list_page(inner_of(st), prefix, after, max_keys, out, more, err);
}

static int c_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                        ltx_error *err) {
  int rc = store_read_range(inner_of(st), key, off, buf, n, err);
  count(st, 1, rc == LTX_OK ? n : 0);
  return rc;
}

/* A streamed read counts the bytes its sink was told (a sink may stop it
** early). */
typedef struct counted_sink {
  const store_sink *inner;
  uint64_t told;
} counted_sink;

static int counted_sink_fn(void *arg, uint64_t at, const uint8_t *data, size_t n) {
  counted_sink *c = arg;
  if (at + n > c->told) c->told = at + n;
  return c->inner->fn(c->inner->arg, at, data, n);
}

static int c_read_range_sink(store *st, const char *key, uint64_t off, size_t n,
                             const store_sink *sink, ltx_error *err) {
  counted_sink c = {sink, 0};
  store_sink counted = {counted_sink_fn, &c};
  int rc = store_read_range_sink(inner_of(st), key, off, n, &counted, err);
  count(st, 1, rc == LTX_OK ? n : c.told);
  return rc;
}

static int c_read_suffix(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                         uint64_t *object_size, ltx_error *err) {
  int rc = store_read_suffix(inner_of(st), key, buf, n, nread, object_size, err);
  count(st, 1, rc == LTX_OK ? *nread : 0);
  return rc;
}

static int c_head(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
                  ltx_error *err) {
  store *in = inner_of(st);
  count(st, 1, 0);
  return in->ops->head(in, key, size, etag, etag_cap, err);
}

static int c_put(store *st, const char *key, const store_body *body, int64_t mtime_ms,
                 store_put_cond cond, const char *if_match_etag, char *etag_out, size_t etag_cap,
                 ltx_error *err) {
  store *in = inner_of(st);
  count(st, 1, 0);
  return in->ops->put(in, key, body, mtime_ms, cond, if_match_etag, etag_out, etag_cap, err);
}

static int c_del(store *st, const char *const *keys, size_t n, ltx_error *err) {
  count(st, 1, 0);
  return store_delete(inner_of(st), keys, n, err);
}

static int c_read_ranges(store *st, store_range *ranges, size_t n, ltx_error *err) {
  int rc = store_read_ranges(inner_of(st), ranges, n, err);
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    if (ranges[i].rc == LTX_OK) bytes += ranges[i].n;
  count(st, n, bytes);
  return rc;
}

static void c_interrupt(store *st) { store_interrupt(inner_of(st)); }

static void c_close(store *st) {
  counting *cs = st->impl;
  store_close(cs->inner);
  free(cs);
}

static const store_ops counting_ops = {
    .scheme = "counting",
    .list = c_list,
    .list_page = c_list_page,
    .read_range = c_read_range,
    .read_suffix = c_read_suffix,
    .head = c_head,
    .put = c_put,
    .del = c_del,
    .close = c_close,
    .read_ranges = c_read_ranges,
    .read_range_sink = c_read_range_sink,
    .interrupt = c_interrupt,
};

int store_counting_wrap(store *inner, store_counters *c, store **out, ltx_error *err) {
  store *st = calloc(1, sizeof(*st));
  counting *cs = calloc(1, sizeof(*cs));
  if (st == NULL || cs == NULL || (st->url = strdup(inner->url)) == NULL) {
    free(st);
    free(cs);
    store_close(inner);
    return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  }
  cs->inner = inner;
  cs->c = c;
  st->ops = &counting_ops;
  st->layout = inner->layout;
  st->impl = cs;
  *out = st;
  return LTX_OK;
}
