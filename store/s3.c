/*
** s3.c: the s3:// backend, a replica in an S3 bucket (AWS or any endpoint
** that speaks the S3 REST API), over libcurl with AWS SigV4.
**
** URL (Litestream's form, LTX.md section 2):
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
** Signing: CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3". libcurl 7.88 signs the
** path and query exactly as written and does not hash a streamed body, so
** this file (1) sends x-amz-content-sha256 itself (UNSIGNED-PAYLOAD, or the
** body's SHA-256 with sign-payload), (2) writes the query already canonical:
** sorted by name, RFC 3986 encoded, "name=" for empty values, and (3)
** encodes the key path as S3 canonicalises it (each segment RFC 3986
** encoded, '/' kept), with CURLOPT_PATH_AS_IS so curl does not rewrite it.
** Every header set here is signed by curl, so none may be a removal
** ("Expect:" would be signed but not sent).
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
** Threads: a store is safe to use from many threads at once. Each call
** takes a session (a curl multi handle, its easy handles and the warm
** connections in its cache, at most `concurrency` of them) from the store's
** pool, or makes one, and puts it back afterwards; one thread therefore
** reuses the same connections call after call, and N threads calling at
** once hold N sessions. DNS and TLS sessions are shared by all sessions
** through a CURLSH with mutexes; connections are not, because libcurl does
** not support one connection cache used by concurrent threads.
** curl_global_init runs once per process (pthread_once) and is never undone;
** CURLOPT_NOSIGNAL keeps libcurl away from signals (no alarm() timeouts).
**
** Not done: IMDS/SSO/profile credentials, multipart upload (LTX files are
** small enough for one PUT of up to 5 GiB), HTTP/2, Retry-After.
*/
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "store/s3_xml.h"
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
  char *zBucket;
  char *zPath;     /* PATH without leading/trailing '/', maybe "" */
  char *zBase;     /* URL of the bucket: ".../BUCKET" or "https://BUCKET.host" */
  char *zEndpoint; /* for messages: "http://127.0.0.1:9000" or the AWS host */
  char *zDisplay;  /* "s3://BUCKET/PATH" for messages */
  char *zRegion;
  char *zSigV4; /* "aws:amz:REGION:s3" */
  int bVirtual; /* bucket in the host name */
  int bSkipVerify;
  int bSignPayload;
  int nConcurrency;
  long msTimeout, msConnect, msStall;
  int nMaxAttempts;
  long msRetryBase, msRetryMax;
} s3_config;

/* One thread's share of the store: a multi handle (whose connection cache
** keeps the connections alive between calls) and its easy handles. */
typedef struct s3_session {
  CURLM *pMulti;
  CURL **apEasy; /* nConcurrency slots, created on first use */
  int *aBusy;
  uint64_t rng; /* xorshift state for backoff jitter */
  struct s3_session *pNext;
} s3_session;

typedef struct s3_store {
  s3_config cfg;
  char *zAccessKey, *zSecretKey, *zSessionToken; /* NULL: unsigned requests */
  char *zCaInfo;
  CURLSH *pShare;
  pthread_mutex_t aShareMutex[CURL_LOCK_DATA_LAST];
  pthread_mutex_t mutex; /* guards pFree */
  s3_session *pFree;
  atomic_int bInterrupted; /* store_interrupt: give up, fail fast */
} s3_store;

typedef enum req_kind { REQ_RANGE, REQ_SUFFIX, REQ_HEAD, REQ_PUT, REQ_LIST, REQ_DELETE } req_kind;
typedef enum req_state { REQ_QUEUED, REQ_RUNNING, REQ_WAITING, REQ_DONE } req_state;

/* One logical request: retried as a whole until it succeeds or fails for
** good. The response fields are reset at each attempt (and at each status
** line, which skips a "100 Continue"). */
typedef struct s3_req {
  req_kind eKind;
  char *zUrl;
  char *zWhat; /* "s3://BUCKET/PATH/KEY" for messages */
  struct curl_slist *pHeaders;
  const uint8_t *aBody; /* POST body (DeleteObjects) */
  size_t nBody;
  const store_body *pPut; /* PUT body: memory or a file */
  uint8_t *aOut; /* REQ_RANGE/REQ_SUFFIX destination */
  size_t nOut;
  uint64_t iOff;    /* REQ_RANGE offset */
  int bConditional; /* PUT with If-* */

  req_state eState;
  int nAttempt;
  int64_t msNotBefore;
  int iSlot; /* easy handle slot while running */
  struct s3_req *pNextWait;
  uint64_t iUpload;

  long status;
  char zContentRange[96];
  int64_t nContentLength;
  char zEtag[STORE_ETAG_CAP];
  char zErrCode[64];      /* x-amz-error-code (errors without body) */
  char zBucketRegion[64]; /* x-amz-bucket-region (301) */
  size_t nGot;            /* bytes in aOut */
  char *aBuf;             /* list/delete body, or an error body */
  size_t nBuf, nBufAlloc;
  int bOverflow;
  CURLcode eCurl;
  char zCurlErr[CURL_ERROR_SIZE];

  /* results */
  int rc;
  ltx_error err;
  size_t nRead;     /* REQ_SUFFIX */
  uint64_t nObject; /* REQ_SUFFIX, REQ_HEAD */
} s3_req;

static const store_ops s3_ops;

/* ---- process-wide setup ---- */

static pthread_once_t s3GlobalOnce = PTHREAD_ONCE_INIT;
static CURLcode s3GlobalRc = CURLE_OK;

static void global_init(void) { s3GlobalRc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static s3_store *s3_of(store *st) { return (s3_store *)st->impl; }

/* ---- encoding helpers ---- */

/* ASCII only: <ctype.h> follows the host application's locale, and a
** signature must not. */
static int is_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_unreserved(unsigned char c) {
  return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Appends z percent-encoded (RFC 3986, as SigV4 canonicalises), keeping '/'
** when bKeepSlash. Returns the new string or NULL; frees zDst on failure. */
static char *append_encoded(char *zDst, const char *z, int bKeepSlash) {
  size_t nDst = zDst ? strlen(zDst) : 0, nSrc = strlen(z), j = nDst;
  char *zOut;
  if (nSrc > (SIZE_MAX - nDst - 1) / 3) {
    free(zDst);
    return NULL;
  }
  zOut = realloc(zDst, nDst + nSrc * 3 + 1);
  if (zOut == NULL) {
    free(zDst);
    return NULL;
  }
  for (size_t i = 0; i < nSrc; i++) {
    unsigned char c = (unsigned char)z[i];
    if (is_unreserved(c) || (bKeepSlash && c == '/')) {
      zOut[j++] = (char)c;
    } else {
      static const char aHex[] = "0123456789ABCDEF";
      zOut[j++] = '%';
      zOut[j++] = aHex[c >> 4];
      zOut[j++] = aHex[c & 15];
    }
  }
  zOut[j] = '\0';
  return zOut;
}

static char *append_str(char *zDst, const char *z) {
  size_t nDst = zDst ? strlen(zDst) : 0, n = strlen(z);
  char *zOut = realloc(zDst, nDst + n + 1);
  if (zOut == NULL) {
    free(zDst);
    return NULL;
  }
  memcpy(zOut + nDst, z, n + 1);
  return zOut;
}

static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes %XX (and '+' as a space when bPlus, as Go's url.Query does) of
** z[0..n) into a new string; NULL on a bad escape, %00 or no memory. */
static char *percent_decode(const char *z, size_t n, int bPlus) {
  char *zOut = malloc(n + 1);
  size_t j = 0;
  if (zOut == NULL) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (z[i] == '%') {
      int hi = i + 1 < n ? hex_value((unsigned char)z[i + 1]) : -1;
      int lo = i + 2 < n ? hex_value((unsigned char)z[i + 2]) : -1;
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
        free(zOut);
        return NULL;
      }
      zOut[j++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      zOut[j++] = (bPlus && z[i] == '+') ? ' ' : z[i];
    }
  }
  zOut[j] = '\0';
  return zOut;
}

/* Copies server-supplied text into a message: printable ASCII only, so a
** hostile body cannot inject control characters into logs. */
static void sanitize(const char *z, char *zOut, size_t nCap) {
  size_t j = 0;
  for (; z != NULL && *z && j + 1 < nCap; z++) {
    unsigned char c = (unsigned char)*z;
    zOut[j++] = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
  }
  zOut[j] = '\0';
}

/* "name=value&..." sorted by name, RFC 3986 encoded: the canonical query
** that SigV4 signs (curl 7.88 signs the query exactly as written). azPair
** holds nPair name/value pairs; a NULL value drops the pair. */
static char *make_query(const char **azPair, int nPair) {
  char *zOut = append_str(NULL, "");
  int aOrder[8];
  int n = 0;
  for (int i = 0; i < nPair && n < 8; i++) {
    if (azPair[2 * i + 1] != NULL) aOrder[n++] = i;
  }
  /* insertion sort: at most a handful of names */
  for (int i = 1; i < n; i++) {
    for (int j = i; j > 0 && strcmp(azPair[2 * aOrder[j - 1]], azPair[2 * aOrder[j]]) > 0; j--) {
      int t = aOrder[j];
      aOrder[j] = aOrder[j - 1];
      aOrder[j - 1] = t;
    }
  }
  for (int i = 0; i < n && zOut != NULL; i++) {
    if (i > 0) zOut = append_str(zOut, "&");
    if (zOut != NULL) zOut = append_encoded(zOut, azPair[2 * aOrder[i]], 0);
    if (zOut != NULL) zOut = append_str(zOut, "=");
    if (zOut != NULL) zOut = append_encoded(zOut, azPair[2 * aOrder[i] + 1], 0);
  }
  return zOut;
}

static void hex_encode(const uint8_t *a, size_t n, char *zOut) {
  static const char aHex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    zOut[2 * i] = aHex[a[i] >> 4];
    zOut[2 * i + 1] = aHex[a[i] & 15];
  }
  zOut[2 * n] = '\0';
}

/* x-amz-content-sha256 value: the body's SHA-256 in hex (of "" when no
** body) with sign-payload, else UNSIGNED-PAYLOAD. A file body is hashed in
** 1 MiB reads (one pass before the upload: bounded memory). */
static int payload_hash(const s3_store *p, const s3_req *r, char *zOut) {
  uint8_t aDigest[EVP_MAX_MD_SIZE], *aBuf = NULL;
  unsigned int nDigest = 0;
  EVP_MD_CTX *pCtx = NULL;
  int rc = -1;
  if (!p->cfg.bSignPayload) {
    strcpy(zOut, "UNSIGNED-PAYLOAD");
    return 0;
  }
  pCtx = EVP_MD_CTX_new();
  if (pCtx == NULL || EVP_DigestInit_ex(pCtx, EVP_sha256(), NULL) != 1) goto out;
  if (r->pPut != NULL && r->pPut->fd >= 0) {
    aBuf = malloc(1u << 20);
    if (aBuf == NULL) goto out;
    for (uint64_t iOff = 0; iOff < r->pPut->size; iOff += 1u << 20) {
      size_t n = r->pPut->size - iOff < (1u << 20) ? (size_t)(r->pPut->size - iOff) : (1u << 20);
      if (store_body_read(r->pPut, iOff, aBuf, n, NULL) != LTX_OK) goto out;
      if (EVP_DigestUpdate(pCtx, aBuf, n) != 1) goto out;
    }
  } else if (r->pPut != NULL) {
    if (EVP_DigestUpdate(pCtx, r->pPut->data, (size_t)r->pPut->size) != 1) goto out;
  } else if (r->nBody > 0 && EVP_DigestUpdate(pCtx, r->aBody, r->nBody) != 1) {
    goto out;
  }
  if (EVP_DigestFinal_ex(pCtx, aDigest, &nDigest) != 1) goto out;
  hex_encode(aDigest, nDigest, zOut);
  rc = 0;
out:
  EVP_MD_CTX_free(pCtx);
  free(aBuf);
  return rc;
}

/* Content-MD5: base64 of the body's MD5 (DeleteObjects requires it). */
static int content_md5(const uint8_t *a, size_t n, char *zOut) {
  uint8_t aDigest[EVP_MAX_MD_SIZE];
  unsigned int nDigest = 0;
  if (EVP_Digest(a, n, aDigest, &nDigest, EVP_md5(), NULL) != 1) return -1;
  EVP_EncodeBlock((unsigned char *)zOut, aDigest, (int)nDigest);
  return 0;
}

/* ---- URL and configuration ---- */

/* Reads a configuration number: the URL value when given, else the
** environment variable, else the default; it must lie in [lo, hi]. */
static int config_long(const char *url, const char *zName, const char *zUrlVal, const char *zEnv,
                       long def, long lo, long hi, long *pOut, ltx_error *err) {
  const char *z = zUrlVal;
  char *zEnd = NULL;
  long v;
  if (z == NULL) z = getenv(zEnv);
  if (z == NULL || *z == '\0') {
    *pOut = def;
    return LTX_OK;
  }
  errno = 0;
  v = strtol(z, &zEnd, 10);
  if (errno != 0 || *zEnd != '\0' || zEnd == z || v < lo || v > hi) {
    if (zUrlVal != NULL) {
      return ltx_error_set(err, STORE_ERR_URL,
                           "replica URL '%s': %s '%s' must be an integer in %ld..%ld", url, zName,
                           z, lo, hi);
    }
    return ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': %s='%s' (for %s) must be an integer in %ld..%ld", url,
                         zEnv, z, zName, lo, hi);
  }
  *pOut = v;
  return LTX_OK;
}

