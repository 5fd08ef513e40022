/*
** s3.c: the s3:// backend, a replica in an S3 bucket (AWS or any endpoint
** that speaks the S3 REST API), over libcurl with AWS SigV4.
**
** URL (Litestream's form, docs/replica-layout.md):
**
**   s3://BUCKET/PATH?endpoint=http://HOST:PORT&region=R&force-path-style=true
**
**   endpoint          custom endpoint (http:// or https://; "host:port" alone
**                     means https). Custom endpoints default to path style.
**                     Without it: AWS, https://BUCKET.s3.REGION.amazonaws.com
**                     (path style on s3.REGION.amazonaws.com when the bucket
**                     name is not a DNS label, e.g. has dots).
**   region            signing region; else $AWS_REGION, else us-east-1
**   force-path-style  (also forcePathStyle) true/false
**   skip-verify       (also skipVerify) do not verify the TLS certificate
**   sign-payload      (also signPayload) sign the body's SHA-256 instead of
**                     UNSIGNED-PAYLOAD
**   ltvfs's own, each also from the environment (the URL wins):
**   concurrency       transfers in flight per call (LTVFS_S3_CONCURRENCY, 16)
**   timeout-ms        total deadline of one operation, retries included
**                     (LTVFS_S3_TIMEOUT_MS, 60000)
**   connect-timeout-ms  per connection attempt (LTVFS_S3_CONNECT_TIMEOUT_MS, 5000)
**   stall-timeout-ms  abort a transfer that moves no byte for this long
**                     (LTVFS_S3_STALL_TIMEOUT_MS, 15000; whole seconds)
**   max-attempts      tries per request (LTVFS_S3_MAX_ATTEMPTS, 8)
**   retry-base-ms / retry-max-ms  backoff (LTVFS_S3_RETRY_BASE_MS 100,
**                     LTVFS_S3_RETRY_MAX_MS 5000)
** Unknown or repeated parameters are refused (STORE_ERR_URL names them):
** a typo must not silently fall back to a default.
**
** Credentials come from the environment only: LITESTREAM_ACCESS_KEY_ID /
** LITESTREAM_SECRET_ACCESS_KEY, else AWS_ACCESS_KEY_ID /
** AWS_SECRET_ACCESS_KEY, plus AWS_SESSION_TOKEN (sent as
** x-amz-security-token). With none, requests go unsigned (public buckets).
** The secret is handed to libcurl only; it is never part of a message, and
** it is wiped on close.
**
** Keys are relative to PATH: "0000/<name>.ltx" is the object
** "PATH/0000/<name>.ltx" (layout STORE_LAYOUT_S3).
**
** Requests each operation makes:
**
**   list        GET /BUCKET?list-type=2&prefix=PATH/P&start-after=PATH/A,
**               then ...&continuation-token=T for each further 1000 keys
**   read_range  GET key, Range: bytes=OFF-END      -> 206, checked against
**               Content-Range; fewer bytes than asked is never returned
**   read_range_sink  the same GET; the body goes to the sink as it arrives,
**               once the status and Content-Range say it is the range asked
**   read_suffix GET key, Range: bytes=-N           -> 206; the object size
**               comes from Content-Range
**   read_ranges one ranged GET per range, `concurrency` at a time on one
**               curl multi handle (keep-alive connections, reused)
**   head        HEAD key                           -> Content-Length, ETag
**   put         PUT key, x-amz-meta-litestream-timestamp: RFC 3339 (ns),
**               If-None-Match: * or If-Match: ETAG -> 412 is
**               STORE_ERR_PRECONDITION
**   del         POST /BUCKET?delete with Content-MD5, 1000 keys per request,
**               the batches in parallel
**
** Signing: AWS SigV4, by libcurl; how the requests are written so that
** curl's signature is the one S3 computes is in s3_http.c.
**
** Faults: a request is retried, with exponential backoff and jitter, on
** 5xx, 429, 408, S3's 400 RequestTimeout, 409 ConditionalRequestConflict,
** connect failures, timeouts, resets and truncated bodies, until
** max-attempts or the operation's deadline. 401/403 (STORE_ERR_AUTH), 404
** (STORE_ERR_NOT_FOUND), 412 (STORE_ERR_PRECONDITION) and other statuses
** (STORE_ERR_HTTP) are final at once. Network failures that outlast the
** retries are STORE_ERR_NETWORK and name the endpoint. Every message names
** the object as s3://BUCKET/PATH/KEY and the HTTP status with S3's code.
**
** TLS: the peer is verified unless skip-verify; AWS_CA_BUNDLE, when set,
** is the CA file (CURLOPT_CAINFO). A verification failure is
** STORE_ERR_NETWORK at once (retrying cannot fix it). libcurl's usual proxy
** variables (https_proxy, no_proxy, ...) apply.
**
** Threads: a store is safe to use from many threads at once (sessions,
** the shared DNS/TLS cache and the locks: s3_int.h).
**
** Not done: IMDS/SSO/profile credentials, multipart upload (LTX files are
** small enough for one PUT of up to 5 GiB), HTTP/2, Retry-After.
**
** Files: this one has the store operations, opening and the ops table;
** s3_config.c parses the URL, s3_http.c is the transport (s3_int.h).
*/
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "store/s3_int.h"
#include "store/s3_xml.h"
#include "store/store.h"

