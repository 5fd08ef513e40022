/*
** s3_config.c: the s3:// backend's URL and configuration.
**
** Turns "s3://BUCKET/PATH?..." plus the environment into an s3_config: the
** bucket and PATH (percent-decoded, without outer slashes), the query
** parameters (decoded as Go's url.Query does; unknown or repeated names are
** refused), the endpoint and the addressing style (path style or virtual
** host), the signing region, and the tuning numbers, each from the URL, else
** its LTVFS_S3_* variable, else the default, checked against its range. The
** parameters and defaults are listed in s3.c's comment.
**
** Also the pure string helpers the requests are built with: RFC 3986
** encoding as SigV4 canonicalises it, the canonical query, s3_dup_printf.
**
** Pure: no curl calls, no network, nothing kept between calls (the
** environment is only read), so all of it is testable without a server.
*/
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/s3_int.h"
#include "store/store.h"

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
** when keep_slash. Returns the new string or NULL; frees dst on failure. */
char *s3_append_encoded(char *dst, const char *z, int keep_slash) {
  size_t dst_len = dst ? strlen(dst) : 0, src_len = strlen(z), j = dst_len;
  char *out;
  if (src_len > (SIZE_MAX - dst_len - 1) / 3) {
    free(dst);
    return NULL;
  }
  out = realloc(dst, dst_len + src_len * 3 + 1);
  if (out == NULL) {
    free(dst);
    return NULL;
  }
  for (size_t i = 0; i < src_len; i++) {
    unsigned char c = (unsigned char)z[i];
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      out[j++] = (char)c;
    } else {
      static const char hex[] = "0123456789ABCDEF";
      out[j++] = '%';
      out[j++] = hex[c >> 4];
      out[j++] = hex[c & 15];
    }
  }
  out[j] = '\0';
  return out;
}

char *s3_append_str(char *dst, const char *z) {
  size_t dst_len = dst ? strlen(dst) : 0, n = strlen(z);
  char *out = realloc(dst, dst_len + n + 1);
  if (out == NULL) {
    free(dst);
    return NULL;
  }
  memcpy(out + dst_len, z, n + 1);
  return out;
}

static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes %XX (and '+' as a space when plus, as Go's url.Query does) of
** z[0..n) into a new string; NULL on a bad escape, %00 or no memory. */
static char *percent_decode(const char *z, size_t n, int plus) {
  char *out = malloc(n + 1);
  size_t j = 0;
  if (out == NULL) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (z[i] == '%') {
      int hi = i + 1 < n ? hex_value((unsigned char)z[i + 1]) : -1;
      int lo = i + 2 < n ? hex_value((unsigned char)z[i + 2]) : -1;
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
        free(out);
        return NULL;
      }
      out[j++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[j++] = (plus && z[i] == '+') ? ' ' : z[i];
    }
  }
  out[j] = '\0';
  return out;
}

