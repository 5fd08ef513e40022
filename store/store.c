/*
** store.c: opening a replica by URL, and the thin wrappers over a backend.
**
** A replica URL names a backend by its scheme. This file owns the parsing of
** the URL's outer form and hands the backend what it needs:
**
**   "file:///abs/dir"      the file backend at /abs/dir
**   "file://localhost/dir" the same, RFC 8089's explicit local host
**   "file://rel/dir"       the file backend at the relative path rel/dir
**                          (not RFC 8089, but what people type and what
**                          Litestream itself accepts)
**   "file:/abs/dir"        RFC 8089's short form
**   "/abs/dir", "rel/dir"  a plain path: no scheme, taken literally
**   "s3://bucket/path?..." the S3 backend (store/s3.c)
**
** In file URLs %XX escapes are decoded ("my%20dir" is "my dir"); a plain path
** is never decoded. A file URL with a query or fragment is refused rather
** than silently ignoring what the user meant to configure.
**
** Ownership, the contract for every backend: the constructor allocates the
** store with malloc/calloc and st->url with strdup; ops->close releases only
** the backend's state (st->impl); store_close then frees st->url and st.
*/
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>

#include "store/store.h"

/* Opens the backend for the part of the URL after "scheme://" (rest). */
typedef int (*backend_open_fn)(const char *url, const char *rest, store **out,
                               ltx_error *err);

static int open_file_url(const char *url, const char *rest, store **out, ltx_error *err);
static int open_s3_url(const char *url, const char *rest, store **out, ltx_error *err);

/* The one dispatch point: a new backend adds a row here. */
static const struct {
  const char *scheme;
  backend_open_fn open_fn;
} backends[] = {
    {"file", open_file_url},
    {"s3", open_s3_url},
};

/* Value of one hex digit, -1 if c is not one. */
static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes %XX escapes of a file URL's path into a new string. %00 is refused
** because it would silently cut the path short. */
static int percent_decode(const char *url, const char *z, char **out, ltx_error *err) {
  size_t n = strlen(z);
  char *decoded = malloc(n + 1);
  size_t j = 0;
  int rc = LTX_OK;

  if (decoded == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory decoding replica URL");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (z[i] != '%') {
      decoded[j++] = z[i];
      continue;
    }
    int hi = i + 1 < n ? hex_value((unsigned char)z[i + 1]) : -1;
    int lo = i + 2 < n ? hex_value((unsigned char)z[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': bad percent escape at character %zu "
                         "(want %%XX with two hex digits)",
                         url, (size_t)(z - url) + i + 1);
      goto out;
    }
    if (hi == 0 && lo == 0) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': %%00 is not allowed in a path",
                         url);
      goto out;
    }
    decoded[j++] = (char)(hi * 16 + lo);
    i += 2;
  }
  decoded[j] = '\0';
  *out = decoded;
  decoded = NULL;
out:
  free(decoded);
  return rc;
}

/* rest: everything after "file://" (or the path of "file:/x"). */
static int open_file_url(const char *url, const char *rest, store **out, ltx_error *err) {
  char *dir = NULL;
  int rc = LTX_OK;
  const char *bad = strpbrk(rest, "?#");

  if (bad != NULL) {
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': file URLs take no %s ('%s'); encode a literal "
                       "'%c' in the path as %%%02X",
                       url, *bad == '?' ? "query string" : "fragment", bad, *bad,
                       (unsigned)(unsigned char)*bad);
    goto out;
  }
  /* RFC 8089: "file://localhost/x" is "/x". Any other host is read as the
  ** first component of a relative path, which is what "file://rel/dir" users
  ** mean. */
  if (strncmp(rest, "localhost/", 10) == 0) rest += 9;
  if (*rest == '\0') {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': empty path", url);
    goto out;
  }
  rc = percent_decode(url, rest, &dir, err);
  if (rc != LTX_OK) goto out;
  rc = store_file_open(dir, url, out, err);