static const store_ops s3_ops;

static s3_store *s3_of(store *st) { return (s3_store *)st->impl; }

/* ---- store operations ---- */

static int cmp_object_key(const void *a, const void *b) {
  return strcmp(((const store_object *)a)->key, ((const store_object *)b)->key);
}

/* The objects under prefix after `after`: every page (pages 0), or the
** first page of up to max_keys objects (0: the server's page, 1000 on S3),
** *more saying whether the listing went on. */
static int list_pages(store *st, const char *prefix, const char *after, int pages,
                      unsigned max_keys, store_object_list *out, int *more, ltx_error *err) {
  s3_store *p = s3_of(st);
  char *full_prefix = NULL, *full_after = NULL, *token = NULL, *query = NULL, keys[16];
  store_object *objs = NULL;
  size_t n_objs = 0, cap = 0, root_len = strlen(p->cfg.path) + (p->cfg.path[0] ? 1 : 0);
  s3_req r;
  s3_xml_list page = {0};
  int rc = LTX_OK;

  memset(&r, 0, sizeof(r));
  out->items = NULL;
  out->n = 0;
  full_prefix =
      s3_dup_printf("%s%s%s", p->cfg.path, p->cfg.path[0] ? "/" : "", prefix ? prefix : "");
  if (after != NULL)
    full_after = s3_dup_printf("%s%s%s", p->cfg.path, p->cfg.path[0] ? "/" : "", after);
  if (full_prefix == NULL || (after != NULL && full_after == NULL)) goto nomem;

  snprintf(keys, sizeof(keys), "%u", max_keys);
  *more = 0;
  for (;;) {
    const char *pairs[] = {
        "list-type",          "2",           "prefix",   full_prefix,
        "start-after",        token ? NULL : full_after,
        "continuation-token", token,         "max-keys", max_keys ? keys : NULL,
    };
    free(query);
    query = s3_make_query(pairs, 5);
    if (query == NULL) goto nomem;
    s3_req_free(&r);
    rc = s3_req_init(p, &r, REQ_LIST, NULL, query, err);
    if (rc == LTX_OK) rc = s3_req_common_headers(p, &r, err);
    if (rc != LTX_OK) goto out;
    free(r.what);
    r.what = s3_dup_printf("%s/%s (list)", p->cfg.display, prefix ? prefix : "");
    if (r.what == NULL) goto nomem;
    rc = s3_run_one(p, &r, err);
    if (rc != LTX_OK) goto out;
    rc = s3_xml_parse_list(r.buf ? r.buf : "", r.buf_len, &page, err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "%s", r.what);
      goto out;
    }
    for (size_t i = 0; i < page.n; i++) {
      const char *key = page.items[i].key;
      /* keys outside the prefix (a broken server) are not ours to report */
      if (strncmp(key, full_prefix, strlen(full_prefix)) != 0 || strlen(key) <= root_len) continue;
      if (full_after != NULL && strcmp(key, full_after) <= 0) continue;
      if (n_objs == cap) {
        size_t new_cap = cap ? cap * 2 : 256;
        store_object *grown = realloc(objs, new_cap * sizeof(*grown));
        if (grown == NULL) goto nomem;
        objs = grown;
        cap = new_cap;
      }
      objs[n_objs].key = strdup(key + root_len);
      if (objs[n_objs].key == NULL) goto nomem;
      objs[n_objs].size = page.items[i].size;
      objs[n_objs].mtime_ms = page.items[i].mtime_ms;
      n_objs++;
    }
    if (!page.truncated) break;
    if (pages == 1) {
      *more = 1;
      break;
    }
    if (page.next_token == NULL || page.next_token[0] == '\0' ||
        (token != NULL && strcmp(token, page.next_token) == 0)) {
      /* without a new token the next page would be this one again */
      rc = ltx_error_set(err, STORE_ERR_HTTP,
                         "%s: truncated listing without a new continuation token", r.what);
      goto out;
    }
    free(token);
    token = page.next_token;
    page.next_token = NULL;
    s3_xml_list_free(&page);
  }
  /* S3 lists in UTF-8 byte order already; sorting keeps the contract with
  ** servers that do not (s3rver walks directories). */
  if (n_objs > 1) qsort(objs, n_objs, sizeof(*objs), cmp_object_key);
  out->items = objs;
  out->n = n_objs;
  objs = NULL;
  n_objs = 0;
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory listing", p->cfg.display);
out:
  for (size_t i = 0; i < n_objs; i++) free(objs[i].key);
  free(objs);
  s3_xml_list_free(&page);
  s3_req_free(&r);
  free(full_prefix);
  free(full_after);
  free(token);
  free(query);
  return rc;
}