/* "name=value&..." sorted by name, RFC 3986 encoded: the canonical query
** that SigV4 signs (curl 7.88 signs the query exactly as written). pairs
** holds n_pairs name/value pairs; a NULL value drops the pair. */
char *s3_make_query(const char **pairs, int n_pairs) {
  char *query = NULL;
  int *order = malloc((size_t)(n_pairs > 0 ? n_pairs : 1) * sizeof(*order));
  int n = 0;
  if (order == NULL) return NULL;
  for (int i = 0; i < n_pairs; i++) {
    if (pairs[2 * i + 1] != NULL) order[n++] = i;
  }
  /* insertion sort: a handful of names */
  for (int i = 1; i < n; i++) {
    for (int j = i; j > 0 && strcmp(pairs[2 * order[j - 1]], pairs[2 * order[j]]) > 0; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  }
  query = s3_append_str(NULL, "");
  for (int i = 0; i < n && query != NULL; i++) {
    if (i > 0) query = s3_append_str(query, "&");
    if (query != NULL) query = s3_append_encoded(query, pairs[2 * order[i]], 0);
    if (query != NULL) query = s3_append_str(query, "=");
    if (query != NULL) query = s3_append_encoded(query, pairs[2 * order[i] + 1], 0);
  }
  free(order);
  return query;
}

/* ---- URL and configuration ---- */

/* Reads a configuration number: the URL value when given, else the
** environment variable, else the default; it must lie in [lo, hi]. */
static int config_long(const char *url, const char *name, const char *url_value, const char *env,
                       long def, long lo, long hi, long *value, ltx_error *err) {
  const char *z = url_value;
  char *end = NULL;
  long v;
  if (z == NULL) z = getenv(env);
  if (z == NULL || *z == '\0') {
    *value = def;
    return LTX_OK;
  }
  errno = 0;
  v = strtol(z, &end, 10);
  if (errno != 0 || *end != '\0' || end == z || v < lo || v > hi) {
    if (url_value != NULL) {
      return ltx_error_set(err, STORE_ERR_URL,
                           "replica URL '%s': %s '%s' must be an integer in %ld..%ld", url, name, z,
                           lo, hi);
    }
    return ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': %s='%s' (for %s) must be an integer in %ld..%ld", url,
                         env, z, name, lo, hi);
  }
  *value = v;
  return LTX_OK;
}

/* Go's strconv.ParseBool, which Litestream uses for its URL flags. */
static int parse_bool(const char *z, int *value) {
  static const char *yes[] = {"1", "t", "T", "true", "TRUE", "True"};
  static const char *no[] = {"0", "f", "F", "false", "FALSE", "False"};
  for (size_t i = 0; i < 6; i++) {
    if (strcmp(z, yes[i]) == 0) {
      *value = 1;
      return 0;
    }
    if (strcmp(z, no[i]) == 0) {
      *value = 0;
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
  const char *name;
  const char *alias;
} params[P_COUNT] = {
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

/* The P_ slot of a parameter named by name[0, len) (its name or alias),
** or -1. */
static int param_of(const char *name, size_t len) {
  for (int i = 0; i < P_COUNT; i++) {
    const char *a = params[i].name, *b = params[i].alias;
    if ((strlen(a) == len && memcmp(name, a, len) == 0) ||
        (b && strlen(b) == len && memcmp(name, b, len) == 0))
      return i;
  }
  return -1;
}

/* Whether a query parameter (as written, not decoded: the identity keeps
** the URL's own spelling) only tunes how the replica is reached. */
static int tuning_param(const char *z, size_t n) {
  const char *eq = memchr(z, '=', n);
  switch (param_of(z, eq ? (size_t)(eq - z) : n)) {
  case P_SKIP_VERIFY: case P_SIGN_PAYLOAD: case P_CONCURRENCY: case P_TIMEOUT:
  case P_CONNECT_TIMEOUT: case P_STALL_TIMEOUT: case P_MAX_ATTEMPTS: case P_RETRY_BASE:
  case P_RETRY_MAX:
    return 1;
  default:
    return 0;
  }
}

int store_s3_identity(const char *url, char *out, size_t cap) {
  const char *q = strchr(url, '?'), *z;
  size_t k = q ? (size_t)(q - url) : strlen(url), kept = 0;
  if (k >= cap) return -1;
  memcpy(out, url, k);
  for (z = q ? q + 1 : ""; *z;) {
    size_t n = strcspn(z, "&");
    if (n > 0 && !tuning_param(z, n)) {
      if (k + 1 + n >= cap) return -1;
      out[k++] = kept++ ? '&' : '?';
      memcpy(out + k, z, n);
      k += n;
    }
    z += n;
    if (*z == '&') z++;
  }
  out[k] = '\0';
  return 0;
}

/* Splits the query into the params slots of values (decoded; the caller
** frees them). */
static int parse_query(const char *url, const char *query, char **values, ltx_error *err) {
  const char *z = query;
  int rc = LTX_OK;
  char *name = NULL, *value = NULL;

  while (*z != '\0') {
    size_t n = strcspn(z, "&");
    const char *eq = memchr(z, '=', n);
    size_t name_len = eq ? (size_t)(eq - z) : n;
    int param = -1;

    if (n == 0) {
      z++;
      continue;
    }
    name = percent_decode(z, name_len, 1);
    value = eq ? percent_decode(eq + 1, n - name_len - 1, 1) : strdup("");
    if (name == NULL || value == NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': bad percent escape in query parameter '%.*s'", url,
                         (int)name_len, z);
      goto out;
    }
    param = param_of(name, strlen(name));
    if (param < 0) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': unknown parameter '%s' (known: endpoint, region, "
                         "force-path-style, skip-verify, sign-payload, concurrency, timeout-ms, "
                         "connect-timeout-ms, stall-timeout-ms, max-attempts, retry-base-ms, "
                         "retry-max-ms)",
                         url, name);
      goto out;
    }
    if (values[param] != NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': parameter '%s' given twice", url,
                         params[param].name);
      goto out;
    }
    values[param] = value;
    value = NULL;
    free(name);
    name = NULL;
    z += n;
    if (*z == '&') z++;
  }