/* Go's strconv.ParseBool, which Litestream uses for its URL flags. */
static int parse_bool(const char *z, int *pOut) {
  static const char *azTrue[] = {"1", "t", "T", "true", "TRUE", "True"};
  static const char *azFalse[] = {"0", "f", "F", "false", "FALSE", "False"};
  for (size_t i = 0; i < 6; i++) {
    if (strcmp(z, azTrue[i]) == 0) {
      *pOut = 1;
      return 0;
    }
    if (strcmp(z, azFalse[i]) == 0) {
      *pOut = 0;
      return 0;
    }
  }
  return -1;
}

/* A bucket name usable as a DNS label for virtual-host addressing. */
static int bucket_is_dns(const char *z) {
  size_t n = strlen(z);
  if (n < 3 || n > 63) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = z[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
  }
  return z[0] != '-' && z[n - 1] != '-';
}

enum {
  P_ENDPOINT,
  P_REGION,
  P_PATH_STYLE,
  P_SKIP_VERIFY,
  P_SIGN_PAYLOAD,
  P_CONCURRENCY,
  P_TIMEOUT,
  P_CONNECT_TIMEOUT,
  P_STALL_TIMEOUT,
  P_MAX_ATTEMPTS,
  P_RETRY_BASE,
  P_RETRY_MAX,
  P_COUNT
};

static const struct {
  const char *zName;
  const char *zAlias;
} aParam[P_COUNT] = {
    [P_ENDPOINT] = {"endpoint", NULL},
    [P_REGION] = {"region", NULL},
    [P_PATH_STYLE] = {"force-path-style", "forcePathStyle"},
    [P_SKIP_VERIFY] = {"skip-verify", "skipVerify"},
    [P_SIGN_PAYLOAD] = {"sign-payload", "signPayload"},
    [P_CONCURRENCY] = {"concurrency", NULL},
    [P_TIMEOUT] = {"timeout-ms", NULL},
    [P_CONNECT_TIMEOUT] = {"connect-timeout-ms", NULL},
    [P_STALL_TIMEOUT] = {"stall-timeout-ms", NULL},
    [P_MAX_ATTEMPTS] = {"max-attempts", NULL},
    [P_RETRY_BASE] = {"retry-base-ms", NULL},
    [P_RETRY_MAX] = {"retry-max-ms", NULL},
};

/* Splits the query into aParam slots (decoded values, owned by azVal). */
static int parse_query(const char *url, const char *zQuery, char **azVal, ltx_error *err) {
  const char *z = zQuery;
  int rc = LTX_OK;
  char *zName = NULL, *zValue = NULL;

  while (*z != '\0') {
    size_t n = strcspn(z, "&");
    const char *zEq = memchr(z, '=', n);
    size_t nName = zEq ? (size_t)(zEq - z) : n;
    int iParam = -1;

    if (n == 0) {
      z++;
      continue;
    }
    zName = percent_decode(z, nName, 1);
    zValue = zEq ? percent_decode(zEq + 1, n - nName - 1, 1) : strdup("");
    if (zName == NULL || zValue == NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': bad percent escape in query parameter '%.*s'", url,
                         (int)nName, z);
      goto out;
    }
    for (int i = 0; i < P_COUNT; i++) {
      if (strcmp(zName, aParam[i].zName) == 0 ||
          (aParam[i].zAlias && strcmp(zName, aParam[i].zAlias) == 0)) {
        iParam = i;
      }
    }
    if (iParam < 0) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': unknown parameter '%s' (known: endpoint, region, "
                         "force-path-style, skip-verify, sign-payload, concurrency, timeout-ms, "
                         "connect-timeout-ms, stall-timeout-ms, max-attempts, retry-base-ms, "
                         "retry-max-ms)",
                         url, zName);
      goto out;
    }
    if (azVal[iParam] != NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': parameter '%s' given twice", url,
                         aParam[iParam].zName);
      goto out;
    }
    azVal[iParam] = zValue;
    zValue = NULL;
    free(zName);
    zName = NULL;
    z += n;
    if (*z == '&') z++;
  }
out:
  free(zName);
  free(zValue);
  return rc;
}

/* Checks an endpoint and splits it: "http[s]://HOST[:PORT][/path]" (or
** "HOST[:PORT]", meaning https) into scheme, authority and path. */
static int parse_endpoint(const char *url, const char *zEp, char **pzScheme, char **pzHost,
                          char **pzPath, ltx_error *err) {
  const char *zRest = zEp, *zScheme = "https";
  size_t nHost;
  int rc = LTX_OK;

  if (strncasecmp(zEp, "http://", 7) == 0) {
    zScheme = "http";
    zRest = zEp + 7;
  } else if (strncasecmp(zEp, "https://", 8) == 0) {
    zRest = zEp + 8;
  } else if (strstr(zEp, "://") != NULL) {
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': endpoint '%s' must be http:// or https://", url, zEp);
    goto out;
  }
  nHost = strcspn(zRest, "/?#");
  if (nHost == 0) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': endpoint '%s' has no host", url, zEp);
    goto out;
  }
  if (memchr(zRest, '@', nHost) != NULL) {
    /* userinfo would end up in every message; credentials belong in the
    ** environment */
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': endpoint must not contain credentials; use "
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                       url);
    goto out;
  }
  for (size_t i = 0; i < nHost; i++) {
    unsigned char c = (unsigned char)zRest[i];
    if (!(is_alnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_')) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': endpoint '%s' has an invalid host character '%c'", url,
                         zEp, c);
      goto out;
    }
  }
  if (zRest[nHost] == '?' || zRest[nHost] == '#') {
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': endpoint '%s' must not have a query or fragment", url,
                       zEp);
    goto out;
  }
  *pzScheme = strdup(zScheme);
  *pzHost = strndup(zRest, nHost);
  *pzPath = strdup(zRest + nHost);
  if (*pzScheme == NULL || *pzHost == NULL || *pzPath == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing replica URL");
    goto out;
  }
  /* "/" or "/x/" -> "" or "/x" */
  for (size_t n = strlen(*pzPath); n > 0 && (*pzPath)[n - 1] == '/'; n--) (*pzPath)[n - 1] = '\0';
out:
  return rc;
}

