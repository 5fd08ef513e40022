/*
** s3_http.c: the s3:// backend's HTTP transport, over libcurl.
**
** Owns curl's process-wide setup; the CURLSH (DNS and TLS sessions shared by
** all sessions) and its locks; sessions (a multi handle and its easy handles,
** pooled per store); building a request (URL, headers, payload hash,
** Content-MD5); the curl callbacks that fill a request's response; running a
** batch of requests at most `concurrency` at a time, each retried on its own
** with backoff under one deadline, watching store_interrupt; and what each
** attempt's answer means: success (checked against what was asked), retry,
** or a final error naming the object. The requests each operation makes and
** the retry rules are in s3.c's comment, the threading rules in s3_int.h.
**
** Signing: CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3". libcurl 7.88 signs the
** path and query exactly as written and does not hash a streamed body, so
** this file (1) sends x-amz-content-sha256 itself (UNSIGNED-PAYLOAD, or the
** body's SHA-256 with sign-payload), (2) writes the query already canonical
** (s3_make_query, in s3_config.c): sorted by name, RFC 3986 encoded, "name="
** for empty values, and (3)
** encodes the key path as S3 canonicalises it (each segment RFC 3986
** encoded, '/' kept), with CURLOPT_PATH_AS_IS so curl does not rewrite it.
** Every header a request carries is signed by curl, so none may be a removal
** ("Expect:" would be signed but not sent).
*/
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "store/s3_int.h"
#include "store/s3_xml.h"
#include "store/store.h"

/* ---- process-wide setup ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

CURLcode s3_global_init(void) {
  pthread_once(&global_once, global_init);
  return global_rc;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copies server-supplied text into a message: printable ASCII only, so a
** hostile body cannot inject control characters into logs. */
void s3_sanitize(const char *z, char *out, size_t cap) {
  size_t j = 0;
  for (; z != NULL && *z && j + 1 < cap; z++) {
    unsigned char c = (unsigned char)*z;
    out[j++] = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
  }
  out[j] = '\0';
}

static void hex_encode(const uint8_t *bytes, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[bytes[i] >> 4];
    out[2 * i + 1] = hex[bytes[i] & 15];
  }
  out[2 * n] = '\0';
}

/* x-amz-content-sha256 value: the body's SHA-256 in hex (of "" when no
** body) with sign-payload, else UNSIGNED-PAYLOAD. A file body is hashed in
** 1 MiB reads (one pass before the upload: bounded memory). */
static int payload_hash(const s3_store *p, const s3_req *r, char *out) {
  uint8_t digest[EVP_MAX_MD_SIZE], *buf = NULL;
  unsigned int digest_len = 0;
  EVP_MD_CTX *ctx = NULL;
  int rc = -1;
  if (!p->cfg.sign_payload) {
    strcpy(out, "UNSIGNED-PAYLOAD");
    return 0;
  }
  ctx = EVP_MD_CTX_new();
  if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) goto out;
  if (r->put_body != NULL && r->put_body->fd >= 0) {
    buf = malloc(1u << 20);
    if (buf == NULL) goto out;
    for (uint64_t off = 0; off < r->put_body->size; off += 1u << 20) {
      size_t n =
          r->put_body->size - off < (1u << 20) ? (size_t)(r->put_body->size - off) : (1u << 20);
      if (store_body_read(r->put_body, off, buf, n, NULL) != LTX_OK) goto out;
      if (EVP_DigestUpdate(ctx, buf, n) != 1) goto out;
    }
  } else if (r->put_body != NULL) {
    if (EVP_DigestUpdate(ctx, r->put_body->data, (size_t)r->put_body->size) != 1) goto out;
  } else if (r->body_len > 0 && EVP_DigestUpdate(ctx, r->body, r->body_len) != 1) {
    goto out;
  }
  if (EVP_DigestFinal_ex(ctx, digest, &digest_len) != 1) goto out;
  hex_encode(digest, digest_len, out);
  rc = 0;
out:
  EVP_MD_CTX_free(ctx);
  free(buf);
  return rc;
}

/* Content-MD5: base64 of the body's MD5 (DeleteObjects requires it). */
int s3_content_md5(const uint8_t *data, size_t n, char *out) {
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(data, n, digest, &digest_len, EVP_md5(), NULL) != 1) return -1;
  EVP_EncodeBlock((unsigned char *)out, digest, (int)digest_len);
  return 0;
}

/* ---- sessions ---- */

static void share_lock(CURL *easy, curl_lock_data data, curl_lock_access lock_access, void *arg) {
  s3_store *p = arg;
  (void)easy;
  (void)lock_access;
  pthread_mutex_lock(&p->share_mutex[data]);
}