static int s3_list(store *st, const char *prefix, const char *after, store_object_list *out,
                   ltx_error *err) {
  int more;
  return list_pages(st, prefix, after, 0, 0, out, &more, err);
}

static int s3_list_page(store *st, const char *prefix, const char *after, unsigned max_keys,
                        store_object_list *out, int *more, ltx_error *err) {
  return list_pages(st, prefix, after, 1, max_keys, out, more, err);
}

static int range_request(s3_store *p, s3_req *r, const char *key, uint64_t off, uint8_t *buf,
                         size_t n, ltx_error *err) {
  char range[80];
  int rc = s3_req_init(p, r, REQ_RANGE, key, NULL, err);
  if (rc != LTX_OK) return rc;
  r->out = buf;
  r->out_len = n;
  r->off = off;
  if (off > UINT64_MAX - n) {
    return ltx_error_set(err, LTX_ERR_ARG, "%s: range %llu+%zu overflows", r->what,
                         (unsigned long long)off, n);
  }
  snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long)off,
           (unsigned long long)(off + n - 1));
  rc = s3_req_header(r, range, err);
  if (rc == LTX_OK) rc = s3_req_common_headers(p, r, err);
  return rc;
}

/* One ranged GET into buf, or handed to sink as it arrives. */
static int read_range_to(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                         const store_sink *sink, ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  int rc;

  memset(&r, 0, sizeof(r));
  /* nothing to fetch; S3 has no empty range */
  if (n == 0) return LTX_OK;
  rc = range_request(p, &r, key, off, buf, n, err);
  r.sink = sink;
  if (rc == LTX_OK) rc = s3_run_one(p, &r, err);
  s3_req_free(&r);
  return rc;
}

static int s3_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                         ltx_error *err) {
  return read_range_to(st, key, off, buf, n, NULL, err);
}

static int s3_read_range_sink(store *st, const char *key, uint64_t off, size_t n,
                              const store_sink *sink, ltx_error *err) {
  return read_range_to(st, key, off, NULL, n, sink, err);
}