static void config_free(s3_config *c) {
  free(c->zBucket);
  free(c->zPath);
  free(c->zBase);
  free(c->zEndpoint);
  free(c->zDisplay);
  free(c->zRegion);
  free(c->zSigV4);
  memset(c, 0, sizeof(*c));
}

static char *dup_printf(const char *zFmt, ...) LTX_PRINTF(1, 2);
static char *dup_printf(const char *zFmt, ...) {
  va_list ap;
  char *z = NULL;
  va_start(ap, zFmt);
  if (vasprintf(&z, zFmt, ap) < 0) z = NULL;
  va_end(ap);
  return z;
}

static int parse_url(const char *url, s3_config *c, ltx_error *err) {
  char *azVal[P_COUNT] = {0};
  char *zScheme = NULL, *zHost = NULL, *zEpPath = NULL, *zRawPath = NULL;
  const char *zRest, *zQuery;
  size_t nBucket, nPathPart;
  int bPathStyle = -1;
  long v;
  int rc = LTX_OK;

  memset(c, 0, sizeof(*c));
  if (url == NULL || strncasecmp(url, "s3://", 5) != 0) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': not an s3:// URL",
                       url ? url : "(null)");
    goto out;
  }
  zRest = url + 5;
  if (strchr(zRest, '#') != NULL) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': a fragment ('#...') is not allowed",
                       url);
    goto out;
  }
  zQuery = strchr(zRest, '?');
  nPathPart = zQuery ? (size_t)(zQuery - zRest) : strlen(zRest);
  nBucket = strcspn(zRest, "/?");
  if (nBucket == 0) {
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': no bucket name (want s3://BUCKET/PATH)", url);
    goto out;
  }
  c->zBucket = strndup(zRest, nBucket);
  if (c->zBucket == NULL) goto nomem;
  for (const char *z = c->zBucket; *z; z++) {
    unsigned char ch = (unsigned char)*z;
    if (!(is_alnum(ch) || ch == '.' || ch == '-' || ch == '_')) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': bucket name '%s' has an invalid character '%c'", url,
                         c->zBucket, ch);
      goto out;
    }
  }
  if (nBucket > 255) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': bucket name too long", url);
    goto out;
  }
  /* PATH: decoded, without leading and trailing slashes. */
  {
    const char *zP = zRest + nBucket;
    size_t nP = nPathPart - nBucket;
    zRawPath = percent_decode(zP, nP, 0);
    if (zRawPath == NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': bad percent escape in the path",
                         url);
      goto out;
    }
    char *zStart = zRawPath;
    while (*zStart == '/') zStart++;
    size_t n = strlen(zStart);
    while (n > 0 && zStart[n - 1] == '/') n--;
    c->zPath = strndup(zStart, n);
    if (c->zPath == NULL) goto nomem;
    if (strstr(c->zPath, "//") != NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': empty component in path '%s'", url,
                         c->zPath);
      goto out;
    }
    if (strlen(c->zPath) >= S3_MAX_KEY / 2) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': path too long", url);
      goto out;
    }
  }
  if (zQuery != NULL) {
    rc = parse_query(url, zQuery + 1, azVal, err);
    if (rc != LTX_OK) goto out;
  }

  /* flags */
  {
    static const int aFlag[] = {P_PATH_STYLE, P_SKIP_VERIFY, P_SIGN_PAYLOAD};
    for (size_t i = 0; i < 3; i++) {
      int b = 0;
      const char *zV = azVal[aFlag[i]];
      if (zV == NULL) continue;
      /* "?skip-verify" alone means true, as a flag */
      if (*zV == '\0') {
        b = 1;
      } else if (parse_bool(zV, &b) != 0) {
        rc = ltx_error_set(err, STORE_ERR_URL,
                           "replica URL '%s': %s='%s' is not a boolean (true/false)", url,
                           aParam[aFlag[i]].zName, zV);
        goto out;
      }
      if (aFlag[i] == P_PATH_STYLE) bPathStyle = b;
      if (aFlag[i] == P_SKIP_VERIFY) c->bSkipVerify = b;
      if (aFlag[i] == P_SIGN_PAYLOAD) c->bSignPayload = b;
    }
  }

  /* region */
  {
    const char *zR = azVal[P_REGION];
    if (zR == NULL || *zR == '\0') zR = getenv("AWS_REGION");
    if (zR == NULL || *zR == '\0') zR = "us-east-1";
    for (const char *z = zR; *z; z++) {
      if (!(is_alnum((unsigned char)*z) || *z == '-' || *z == '_')) {
        rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': invalid region '%s'", url, zR);
        goto out;
      }
    }
    c->zRegion = strdup(zR);
    c->zSigV4 = dup_printf("aws:amz:%s:s3", zR);
    if (c->zRegion == NULL || c->zSigV4 == NULL) goto nomem;
  }

  /* addressing */
  if (azVal[P_ENDPOINT] != NULL && azVal[P_ENDPOINT][0] != '\0') {
    rc = parse_endpoint(url, azVal[P_ENDPOINT], &zScheme, &zHost, &zEpPath, err);
    if (rc != LTX_OK) goto out;
    if (bPathStyle < 0) bPathStyle = 1; /* custom endpoints imply path style */
    c->zEndpoint = dup_printf("%s://%s%s", zScheme, zHost, zEpPath);
    if (bPathStyle) {
      c->zBase = dup_printf("%s://%s%s/%s", zScheme, zHost, zEpPath, c->zBucket);
    } else {
      c->bVirtual = 1;
      c->zBase = dup_printf("%s://%s.%s%s", zScheme, c->zBucket, zHost, zEpPath);
    }
  } else {
    if (bPathStyle < 0) bPathStyle = !bucket_is_dns(c->zBucket);
    if (bPathStyle) {
      c->zEndpoint = dup_printf("https://s3.%s.amazonaws.com", c->zRegion);
      c->zBase = dup_printf("https://s3.%s.amazonaws.com/%s", c->zRegion, c->zBucket);
    } else {
      c->bVirtual = 1;
      c->zEndpoint = dup_printf("https://%s.s3.%s.amazonaws.com", c->zBucket, c->zRegion);
      c->zBase = strdup(c->zEndpoint);
    }
  }
  c->zDisplay = dup_printf("s3://%s%s%s", c->zBucket, c->zPath[0] ? "/" : "", c->zPath);
  if (c->zEndpoint == NULL || c->zBase == NULL || c->zDisplay == NULL) goto nomem;

  /* tuning */
  rc = config_long(url, "concurrency", azVal[P_CONCURRENCY], "LTVFS_S3_CONCURRENCY",
                   S3_DEFAULT_CONCURRENCY, 1, S3_MAX_CONCURRENCY, &v, err);
  if (rc != LTX_OK) goto out;
  c->nConcurrency = (int)v;
  rc = config_long(url, "timeout-ms", azVal[P_TIMEOUT], "LTVFS_S3_TIMEOUT_MS",
                   S3_DEFAULT_TIMEOUT_MS, 1, 24L * 3600 * 1000, &c->msTimeout, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "connect-timeout-ms", azVal[P_CONNECT_TIMEOUT],
                   "LTVFS_S3_CONNECT_TIMEOUT_MS", S3_DEFAULT_CONNECT_TIMEOUT_MS, 1, 3600L * 1000,
                   &c->msConnect, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "stall-timeout-ms", azVal[P_STALL_TIMEOUT], "LTVFS_S3_STALL_TIMEOUT_MS",
                   S3_DEFAULT_STALL_TIMEOUT_MS, 1, 3600L * 1000, &c->msStall, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "max-attempts", azVal[P_MAX_ATTEMPTS], "LTVFS_S3_MAX_ATTEMPTS",
                   S3_DEFAULT_MAX_ATTEMPTS, 1, 100, &v, err);
  if (rc != LTX_OK) goto out;
  c->nMaxAttempts = (int)v;
  rc = config_long(url, "retry-base-ms", azVal[P_RETRY_BASE], "LTVFS_S3_RETRY_BASE_MS",
                   S3_DEFAULT_RETRY_BASE_MS, 0, 600L * 1000, &c->msRetryBase, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "retry-max-ms", azVal[P_RETRY_MAX], "LTVFS_S3_RETRY_MAX_MS",
                   S3_DEFAULT_RETRY_MAX_MS, 0, 3600L * 1000, &c->msRetryMax, err);
  if (rc != LTX_OK) goto out;
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing replica URL");
out:
  for (int i = 0; i < P_COUNT; i++) free(azVal[i]);
  free(zScheme);
  free(zHost);
  free(zEpPath);
  free(zRawPath);
  if (rc != LTX_OK) config_free(c);
  return rc;
}

/* ---- sessions ---- */

static void share_lock(CURL *pEasy, curl_lock_data eData, curl_lock_access eAccess, void *pArg) {
  s3_store *p = pArg;
  (void)pEasy;
  (void)eAccess;
  pthread_mutex_lock(&p->aShareMutex[eData]);
}

static void share_unlock(CURL *pEasy, curl_lock_data eData, void *pArg) {
  s3_store *p = pArg;
  (void)pEasy;
  pthread_mutex_unlock(&p->aShareMutex[eData]);
}

static void session_free(s3_session *s, int nSlot) {
  if (s == NULL) return;
  for (int i = 0; i < nSlot && s->apEasy != NULL; i++) {
    if (s->apEasy[i] != NULL) curl_easy_cleanup(s->apEasy[i]);
  }
  if (s->pMulti != NULL) curl_multi_cleanup(s->pMulti);
  free(s->apEasy);
  free(s->aBusy);
  free(s);
}