static void share_unlock(CURL *easy, curl_lock_data data, void *arg) {
  s3_store *p = arg;
  (void)easy;
  pthread_mutex_unlock(&p->share_mutex[data]);
}

CURLSH *s3_share_new(s3_store *p) {
  CURLSH *share = curl_share_init();
  if (share == NULL) return NULL;
  curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
  curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
  curl_share_setopt(share, CURLSHOPT_USERDATA, (void *)p);
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  return share;
}

void s3_session_free(s3_session *s, int slots) {
  if (s == NULL) return;
  for (int i = 0; i < slots && s->easy != NULL; i++) {
    if (s->easy[i] != NULL) curl_easy_cleanup(s->easy[i]);
  }
  if (s->multi != NULL) curl_multi_cleanup(s->multi);
  free(s->easy);
  free(s->busy);
  free(s);
}

static int session_get(s3_store *p, s3_session **out, ltx_error *err) {
  s3_session *s;
  int rc = LTX_OK;

  pthread_mutex_lock(&p->mutex);
  s = p->free_sessions;
  if (s != NULL) p->free_sessions = s->next;
  pthread_mutex_unlock(&p->mutex);
  if (s != NULL) goto out;

  s = calloc(1, sizeof(*s));
  if (s == NULL) goto nomem;
  s->easy = calloc((size_t)p->cfg.concurrency, sizeof(*s->easy));
  s->busy = calloc((size_t)p->cfg.concurrency, sizeof(*s->busy));
  s->multi = curl_multi_init();
  if (s->easy == NULL || s->busy == NULL || s->multi == NULL) goto nomem;
  /* at most `concurrency` connections, all of them kept for reuse */
  curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)p->cfg.concurrency);
  curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)p->cfg.concurrency);
  s->rng = (uint64_t)mono_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)s;
  if (s->rng == 0) s->rng = 1;
  goto out;
nomem:
  s3_session_free(s, p->cfg.concurrency);
  s = NULL;
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory for an HTTP session", p->cfg.display);
out:
  *out = s;
  return rc;
}

static void session_put(s3_store *p, s3_session *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&p->mutex);
  s->next = p->free_sessions;
  p->free_sessions = s;
  pthread_mutex_unlock(&p->mutex);
}