static int s3_read_ranges(store *st, store_range *ranges, size_t n, ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req *reqs = NULL;
  size_t *map = NULL, n_reqs = 0, first_bad = SIZE_MAX;
  ltx_error bad_err = {0, ""};
  int rc = LTX_OK;

  reqs = calloc(n ? n : 1, sizeof(*reqs));
  map = calloc(n ? n : 1, sizeof(*map));
  if (reqs == NULL || map == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory for %zu ranges", p->cfg.display, n);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    ranges[i].rc = LTX_OK;
    if (ranges[i].n == 0) continue;
    /* a bad range (key, overflow) fails alone; the others still run */
    ranges[i].rc = range_request(p, &reqs[n_reqs], ranges[i].key, ranges[i].off, ranges[i].buf,
                                 ranges[i].n, first_bad == SIZE_MAX ? &bad_err : NULL);
    if (ranges[i].rc != LTX_OK) {
      s3_req_free(&reqs[n_reqs]);
      if (first_bad == SIZE_MAX) first_bad = i;
      continue;
    }
    map[n_reqs++] = i;
  }
  rc = s3_run_requests(p, reqs, n_reqs, err);
  if (rc != LTX_OK) goto out;
  /* every range has its own rc; the call reports the first failure */
  for (size_t k = 0; k < n_reqs; k++) {
    ranges[map[k]].rc = reqs[k].rc;
    if (reqs[k].rc != LTX_OK && map[k] < first_bad) {
      first_bad = map[k];
      bad_err = reqs[k].err;
    }
  }
  if (first_bad != SIZE_MAX) {
    rc = ranges[first_bad].rc;
    if (err != NULL) *err = bad_err;
  }
out:
  for (size_t k = 0; reqs != NULL && k < n_reqs; k++) s3_req_free(&reqs[k]);
  free(reqs);
  free(map);
  return rc;
}

static int s3_read_suffix(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                          uint64_t *object_size, ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  char range[64];
  int rc;

  memset(&r, 0, sizeof(r));
  *nread = 0;
  *object_size = 0;
  if (n == 0) {
    /* "bytes=-0" is unsatisfiable; the size alone is a HEAD */
    rc = st->ops->head(st, key, object_size, NULL, 0, err);
    goto out;
  }
  rc = s3_req_init(p, &r, REQ_SUFFIX, key, NULL, err);
  if (rc != LTX_OK) goto out;
  r.out = buf;
  r.out_len = n;
  snprintf(range, sizeof(range), "Range: bytes=-%zu", n);
  rc = s3_req_header(&r, range, err);
  if (rc == LTX_OK) rc = s3_req_common_headers(p, &r, err);
  if (rc == LTX_OK) rc = s3_run_one(p, &r, err);
  if (rc != LTX_OK) goto out;
  *nread = r.nread;
  *object_size = r.object_size;
out:
  s3_req_free(&r);
  return rc;
}

static int copy_etag(const s3_req *r, char *etag, size_t etag_cap, ltx_error *err) {
  if (etag == NULL) return LTX_OK;
  if (strlen(r->etag) + 1 > etag_cap) {
    return ltx_error_set(err, LTX_ERR_ARG, "%s: etag buffer of %zu bytes is too small (use %d)",
                         r->what, etag_cap, STORE_ETAG_CAP);
  }
  memcpy(etag, r->etag, strlen(r->etag) + 1);
  return LTX_OK;
}

static int s3_head(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
                   ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  int rc;

  memset(&r, 0, sizeof(r));
  rc = s3_req_init(p, &r, REQ_HEAD, key, NULL, err);
  if (rc == LTX_OK) rc = s3_req_common_headers(p, &r, err);
  if (rc == LTX_OK) rc = s3_run_one(p, &r, err);
  if (rc != LTX_OK) goto out;
  if (size != NULL) *size = r.object_size;
  rc = copy_etag(&r, etag, etag_cap, err);
out:
  s3_req_free(&r);
  return rc;
}