static int session_get(s3_store *p, s3_session **pOut, ltx_error *err) {
  s3_session *s;
  int rc = LTX_OK;

  pthread_mutex_lock(&p->mutex);
  s = p->pFree;
  if (s != NULL) p->pFree = s->pNext;
  pthread_mutex_unlock(&p->mutex);
  if (s != NULL) goto out;

  s = calloc(1, sizeof(*s));
  if (s == NULL) goto nomem;
  s->apEasy = calloc((size_t)p->cfg.nConcurrency, sizeof(*s->apEasy));
  s->aBusy = calloc((size_t)p->cfg.nConcurrency, sizeof(*s->aBusy));
  s->pMulti = curl_multi_init();
  if (s->apEasy == NULL || s->aBusy == NULL || s->pMulti == NULL) goto nomem;
  /* at most `concurrency` connections, all of them kept for reuse */
  curl_multi_setopt(s->pMulti, CURLMOPT_MAX_HOST_CONNECTIONS, (long)p->cfg.nConcurrency);
  curl_multi_setopt(s->pMulti, CURLMOPT_MAXCONNECTS, (long)p->cfg.nConcurrency);
  s->rng = (uint64_t)mono_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)s;
  if (s->rng == 0) s->rng = 1;
  goto out;
nomem:
  session_free(s, p->cfg.nConcurrency);
  s = NULL;
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory for an HTTP session", p->cfg.zDisplay);
out:
  *pOut = s;
  return rc;
}

static void session_put(s3_store *p, s3_session *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&p->mutex);
  s->pNext = p->pFree;
  p->pFree = s;
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

static void req_free(s3_req *r) {
  free(r->zUrl);
  free(r->zWhat);
  curl_slist_free_all(r->pHeaders);
  free(r->aBuf);
  memset(r, 0, sizeof(*r));
}

/* URL and display name of the object at relative key (NULL: the bucket). */
static int req_init(s3_store *p, s3_req *r, req_kind eKind, const char *zKey, const char *zQuery,
                    ltx_error *err) {
  int rc = LTX_OK;
  memset(r, 0, sizeof(*r));
  r->eKind = eKind;
  r->nContentLength = -1;
  if (zKey != NULL) {
    if (zKey[0] == '\0' || zKey[0] == '/' || strlen(zKey) + strlen(p->cfg.zPath) + 1 > S3_MAX_KEY) {
      rc =
          ltx_error_set(err, LTX_ERR_ARG, "%s: invalid object key '%.200s'", p->cfg.zDisplay, zKey);
      goto out;
    }
    r->zUrl = append_str(NULL, p->cfg.zBase);
    if (r->zUrl) r->zUrl = append_str(r->zUrl, "/");
    if (r->zUrl && p->cfg.zPath[0]) {
      r->zUrl = append_encoded(r->zUrl, p->cfg.zPath, 1);
      if (r->zUrl) r->zUrl = append_str(r->zUrl, "/");
    }
    if (r->zUrl) r->zUrl = append_encoded(r->zUrl, zKey, 1);
    r->zWhat = dup_printf("%s/%s", p->cfg.zDisplay, zKey);
  } else {
    /* path style: ".../BUCKET?q" (no slash: S3 canonicalises "/BUCKET");
    ** virtual host: "https://BUCKET.host/?q" */
    r->zUrl = append_str(NULL, p->cfg.zBase);
    if (r->zUrl && p->cfg.bVirtual) r->zUrl = append_str(r->zUrl, "/");
    r->zWhat = strdup(p->cfg.zDisplay);
  }
  if (r->zUrl && zQuery) {
    r->zUrl = append_str(r->zUrl, "?");
    if (r->zUrl) r->zUrl = append_str(r->zUrl, zQuery);
  }
  if (r->zUrl == NULL || r->zWhat == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory building a request", p->cfg.zDisplay);
  }
out:
  return rc;
}

static int req_header(s3_req *r, const char *zLine, ltx_error *err) {
  struct curl_slist *pNew = curl_slist_append(r->pHeaders, zLine);
  if (pNew == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory", r->zWhat);
  r->pHeaders = pNew;
  return LTX_OK;
}

/* The headers every request carries: payload hash and session token. */
static int req_common_headers(s3_store *p, s3_req *r, ltx_error *err) {
  char zLine[128], zHash[80];
  int rc;
  if (payload_hash(p, r, zHash) != 0) {
    return ltx_error_set(err, STORE_ERR_IO, "%s: SHA-256 failed", r->zWhat);
  }
  snprintf(zLine, sizeof(zLine), "x-amz-content-sha256: %s", zHash);
  rc = req_header(r, zLine, err);
  if (rc == LTX_OK && p->zSessionToken != NULL) {
    char *zTok = dup_printf("x-amz-security-token: %s", p->zSessionToken);
    if (zTok == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory", r->zWhat);
    rc = req_header(r, zTok, err);
    free(zTok);
  }
  return rc;
}

static int buf_append(s3_req *r, const char *z, size_t n, size_t nMax) {
  if (r->nBuf + n > nMax) return -1;
  if (r->nBuf + n + 1 > r->nBufAlloc) {
    size_t nNew = r->nBufAlloc ? r->nBufAlloc : 4096;
    while (nNew < r->nBuf + n + 1) nNew *= 2;
    char *aNew = realloc(r->aBuf, nNew);
    if (aNew == NULL) return -1;
    r->aBuf = aNew;
    r->nBufAlloc = nNew;
  }
  memcpy(r->aBuf + r->nBuf, z, n);
  r->nBuf += n;
  r->aBuf[r->nBuf] = '\0';
  return 0;
}

static int is_success(long status) { return status >= 200 && status < 300; }

static size_t on_body(char *z, size_t sz, size_t nmemb, void *pArg) {
  s3_req *r = pArg;
  size_t n = sz * nmemb;
  if (!is_success(r->status)) {
    /* an error body: keep the start, for Code and Message */
    size_t nKeep = r->nBuf < S3_MAX_ERROR_BODY ? S3_MAX_ERROR_BODY - r->nBuf : 0;
    if (nKeep > 0) buf_append(r, z, n < nKeep ? n : nKeep, S3_MAX_ERROR_BODY);
    return n;
  }
  if (r->eKind == REQ_RANGE || r->eKind == REQ_SUFFIX) {
    if (n > r->nOut - r->nGot) {
      /* more than the range asked: never write past the caller's buffer */
      r->bOverflow = 1;
      return 0;
    }
    memcpy(r->aOut + r->nGot, z, n);
    r->nGot += n;
    return n;
  }
  if (r->eKind == REQ_LIST || r->eKind == REQ_DELETE) {
    if (buf_append(r, z, n, r->eKind == REQ_LIST ? S3_MAX_LIST_BODY : S3_MAX_DELETE_BODY) != 0) {
      r->bOverflow = 1;
      return 0;
    }
  }
  return n;
}

/* Copies a header value (trimmed) into a fixed buffer. */
static void copy_value(const char *z, size_t n, char *zOut, size_t nCap) {
  while (n > 0 && (*z == ' ' || *z == '\t')) z++, n--;
  while (n > 0 && (z[n - 1] == '\r' || z[n - 1] == '\n' || z[n - 1] == ' ' || z[n - 1] == '\t'))
    n--;
  if (n >= nCap) n = nCap - 1;
  memcpy(zOut, z, n);
  zOut[n] = '\0';
}

static size_t on_header(char *z, size_t sz, size_t nmemb, void *pArg) {
  s3_req *r = pArg;
  size_t n = sz * nmemb;
  const char *zColon;
  static const struct {
    const char *zName;
    size_t iField;
    size_t nCap;
  } aField[] = {
      {"content-range", offsetof(s3_req, zContentRange), sizeof(((s3_req *)0)->zContentRange)},
      {"etag", offsetof(s3_req, zEtag), sizeof(((s3_req *)0)->zEtag)},
      {"x-amz-error-code", offsetof(s3_req, zErrCode), sizeof(((s3_req *)0)->zErrCode)},
      {"x-amz-bucket-region", offsetof(s3_req, zBucketRegion),
       sizeof(((s3_req *)0)->zBucketRegion)},
  };

  if (n >= 5 && memcmp(z, "HTTP/", 5) == 0) {
    /* a new response (a 100 Continue comes before the real one) */
    const char *zSp = memchr(z, ' ', n);
    r->status = zSp ? strtol(zSp + 1, NULL, 10) : 0;
    r->zContentRange[0] = r->zEtag[0] = r->zErrCode[0] = r->zBucketRegion[0] = '\0';
    r->nContentLength = -1;
    r->nBuf = 0;
    return n;
  }
  zColon = memchr(z, ':', n);
  if (zColon == NULL) return n;
  size_t nName = (size_t)(zColon - z);
  const char *zVal = zColon + 1;
  size_t nVal = n - nName - 1;
  if (nName == 14 && strncasecmp(z, "content-length", 14) == 0) {
    char zNum[32];
    char *zEnd;
    copy_value(zVal, nVal, zNum, sizeof(zNum));
    errno = 0;
    long long v = strtoll(zNum, &zEnd, 10);
    r->nContentLength = (errno == 0 && *zEnd == '\0' && zEnd != zNum && v >= 0) ? v : -1;
    return n;
  }
  for (size_t i = 0; i < sizeof(aField) / sizeof(aField[0]); i++) {
    if (strlen(aField[i].zName) == nName && strncasecmp(z, aField[i].zName, nName) == 0) {
      copy_value(zVal, nVal, (char *)r + aField[i].iField, aField[i].nCap);
    }
  }
  return n;
}

static size_t on_upload(char *zBuf, size_t sz, size_t nmemb, void *pArg) {
  s3_req *r = pArg;
  uint64_t nLeft = r->pPut->size - r->iUpload;
  size_t n = sz * nmemb;
  if (n > nLeft) n = (size_t)nLeft;
  if (n == 0) return 0;
  if (store_body_read(r->pPut, r->iUpload, (uint8_t *)zBuf, n, NULL) != LTX_OK)
    return CURL_READFUNC_ABORT; /* the file went short under us: fail, never send less */
  r->iUpload += n;
  return n;
}

static int on_seek(void *pArg, curl_off_t iOff, int eOrigin) {
  s3_req *r = pArg;
  if (eOrigin != SEEK_SET || iOff < 0 || (uint64_t)iOff > r->pPut->size) return CURL_SEEKFUNC_FAIL;
  r->iUpload = (uint64_t)iOff;
  return CURL_SEEKFUNC_OK;
}

/* Sets up an easy handle for one attempt of r. */
static int attempt_setup(s3_store *p, s3_req *r, CURL *e, int64_t msLeft, ltx_error *err) {
  CURLcode c = CURLE_OK;
  long sStall = (p->cfg.msStall + 999) / 1000;

  r->status = 0;
  r->nGot = 0;
  r->nBuf = 0;
  r->iUpload = 0;
  r->bOverflow = 0;
  r->nContentLength = -1;
  r->zContentRange[0] = r->zEtag[0] = r->zErrCode[0] = r->zBucketRegion[0] = '\0';
  r->zCurlErr[0] = '\0';
  r->eCurl = CURLE_OK;

  /* every option, each attempt: a reset handle keeps its connections */
  curl_easy_reset(e);
#define SET(opt, val) \
  if (c == CURLE_OK) c = curl_easy_setopt(e, opt, val)
  SET(CURLOPT_URL, r->zUrl);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_PATH_AS_IS, 1L);
  SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
#if LIBCURL_VERSION_NUM >= 0x075500
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
#endif
  SET(CURLOPT_SHARE, p->pShare);
  SET(CURLOPT_PRIVATE, (void *)r);
  SET(CURLOPT_ERRORBUFFER, r->zCurlErr);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)r);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)r);
  SET(CURLOPT_CONNECTTIMEOUT_MS, p->cfg.msConnect);
  SET(CURLOPT_TIMEOUT_MS, (long)(msLeft > 0 ? msLeft : 1));
  SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
  SET(CURLOPT_LOW_SPEED_TIME, sStall > 0 ? sStall : 1L);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_HTTPHEADER, r->pHeaders);
  if (p->zAccessKey != NULL) {
    SET(CURLOPT_AWS_SIGV4, p->cfg.zSigV4);
    SET(CURLOPT_USERNAME, p->zAccessKey);
    SET(CURLOPT_PASSWORD, p->zSecretKey);
  }
  if (p->zCaInfo != NULL) SET(CURLOPT_CAINFO, p->zCaInfo);
  if (p->cfg.bSkipVerify) {
    SET(CURLOPT_SSL_VERIFYPEER, 0L);
    SET(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  switch (r->eKind) {
    case REQ_HEAD:
      SET(CURLOPT_NOBODY, 1L);
      break;
    case REQ_PUT:
      SET(CURLOPT_UPLOAD, 1L);
      SET(CURLOPT_READFUNCTION, on_upload);
      SET(CURLOPT_READDATA, (void *)r);
      SET(CURLOPT_SEEKFUNCTION, on_seek);
      SET(CURLOPT_SEEKDATA, (void *)r);
      SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->pPut->size);
      break;
    case REQ_DELETE:
      SET(CURLOPT_POST, 1L);
      SET(CURLOPT_POSTFIELDS, (const char *)r->aBody);
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->nBody);
      break;
    default:
      break;
  }