static uint64_t session_rand(s3_session *s) {
  uint64_t x = s->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* ---- one request ---- */

void s3_req_free(s3_req *r) {
  free(r->url);
  free(r->what);
  curl_slist_free_all(r->headers);
  free(r->buf);
  memset(r, 0, sizeof(*r));
}

/* URL and display name of the object at relative key (NULL: the bucket). */
int s3_req_init(s3_store *p, s3_req *r, req_kind kind, const char *key, const char *query,
                ltx_error *err) {
  int rc = LTX_OK;
  memset(r, 0, sizeof(*r));
  r->kind = kind;
  r->content_length = -1;
  if (key != NULL) {
    if (key[0] == '\0' || key[0] == '/' || strlen(key) + strlen(p->cfg.path) + 1 > S3_MAX_KEY) {
      rc = ltx_error_set(err, LTX_ERR_ARG, "%s: invalid object key '%.200s'", p->cfg.display, key);
      goto out;
    }
    r->url = s3_append_str(NULL, p->cfg.base_url);
    if (r->url) r->url = s3_append_str(r->url, "/");
    if (r->url && p->cfg.path[0]) {
      r->url = s3_append_encoded(r->url, p->cfg.path, 1);
      if (r->url) r->url = s3_append_str(r->url, "/");
    }
    if (r->url) r->url = s3_append_encoded(r->url, key, 1);
    r->what = s3_dup_printf("%s/%s", p->cfg.display, key);
  } else {
    /* path style: ".../BUCKET?q" (no slash: S3 canonicalises "/BUCKET");
    ** virtual host: "https://BUCKET.host/?q" */
    r->url = s3_append_str(NULL, p->cfg.base_url);
    if (r->url && p->cfg.virtual_host) r->url = s3_append_str(r->url, "/");
    r->what = strdup(p->cfg.display);
  }
  if (r->url && query) {
    r->url = s3_append_str(r->url, "?");
    if (r->url) r->url = s3_append_str(r->url, query);
  }
  if (r->url == NULL || r->what == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory building a request", p->cfg.display);
  }
out:
  return rc;
}

int s3_req_header(s3_req *r, const char *line, ltx_error *err) {
  struct curl_slist *list = curl_slist_append(r->headers, line);
  if (list == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory", r->what);
  r->headers = list;
  return LTX_OK;
}

/* The headers every request carries: payload hash and session token. */
int s3_req_common_headers(s3_store *p, s3_req *r, ltx_error *err) {
  char line[128], hash[80];
  int rc;
  if (payload_hash(p, r, hash) != 0) {
    return ltx_error_set(err, STORE_ERR_IO, "%s: SHA-256 failed", r->what);
  }
  snprintf(line, sizeof(line), "x-amz-content-sha256: %s", hash);
  rc = s3_req_header(r, line, err);
  if (rc == LTX_OK && p->session_token != NULL) {
    char *token_line = s3_dup_printf("x-amz-security-token: %s", p->session_token);
    if (token_line == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory", r->what);
    rc = s3_req_header(r, token_line, err);
    free(token_line);
  }
  return rc;
}

static int buf_append(s3_req *r, const char *z, size_t n, size_t limit) {
  if (r->buf_len + n > limit) return -1;
  if (r->buf_len + n + 1 > r->buf_cap) {
    size_t new_cap = r->buf_cap ? r->buf_cap : 4096;
    while (new_cap < r->buf_len + n + 1) new_cap *= 2;
    char *grown = realloc(r->buf, new_cap);
    if (grown == NULL) return -1;
    r->buf = grown;
    r->buf_cap = new_cap;
  }
  memcpy(r->buf + r->buf_len, z, n);
  r->buf_len += n;
  r->buf[r->buf_len] = '\0';
  return 0;
}

static int is_success(long status) { return status >= 200 && status < 300; }

static int parse_content_range(const char *z, uint64_t *first, uint64_t *last, uint64_t *total,
                               int *has_total);

/* Whether a range request's answer is, byte for byte, the range it asked
** (206 with exactly its Content-Range, or the whole object from offset 0),
** so that its bytes may be told to a sink before the last have come. The
** test check_success makes at the end, made at the first byte. */
static int body_is_range_asked(const s3_req *r) {
  uint64_t a = 0, b = 0, t = 0;
  int has_total = 0;
  if (r->status == 206)
    return parse_content_range(r->content_range, &a, &b, &t, &has_total) == 0 && a == r->off &&
           b - a + 1 == r->out_len;
  return r->status == 200 && r->off == 0;
}

static size_t on_body(char *z, size_t sz, size_t nmemb, void *arg) {
  s3_req *r = arg;
  size_t n = sz * nmemb;
  if (!is_success(r->status)) {
    /* an error body: keep the start, for Code and Message */
    size_t keep = r->buf_len < S3_MAX_ERROR_BODY ? S3_MAX_ERROR_BODY - r->buf_len : 0;
    if (keep > 0) buf_append(r, z, n < keep ? n : keep, S3_MAX_ERROR_BODY);
    return n;
  }
  if (r->kind == REQ_RANGE || r->kind == REQ_SUFFIX) {
    if (n > r->out_len - r->got) {
      /* more than the range asked: never write past the caller's buffer */
      r->overflow = 1;
      return 0;
    }
    if (r->sink != NULL) {
      /* told only when the answer is the range asked; else check_success
      ** fails the attempt */
      if (r->got == 0) r->streaming = body_is_range_asked(r); /* the headers are all in */
      if (r->streaming && r->sink->fn(r->sink->arg, r->got, (const uint8_t *)z, n) != 0) {
        r->stopped = 1; /* curl ends the transfer: CURLE_WRITE_ERROR */
        return 0;
      }
    } else {
      memcpy(r->out + r->got, z, n);
    }
    r->got += n;
    return n;
  }
  if (r->kind == REQ_LIST || r->kind == REQ_DELETE) {
    if (buf_append(r, z, n, r->kind == REQ_LIST ? S3_MAX_LIST_BODY : S3_MAX_DELETE_BODY) != 0) {
      r->overflow = 1;
      return 0;
    }
  }
  return n;
}

/* Copies a header value (trimmed) into a fixed buffer. */
static void copy_value(const char *z, size_t n, char *out, size_t cap) {
  while (n > 0 && (*z == ' ' || *z == '\t')) z++, n--;
  while (n > 0 && (z[n - 1] == '\r' || z[n - 1] == '\n' || z[n - 1] == ' ' || z[n - 1] == '\t'))
    n--;
  if (n >= cap) n = cap - 1;
  memcpy(out, z, n);
  out[n] = '\0';
}

static size_t on_header(char *z, size_t sz, size_t nmemb, void *arg) {
  s3_req *r = arg;
  size_t n = sz * nmemb;
  const char *colon;
  static const struct {
    const char *name;
    size_t offset;
    size_t cap;
  } fields[] = {
      {"content-range", offsetof(s3_req, content_range), sizeof(((s3_req *)0)->content_range)},
      {"etag", offsetof(s3_req, etag), sizeof(((s3_req *)0)->etag)},
      {"x-amz-error-code", offsetof(s3_req, err_code), sizeof(((s3_req *)0)->err_code)},
      {"x-amz-bucket-region", offsetof(s3_req, bucket_region),
       sizeof(((s3_req *)0)->bucket_region)},
  };

  if (n >= 5 && memcmp(z, "HTTP/", 5) == 0) {
    /* a new response (a 100 Continue comes before the real one) */
    const char *sp = memchr(z, ' ', n);
    r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    r->content_range[0] = r->etag[0] = r->err_code[0] = r->bucket_region[0] = '\0';
    r->content_length = -1;
    r->buf_len = 0;
    return n;
  }
  colon = memchr(z, ':', n);
  if (colon == NULL) return n;
  size_t name_len = (size_t)(colon - z);
  const char *value = colon + 1;
  size_t value_len = n - name_len - 1;
  if (name_len == 14 && strncasecmp(z, "content-length", 14) == 0) {
    char num[32];
    char *end;
    copy_value(value, value_len, num, sizeof(num));
    errno = 0;
    long long v = strtoll(num, &end, 10);
    r->content_length = (errno == 0 && *end == '\0' && end != num && v >= 0) ? v : -1;
    return n;
  }
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
    if (strlen(fields[i].name) == name_len && strncasecmp(z, fields[i].name, name_len) == 0) {
      copy_value(value, value_len, (char *)r + fields[i].offset, fields[i].cap);
    }
  }
  return n;
}

static size_t on_upload(char *buf, size_t sz, size_t nmemb, void *arg) {
  s3_req *r = arg;
  uint64_t left = r->put_body->size - r->upload_off;
  size_t n = sz * nmemb;
  if (n > left) n = (size_t)left;
  if (n == 0) return 0;
  if (store_body_read(r->put_body, r->upload_off, (uint8_t *)buf, n, NULL) != LTX_OK)
    return CURL_READFUNC_ABORT; /* the file went short under us: fail, never send less */
  r->upload_off += n;
  return n;
}

static int on_seek(void *arg, curl_off_t off, int origin) {
  s3_req *r = arg;
  if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->put_body->size) return CURL_SEEKFUNC_FAIL;
  r->upload_off = (uint64_t)off;
  return CURL_SEEKFUNC_OK;
}

/* Sets up an easy handle for one attempt of r. */
static int attempt_setup(s3_store *p, s3_req *r, CURL *e, int64_t left_ms, ltx_error *err) {
  CURLcode c = CURLE_OK;
  long stall_s = (p->cfg.stall_timeout_ms + 999) / 1000;

  r->status = 0;
  r->got = 0;
  r->streaming = 0;
  r->buf_len = 0;
  r->upload_off = 0;
  r->overflow = 0;
  r->stopped = 0;
  r->content_length = -1;
  r->content_range[0] = r->etag[0] = r->err_code[0] = r->bucket_region[0] = '\0';
  r->curl_err[0] = '\0';
  r->curl_rc = CURLE_OK;

  /* every option, each attempt: a reset handle keeps its connections */
  curl_easy_reset(e);
#define SET(opt, val) \
  if (c == CURLE_OK) c = curl_easy_setopt(e, opt, val)
  SET(CURLOPT_URL, r->url);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_PATH_AS_IS, 1L);
  SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
#if LIBCURL_VERSION_NUM >= 0x075500
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  SET(CURLOPT_SHARE, p->share);
  SET(CURLOPT_PRIVATE, (void *)r);
  SET(CURLOPT_ERRORBUFFER, r->curl_err);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)r);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)r);
  SET(CURLOPT_CONNECTTIMEOUT_MS, p->cfg.connect_timeout_ms);
  SET(CURLOPT_TIMEOUT_MS, (long)(left_ms > 0 ? left_ms : 1));
  SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
  SET(CURLOPT_LOW_SPEED_TIME, stall_s > 0 ? stall_s : 1L);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_HTTPHEADER, r->headers);
  if (p->access_key != NULL) {
    SET(CURLOPT_AWS_SIGV4, p->cfg.sigv4);
    SET(CURLOPT_USERNAME, p->access_key);
    SET(CURLOPT_PASSWORD, p->secret_key);
  }
  if (p->ca_info != NULL) SET(CURLOPT_CAINFO, p->ca_info);
  if (p->cfg.skip_verify) {
    SET(CURLOPT_SSL_VERIFYPEER, 0L);
    SET(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  switch (r->kind) {
    case REQ_HEAD:
      SET(CURLOPT_NOBODY, 1L);
      break;
    case REQ_PUT:
      SET(CURLOPT_UPLOAD, 1L);
      SET(CURLOPT_READFUNCTION, on_upload);
      SET(CURLOPT_READDATA, (void *)r);
      SET(CURLOPT_SEEKFUNCTION, on_seek);
      SET(CURLOPT_SEEKDATA, (void *)r);
      SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->put_body->size);
      break;
    case REQ_DELETE:
      SET(CURLOPT_POST, 1L);
      SET(CURLOPT_POSTFIELDS, (const char *)r->body);
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
      break;
    default:
      break;
  }
#undef SET
  if (c != CURLE_OK) {
    return ltx_error_set(err, STORE_ERR_NETWORK, "%s: libcurl setup failed: %s", r->what,
                         curl_easy_strerror(c));
  }
  return LTX_OK;
}