static int s3_put(store *st, const char *key, const store_body *body, int64_t mtime_ms,
                  store_put_cond cond, const char *if_match_etag, char *etag_out, size_t etag_cap,
                  ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  char line[STORE_ETAG_CAP + 128];
  int rc;

  memset(&r, 0, sizeof(r));
  rc = s3_req_init(p, &r, REQ_PUT, key, NULL, err);
  if (rc != LTX_OK) goto out;
  r.put_body = body;
  rc = s3_req_common_headers(p, &r, err);
  if (rc != LTX_OK) goto out;
  if (mtime_ms >= 0) {
    char time_text[96];
    ltx_time_format(mtime_ms, time_text, sizeof(time_text));
    snprintf(line, sizeof(line), "x-amz-meta-litestream-timestamp: %s", time_text);
    rc = s3_req_header(&r, line, err);
    if (rc != LTX_OK) goto out;
  }
  if (cond == STORE_PUT_IF_ABSENT) {
    r.conditional = 1;
    rc = s3_req_header(&r, "If-None-Match: *", err);
  } else if (cond == STORE_PUT_IF_MATCH) {
    r.conditional = 1;
    if (if_match_etag == NULL || if_match_etag[0] == '\0' ||
        strlen(if_match_etag) >= STORE_ETAG_CAP || strpbrk(if_match_etag, "\r\n") != NULL) {
      rc = ltx_error_set(err, LTX_ERR_ARG, "%s: put IF_MATCH needs a valid etag", r.what);
      goto out;
    }
    snprintf(line, sizeof(line), "If-Match: %s", if_match_etag);
    rc = s3_req_header(&r, line, err);
  }
  if (rc == LTX_OK) rc = s3_run_one(p, &r, err);
  if (rc == LTX_OK) rc = copy_etag(&r, etag_out, etag_cap, err);
out:
  s3_req_free(&r);
  return rc;
}