#undef SET
  if (c != CURLE_OK) {
    return ltx_error_set(err, STORE_ERR_NETWORK, "%s: libcurl setup failed: %s", r->zWhat,
                         curl_easy_strerror(c));
  }
  return LTX_OK;
}

/* Parses "bytes A-B/T" (T may be "*"); -1 when malformed. */
static int parse_content_range(const char *z, uint64_t *pA, uint64_t *pB, uint64_t *pT,
                               int *pbTotal) {
  unsigned long long a, b, t;
  int nEnd = 0;
  if (sscanf(z, "bytes %llu-%llu/%n", &a, &b, &nEnd) != 2 || nEnd == 0 || b < a) return -1;
  if (strcmp(z + nEnd, "*") == 0) {
    *pbTotal = 0;
    t = 0;
  } else {
    char *zEnd;
    if (z[nEnd] < '0' || z[nEnd] > '9') return -1;
    errno = 0;
    t = strtoull(z + nEnd, &zEnd, 10);
    if (errno != 0 || *zEnd != '\0' || b >= t) return -1;
    *pbTotal = 1;
  }
  *pA = a;
  *pB = b;
  *pT = t;
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
  char zCode[64] = "", zMsg[256] = "", zHint[192] = "";
  int code, bRetry;

  if (r->nBuf > 0) s3_xml_parse_error(r->aBuf, r->nBuf, &xe, &ignore);
  sanitize(xe.code ? xe.code : r->zErrCode, zCode, sizeof(zCode));
  sanitize(xe.message, zMsg, sizeof(zMsg));
  s3_xml_error_free(&xe);

  /* (1) throttling and server trouble; (2) S3's idle-connection timeout;
  ** (3) a concurrent conditional write on the same key: S3 asks to retry. */
  bRetry = r->status >= 500 || r->status == 429 || r->status == 408 ||
           (r->status == 400 && strcmp(zCode, "RequestTimeout") == 0) ||
           (r->status == 409 && r->bConditional);
  if (r->status == 401 || r->status == 403) {
    code = STORE_ERR_AUTH;
    if (p->zAccessKey == NULL) {
      snprintf(zHint, sizeof(zHint),
               "; no credentials set (AWS_ACCESS_KEY_ID, "
               "AWS_SECRET_ACCESS_KEY)");
    } else {
      snprintf(zHint, sizeof(zHint), "; check the credentials and region '%s'", p->cfg.zRegion);
    }
  } else if (r->status == 404) {
    code = STORE_ERR_NOT_FOUND;
  } else if (r->status == 412) {
    code = STORE_ERR_PRECONDITION;
  } else {
    code = STORE_ERR_HTTP;
    if ((r->status == 301 || r->status == 307 || r->status == 400) && r->zBucketRegion[0]) {
      char zReg[64];
      sanitize(r->zBucketRegion, zReg, sizeof(zReg));
      snprintf(zHint, sizeof(zHint), "; the bucket is in region '%s' (set region=%s)", zReg, zReg);
    }
  }
  ltx_error_set(&r->err, code, "%s: HTTP %ld%s%s%s%s%s%s", r->zWhat, r->status, zCode[0] ? " " : "",
                zCode, zMsg[0] ? " (" : "", zMsg, zMsg[0] ? ")" : "", zHint);
  return bRetry ? ATTEMPT_RETRY : ATTEMPT_FAIL;
}

/* Checks a 2xx response against what the request asked. */
static int check_success(s3_req *r) {
  uint64_t a = 0, b = 0, t = 0;
  int bTotal = 0;

  switch (r->eKind) {
    case REQ_RANGE:
      if (r->status == 206) {
        int bParsed = parse_content_range(r->zContentRange, &a, &b, &t, &bTotal) == 0;
        if (bParsed && a == r->iOff && b - a + 1 < r->nOut && bTotal && b + 1 == t) {
          /* (1) S3 clips a range at the object's end */
          ltx_error_set(&r->err, STORE_ERR_SHORT_READ,
                        "%s: object is %llu bytes, shorter than the range %llu+%zu asked", r->zWhat,
                        (unsigned long long)t, (unsigned long long)r->iOff, r->nOut);
          return ATTEMPT_FAIL;
        }
        if (!bParsed || a != r->iOff || b - a + 1 != r->nOut) {
          ltx_error_set(&r->err, STORE_ERR_HTTP,
                        "%s: HTTP 206 with Content-Range '%.60s' for bytes %llu-%llu", r->zWhat,
                        r->zContentRange, (unsigned long long)r->iOff,
                        (unsigned long long)(r->iOff + r->nOut - 1));
          return ATTEMPT_FAIL;
        }
      } else if (r->iOff != 0) {
        ltx_error_set(&r->err, STORE_ERR_HTTP, "%s: HTTP %ld to a range request (want 206)",
                      r->zWhat, r->status);
        return ATTEMPT_FAIL;
      } else if (r->nContentLength >= 0 && (uint64_t)r->nContentLength < r->nOut) {
        /* 200: the whole object, which is shorter than asked */
        ltx_error_set(&r->err, STORE_ERR_SHORT_READ,
                      "%s: object is %lld bytes, shorter than the range 0+%zu asked", r->zWhat,
                      (long long)r->nContentLength, r->nOut);
        return ATTEMPT_FAIL;
      }
      if (r->nGot != r->nOut) {
        /* the body ended early without curl noticing (no length framing) */
        ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: body truncated at %zu of %zu bytes",
                      r->zWhat, r->nGot, r->nOut);
        return ATTEMPT_RETRY;
      }
      return ATTEMPT_OK;
    case REQ_SUFFIX:
      if (r->status == 206) {
        if (parse_content_range(r->zContentRange, &a, &b, &t, &bTotal) != 0 || !bTotal ||
            b + 1 != t || b - a + 1 > r->nOut) {
          ltx_error_set(&r->err, STORE_ERR_HTTP,
                        "%s: HTTP 206 with Content-Range '%.60s' for the last %zu bytes", r->zWhat,
                        r->zContentRange, r->nOut);
          return ATTEMPT_FAIL;
        }
        r->nRead = (size_t)(b - a + 1);
        r->nObject = t;
      } else {
        /* 200: the whole object (fits, or on_body would have refused it) */
        r->nRead = r->nGot;
        r->nObject = r->nGot;
        if (r->nContentLength >= 0 && (uint64_t)r->nContentLength != r->nGot) {
          ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: body truncated at %zu of %lld bytes",
                        r->zWhat, r->nGot, (long long)r->nContentLength);
          return ATTEMPT_RETRY;
        }
      }
      if (r->nGot != r->nRead) {
        ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: body truncated at %zu of %zu bytes",
                      r->zWhat, r->nGot, r->nRead);
        return ATTEMPT_RETRY;
      }
      return ATTEMPT_OK;
    case REQ_HEAD:
      if (r->nContentLength < 0) {
        ltx_error_set(&r->err, STORE_ERR_HTTP, "%s: HEAD answer without Content-Length", r->zWhat);
        return ATTEMPT_FAIL;
      }
      r->nObject = (uint64_t)r->nContentLength;
      return ATTEMPT_OK;
    default:
      return ATTEMPT_OK;
  }
}