/* Parses "bytes A-B/T" (T may be "*"); -1 when malformed. */
/* A decimal number at *pz, digits only (no sign, no space: sscanf's %llu
** would take "-1" as 2^64-1), moving *pz past it; -1 when there is none or
** it overflows. */
static int parse_decimal(const char **pz, uint64_t *out) {
  const char *z = *pz;
  uint64_t v = 0;
  if (*z < '0' || *z > '9') return -1;
  for (; *z >= '0' && *z <= '9'; z++) {
    if (v > (UINT64_MAX - (uint64_t)(*z - '0')) / 10) return -1;
    v = v * 10 + (uint64_t)(*z - '0');
  }
  *out = v;
  *pz = z;
  return 0;
}

/* "bytes FIRST-LAST/TOTAL", or with "*" for TOTAL (unknown); nothing else. */
static int parse_content_range(const char *z, uint64_t *first, uint64_t *last, uint64_t *total,
                               int *has_total) {
  uint64_t a, b, t = 0;
  if (strncmp(z, "bytes ", 6) != 0) return -1;
  z += 6;
  if (parse_decimal(&z, &a) != 0 || *z++ != '-' || parse_decimal(&z, &b) != 0 || *z++ != '/' ||
      b < a)
    return -1;
  if (strcmp(z, "*") == 0) {
    *has_total = 0;
  } else {
    if (parse_decimal(&z, &t) != 0 || *z != '\0' || b >= t) return -1;
    *has_total = 1;
  }
  *first = a;
  *last = b;
  *total = t;
  return 0;
}

