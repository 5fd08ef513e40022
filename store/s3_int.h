/*
** s3_int.h: what the three files of the s3:// backend share and nobody
** else should see (not installed; included by store/s3*.c only).
**
** The backend is split by role:
**
**   s3_config.c  "s3://BUCKET/PATH?..." plus the environment -> s3_config:
**                percent decoding, the query parameters, the endpoint and
**                addressing, the tuning numbers; and the pure string work
**                the requests need (RFC 3986 encoding as SigV4 canonicalises
**                it, the canonical query, s3_dup_printf). No curl, no
**                network: testable without a server.
**   s3_http.c    the HTTP transport: curl's global setup, the CURLSH and
**                its locks, sessions, building a request (URL, signed
**                headers, payload hash, Content-MD5), the curl callbacks,
**                running requests with retries and deadlines, and deciding
**                what each answer means (success, retry, final error).
**   s3.c         the store operations (list, read_range, read_ranges,
**                read_suffix, head, put, del, interrupt, close), opening a
**                store, the ops table, and the backend's manual (the
**                comment at its top: URL, credentials, requests, faults).
**
** Threads: a store is safe to use from many threads at once.
**  - s3_store.cfg, the credentials, ca_info and the CURLSH are set once by
**    store_s3_open and only read afterwards, until close.
**  - Each call takes a session (a curl multi handle, its easy handles and
**    the warm connections in its cache, at most `concurrency` of them) from
**    the store's pool, or makes one, and puts it back afterwards; the pool
**    (free_sessions) is guarded by s3_store.mutex. One thread therefore
**    reuses the same connections call after call, and N threads calling at
**    once hold N sessions. A session is used by one thread at a time, so
**    its handles and its jitter state need no lock.
**  - DNS and TLS sessions are shared by all sessions through the CURLSH,
**    whose lock callbacks take share_mutex[data]; connections are not
**    shared, because libcurl does not support one connection cache used by
**    concurrent threads.
**  - s3_req values belong to the call that made them (on its stack or in
**    its array): only the thread running that call touches them.
**  - interrupted is atomic: store_interrupt may set it from any thread; a
**    request loop looks at it at least every INTERRUPT_POLL_MS.
**  - curl_global_init runs once per process (pthread_once) and is never
**    undone; CURLOPT_NOSIGNAL keeps libcurl away from signals (no alarm()
**    timeouts).
*/
#ifndef LTVFS_S3_INT_H
#define LTVFS_S3_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "store/store.h"

#define S3_DEFAULT_CONCURRENCY 16
#define S3_MAX_CONCURRENCY 256
#define S3_DEFAULT_TIMEOUT_MS 60000
#define S3_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define S3_DEFAULT_STALL_TIMEOUT_MS 15000
#define S3_DEFAULT_MAX_ATTEMPTS 8
#define S3_DEFAULT_RETRY_BASE_MS 100
#define S3_DEFAULT_RETRY_MAX_MS 5000
/* S3 allows at most 1000 keys per DeleteObjects request. */
#define S3_DELETE_BATCH 1000
/* A ListObjectsV2 page of 1000 keys of 1 KiB each is about 1.5 MiB. */
#define S3_MAX_LIST_BODY (16u << 20)
#define S3_MAX_DELETE_BODY (16u << 20)
/* Error bodies are read for Code and Message only. */
#define S3_MAX_ERROR_BODY (64u << 10)
/* S3's limit on a key's length in bytes. */
#define S3_MAX_KEY 1024
/* The longest a request loop sleeps between looks at store_interrupt. */
#define INTERRUPT_POLL_MS 200

typedef struct s3_config {
  char *bucket;
  char *path;     /* PATH without leading/trailing '/', maybe "" */
  char *base_url; /* URL of the bucket: ".../BUCKET" or "https://BUCKET.host" */
  char *endpoint; /* for messages: "http://127.0.0.1:9000" or the AWS host */
  char *display;  /* "s3://BUCKET/PATH" for messages */
  char *region;
  char *sigv4;      /* "aws:amz:REGION:s3" */
  int virtual_host; /* bucket in the host name */
  int skip_verify;
  int sign_payload;
  int concurrency;
  long timeout_ms, connect_timeout_ms, stall_timeout_ms;
  int max_attempts;
  long retry_base_ms, retry_max_ms;
} s3_config;

/* One thread's share of the store: a multi handle (whose connection cache
** keeps the connections alive between calls) and its easy handles. */
typedef struct s3_session {
  CURLM *multi;
  CURL **easy; /* cfg.concurrency slots, created on first use */
  int *busy;
  uint64_t rng; /* xorshift state for backoff jitter */
  struct s3_session *next;
} s3_session;

typedef struct s3_store {
  s3_config cfg;
  char *access_key, *secret_key, *session_token; /* NULL: unsigned requests */
  char *ca_info;
  CURLSH *share;
  pthread_mutex_t share_mutex[CURL_LOCK_DATA_LAST];
  pthread_mutex_t mutex; /* guards free_sessions */
  s3_session *free_sessions;
  atomic_int interrupted; /* store_interrupt: give up, fail fast */
} s3_store;