out:
  free(dir);
  return rc;
}

static int open_s3_url(const char *url, const char *rest, store **out, ltx_error *err) {
  (void)rest;
  return store_s3_open(url, out, err);
}

/* Length of a URL scheme at the start of z followed by "://", else 0.
** RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). */
static size_t scheme_length(const char *z) {
  size_t n = 0;
  if (!isalpha((unsigned char)z[0])) return 0;
  while (isalnum((unsigned char)z[n]) || z[n] == '+' || z[n] == '-' || z[n] == '.') n++;
  return strncmp(z + n, "://", 3) == 0 ? n : 0;
}

int store_replica_identity(const char *url, char *out, size_t cap) {
  if (strncasecmp(url, "s3://", 5) == 0) return store_s3_identity(url, out, cap);
  int n = snprintf(out, cap, "%s", url);
  return n >= 0 && (size_t)n < cap ? 0 : -1;
}

int store_open(const char *url, store **out, ltx_error *err) {
  int rc = LTX_OK;
  size_t scheme_len;

  *out = NULL;
  if (url == NULL || url[0] == '\0') {
    rc = ltx_error_set(err, STORE_ERR_URL, "empty replica URL");
    goto out;
  }
  scheme_len = scheme_length(url);
  if (scheme_len == 0) {
    /* "file:/abs" (RFC 8089 short form) is a URL; any other string without
    ** "scheme://" is a plain path, taken literally. */
    if (strncmp(url, "file:", 5) == 0 && url[5] == '/') {
      rc = open_file_url(url, url + 5, out, err);
    } else {
      rc = store_file_open(url, url, out, err);
    }
    goto out;
  }
  for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
    if (strlen(backends[i].scheme) == scheme_len &&
        strncasecmp(url, backends[i].scheme, scheme_len) == 0) {
      rc = backends[i].open_fn(url, url + scheme_len + 3, out, err);
      goto out;
    }
  }
  rc = ltx_error_set(err, STORE_ERR_URL,
                     "replica URL '%s': unsupported scheme '%.*s' (supported: file://, s3://, "
                     "or a plain directory path)",
                     url, (int)scheme_len, url);
out:
  return rc;
}

void store_close(store *st) {
  if (st == NULL) return;
  if (st->ops != NULL && st->ops->close != NULL) st->ops->close(st);
  free(st->url);
  free(st);
}

void store_object_list_free(store_object_list *l) {
  if (l == NULL) return;
  for (size_t i = 0; i < l->n; i++) free(l->items[i].key);
  free(l->items);
  l->items = NULL;
  l->n = 0;
}

void store_ltx_list_free(store_ltx_list *l) {
  if (l == NULL) return;
  free(l->files);
  l->files = NULL;
  l->n = 0;
}

void store_plan_free(store_plan *p) {
  if (p == NULL) return;
  free(p->files);
  p->files = NULL;
  p->n = 0;
  p->txid = 0;
}

int store_list(store *st, const char *prefix, const char *after, store_object_list *out,
               ltx_error *err) {
  return st->ops->list(st, prefix, after, out, err);
}

int store_list_page(store *st, const char *prefix, const char *after, unsigned max_keys,
                    store_object_list *out, int *more, ltx_error *err) {
  *more = 0;
  if (st->ops->list_page) return st->ops->list_page(st, prefix, after, max_keys, out, more, err);
  return st->ops->list(st, prefix, after, out, err);
}

int store_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                     ltx_error *err) {
  return st->ops->read_range(st, key, off, buf, n, err);
}