/* Outcome of one attempt. */
enum { ATTEMPT_OK, ATTEMPT_FAIL, ATTEMPT_RETRY };

static int curl_is_transient(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
      return 1;
    default:
      return 0;
  }
}

/* Records an HTTP error status of r in r->err and says whether to retry. */
static int http_failure(s3_store *p, s3_req *r) {
  s3_xml_error xe = {0};
  ltx_error ignore;
  char aws_code[64] = "", msg[256] = "", hint[192] = "";
  int code, retry;

  if (r->buf_len > 0) s3_xml_parse_error(r->buf, r->buf_len, &xe, &ignore);
  s3_sanitize(xe.code ? xe.code : r->err_code, aws_code, sizeof(aws_code));
  s3_sanitize(xe.message, msg, sizeof(msg));
  s3_xml_error_free(&xe);

  /* (1) throttling and server trouble; (2) S3's idle-connection timeout;
  ** (3) a concurrent conditional write on the same key: S3 asks to retry. */
  retry = r->status >= 500 || r->status == 429 || r->status == 408 ||
          (r->status == 400 && strcmp(aws_code, "RequestTimeout") == 0) ||
          (r->status == 409 && r->conditional);
  if (r->status == 401 || r->status == 403) {
    code = STORE_ERR_AUTH;
    if (p->access_key == NULL) {
      snprintf(hint, sizeof(hint),
               "; no credentials set (AWS_ACCESS_KEY_ID, "
               "AWS_SECRET_ACCESS_KEY)");
    } else {
      snprintf(hint, sizeof(hint), "; check the credentials and region '%s'", p->cfg.region);
    }
  } else if (r->status == 404) {
    code = STORE_ERR_NOT_FOUND;
  } else if (r->status == 412) {
    code = STORE_ERR_PRECONDITION;
  } else {
    code = STORE_ERR_HTTP;
    if ((r->status == 301 || r->status == 307 || r->status == 400) && r->bucket_region[0]) {
      char region[64];
      s3_sanitize(r->bucket_region, region, sizeof(region));
      snprintf(hint, sizeof(hint), "; the bucket is in region '%s' (set region=%s)", region,
               region);
    }
  }
  ltx_error_set(&r->err, code, "%s: HTTP %ld%s%s%s%s%s%s", r->what, r->status,
                aws_code[0] ? " " : "", aws_code, msg[0] ? " (" : "", msg, msg[0] ? ")" : "", hint);
  return retry ? ATTEMPT_RETRY : ATTEMPT_FAIL;
}