/* Builds one DeleteObjects body for keys[0..n). */
static char *delete_body(s3_store *p, const char *const *keys, size_t n, size_t *len_out) {
  char *z = s3_append_str(NULL,
                          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                          "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                          "<Quiet>true</Quiet>");
  for (size_t i = 0; i < n && z != NULL; i++) {
    char *full_key = s3_dup_printf("%s%s%s", p->cfg.path, p->cfg.path[0] ? "/" : "", keys[i]);
    size_t esc_len;
    char *escaped;
    if (full_key == NULL) {
      free(z);
      return NULL;
    }
    esc_len = s3_xml_escape(full_key, NULL, 0);
    escaped = malloc(esc_len + 1);
    if (escaped != NULL) s3_xml_escape(full_key, escaped, esc_len + 1);
    free(full_key);
    if (escaped == NULL) {
      free(z);
      return NULL;
    }
    z = s3_append_str(z, "<Object><Key>");
    if (z) z = s3_append_str(z, escaped);
    if (z) z = s3_append_str(z, "</Key></Object>");
    free(escaped);
  }
  if (z) z = s3_append_str(z, "</Delete>");
  if (z) *len_out = strlen(z);
  return z;
}

static int s3_del(store *st, const char *const *keys, size_t n, ltx_error *err) {
  s3_store *p = s3_of(st);
  size_t n_batches = (n + S3_DELETE_BATCH - 1) / S3_DELETE_BATCH;
  s3_req *reqs = NULL;
  char **bodies = NULL;
  const char *pairs[] = {"delete", ""};
  char *query = NULL;
  int rc = LTX_OK;

  if (n == 0) goto out;
  for (size_t i = 0; i < n; i++) {
    if (keys[i] == NULL || keys[i][0] == '\0' || keys[i][0] == '/') {
      rc = ltx_error_set(err, LTX_ERR_ARG, "%s: invalid object key '%.200s'", p->cfg.display,
                         keys[i] ? keys[i] : "(null)");
      goto out;
    }
  }
  reqs = calloc(n_batches, sizeof(*reqs));
  bodies = calloc(n_batches, sizeof(*bodies));
  query = s3_make_query(pairs, 1);
  if (reqs == NULL || bodies == NULL || query == NULL) goto nomem;
  for (size_t b = 0; b < n_batches; b++) {
    size_t first = b * S3_DELETE_BATCH,
           n_keys = n - first < S3_DELETE_BATCH ? n - first : S3_DELETE_BATCH;
    size_t body_len = 0;
    char md5[64], line[96];
    bodies[b] = delete_body(p, keys + first, n_keys, &body_len);
    if (bodies[b] == NULL) goto nomem;
    rc = s3_req_init(p, &reqs[b], REQ_DELETE, NULL, query, err);
    if (rc != LTX_OK) goto out;
    free(reqs[b].what);
    reqs[b].what =
        s3_dup_printf("%s (delete of %zu keys from %s)", p->cfg.display, n_keys, keys[first]);
    if (reqs[b].what == NULL) goto nomem;
    reqs[b].body = (const uint8_t *)bodies[b];
    reqs[b].body_len = body_len;
    if (s3_content_md5(reqs[b].body, body_len, md5) != 0) {
      rc = ltx_error_set(err, STORE_ERR_IO, "%s: MD5 failed", reqs[b].what);
      goto out;
    }
    snprintf(line, sizeof(line), "Content-MD5: %s", md5);
    rc = s3_req_header(&reqs[b], line, err);
    if (rc == LTX_OK) rc = s3_req_header(&reqs[b], "Content-Type: application/xml", err);
    if (rc == LTX_OK) rc = s3_req_common_headers(p, &reqs[b], err);
    if (rc != LTX_OK) goto out;
  }
  rc = s3_run_requests(p, reqs, n_batches, err);
  if (rc != LTX_OK) goto out;
  for (size_t b = 0; b < n_batches; b++) {
    s3_xml_delete d;
    if (reqs[b].rc != LTX_OK) {
      rc = reqs[b].rc;
      if (err != NULL) *err = reqs[b].err;
      goto out;
    }
    rc = s3_xml_parse_delete(reqs[b].buf ? reqs[b].buf : "", reqs[b].buf_len, &d, err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "%s", reqs[b].what);
      goto out;
    }
    if (d.n_errors > 0) {
      char key[256], aws_code[64], msg[256];
      s3_sanitize(d.key, key, sizeof(key));
      s3_sanitize(d.code, aws_code, sizeof(aws_code));
      s3_sanitize(d.message, msg, sizeof(msg));
      rc = ltx_error_set(err,
                         strcmp(aws_code, "AccessDenied") == 0 ? STORE_ERR_AUTH : STORE_ERR_HTTP,
                         "s3://%s/%s: delete failed: %s (%s)%s", p->cfg.bucket, key, aws_code, msg,
                         d.n_errors > 1 ? " and more keys failed" : "");
      s3_xml_delete_free(&d);
      goto out;
    }
    s3_xml_delete_free(&d);
  }
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory deleting %zu keys", p->cfg.display, n);
out:
  for (size_t b = 0; reqs != NULL && b < n_batches; b++) s3_req_free(&reqs[b]);
  for (size_t b = 0; bodies != NULL && b < n_batches; b++) free(bodies[b]);
  free(reqs);
  free(bodies);
  free(query);
  return rc;
}

/* ---- open / close ---- */

static char *secret_dup(const char *z) { return z != NULL && *z != '\0' ? strdup(z) : NULL; }

/* Wipes a credential before freeing it; a plain memset before free may be
** optimised away, explicit_bzero (or writes through a volatile pointer)
** may not. */
static void secret_free(char *z) {
  if (z == NULL) return;
#ifdef HAVE_EXPLICIT_BZERO
  explicit_bzero(z, strlen(z));
#else
  for (volatile char *v = z; *v; v++) *v = 0;
#endif
  free(z);
}