out:
  free(name);
  free(value);
  return rc;
}

/* Checks an endpoint and splits it: "http[s]://HOST[:PORT][/path]" (or
** "HOST[:PORT]", meaning https) into scheme, authority and path. */
static int parse_endpoint(const char *url, const char *endpoint, char **scheme_out, char **host_out,
                          char **path_out, ltx_error *err) {
  const char *rest = endpoint, *scheme = "https";
  size_t host_len;
  int rc = LTX_OK;

  if (strncasecmp(endpoint, "http://", 7) == 0) {
    scheme = "http";
    rest = endpoint + 7;
  } else if (strncasecmp(endpoint, "https://", 8) == 0) {
    rest = endpoint + 8;
  } else if (strstr(endpoint, "://") != NULL) {
    rc =
        ltx_error_set(err, STORE_ERR_URL,
                      "replica URL '%s': endpoint '%s' must be http:// or https://", url, endpoint);
    goto out;
  }
  host_len = strcspn(rest, "/?#");
  if (host_len == 0) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': endpoint '%s' has no host", url,
                       endpoint);
    goto out;
  }
  if (memchr(rest, '@', host_len) != NULL) {
    /* userinfo would end up in every message; credentials belong in the
    ** environment */
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': endpoint must not contain credentials; use "
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                       url);
    goto out;
  }
  for (size_t i = 0; i < host_len; i++) {
    unsigned char c = (unsigned char)rest[i];
    if (!(is_alnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_')) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': endpoint '%s' has an invalid host character '%c'", url,
                         endpoint, c);
      goto out;
    }
  }
  if (rest[host_len] == '?' || rest[host_len] == '#') {
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': endpoint '%s' must not have a query or fragment", url,
                       endpoint);
    goto out;
  }
  *scheme_out = strdup(scheme);
  *host_out = strndup(rest, host_len);
  *path_out = strdup(rest + host_len);
  if (*scheme_out == NULL || *host_out == NULL || *path_out == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing replica URL");
    goto out;
  }
  /* "/" or "/x/" -> "" or "/x" */
  for (size_t n = strlen(*path_out); n > 0 && (*path_out)[n - 1] == '/'; n--)
    (*path_out)[n - 1] = '\0';
out:
  return rc;
}

void s3_config_free(s3_config *c) {
  free(c->bucket);
  free(c->path);
  free(c->base_url);
  free(c->endpoint);
  free(c->display);
  free(c->region);
  free(c->sigv4);
  memset(c, 0, sizeof(*c));
}

char *s3_dup_printf(const char *fmt, ...) {
  va_list ap;
  char *z = NULL;
  va_start(ap, fmt);
  if (vasprintf(&z, fmt, ap) < 0) z = NULL;
  va_end(ap);
  return z;
}