/* Checks a 2xx response against what the request asked. */
static int check_success(s3_req *r) {
  uint64_t a = 0, b = 0, t = 0;
  int has_total = 0;

  switch (r->kind) {
    case REQ_RANGE:
      if (r->status == 206) {
        int parsed = parse_content_range(r->content_range, &a, &b, &t, &has_total) == 0;
        if (parsed && a == r->off && b - a + 1 < r->out_len && has_total && b + 1 == t) {
          /* (1) S3 clips a range at the object's end */
          ltx_error_set(&r->err, STORE_ERR_SHORT_READ,
                        "%s: object is %llu bytes, shorter than the range %llu+%zu asked", r->what,
                        (unsigned long long)t, (unsigned long long)r->off, r->out_len);
          return ATTEMPT_FAIL;
        }
        if (!parsed || a != r->off || b - a + 1 != r->out_len) {
          ltx_error_set(&r->err, STORE_ERR_HTTP,
                        "%s: HTTP 206 with Content-Range '%.60s' for bytes %llu-%llu", r->what,
                        r->content_range, (unsigned long long)r->off,
                        (unsigned long long)(r->off + r->out_len - 1));
          return ATTEMPT_FAIL;
        }
      } else if (r->off != 0) {
        ltx_error_set(&r->err, STORE_ERR_HTTP, "%s: HTTP %ld to a range request (want 206)",
                      r->what, r->status);
        return ATTEMPT_FAIL;
      } else if (r->content_length >= 0 && (uint64_t)r->content_length < r->out_len) {
        /* 200: the whole object, which is shorter than asked */
        ltx_error_set(&r->err, STORE_ERR_SHORT_READ,
                      "%s: object is %lld bytes, shorter than the range 0+%zu asked", r->what,
                      (long long)r->content_length, r->out_len);
        return ATTEMPT_FAIL;
      }
      if (r->got != r->out_len) {
        /* the body ended early without curl noticing (no length framing) */
        ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: body truncated at %zu of %zu bytes", r->what,
                      r->got, r->out_len);
        return ATTEMPT_RETRY;
      }
      return ATTEMPT_OK;
    case REQ_SUFFIX:
      if (r->status == 206) {
        if (parse_content_range(r->content_range, &a, &b, &t, &has_total) != 0 || !has_total ||
            b + 1 != t || b - a + 1 > r->out_len) {
          ltx_error_set(&r->err, STORE_ERR_HTTP,
                        "%s: HTTP 206 with Content-Range '%.60s' for the last %zu bytes", r->what,
                        r->content_range, r->out_len);
          return ATTEMPT_FAIL;
        }
        r->nread = (size_t)(b - a + 1);
        r->object_size = t;
      } else {
        /* 200: the whole object (fits, or on_body would have refused it) */
        r->nread = r->got;
        r->object_size = r->got;
        if (r->content_length >= 0 && (uint64_t)r->content_length != r->got) {
          ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: body truncated at %zu of %lld bytes",
                        r->what, r->got, (long long)r->content_length);
          return ATTEMPT_RETRY;
        }
      }
      if (r->got != r->nread) {
        ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: body truncated at %zu of %zu bytes", r->what,
                      r->got, r->nread);
        return ATTEMPT_RETRY;
      }
      return ATTEMPT_OK;
    case REQ_HEAD:
      if (r->content_length < 0) {
        ltx_error_set(&r->err, STORE_ERR_HTTP, "%s: HEAD answer without Content-Length", r->what);
        return ATTEMPT_FAIL;
      }
      r->object_size = (uint64_t)r->content_length;
      return ATTEMPT_OK;
    default:
      return ATTEMPT_OK;
  }
}