/* Decides what one finished attempt means. */
static int attempt_outcome(s3_store *p, s3_req *r) {
  if (r->eCurl == CURLE_WRITE_ERROR && r->bOverflow) {
    ltx_error_set(&r->err, STORE_ERR_HTTP,
                  r->eKind == REQ_RANGE || r->eKind == REQ_SUFFIX
                      ? "%s: HTTP %ld: server sent more bytes than the range asked"
                      : "%s: HTTP %ld: response body too large",
                  r->zWhat, r->status);
    return ATTEMPT_FAIL;
  }
  if (r->eCurl != CURLE_OK) {
    char zDetail[CURL_ERROR_SIZE];
    sanitize(r->zCurlErr[0] ? r->zCurlErr : curl_easy_strerror(r->eCurl), zDetail, sizeof(zDetail));
    ltx_error_set(&r->err, STORE_ERR_NETWORK, "%s: %s %s: %s", r->zWhat,
                  r->eCurl == CURLE_PARTIAL_FILE || r->eCurl == CURLE_RECV_ERROR ? "transfer from"
                                                                                 : "cannot reach",
                  p->cfg.zEndpoint, zDetail);
    return curl_is_transient(r->eCurl) ? ATTEMPT_RETRY : ATTEMPT_FAIL;
  }
  if (r->eKind == REQ_SUFFIX && r->status == 416) {
    /* S3 answers 416 to any range of an empty object */
    r->nRead = 0;
    r->nObject = 0;
    return ATTEMPT_OK;
  }
  if (r->eKind == REQ_RANGE && r->status == 416) {
    ltx_error_set(&r->err, STORE_ERR_SHORT_READ,
                  "%s: HTTP 416: the range %llu+%zu starts at or after the object's end", r->zWhat,
                  (unsigned long long)r->iOff, r->nOut);
    return ATTEMPT_FAIL;
  }
  if (!is_success(r->status)) return http_failure(p, r);
  return check_success(r);
}

/* Runs the requests aReq[0..nReq) on one session, at most `concurrency` at
** a time, retrying each one on its own, until all are done or the deadline
** passes. Each request's result is in aReq[i].rc / .err; the return value
** is LTX_OK unless the machinery itself failed. */
static int run_requests(s3_store *p, s3_req *aReq, size_t nReq, ltx_error *err) {
  s3_session *s = NULL;
  int64_t msStart = mono_ms(), msDeadline = msStart + p->cfg.msTimeout;
  size_t iNext = 0, nDone = 0;
  int nRunning = 0, nSlot = p->cfg.nConcurrency;
  s3_req *pWait = NULL; /* requests waiting for their retry time */
  int rc;

  rc = session_get(p, &s, err);
  if (rc != LTX_OK) goto out;
  for (size_t i = 0; i < nReq; i++) aReq[i].eState = REQ_QUEUED;

  while (nDone < nReq) {
    int64_t now = mono_ms();
    int msWait = INTERRUPT_POLL_MS; /* how soon an interrupt is seen */

    if (atomic_load(&p->bInterrupted)) {
      rc = ltx_error_set(err, STORE_ERR_NETWORK, "%s: interrupted: the store is closing",
                         aReq[0].zWhat);
      goto out;
    }

    /* (1) start what may start: due retries first, then new requests */
    while (nRunning < nSlot) {
      s3_req *r = NULL;
      s3_req **pp;
      for (pp = &pWait; *pp != NULL; pp = &(*pp)->pNextWait) {
        if ((*pp)->msNotBefore <= now) {
          r = *pp;
          *pp = r->pNextWait;
          break;
        }
      }
      if (r == NULL && iNext < nReq) r = &aReq[iNext++];
      if (r == NULL) break;
      if (now >= msDeadline) {
        /* never started, or due for a retry after the deadline */
        if (r->nAttempt == 0) {
          ltx_error_set(&r->err, STORE_ERR_NETWORK,
                        "%s: deadline of %ld ms reached before the request could start", r->zWhat,
                        p->cfg.msTimeout);
        }
        r->rc = r->err.code;
        r->eState = REQ_DONE;
        nDone++;
        continue;
      }
      int iSlot = 0;
      while (s->aBusy[iSlot]) iSlot++;
      if (s->apEasy[iSlot] == NULL) s->apEasy[iSlot] = curl_easy_init();
      if (s->apEasy[iSlot] == NULL) {
        rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory for an HTTP handle", r->zWhat);
        goto out;
      }
      r->nAttempt++;
      rc = attempt_setup(p, r, s->apEasy[iSlot], msDeadline - now, &r->err);
      if (rc != LTX_OK) {
        r->rc = rc;
        r->eState = REQ_DONE;
        nDone++;
        rc = LTX_OK;
        continue;
      }
      if (curl_multi_add_handle(s->pMulti, s->apEasy[iSlot]) != CURLM_OK) {
        rc = ltx_error_set(err, STORE_ERR_NETWORK, "%s: cannot start a transfer", r->zWhat);
        goto out;
      }
      s->aBusy[iSlot] = 1;
      r->iSlot = iSlot;
      r->eState = REQ_RUNNING;
      nRunning++;
    }

    /* (2) drive the transfers, collect the finished ones */
    if (nRunning > 0) {
      int nStill = 0;
      CURLMsg *pMsg;
      int nQueue;
      curl_multi_perform(s->pMulti, &nStill);
      while ((pMsg = curl_multi_info_read(s->pMulti, &nQueue)) != NULL) {
        s3_req *r = NULL;
        int eOut;
        if (pMsg->msg != CURLMSG_DONE) continue;
        curl_easy_getinfo(pMsg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        r->eCurl = pMsg->data.result;
        curl_multi_remove_handle(s->pMulti, pMsg->easy_handle);
        s->aBusy[r->iSlot] = 0;
        nRunning--;
        eOut = attempt_outcome(p, r);
        now = mono_ms();
        if (eOut == ATTEMPT_RETRY) {
          int64_t msBack = p->cfg.msRetryBase;
          for (int k = 1; k < r->nAttempt && msBack < p->cfg.msRetryMax; k++) msBack *= 2;
          if (msBack > p->cfg.msRetryMax) msBack = p->cfg.msRetryMax;
          /* "equal jitter": at least half the backoff, so a burst of
          ** failures still spreads out */
          msBack = msBack / 2 + (int64_t)(session_rand(s) % (uint64_t)(msBack / 2 + 1));
          if (r->nAttempt >= p->cfg.nMaxAttempts || now + msBack >= msDeadline) {
            char zWhy[sizeof(r->err.msg)];
            memcpy(zWhy, r->err.msg, sizeof(zWhy));
            ltx_error_set(&r->err, r->err.code, "%s (after %d attempt%s in %lld ms%s)", zWhy,
                          r->nAttempt, r->nAttempt == 1 ? "" : "s", (long long)(now - msStart),
                          r->nAttempt >= p->cfg.nMaxAttempts ? "" : "; deadline reached");
            eOut = ATTEMPT_FAIL;
          } else {
            r->msNotBefore = now + msBack;
            r->eState = REQ_WAITING;
            r->pNextWait = pWait;
            pWait = r;
            continue;
          }
        }
        r->rc = eOut == ATTEMPT_OK ? LTX_OK : r->err.code;
        r->eState = REQ_DONE;
        nDone++;
      }
    }
    if (nDone == nReq) break;

    /* (3) wait for network activity, the next retry or the deadline */
    now = mono_ms();
    for (s3_req *r = pWait; r != NULL; r = r->pNextWait) {
      if (r->msNotBefore - now < msWait) msWait = (int)(r->msNotBefore - now);
    }
    if (iNext < nReq && nRunning < nSlot) msWait = 0;
    if (nRunning > 0) {
      long msCurl = -1;
      curl_multi_timeout(s->pMulti, &msCurl);
      if (msCurl >= 0 && msCurl < msWait) msWait = (int)msCurl;
      if (msWait > 0) curl_multi_poll(s->pMulti, NULL, 0, msWait, NULL);
    } else if (msWait > 0) {
      struct timespec ts = {msWait / 1000, (long)(msWait % 1000) * 1000000};
      nanosleep(&ts, NULL);
    }
  }
out:
  if (s != NULL) {
    /* an aborted run leaves handles in the multi: take them out, so the
    ** session is clean for the next call */
    for (int i = 0; i < nSlot; i++) {
      if (s->aBusy[i]) {
        curl_multi_remove_handle(s->pMulti, s->apEasy[i]);
        s->aBusy[i] = 0;
      }
    }
    session_put(p, s);
  }
  return rc;
}

/* Runs one request; its error becomes the call's. */
static int run_one(s3_store *p, s3_req *r, ltx_error *err) {
  int rc = run_requests(p, r, 1, err);
  if (rc != LTX_OK) return rc;
  if (r->rc != LTX_OK) {
    if (err != NULL) *err = r->err;
    return r->rc;
  }
  return LTX_OK;
}

/* ---- store operations ---- */

static int cmp_object_key(const void *a, const void *b) {
  return strcmp(((const store_object *)a)->key, ((const store_object *)b)->key);
}

static int s3_list(store *st, const char *prefix, const char *after, store_object_list *out,
                   ltx_error *err) {
  s3_store *p = s3_of(st);
  char *zPrefix = NULL, *zAfter = NULL, *zToken = NULL, *zQuery = NULL;
  store_object *aObj = NULL;
  size_t nObj = 0, nAlloc = 0, nRoot = strlen(p->cfg.zPath) + (p->cfg.zPath[0] ? 1 : 0);
  s3_req r;
  s3_xml_list page = {0};
  int rc = LTX_OK;

  memset(&r, 0, sizeof(r));
  out->items = NULL;
  out->n = 0;
  zPrefix = dup_printf("%s%s%s", p->cfg.zPath, p->cfg.zPath[0] ? "/" : "", prefix ? prefix : "");
  if (after != NULL) zAfter = dup_printf("%s%s%s", p->cfg.zPath, p->cfg.zPath[0] ? "/" : "", after);
  if (zPrefix == NULL || (after != NULL && zAfter == NULL)) goto nomem;

  for (;;) {
    const char *azPair[] = {
        "list-type",          "2",    "prefix", zPrefix, "start-after", zToken ? NULL : zAfter,
        "continuation-token", zToken,
    };
    free(zQuery);
    zQuery = make_query(azPair, 4);
    if (zQuery == NULL) goto nomem;
    req_free(&r);
    rc = req_init(p, &r, REQ_LIST, NULL, zQuery, err);
    if (rc == LTX_OK) rc = req_common_headers(p, &r, err);
    if (rc != LTX_OK) goto out;
    free(r.zWhat);
    r.zWhat = dup_printf("%s/%s (list)", p->cfg.zDisplay, prefix ? prefix : "");
    if (r.zWhat == NULL) goto nomem;
    rc = run_one(p, &r, err);
    if (rc != LTX_OK) goto out;
    rc = s3_xml_parse_list(r.aBuf ? r.aBuf : "", r.nBuf, &page, err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "%s", r.zWhat);
      goto out;
    }
    for (size_t i = 0; i < page.n; i++) {
      const char *zKey = page.items[i].key;
      /* keys outside the prefix (a broken server) are not ours to report */
      if (strncmp(zKey, zPrefix, strlen(zPrefix)) != 0 || strlen(zKey) <= nRoot) continue;
      if (zAfter != NULL && strcmp(zKey, zAfter) <= 0) continue;
      if (nObj == nAlloc) {
        size_t nNew = nAlloc ? nAlloc * 2 : 256;
        store_object *aNew = realloc(aObj, nNew * sizeof(*aNew));
        if (aNew == NULL) goto nomem;
        aObj = aNew;
        nAlloc = nNew;
      }
      aObj[nObj].key = strdup(zKey + nRoot);
      if (aObj[nObj].key == NULL) goto nomem;
      aObj[nObj].size = page.items[i].size;
      aObj[nObj].mtime_ms = page.items[i].mtime_ms;
      nObj++;
    }
    if (!page.truncated) break;
    if (page.next_token == NULL || page.next_token[0] == '\0' ||
        (zToken != NULL && strcmp(zToken, page.next_token) == 0)) {
      /* without a new token the next page would be this one again */
      rc = ltx_error_set(err, STORE_ERR_HTTP,
                         "%s: truncated listing without a new continuation token", r.zWhat);
      goto out;
    }
    free(zToken);
    zToken = page.next_token;
    page.next_token = NULL;
    s3_xml_list_free(&page);
  }
  /* S3 lists in UTF-8 byte order already; sorting keeps the contract with
  ** servers that do not (s3rver walks directories). */
  if (nObj > 1) qsort(aObj, nObj, sizeof(*aObj), cmp_object_key);
  out->items = aObj;
  out->n = nObj;
  aObj = NULL;
  nObj = 0;
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory listing", p->cfg.zDisplay);
out:
  for (size_t i = 0; i < nObj; i++) free(aObj[i].key);
  free(aObj);
  s3_xml_list_free(&page);
  req_free(&r);
  free(zPrefix);
  free(zAfter);
  free(zToken);
  free(zQuery);
  return rc;
}