int s3_parse_url(const char *url, s3_config *c, ltx_error *err) {
  char *values[P_COUNT] = {0};
  char *scheme = NULL, *host = NULL, *ep_path = NULL, *decoded_path = NULL;
  const char *rest, *query;
  size_t bucket_len, path_part_len;
  int path_style = -1;
  long v;
  int rc = LTX_OK;

  memset(c, 0, sizeof(*c));
  if (url == NULL || strncasecmp(url, "s3://", 5) != 0) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': not an s3:// URL",
                       url ? url : "(null)");
    goto out;
  }
  rest = url + 5;
  if (strchr(rest, '#') != NULL) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': a fragment ('#...') is not allowed",
                       url);
    goto out;
  }
  query = strchr(rest, '?');
  path_part_len = query ? (size_t)(query - rest) : strlen(rest);
  bucket_len = strcspn(rest, "/?");
  if (bucket_len == 0) {
    rc = ltx_error_set(err, STORE_ERR_URL,
                       "replica URL '%s': no bucket name (want s3://BUCKET/PATH)", url);
    goto out;
  }
  c->bucket = strndup(rest, bucket_len);
  if (c->bucket == NULL) goto nomem;
  for (const char *z = c->bucket; *z; z++) {
    unsigned char ch = (unsigned char)*z;
    if (!(is_alnum(ch) || ch == '.' || ch == '-' || ch == '_')) {
      rc = ltx_error_set(err, STORE_ERR_URL,
                         "replica URL '%s': bucket name '%s' has an invalid character '%c'", url,
                         c->bucket, ch);
      goto out;
    }
  }
  if (bucket_len > 255) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': bucket name too long", url);
    goto out;
  }
  /* PATH: decoded, without leading and trailing slashes. */
  {
    const char *raw = rest + bucket_len;
    size_t raw_len = path_part_len - bucket_len;
    decoded_path = percent_decode(raw, raw_len, 0);
    if (decoded_path == NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': bad percent escape in the path",
                         url);
      goto out;
    }
    char *start = decoded_path;
    while (*start == '/') start++;
    size_t n = strlen(start);
    while (n > 0 && start[n - 1] == '/') n--;
    c->path = strndup(start, n);
    if (c->path == NULL) goto nomem;
    if (strstr(c->path, "//") != NULL) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': empty component in path '%s'", url,
                         c->path);
      goto out;
    }
    if (strlen(c->path) >= S3_MAX_KEY / 2) {
      rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': path too long", url);
      goto out;
    }
  }
  if (query != NULL) {
    rc = parse_query(url, query + 1, values, err);
    if (rc != LTX_OK) goto out;
  }

  /* flags */
  {
    static const int flags[] = {P_PATH_STYLE, P_SKIP_VERIFY, P_SIGN_PAYLOAD};
    for (size_t i = 0; i < 3; i++) {
      int b = 0;
      const char *value = values[flags[i]];
      if (value == NULL) continue;
      /* "?skip-verify" alone means true, as a flag */
      if (*value == '\0') {
        b = 1;
      } else if (parse_bool(value, &b) != 0) {
        rc = ltx_error_set(err, STORE_ERR_URL,
                           "replica URL '%s': %s='%s' is not a boolean (true/false)", url,
                           params[flags[i]].name, value);
        goto out;
      }
      if (flags[i] == P_PATH_STYLE) path_style = b;
      if (flags[i] == P_SKIP_VERIFY) c->skip_verify = b;
      if (flags[i] == P_SIGN_PAYLOAD) c->sign_payload = b;
    }
  }

  /* region */
  {
    const char *region = values[P_REGION];
    if (region == NULL || *region == '\0') region = getenv("AWS_REGION");
    if (region == NULL || *region == '\0') region = "us-east-1";
    for (const char *z = region; *z; z++) {
      if (!(is_alnum((unsigned char)*z) || *z == '-' || *z == '_')) {
        rc =
            ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': invalid region '%s'", url, region);
        goto out;
      }
    }
    c->region = strdup(region);
    c->sigv4 = s3_dup_printf("aws:amz:%s:s3", region);
    if (c->region == NULL || c->sigv4 == NULL) goto nomem;
  }

  /* addressing */
  if (values[P_ENDPOINT] != NULL && values[P_ENDPOINT][0] != '\0') {
    rc = parse_endpoint(url, values[P_ENDPOINT], &scheme, &host, &ep_path, err);
    if (rc != LTX_OK) goto out;
    if (path_style < 0) path_style = 1; /* custom endpoints imply path style */
    c->endpoint = s3_dup_printf("%s://%s%s", scheme, host, ep_path);
    if (path_style) {
      c->base_url = s3_dup_printf("%s://%s%s/%s", scheme, host, ep_path, c->bucket);
    } else {
      c->virtual_host = 1;
      c->base_url = s3_dup_printf("%s://%s.%s%s", scheme, c->bucket, host, ep_path);
    }
  } else {
    if (path_style < 0) path_style = !bucket_is_dns(c->bucket);
    if (path_style) {
      c->endpoint = s3_dup_printf("https://s3.%s.amazonaws.com", c->region);
      c->base_url = s3_dup_printf("https://s3.%s.amazonaws.com/%s", c->region, c->bucket);
    } else {
      c->virtual_host = 1;
      c->endpoint = s3_dup_printf("https://%s.s3.%s.amazonaws.com", c->bucket, c->region);
      c->base_url = strdup(c->endpoint);
    }
  }
  c->display = s3_dup_printf("s3://%s%s%s", c->bucket, c->path[0] ? "/" : "", c->path);
  if (c->endpoint == NULL || c->base_url == NULL || c->display == NULL) goto nomem;

  /* tuning */
  rc = config_long(url, "concurrency", values[P_CONCURRENCY], "LTVFS_S3_CONCURRENCY",
                   S3_DEFAULT_CONCURRENCY, 1, S3_MAX_CONCURRENCY, &v, err);
  if (rc != LTX_OK) goto out;
  c->concurrency = (int)v;
  rc = config_long(url, "timeout-ms", values[P_TIMEOUT], "LTVFS_S3_TIMEOUT_MS",
                   S3_DEFAULT_TIMEOUT_MS, 1, 24L * 3600 * 1000, &c->timeout_ms, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "connect-timeout-ms", values[P_CONNECT_TIMEOUT],
                   "LTVFS_S3_CONNECT_TIMEOUT_MS", S3_DEFAULT_CONNECT_TIMEOUT_MS, 1, 3600L * 1000,
                   &c->connect_timeout_ms, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "stall-timeout-ms", values[P_STALL_TIMEOUT], "LTVFS_S3_STALL_TIMEOUT_MS",
                   S3_DEFAULT_STALL_TIMEOUT_MS, 1, 3600L * 1000, &c->stall_timeout_ms, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "max-attempts", values[P_MAX_ATTEMPTS], "LTVFS_S3_MAX_ATTEMPTS",
                   S3_DEFAULT_MAX_ATTEMPTS, 1, 100, &v, err);
  if (rc != LTX_OK) goto out;
  c->max_attempts = (int)v;
  rc = config_long(url, "retry-base-ms", values[P_RETRY_BASE], "LTVFS_S3_RETRY_BASE_MS",
                   S3_DEFAULT_RETRY_BASE_MS, 0, 600L * 1000, &c->retry_base_ms, err);
  if (rc != LTX_OK) goto out;
  rc = config_long(url, "retry-max-ms", values[P_RETRY_MAX], "LTVFS_S3_RETRY_MAX_MS",
                   S3_DEFAULT_RETRY_MAX_MS, 0, 3600L * 1000, &c->retry_max_ms, err);
  if (rc != LTX_OK) goto out;
  goto out;

nomem:
  rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing replica URL");
out:
  for (int i = 0; i < P_COUNT; i++) free(values[i]);
  free(scheme);
  free(host);
  free(ep_path);
  free(decoded_path);
  if (rc != LTX_OK) s3_config_free(c);
  return rc;
}