/* Decides what one finished attempt means. */
static int attempt_outcome(s3_store *p, s3_req *r) {
  if (r->curl_rc == CURLE_WRITE_ERROR && r->stopped) {
    ltx_error_set(&r->err, STORE_ERR_STOPPED, "%s: read stopped by its reader after %zu bytes",
                  r->what, r->got);
    return ATTEMPT_FAIL;
  }
  if (r->curl_rc == CURLE_WRITE_ERROR && r->overflow) {
    ltx_error_set(&r->err, STORE_ERR_HTTP,
                  r->kind == REQ_RANGE || r->kind == REQ_SUFFIX
                      ? "%s: HTTP %ld: server sent more bytes than the range asked"
                      : "%s: HTTP %ld: response body too large",
                  r->what, r->status);
    return ATTEMPT_FAIL;
  }
  if (r->curl_rc != CURLE_OK) {
    char detail[CURL_ERROR_SIZE];
    s3_sanitize(r->curl_err[0] ? r->curl_err : curl_easy_strerror(r->curl_rc), detail,
                sizeof(detail));
    ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: %s %s: %s", r->what,
                  r->curl_rc == CURLE_PARTIAL_FILE || r->curl_rc == CURLE_RECV_ERROR
                      ? "transfer from"
                      : "cannot reach",
                  p->cfg.endpoint, detail);
    return curl_is_transient(r->curl_rc) ? ATTEMPT_RETRY : ATTEMPT_FAIL;
  }
  if (r->kind == REQ_SUFFIX && r->status == 416) {
    /* S3 answers 416 to any range of an empty object */
    r->nread = 0;
    r->object_size = 0;
    return ATTEMPT_OK;
  }
  if (r->kind == REQ_RANGE && r->status == 416) {
    ltx_error_set(&r->err, STORE_ERR_SHORT_READ,
                  "%s: HTTP 416: the range %llu+%zu starts at or after the object's end", r->what,
                  (unsigned long long)r->off, r->out_len);
    return ATTEMPT_FAIL;
  }
  if (!is_success(r->status)) return http_failure(p, r);
  return check_success(r);
}