int store_read_range_sink(store *st, const char *key, uint64_t off, size_t n,
                          const store_sink *sink, ltx_error *err) {
  uint8_t *buf;
  int rc;
  if (st->ops->read_range_sink) return st->ops->read_range_sink(st, key, off, n, sink, err);
  if ((buf = malloc(n ? n : 1)) == NULL)
    return ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory for %zu bytes", key, n);
  rc = st->ops->read_range(st, key, off, buf, n, err);
  if (rc == LTX_OK && sink->fn(sink->arg, 0, buf, n) != 0)
    rc = ltx_error_set(err, STORE_ERR_STOPPED, "%s: read stopped by its reader", key);
  free(buf);
  return rc;
}

/* Backends that cannot read in parallel get the plain loop, with the same
** per-range results. */
int store_read_ranges(store *st, store_range *ranges, size_t n, ltx_error *err) {
  int rc = LTX_OK;
  if (st->ops->read_ranges) return st->ops->read_ranges(st, ranges, n, err);
  for (size_t i = 0; i < n; i++) {
    ranges[i].rc = st->ops->read_range(st, ranges[i].key, ranges[i].off, ranges[i].buf,
                                       ranges[i].n, rc ? NULL : err);
    if (ranges[i].rc && !rc) rc = ranges[i].rc;
  }
  return rc;
}

int store_read_suffix(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                      uint64_t *object_size, ltx_error *err) {
  return st->ops->read_suffix(st, key, buf, n, nread, object_size, err);
}

int store_put(store *st, const char *key, const uint8_t *data, size_t n, int64_t mtime_ms,
              store_put_cond cond, const char *if_match_etag, char *etag_out,
              size_t etag_cap, ltx_error *err) {
  store_body b = {data, -1, n};
  return st->ops->put(st, key, &b, mtime_ms, cond, if_match_etag, etag_out, etag_cap, err);
}

int store_put_fd(store *st, const char *key, int fd, uint64_t size, int64_t mtime_ms,
                 store_put_cond cond, const char *if_match_etag, char *etag_out,
                 size_t etag_cap, ltx_error *err) {
  store_body b = {NULL, fd, size};
  return st->ops->put(st, key, &b, mtime_ms, cond, if_match_etag, etag_out, etag_cap, err);
}

int store_body_read(const store_body *b, uint64_t off, uint8_t *buf, size_t n, ltx_error *err) {
  size_t done = 0;
  if (off > b->size || n > b->size - off)
    return ltx_error_set(err, LTX_ERR_ARG, "read of %zu bytes at %" PRIu64 " past a %" PRIu64
                         "-byte body", n, off, b->size);
  if (b->fd < 0) {
    memcpy(buf, b->data + off, n);
    return LTX_OK;
  }
  while (done < n) {
    ssize_t got = pread(b->fd, buf + done, n - done, (off_t)(off + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      return ltx_error_set(err, STORE_ERR_IO, "read of the body at offset %" PRIu64 ": %s",
                           off + done, got < 0 ? strerror(errno) : "the file is shorter");
    done += (size_t)got;
  }
  return LTX_OK;
}

int store_delete(store *st, const char *const *keys, size_t n, ltx_error *err) {
  return st->ops->del(st, keys, n, err);
}

int store_head(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
               ltx_error *err) {
  return st->ops->head(st, key, size, etag, etag_cap, err);
}

void store_interrupt(store *st) {
  if (st != NULL && st->ops->interrupt != NULL) st->ops->interrupt(st);
}

int store_error_is_corrupt(int code) {
  return ltx_error_is_data(code) || code == STORE_ERR_SHORT_READ || code == STORE_ERR_MISMATCH;
}

int store_check_ltx_name(const store_ltx_file *f, const ltx_header *h, ltx_error *err) {
  if (h->min_txid == f->min_txid && h->max_txid == f->max_txid) return LTX_OK;
  return ltx_error_set(err, STORE_ERR_MISMATCH,
                       "header TXIDs %016" PRIx64 "-%016" PRIx64
                       " do not match the file name (%016" PRIx64 "-%016" PRIx64 ")",
                       h->min_txid, h->max_txid, f->min_txid, f->max_txid);
}