static int range_request(s3_store *p, s3_req *r, const char *key, uint64_t off, uint8_t *buf,
                         size_t n, ltx_error *err) {
  char zRange[80];
  int rc = req_init(p, r, REQ_RANGE, key, NULL, err);
  if (rc != LTX_OK) return rc;
  r->aOut = buf;
  r->nOut = n;
  r->iOff = off;
  if (off > UINT64_MAX - n) {
    return ltx_error_set(err, LTX_ERR_ARG, "%s: range %llu+%zu overflows", r->zWhat,
                         (unsigned long long)off, n);
  }
  snprintf(zRange, sizeof(zRange), "Range: bytes=%llu-%llu", (unsigned long long)off,
           (unsigned long long)(off + n - 1));
  rc = req_header(r, zRange, err);
  if (rc == LTX_OK) rc = req_common_headers(p, r, err);
  return rc;
}

static int s3_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                         ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  int rc;

  memset(&r, 0, sizeof(r));
  /* nothing to fetch; S3 has no empty range */
  if (n == 0) return LTX_OK;
  rc = range_request(p, &r, key, off, buf, n, err);
  if (rc == LTX_OK) rc = run_one(p, &r, err);
  req_free(&r);
  return rc;
}

static int s3_read_ranges(store *st, store_range *ranges, size_t n, ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req *aReq = NULL;
  size_t *aMap = NULL, nReq = 0, iFirstBad = SIZE_MAX;
  ltx_error errBad = {0, ""};
  int rc = LTX_OK;

  aReq = calloc(n ? n : 1, sizeof(*aReq));
  aMap = calloc(n ? n : 1, sizeof(*aMap));
  if (aReq == NULL || aMap == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory for %zu ranges", p->cfg.zDisplay, n);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    ranges[i].rc = LTX_OK;
    if (ranges[i].n == 0) continue;
    /* a bad range (key, overflow) fails alone; the others still run */
    ranges[i].rc = range_request(p, &aReq[nReq], ranges[i].key, ranges[i].off, ranges[i].buf,
                                 ranges[i].n, iFirstBad == SIZE_MAX ? &errBad : NULL);
    if (ranges[i].rc != LTX_OK) {
      req_free(&aReq[nReq]);
      if (iFirstBad == SIZE_MAX) iFirstBad = i;
      continue;
    }
    aMap[nReq++] = i;
  }
  rc = run_requests(p, aReq, nReq, err);
  if (rc != LTX_OK) goto out;
  /* every range has its own rc; the call reports the first failure */
  for (size_t k = 0; k < nReq; k++) {
    ranges[aMap[k]].rc = aReq[k].rc;
    if (aReq[k].rc != LTX_OK && aMap[k] < iFirstBad) {
      iFirstBad = aMap[k];
      errBad = aReq[k].err;
    }
  }
  if (iFirstBad != SIZE_MAX) {
    rc = ranges[iFirstBad].rc;
    if (err != NULL) *err = errBad;
  }
out:
  for (size_t k = 0; aReq != NULL && k < nReq; k++) req_free(&aReq[k]);
  free(aReq);
  free(aMap);
  return rc;
}

static int s3_read_suffix(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                          uint64_t *object_size, ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  char zRange[64];
  int rc;

  memset(&r, 0, sizeof(r));
  *nread = 0;
  *object_size = 0;
  if (n == 0) {
    /* "bytes=-0" is unsatisfiable; the size alone is a HEAD */
    rc = st->ops->head(st, key, object_size, NULL, 0, err);
    goto out;
  }
  rc = req_init(p, &r, REQ_SUFFIX, key, NULL, err);
  if (rc != LTX_OK) goto out;
  r.aOut = buf;
  r.nOut = n;
  snprintf(zRange, sizeof(zRange), "Range: bytes=-%zu", n);
  rc = req_header(&r, zRange, err);
  if (rc == LTX_OK) rc = req_common_headers(p, &r, err);
  if (rc == LTX_OK) rc = run_one(p, &r, err);
  if (rc != LTX_OK) goto out;
  *nread = r.nRead;
  *object_size = r.nObject;
out:
  req_free(&r);
  return rc;
}

static int copy_etag(const s3_req *r, char *etag, size_t etag_cap, ltx_error *err) {
  if (etag == NULL) return LTX_OK;
  if (strlen(r->zEtag) + 1 > etag_cap) {
    return ltx_error_set(err, LTX_ERR_ARG, "%s: etag buffer of %zu bytes is too small (use %d)",
                         r->zWhat, etag_cap, STORE_ETAG_CAP);
  }
  memcpy(etag, r->zEtag, strlen(r->zEtag) + 1);
  return LTX_OK;
}

static int s3_head(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
                   ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  int rc;

  memset(&r, 0, sizeof(r));
  rc = req_init(p, &r, REQ_HEAD, key, NULL, err);
  if (rc == LTX_OK) rc = req_common_headers(p, &r, err);
  if (rc == LTX_OK) rc = run_one(p, &r, err);
  if (rc != LTX_OK) goto out;
  if (size != NULL) *size = r.nObject;
  rc = copy_etag(&r, etag, etag_cap, err);
out:
  req_free(&r);
  return rc;
}

static int s3_put(store *st, const char *key, const store_body *body, int64_t mtime_ms,
                  store_put_cond cond, const char *if_match_etag, char *etag_out, size_t etag_cap,
                  ltx_error *err) {
  s3_store *p = s3_of(st);
  s3_req r;
  char zLine[STORE_ETAG_CAP + 128];
  int rc;

  memset(&r, 0, sizeof(r));
  rc = req_init(p, &r, REQ_PUT, key, NULL, err);
  if (rc != LTX_OK) goto out;
  r.pPut = body;
  rc = req_common_headers(p, &r, err);
  if (rc != LTX_OK) goto out;
  if (mtime_ms >= 0) {
    char zTime[96];
    ltx_time_format(mtime_ms, zTime, sizeof(zTime));
    snprintf(zLine, sizeof(zLine), "x-amz-meta-litestream-timestamp: %s", zTime);
    rc = req_header(&r, zLine, err);
    if (rc != LTX_OK) goto out;
  }
  if (cond == STORE_PUT_IF_ABSENT) {
    r.bConditional = 1;
    rc = req_header(&r, "If-None-Match: *", err);
  } else if (cond == STORE_PUT_IF_MATCH) {
    r.bConditional = 1;
    if (if_match_etag == NULL || if_match_etag[0] == '\0' ||
        strlen(if_match_etag) >= STORE_ETAG_CAP || strpbrk(if_match_etag, "\r\n") != NULL) {
      rc = ltx_error_set(err, LTX_ERR_ARG, "%s: put IF_MATCH needs a valid etag", r.zWhat);
      goto out;
    }
    snprintf(zLine, sizeof(zLine), "If-Match: %s", if_match_etag);
    rc = req_header(&r, zLine, err);
  }
  if (rc == LTX_OK) rc = run_one(p, &r, err);
  if (rc == LTX_OK) rc = copy_etag(&r, etag_out, etag_cap, err);
out:
  req_free(&r);
  return rc;
}