/* Runs the requests reqs[0..n_reqs) on one session, at most `concurrency` at
** a time, retrying each one on its own, until all are done or the deadline
** passes. Each request's result is in reqs[i].rc / .err; the return value
** is LTX_OK unless the machinery itself failed. */
int s3_run_requests(s3_store *p, s3_req *reqs, size_t n_reqs, ltx_error *err) {
  s3_session *s = NULL;
  int64_t start_ms = mono_ms(), deadline_ms = start_ms + p->cfg.timeout_ms;
  size_t next = 0, n_done = 0;
  int n_running = 0, slots = p->cfg.concurrency;
  s3_req *waiting = NULL; /* requests waiting for their retry time */
  int rc;

  rc = session_get(p, &s, err);
  if (rc != LTX_OK) goto out;
  for (size_t i = 0; i < n_reqs; i++) reqs[i].state = REQ_QUEUED;

  while (n_done < n_reqs) {
    int64_t now = mono_ms();
    int wait_ms = INTERRUPT_POLL_MS; /* how soon an interrupt is seen */

    if (atomic_load(&p->interrupted)) {
      rc = ltx_error_set(err, STORE_ERR_NETWORK, "%s: interrupted: the store is closing",
                         reqs[0].what);
      goto out;
    }

    /* (1) start what may start: due retries first, then new requests */
    while (n_running < slots) {
      s3_req *r = NULL;
      s3_req **pp;
      for (pp = &waiting; *pp != NULL; pp = &(*pp)->next_wait) {
        if ((*pp)->not_before_ms <= now) {
          r = *pp;
          *pp = r->next_wait;
          break;
        }
      }
      if (r == NULL && next < n_reqs) r = &reqs[next++];
      if (r == NULL) break;
      if (now >= deadline_ms) {
        /* never started, or due for a retry after the deadline */
        if (r->attempts == 0) {
          ltx_error_set(&r->err, STORE_ERR_NETWORK,
                        "%s: deadline of %ld ms reached before the request could start", r->what,
                        p->cfg.timeout_ms);
        } else {
          /* a retry that fell due after the deadline (the loop woke late):
          ** the same words as a retry refused for the deadline */
          char why[sizeof(r->err.msg)];
          memcpy(why, r->err.msg, sizeof(why));
          ltx_error_set(&r->err, r->err.code, "%s (after %d attempt%s in %lld ms; deadline reached)",
                        why, r->attempts, r->attempts == 1 ? "" : "s", (long long)(now - start_ms));
        }
        r->rc = r->err.code;
        r->state = REQ_DONE;
        n_done++;
        continue;
      }
      int slot = 0;
      while (s->busy[slot]) slot++;
      if (s->easy[slot] == NULL) s->easy[slot] = curl_easy_init();
      if (s->easy[slot] == NULL) {
        rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory for an HTTP handle", r->what);
        goto out;
      }
      r->attempts++;
      rc = attempt_setup(p, r, s->easy[slot], deadline_ms - now, &r->err);
      if (rc != LTX_OK) {
        r->rc = rc;
        r->state = REQ_DONE;
        n_done++;
        rc = LTX_OK;
        continue;
      }
      if (curl_multi_add_handle(s->multi, s->easy[slot]) != CURLM_OK) {
        rc = ltx_error_set(err, STORE_ERR_NETWORK, "%s: cannot start a transfer", r->what);
        goto out;
      }
      s->busy[slot] = 1;
      r->slot = slot;
      r->state = REQ_RUNNING;
      n_running++;
    }

    /* (2) drive the transfers, collect the finished ones */
    if (n_running > 0) {
      int still_running = 0;
      CURLMsg *info;
      int queued;
      curl_multi_perform(s->multi, &still_running);
      while ((info = curl_multi_info_read(s->multi, &queued)) != NULL) {
        s3_req *r = NULL;
        int outcome;
        if (info->msg != CURLMSG_DONE) continue;
        curl_easy_getinfo(info->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        r->curl_rc = info->data.result;
        curl_multi_remove_handle(s->multi, info->easy_handle);
        s->busy[r->slot] = 0;
        n_running--;
        outcome = attempt_outcome(p, r);
        now = mono_ms();
        if (outcome == ATTEMPT_RETRY) {
          int64_t backoff_ms = p->cfg.retry_base_ms;
          for (int k = 1; k < r->attempts && backoff_ms < p->cfg.retry_max_ms; k++) backoff_ms *= 2;
          if (backoff_ms > p->cfg.retry_max_ms) backoff_ms = p->cfg.retry_max_ms;
          /* "equal jitter": at least half the backoff, so a burst of
          ** failures still spreads out */
          backoff_ms = backoff_ms / 2 + (int64_t)(session_rand(s) % (uint64_t)(backoff_ms / 2 + 1));
          if (r->attempts >= p->cfg.max_attempts || now + backoff_ms >= deadline_ms) {
            char why[sizeof(r->err.msg)];
            memcpy(why, r->err.msg, sizeof(why));
            ltx_error_set(&r->err, r->err.code, "%s (after %d attempt%s in %lld ms%s)", why,
                          r->attempts, r->attempts == 1 ? "" : "s", (long long)(now - start_ms),
                          r->attempts >= p->cfg.max_attempts ? "" : "; deadline reached");
            outcome = ATTEMPT_FAIL;
          } else {
            r->not_before_ms = now + backoff_ms;
            r->state = REQ_WAITING;
            r->next_wait = waiting;
            waiting = r;
            continue;
          }
        }
        r->rc = outcome == ATTEMPT_OK ? LTX_OK : r->err.code;
        r->state = REQ_DONE;
        n_done++;
      }
    }
    if (n_done == n_reqs) break;

    /* (3) wait for network activity, the next retry or the deadline */
    now = mono_ms();
    for (s3_req *r = waiting; r != NULL; r = r->next_wait) {
      if (r->not_before_ms - now < wait_ms) wait_ms = (int)(r->not_before_ms - now);
    }
    if (next < n_reqs && n_running < slots) wait_ms = 0;
    if (n_running > 0) {
      long curl_ms = -1;
      curl_multi_timeout(s->multi, &curl_ms);
      if (curl_ms >= 0 && curl_ms < wait_ms) wait_ms = (int)curl_ms;
      if (wait_ms > 0) curl_multi_poll(s->multi, NULL, 0, wait_ms, NULL);
    } else if (wait_ms > 0) {
      struct timespec ts = {wait_ms / 1000, (long)(wait_ms % 1000) * 1000000};
      nanosleep(&ts, NULL);
    }
  }
out:
  if (s != NULL) {
    /* an aborted run leaves handles in the multi: take them out, so the
    ** session is clean for the next call */
    for (int i = 0; i < slots; i++) {
      if (s->busy[i]) {
        curl_multi_remove_handle(s->multi, s->easy[i]);
        s->busy[i] = 0;
      }
    }
    session_put(p, s);
  }
  return rc;
}

/* Runs one request; its error becomes the call's. */
int s3_run_one(s3_store *p, s3_req *r, ltx_error *err) {
  int rc = s3_run_requests(p, r, 1, err);
  if (rc != LTX_OK) return rc;
  if (r->rc != LTX_OK) {
    if (err != NULL) *err = r->err;
    return r->rc;
  }
  return LTX_OK;
}