static void s3_impl_free(s3_store *p) {
  if (p == NULL) return;
  while (p->free_sessions != NULL) {
    s3_session *s = p->free_sessions;
    p->free_sessions = s->next;
    s3_session_free(s, p->cfg.concurrency);
  }
  if (p->share != NULL) curl_share_cleanup(p->share);
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_destroy(&p->share_mutex[i]);
  pthread_mutex_destroy(&p->mutex);
  secret_free(p->access_key);
  secret_free(p->secret_key);
  secret_free(p->session_token);
  free(p->ca_info);
  s3_config_free(&p->cfg);
  free(p);
}

static void s3_close(store *st) {
  s3_impl_free(s3_of(st));
  st->impl = NULL;
}

int store_s3_open(const char *url, store **out, ltx_error *err) {
  s3_store *p = NULL;
  store *st = NULL;
  const char *key_id, *secret;
  CURLcode global_rc;
  int rc = LTX_OK;

  *out = NULL;
  global_rc = s3_global_init();
  if (global_rc != CURLE_OK) {
    rc = ltx_error_set(err, STORE_ERR_NETWORK, "libcurl initialisation failed: %s",
                       curl_easy_strerror(global_rc));
    goto out;
  }
  p = calloc(1, sizeof(*p));
  if (p == NULL) goto nomem;
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&p->share_mutex[i], NULL);
  pthread_mutex_init(&p->mutex, NULL);
  rc = s3_parse_url(url, &p->cfg, err);
  if (rc != LTX_OK) goto out;

  /* Litestream's own names win over the AWS ones, as in Litestream. */
  key_id = getenv("LITESTREAM_ACCESS_KEY_ID");
  secret = getenv("LITESTREAM_SECRET_ACCESS_KEY");
  if (key_id == NULL || *key_id == '\0') key_id = getenv("AWS_ACCESS_KEY_ID");
  if (secret == NULL || *secret == '\0') secret = getenv("AWS_SECRET_ACCESS_KEY");
  if ((key_id != NULL && *key_id != '\0') != (secret != NULL && *secret != '\0')) {
    rc = ltx_error_set(err, STORE_ERR_AUTH, "%s: %s is set but %s is not", p->cfg.display,
                       key_id && *key_id ? "an access key id" : "a secret access key",
                       key_id && *key_id ? "AWS_SECRET_ACCESS_KEY (or LITESTREAM_SECRET_ACCESS_KEY)"
                                         : "AWS_ACCESS_KEY_ID (or LITESTREAM_ACCESS_KEY_ID)");
    goto out;
  }
  p->access_key = secret_dup(key_id);
  p->secret_key = secret_dup(secret);
  p->session_token = secret_dup(getenv("AWS_SESSION_TOKEN"));
  if (getenv("AWS_CA_BUNDLE") != NULL && getenv("AWS_CA_BUNDLE")[0] != '\0') {
    p->ca_info = strdup(getenv("AWS_CA_BUNDLE"));
    if (p->ca_info == NULL) goto nomem;
  }
  if ((key_id && *key_id && (p->access_key == NULL || p->secret_key == NULL))) goto nomem;

  p->share = s3_share_new(p);
  if (p->share == NULL) goto nomem;

  st = calloc(1, sizeof(*st));
  if (st == NULL) goto nomem;
  st->url = strdup(url);
  if (st->url == NULL) goto nomem;
  st->ops = &s3_ops;
  st->layout = STORE_LAYOUT_S3;
  st->impl = p;
  p = NULL;
  *out = st;
  st = NULL;
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory opening '%s'", url);
out:
  if (st != NULL) {
    free(st->url);
    free(st);
  }
  s3_impl_free(p);
  return rc;
}

static void s3_interrupt(store *st) { atomic_store(&s3_of(st)->interrupted, 1); }

static const store_ops s3_ops = {
    .scheme = "s3",
    .list = s3_list,
    .list_page = s3_list_page,
    .read_range = s3_read_range,
    .read_suffix = s3_read_suffix,
    .head = s3_head,
    .put = s3_put,
    .del = s3_del,
    .close = s3_close,
    .read_ranges = s3_read_ranges,
    .read_range_sink = s3_read_range_sink,
    .interrupt = s3_interrupt,
};