/* Builds one DeleteObjects body for keys[0..n). */
static char *delete_body(s3_store *p, const char *const *keys, size_t n, size_t *pn) {
  char *z = append_str(NULL,
                       "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                       "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                       "<Quiet>true</Quiet>");
  for (size_t i = 0; i < n && z != NULL; i++) {
    char *zFull = dup_printf("%s%s%s", p->cfg.zPath, p->cfg.zPath[0] ? "/" : "", keys[i]);
    size_t nEsc;
    char *zEsc;
    if (zFull == NULL) {
      free(z);
      return NULL;
    }
    nEsc = s3_xml_escape(zFull, NULL, 0);
    zEsc = malloc(nEsc + 1);
    if (zEsc != NULL) s3_xml_escape(zFull, zEsc, nEsc + 1);
    free(zFull);
    if (zEsc == NULL) {
      free(z);
      return NULL;
    }
    z = append_str(z, "<Object><Key>");
    if (z) z = append_str(z, zEsc);
    if (z) z = append_str(z, "</Key></Object>");
    free(zEsc);
  }
  if (z) z = append_str(z, "</Delete>");
  if (z) *pn = strlen(z);
  return z;
}

static int s3_del(store *st, const char *const *keys, size_t n, ltx_error *err) {
  s3_store *p = s3_of(st);
  size_t nBatch = (n + S3_DELETE_BATCH - 1) / S3_DELETE_BATCH;
  s3_req *aReq = NULL;
  char **azBody = NULL;
  const char *azPair[] = {"delete", ""};
  char *zQuery = NULL;
  int rc = LTX_OK;

  if (n == 0) goto out;
  for (size_t i = 0; i < n; i++) {
    if (keys[i] == NULL || keys[i][0] == '\0' || keys[i][0] == '/') {
      rc = ltx_error_set(err, LTX_ERR_ARG, "%s: invalid object key '%.200s'", p->cfg.zDisplay,
                         keys[i] ? keys[i] : "(null)");
      goto out;
    }
  }
  aReq = calloc(nBatch, sizeof(*aReq));
  azBody = calloc(nBatch, sizeof(*azBody));
  zQuery = make_query(azPair, 1);
  if (aReq == NULL || azBody == NULL || zQuery == NULL) goto nomem;
  for (size_t b = 0; b < nBatch; b++) {
    size_t i0 = b * S3_DELETE_BATCH, nKeys = n - i0 < S3_DELETE_BATCH ? n - i0 : S3_DELETE_BATCH;
    size_t nBody = 0;
    char zMd5[64], zLine[96];
    azBody[b] = delete_body(p, keys + i0, nKeys, &nBody);
    if (azBody[b] == NULL) goto nomem;
    rc = req_init(p, &aReq[b], REQ_DELETE, NULL, zQuery, err);
    if (rc != LTX_OK) goto out;
    free(aReq[b].zWhat);
    aReq[b].zWhat = dup_printf("%s (delete of %zu keys from %s)", p->cfg.zDisplay, nKeys, keys[i0]);
    if (aReq[b].zWhat == NULL) goto nomem;
    aReq[b].aBody = (const uint8_t *)azBody[b];
    aReq[b].nBody = nBody;
    if (content_md5(aReq[b].aBody, nBody, zMd5) != 0) {
      rc = ltx_error_set(err, STORE_ERR_IO, "%s: MD5 failed", aReq[b].zWhat);
      goto out;
    }
    snprintf(zLine, sizeof(zLine), "Content-MD5: %s", zMd5);
    rc = req_header(&aReq[b], zLine, err);
    if (rc == LTX_OK) rc = req_header(&aReq[b], "Content-Type: application/xml", err);
    if (rc == LTX_OK) rc = req_common_headers(p, &aReq[b], err);
    if (rc != LTX_OK) goto out;
  }
  rc = run_requests(p, aReq, nBatch, err);
  if (rc != LTX_OK) goto out;
  for (size_t b = 0; b < nBatch; b++) {
    s3_xml_delete d;
    if (aReq[b].rc != LTX_OK) {
      rc = aReq[b].rc;
      if (err != NULL) *err = aReq[b].err;
      goto out;
    }
    rc = s3_xml_parse_delete(aReq[b].aBuf ? aReq[b].aBuf : "", aReq[b].nBuf, &d, err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "%s", aReq[b].zWhat);
      goto out;
    }
    if (d.n_errors > 0) {
      char zKey[256], zCode[64], zMsg[256];
      sanitize(d.key, zKey, sizeof(zKey));
      sanitize(d.code, zCode, sizeof(zCode));
      sanitize(d.message, zMsg, sizeof(zMsg));
      rc = ltx_error_set(err, strcmp(zCode, "AccessDenied") == 0 ? STORE_ERR_AUTH : STORE_ERR_HTTP,
                         "s3://%s/%s: delete failed: %s (%s)%s", p->cfg.zBucket, zKey, zCode, zMsg,
                         d.n_errors > 1 ? " and more keys failed" : "");
      s3_xml_delete_free(&d);
      goto out;
    }
    s3_xml_delete_free(&d);
  }
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory deleting %zu keys", p->cfg.zDisplay, n);
out:
  for (size_t b = 0; aReq != NULL && b < nBatch; b++) req_free(&aReq[b]);
  for (size_t b = 0; azBody != NULL && b < nBatch; b++) free(azBody[b]);
  free(aReq);
  free(azBody);
  free(zQuery);
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
  while (p->pFree != NULL) {
    s3_session *s = p->pFree;
    p->pFree = s->pNext;
    session_free(s, p->cfg.nConcurrency);
  }
  if (p->pShare != NULL) curl_share_cleanup(p->pShare);
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_destroy(&p->aShareMutex[i]);
  pthread_mutex_destroy(&p->mutex);
  secret_free(p->zAccessKey);
  secret_free(p->zSecretKey);
  secret_free(p->zSessionToken);
  free(p->zCaInfo);
  config_free(&p->cfg);
  free(p);
}

static void s3_close(store *st) {
  s3_impl_free(s3_of(st));
  st->impl = NULL;
}

int store_s3_open(const char *url, store **out, ltx_error *err) {
  s3_store *p = NULL;
  store *st = NULL;
  const char *zKey, *zSecret;
  int rc = LTX_OK;

  *out = NULL;
  pthread_once(&s3GlobalOnce, global_init);
  if (s3GlobalRc != CURLE_OK) {
    rc = ltx_error_set(err, STORE_ERR_NETWORK, "libcurl initialisation failed: %s",
                       curl_easy_strerror(s3GlobalRc));
    goto out;
  }
  p = calloc(1, sizeof(*p));
  if (p == NULL) goto nomem;
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&p->aShareMutex[i], NULL);
  pthread_mutex_init(&p->mutex, NULL);
  rc = parse_url(url, &p->cfg, err);
  if (rc != LTX_OK) goto out;

  /* Litestream's own names win over the AWS ones, as in Litestream. */
  zKey = getenv("LITESTREAM_ACCESS_KEY_ID");
  zSecret = getenv("LITESTREAM_SECRET_ACCESS_KEY");
  if (zKey == NULL || *zKey == '\0') zKey = getenv("AWS_ACCESS_KEY_ID");
  if (zSecret == NULL || *zSecret == '\0') zSecret = getenv("AWS_SECRET_ACCESS_KEY");
  if ((zKey != NULL && *zKey != '\0') != (zSecret != NULL && *zSecret != '\0')) {
    rc = ltx_error_set(err, STORE_ERR_AUTH, "%s: %s is set but %s is not", p->cfg.zDisplay,
                       zKey && *zKey ? "an access key id" : "a secret access key",
                       zKey && *zKey ? "AWS_SECRET_ACCESS_KEY (or LITESTREAM_SECRET_ACCESS_KEY)"
                                     : "AWS_ACCESS_KEY_ID (or LITESTREAM_ACCESS_KEY_ID)");
    goto out;
  }
  p->zAccessKey = secret_dup(zKey);
  p->zSecretKey = secret_dup(zSecret);
  p->zSessionToken = secret_dup(getenv("AWS_SESSION_TOKEN"));
  if (getenv("AWS_CA_BUNDLE") != NULL && getenv("AWS_CA_BUNDLE")[0] != '\0') {
    p->zCaInfo = strdup(getenv("AWS_CA_BUNDLE"));
    if (p->zCaInfo == NULL) goto nomem;
  }
  if ((zKey && *zKey && (p->zAccessKey == NULL || p->zSecretKey == NULL))) goto nomem;

  p->pShare = curl_share_init();
  if (p->pShare == NULL) goto nomem;
  curl_share_setopt(p->pShare, CURLSHOPT_LOCKFUNC, share_lock);
  curl_share_setopt(p->pShare, CURLSHOPT_UNLOCKFUNC, share_unlock);
  curl_share_setopt(p->pShare, CURLSHOPT_USERDATA, (void *)p);
  curl_share_setopt(p->pShare, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(p->pShare, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

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

static void s3_interrupt(store *st) { atomic_store(&s3_of(st)->bInterrupted, 1); }

static const store_ops s3_ops = {
    .scheme = "s3",
    .list = s3_list,
    .read_range = s3_read_range,
    .read_suffix = s3_read_suffix,
    .head = s3_head,
    .put = s3_put,
    .del = s3_del,
    .close = s3_close,
    .read_ranges = s3_read_ranges,
    .interrupt = s3_interrupt,
};