typedef enum req_kind { REQ_RANGE, REQ_SUFFIX, REQ_HEAD, REQ_PUT, REQ_LIST, REQ_DELETE } req_kind;
typedef enum req_state { REQ_QUEUED, REQ_RUNNING, REQ_WAITING, REQ_DONE } req_state;

/* One logical request: retried as a whole until it succeeds or fails for
** good. The response fields are reset at each attempt (and at each status
** line, which skips a "100 Continue"). */
typedef struct s3_req {
  req_kind kind;
  char *url;
  char *what; /* "s3://BUCKET/PATH/KEY" for messages */
  struct curl_slist *headers;
  const uint8_t *body; /* POST body (DeleteObjects) */
  size_t body_len;
  const store_body *put_body; /* PUT body: memory or a file */
  uint8_t *out;               /* REQ_RANGE/REQ_SUFFIX destination (NULL with a sink) */
  size_t out_len;
  uint64_t off;    /* REQ_RANGE offset */
  int conditional; /* PUT with If-* */

  req_state state;
  int attempts;
  int64_t not_before_ms;
  int slot; /* easy handle slot while running */
  struct s3_req *next_wait;
  uint64_t upload_off;

  long status;
  char content_range[96];
  int64_t content_length;
  char etag[STORE_ETAG_CAP];
  char err_code[64];      /* x-amz-error-code (errors without body) */
  char bucket_region[64]; /* x-amz-bucket-region (301) */
  size_t got;             /* bytes in out */
  const store_sink *sink; /* REQ_RANGE: gets the body instead of out (may be NULL) */
  int streaming;          /* this attempt's answer is the range asked: tell the sink */
  char *buf;              /* list/delete body, or an error body */
  size_t buf_len, buf_cap;
  int overflow;
  int stopped;            /* the sink asked to stop (STORE_ERR_STOPPED) */
  CURLcode curl_rc;
  char curl_err[CURL_ERROR_SIZE];

  /* results */
  int rc;
  ltx_error err;
  size_t nread;         /* REQ_SUFFIX */
  uint64_t object_size; /* REQ_SUFFIX, REQ_HEAD */
} s3_req;

/* ---- s3_config.c ---- */

/* Parses url (and the environment) into *c; on error *c holds nothing. */
int s3_parse_url(const char *url, s3_config *c, ltx_error *err);
void s3_config_free(s3_config *c);

/* vasprintf into a new string; NULL when out of memory. */
char *s3_dup_printf(const char *fmt, ...) LTX_PRINTF(1, 2);
/* Appends z to dst (NULL: ""); returns the new string or NULL, freeing
** dst on failure. */
char *s3_append_str(char *dst, const char *z);
/* Appends z percent-encoded (RFC 3986, as SigV4 canonicalises), keeping '/'
** when keep_slash. Returns the new string or NULL; frees dst on failure. */
char *s3_append_encoded(char *dst, const char *z, int keep_slash);
/* The canonical query of n_pairs name/value pairs (a NULL value drops the
** pair); NULL when out of memory. */
char *s3_make_query(const char **pairs, int n_pairs);

/* ---- s3_http.c ---- */

/* curl_global_init, once per process; its result, every call. */
CURLcode s3_global_init(void);
/* A CURLSH sharing DNS and TLS sessions under p's share_mutex locks; NULL
** when out of memory. */
CURLSH *s3_share_new(s3_store *p);
/* Frees a session and its easy handles, of which there are `slots` (NULL:
** nothing). */
void s3_session_free(s3_session *s, int slots);

/* Copies server-supplied text into a message: printable ASCII only. */
void s3_sanitize(const char *z, char *out, size_t cap);
/* Content-MD5: base64 of the MD5 of data[0..n) into out (>= 25 bytes). */
int s3_content_md5(const uint8_t *data, size_t n, char *out);

/* Sets up r as a request of that kind for the object at the relative key
** (NULL: the bucket), with the canonical query (may be NULL). */
int s3_req_init(s3_store *p, s3_req *r, req_kind kind, const char *key, const char *query,
                ltx_error *err);
void s3_req_free(s3_req *r);
/* Adds one header line ("Name: value"); every header is signed. */
int s3_req_header(s3_req *r, const char *line, ltx_error *err);
/* The headers every request carries: payload hash and session token. Call
** after the body is set. */
int s3_req_common_headers(s3_store *p, s3_req *r, ltx_error *err);

/* Runs reqs[0..n_reqs) on one session with retries; each request's result is
** in its rc / err, the return value is LTX_OK unless the machinery failed. */
int s3_run_requests(s3_store *p, s3_req *reqs, size_t n_reqs, ltx_error *err);
/* Runs one request; its error becomes the call's. */
int s3_run_one(s3_store *p, s3_req *r, ltx_error *err);

#endif /* LTVFS_S3_INT_H */
