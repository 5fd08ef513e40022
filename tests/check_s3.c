/*
** check_s3.c: the s3:// backend (store/s3.c) and its XML scanner
** (store/s3_xml.c), against a real S3 server on loopback.
**
** main() starts tests/s3/server.js (s3rver, which verifies every SigV4
** signature) and tests/s3/faultproxy.js in front of it, each on a free port,
** before the tests run, and stops both (by PID) afterwards; they also exit on
** their own if this process dies. Tests that talk to the proxy set a fault
** through its control endpoint, e.g. "503 for the next 3 requests", and
** check both the result and how many faults were really injected, so a test
** cannot pass because the fault never happened.
**
** Every test uses its own PATH in the bucket, so tests do not see each
** other's objects. Retry backoff is set to a few milliseconds in the URLs,
** which keeps the whole suite well under a minute.
**
** Needs node and @20minutes/s3rver in TOP_SRCDIR/.npm-deps (check.sh
** installs it); without them the server tests fail, saying so.
*/
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"
#include "store/s3_xml.h"
#include "store/store.h"
#include "tests/testutil.h"

#define BUCKET "ltvfs-test"
#define U8(z) ((const uint8_t *)(z))

/* A call that takes &err must give LTX_OK / the code; the message is shown. */
#define CK_OK(call)                                                     \
  do {                                                                  \
    int rc_ = (call);                                                   \
    ck_assert_msg(rc_ == LTX_OK, "%s: rc %d: %s", #call, rc_, err.msg); \
  } while (0)
#define CK_RC(call, want)                                                                \
  do {                                                                                   \
    int rc_ = (call);                                                                    \
    ck_assert_msg(rc_ == (want), "%s: rc %d, want %d: %s", #call, rc_, (want), err.msg); \
  } while (0)
#define SECRET "S3RVER"

/* ---- the servers ---- */

static struct {
  pid_t pidServer, pidProxy;
  int fdServer, fdProxy; /* their stdout pipes, kept open until the end */
  int portServer, portProxy;
  char zDir[1024];
  char zWhy[512]; /* why they are not running, for the tests */
} srv = {0, 0, -1, -1, 0, 0, "", ""};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *srcdir(void) {
  const char *z = getenv("top_srcdir");
  return z != NULL && *z != '\0' ? z : TOP_SRCDIR;
}

/* Starts `node argv...` and waits (20 s) for its "listening on
** http[s]://127.0.0.1:PORT" line; returns the port or 0 (srv.zWhy says why). */
static int spawn_node(char *const argv[], pid_t *pPid, int *pFd) {
  int aPipe[2];
  char zLine[1024];
  size_t n = 0;
  int64_t msEnd = now_ms() + 20000;
  pid_t pid;

  if (pipe(aPipe) != 0) return 0;
  pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    dup2(aPipe[1], 1);
    dup2(aPipe[1], 2);
    close(aPipe[0]);
    close(aPipe[1]);
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s failed\n", argv[0]);
    _exit(127);
  }
  close(aPipe[1]);
  *pPid = pid;
  *pFd = aPipe[0];
  while (n + 1 < sizeof(zLine) && now_ms() < msEnd) {
    struct pollfd pfd = {aPipe[0], POLLIN, 0};
    if (poll(&pfd, 1, 200) <= 0) continue;
    ssize_t k = read(aPipe[0], zLine + n, sizeof(zLine) - 1 - n);
    if (k <= 0) break;
    n += (size_t)k;
    zLine[n] = '\0';
    const char *z = strstr(zLine, "listening on http");
    if (z != NULL && strchr(z, '\n') != NULL && (z = strstr(z, "://127.0.0.1:")) != NULL) {
      return atoi(z + strlen("://127.0.0.1:"));
    }
  }
  zLine[n] = '\0';
  snprintf(srv.zWhy, sizeof(srv.zWhy), "%s did not start: %.400s", argv[2], zLine);
  return 0;
}

static void stop_node(pid_t *pPid, int *pFd) {
  if (*pPid > 0) {
    kill(*pPid, SIGTERM);
    waitpid(*pPid, NULL, 0);
    *pPid = 0;
  }
  if (*pFd >= 0) close(*pFd);
  *pFd = -1;
}

static void servers_start(void) {
  char zServer[4096], zProxy[4096], zData[1100], zPpid[32], zUp[64];
  snprintf(zServer, sizeof(zServer), "%s/tests/s3/server.js", srcdir());
  snprintf(zProxy, sizeof(zProxy), "%s/tests/s3/faultproxy.js", srcdir());
  snprintf(zPpid, sizeof(zPpid), "%d", (int)getpid());
  if (tu_mkdtemp(srv.zDir, sizeof(srv.zDir), "s3") == NULL) {
    snprintf(srv.zWhy, sizeof(srv.zWhy), "cannot make a temporary directory");
    return;
  }
  snprintf(zData, sizeof(zData), "%s/data", srv.zDir);
  char *const argvServer[] = {"node",  "--openssl-legacy-provider",
                              zServer, "--port",
                              "0",     "--dir",
                              zData,   "--bucket",
                              BUCKET,  "--parent-pid",
                              zPpid,   NULL};
  srv.portServer = spawn_node(argvServer, &srv.pidServer, &srv.fdServer);
  if (srv.portServer == 0) return;
  snprintf(zUp, sizeof(zUp), "127.0.0.1:%d", srv.portServer);
  char *const argvProxy[] = {"node", "--no-warnings", zProxy, "--port", "0", "--upstream",
                             zUp,    "--parent-pid",  zPpid,  NULL};
  srv.portProxy = spawn_node(argvProxy, &srv.pidProxy, &srv.fdProxy);
}

static void servers_stop(void) {
  stop_node(&srv.pidProxy, &srv.fdProxy);
  stop_node(&srv.pidServer, &srv.fdServer);
  if (srv.zDir[0]) tu_rmtree(srv.zDir);
}

static void need_servers(void) {
  if (srv.portServer == 0 || srv.portProxy == 0) {
    ck_abort_msg(
        "S3 test servers not running: %s (node and `npm install --prefix "
        ".npm-deps @20minutes/s3rver@5.0.0` in %s are needed)",
        srv.zWhy, srcdir());
  }
}

/* Every test starts from the server's credentials and no proxy settings. */
static void env_setup(void) {
  static const char *azUnset[] = {"LITESTREAM_ACCESS_KEY_ID",
                                  "LITESTREAM_SECRET_ACCESS_KEY",
                                  "AWS_SESSION_TOKEN",
                                  "AWS_REGION",
                                  "http_proxy",
                                  "https_proxy",
                                  "HTTPS_PROXY",
                                  "ALL_PROXY",
                                  "all_proxy",
                                  "NO_PROXY",
                                  "no_proxy",
                                  "AWS_CA_BUNDLE",
                                  "LTVFS_S3_CONCURRENCY",
                                  "LTVFS_S3_TIMEOUT_MS",
                                  "LTVFS_S3_MAX_ATTEMPTS"};
  for (size_t i = 0; i < sizeof(azUnset) / sizeof(azUnset[0]); i++) unsetenv(azUnset[i]);
  setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
  setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
}

/* s3://BUCKET/<path>?endpoint=<server or proxy>&<extra>&<fast retries>,
** where extra overrides the defaults. */
static store *open_at(const char *zPath, int bProxy, const char *zExtra) {
  static const char *azDefault[] = {"retry-base-ms=5", "retry-max-ms=40", "max-attempts=6",
                                    "timeout-ms=10000"};
  char zUrl[1024];
  store *st = NULL;
  ltx_error err = {0};
  need_servers();
  snprintf(zUrl, sizeof(zUrl), "s3://" BUCKET "/%s?endpoint=http://127.0.0.1:%d%s%s", zPath,
           bProxy ? srv.portProxy : srv.portServer, zExtra ? "&" : "", zExtra ? zExtra : "");
  for (size_t i = 0; i < sizeof(azDefault) / sizeof(azDefault[0]); i++) {
    char zName[32];
    snprintf(zName, sizeof(zName), "%.*s", (int)strcspn(azDefault[i], "=") + 1, azDefault[i]);
    if (zExtra != NULL && strstr(zExtra, zName) != NULL) continue;
    strncat(zUrl, "&", sizeof(zUrl) - strlen(zUrl) - 1);
    strncat(zUrl, azDefault[i], sizeof(zUrl) - strlen(zUrl) - 1);
  }
  int rc = store_s3_open(zUrl, &st, &err);
  ck_assert_msg(rc == LTX_OK, "open %s: %s", zUrl, err.msg);
  return st;
}

/* GET on the proxy's control endpoint; returns the stats JSON's "injected". */
static size_t on_control_body(char *z, size_t sz, size_t n, void *pArg) {
  tu_buf *b = pArg;
  tu_buf_append(b, z, sz * n);
  return sz * n;
}

static char zLastStats[2048];

static long fault(const char *zCmd) {
  char zUrl[512];
  tu_buf b = {0};
  CURL *c = curl_easy_init();
  long nInjected = -1;
  snprintf(zUrl, sizeof(zUrl), "http://127.0.0.1:%d/__fault/%s", srv.portProxy, zCmd);
  curl_easy_setopt(c, CURLOPT_URL, zUrl);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_control_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
  curl_easy_cleanup(c);
  tu_buf_append(&b, "", 1);
  snprintf(zLastStats, sizeof(zLastStats), "%s", (char *)b.p);
  const char *z = strstr((char *)b.p, "\"injected\":");
  if (z != NULL) nInjected = atol(z + strlen("\"injected\":"));
  tu_buf_free(&b);
  return nInjected;
}

/* A number field of the last stats JSON, -1 if absent. */
static long stat_field(const char *zName) {
  char zKey[64];
  snprintf(zKey, sizeof(zKey), "\"%s\":", zName);
  const char *z = strstr(zLastStats, zKey);
  return z != NULL ? atol(z + strlen(zKey)) : -1;
}

static void fault_clear(void) {
  fault("clear");
  fault("reset-stats");
}

static void put_ok(store *st, const char *zKey, const void *a, size_t n) {
  ltx_error err = {0};
  int rc = store_put(st, zKey, a, n, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err);
  ck_assert_msg(rc == LTX_OK, "put %s: %s", zKey, err.msg);
}

static uint8_t *random_bytes(size_t n, uint64_t seed) {
  uint8_t *a = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(a);
  tu_fill_random(&seed, a, n);
  return a;
}

/* ---- URL parsing ---- */

/* Bad URLs fail at open with STORE_ERR_URL and a message naming the part. */
static const struct {
  const char *zUrl;
  const char *zWant;
} aBadUrl[] = {
    {"s3://", "no bucket name"},
    {"s3:///path", "no bucket name"},
    {"s3://bk t/p", "invalid character ' '"},
    {"s3://bkt/p#frag", "fragment"},
    {"s3://bkt/p%zz", "bad percent escape"},
    {"s3://bkt/a//b", "empty component"},
    {"s3://bkt/p?foo=bar", "unknown parameter 'foo'"},
    {"s3://bkt/p?region=a&region=b", "'region' given twice"},
    {"s3://bkt/p?region=us%20east", "invalid region 'us east'"},
    {"s3://bkt/p?endpoint=ftp://host", "must be http:// or https://"},
    {"s3://bkt/p?endpoint=http://", "has no host"},
    {"s3://bkt/p?endpoint=http://user:pw@host:9000", "must not contain credentials"},
    {"s3://bkt/p?force-path-style=maybe", "force-path-style='maybe' is not a boolean"},
    {"s3://bkt/p?skip-verify=2", "skip-verify='2' is not a boolean"},
    {"s3://bkt/p?concurrency=0", "concurrency '0' must be an integer in 1..256"},
    {"s3://bkt/p?timeout-ms=soon", "timeout-ms 'soon' must be an integer"},
    {"s3://bkt/p?max-attempts=1000", "max-attempts '1000' must be an integer in 1..100"},
    {"http://bkt/p", "not an s3:// URL"},
};

START_TEST(test_url_bad_urls_fail_naming_the_problem) {
  store *st = NULL;
  ltx_error err = {0};
  int rc = store_s3_open(aBadUrl[_i].zUrl, &st, &err);
  ck_assert_int_eq(rc, STORE_ERR_URL);
  ck_assert_ptr_null(st);
  ck_assert_msg(strstr(err.msg, aBadUrl[_i].zWant) != NULL, "'%s': got '%s', want '%s'",
                aBadUrl[_i].zUrl, err.msg, aBadUrl[_i].zWant);
}
END_TEST

START_TEST(test_url_env_tuning_errors_name_the_variable) {
  store *st = NULL;
  ltx_error err = {0};
  setenv("LTVFS_S3_CONCURRENCY", "lots", 1);
  CK_RC(store_s3_open("s3://bkt/p", &st, &err), STORE_ERR_URL);
  ck_assert_msg(strstr(err.msg, "LTVFS_S3_CONCURRENCY='lots'") != NULL, "%s", err.msg);
  /* the URL wins over the environment */
  CK_OK(store_s3_open("s3://bkt/p?concurrency=4", &st, &err));
  store_close(st);
  unsetenv("LTVFS_S3_CONCURRENCY");
}
END_TEST

/* The replica a URL names, without how it is reached: one local image for
** one replica whatever the tuning. */
START_TEST(test_url_identity_drops_only_the_tuning) {
  static const struct {
    const char *url, *want;
  } cases[] = {
      {"s3://b/p", "s3://b/p"},
      {"s3://b/p?max-attempts=2", "s3://b/p"},
      {"s3://b/p?endpoint=http://h:1&max-attempts=2&timeout-ms=5", "s3://b/p?endpoint=http://h:1"},
      {"s3://b/p?concurrency=4&endpoint=http%3A%2F%2Fh%3A1&retry-base-ms=20&retry-max-ms=200",
       "s3://b/p?endpoint=http%3A%2F%2Fh%3A1"},
      {"s3://b/p?region=x&skipVerify=true&force-path-style=true&signPayload=1&stall-timeout-ms=9"
       "&connect-timeout-ms=9&sign-payload=0&skip-verify=0",
       "s3://b/p?region=x&force-path-style=true"},
      {"s3://b/p?&&endpoint=e&", "s3://b/p?endpoint=e"},
      {"S3://b/p?max-attempts=1", "S3://b/p"},
      {"file:///x/y", "file:///x/y"},
      {"/plain/dir", "/plain/dir"},
  };
  char out[256];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    ck_assert_int_eq(store_replica_identity(cases[i].url, out, sizeof(out)), 0);
    ck_assert_msg(strcmp(out, cases[i].want) == 0, "%s -> %s, want %s", cases[i].url, out,
                  cases[i].want);
  }
  ck_assert_int_eq(store_replica_identity("s3://bucket/path?endpoint=e", out, 12), -1);
  ck_assert_int_eq(store_replica_identity("file:///a/long/path", out, 8), -1);
}
END_TEST

START_TEST(test_url_key_without_secret_is_an_auth_error) {
  store *st = NULL;
  ltx_error err = {0};
  unsetenv("AWS_SECRET_ACCESS_KEY");
  CK_RC(store_s3_open("s3://bkt/p", &st, &err), STORE_ERR_AUTH);
  ck_assert_msg(strstr(err.msg, "AWS_SECRET_ACCESS_KEY") != NULL, "%s", err.msg);
  ck_assert_ptr_null(st);
}
END_TEST

START_TEST(test_url_good_urls_open_with_s3_layout) {
  static const char *azGood[] = {
      "s3://bkt",
      "s3://bkt/",
      "s3://bkt/a/b/",
      "S3://bkt/db?region=eu-west-1&forcePathStyle=true&skip-verify=false&sign-payload=1",
      "s3://my.dotted.bucket/x?endpoint=minio.local:9000",
      "s3://bkt/db?endpoint=https://[::1]:9000/&concurrency=256&timeout-ms=1",
  };
  for (size_t i = 0; i < sizeof(azGood) / sizeof(azGood[0]); i++) {
    store *st = NULL;
    ltx_error err = {0};
    int rc = store_s3_open(azGood[i], &st, &err);
    ck_assert_msg(rc == LTX_OK, "%s: %s", azGood[i], err.msg);
    ck_assert_int_eq(st->layout, STORE_LAYOUT_S3);
    ck_assert_str_eq(st->ops->scheme, "s3");
    ck_assert_ptr_nonnull(st->ops->read_ranges);
    ck_assert_str_eq(st->url, azGood[i]);
    store_close(st);
  }
}
END_TEST

/* Which host and path would a request go to? The fault proxy, set as the
** HTTP(S) proxy, records it (absolute-form URL or CONNECT target) and
** answers 502, so nothing leaves the machine. */
static void expect_target(const char *zUrl, int bHttps, const char *zWant) {
  char zProxy[64];
  store *st = NULL;
  ltx_error err = {0};
  uint8_t a[4];
  need_servers();
  fault("reset-stats");
  snprintf(zProxy, sizeof(zProxy), "http://127.0.0.1:%d", srv.portProxy);
  setenv(bHttps ? "https_proxy" : "http_proxy", zProxy, 1);
  CK_OK(store_s3_open(zUrl, &st, &err));
  ck_assert_int_ne(store_read_range(st, "0000/x.ltx", 0, a, sizeof(a), &err), LTX_OK);
  store_close(st);
  unsetenv(bHttps ? "https_proxy" : "http_proxy");
  fault("stats");
  ck_assert_msg(strstr(zLastStats, zWant) != NULL, "%s: want %s in %s", zUrl, zWant, zLastStats);
}

START_TEST(test_url_aws_is_virtual_host_style_in_the_region) {
  expect_target("s3://my-bucket/db?region=eu-west-1&max-attempts=1", 1,
                "\"lastConnect\":\"my-bucket.s3.eu-west-1.amazonaws.com:443\"");
  setenv("AWS_REGION", "ap-south-1", 1);
  expect_target("s3://my-bucket/db?max-attempts=1", 1,
                "\"lastConnect\":\"my-bucket.s3.ap-south-1.amazonaws.com:443\"");
  unsetenv("AWS_REGION");
  expect_target("s3://my-bucket/db?max-attempts=1", 1,
                "\"lastConnect\":\"my-bucket.s3.us-east-1.amazonaws.com:443\"");
}
END_TEST

START_TEST(test_url_aws_dotted_bucket_or_forced_is_path_style) {
  expect_target("s3://my.bucket/db?region=eu-west-1&max-attempts=1", 1,
                "\"lastConnect\":\"s3.eu-west-1.amazonaws.com:443\"");
  expect_target("s3://my-bucket/db?force-path-style=true&max-attempts=1", 1,
                "\"lastConnect\":\"s3.us-east-1.amazonaws.com:443\"");
}
END_TEST

START_TEST(test_url_custom_endpoint_is_path_style_unless_told) {
  expect_target("s3://bkt/some/path?endpoint=http://minio.test:9000&max-attempts=1", 0,
                "\"lastProxyUrl\":\"http://minio.test:9000/bkt/some/path/0000/x.ltx\"");
  expect_target(
      "s3://bkt/db?endpoint=http://minio.test:9000&force-path-style=false"
      "&max-attempts=1",
      0, "\"lastProxyUrl\":\"http://bkt.minio.test:9000/db/0000/x.ltx\"");
  /* the path is decoded from the URL and re-encoded per S3's rules */
  expect_target("s3://bkt/a%20b/c?endpoint=http://minio.test:9000&max-attempts=1", 0,
                "\"lastProxyUrl\":\"http://minio.test:9000/bkt/a%20b/c/0000/x.ltx\"");
}
END_TEST

/* ---- round trips on the real server ---- */

START_TEST(test_s3_put_list_read_head_delete_roundtrip) {
  store *st = open_at("rt/db", 0, NULL);
  ltx_error err = {0};
  size_t n = 100000, nRead = 0;
  uint8_t *a = random_bytes(n, 1), *b = malloc(n);
  char zEtagPut[STORE_ETAG_CAP], zEtagHead[STORE_ETAG_CAP];
  uint64_t size = 0;
  store_object_list l = {0};
  const char *zKey = "0000/0000000000000001-0000000000000001.ltx";
  const char *zOdd = "0000/odd name+with=chars,~.ltx";

  ck_assert_ptr_nonnull(b);
  CK_OK(store_put(st, zKey, a, n, 1700000000123, STORE_PUT_ALWAYS, NULL, zEtagPut, sizeof(zEtagPut),
                  &err));
  ck_assert_int_gt(strlen(zEtagPut), 2);
  put_ok(st, zOdd, "odd", 3);
  put_ok(st, "0001/other.ltx", "x", 1);

  /* list: relative keys, sorted, sizes, LastModified within a minute */
  CK_OK(store_list(st, "0000/", NULL, &l, &err));
  ck_assert_uint_eq(l.n, 2);
  ck_assert_str_eq(l.items[0].key, zKey);
  ck_assert_str_eq(l.items[1].key, zOdd);
  ck_assert_uint_eq(l.items[0].size, n);
  ck_assert_uint_eq(l.items[1].size, 3);
  int64_t msWall = (int64_t)time(NULL) * 1000;
  ck_assert_msg(l.items[0].mtime_ms > msWall - 60000 && l.items[0].mtime_ms < msWall + 60000,
                "mtime %lld", (long long)l.items[0].mtime_ms);
  store_object_list_free(&l);
  CK_OK(store_list(st, NULL, NULL, &l, &err));
  ck_assert_uint_eq(l.n, 3);
  ck_assert_str_eq(l.items[2].key, "0001/other.ltx");
  store_object_list_free(&l);
  CK_OK(store_list(st, "0000/", zKey, &l, &err));
  ck_assert_uint_eq(l.n, 1);
  ck_assert_str_eq(l.items[0].key, zOdd);
  store_object_list_free(&l);

  /* ranges */
  CK_OK(store_read_range(st, zKey, 12345, b, 5000, &err));
  ck_assert_mem_eq(b, a + 12345, 5000);
  CK_OK(store_read_range(st, zKey, 0, b, n, &err));
  ck_assert_mem_eq(b, a, n);
  CK_OK(store_read_range(st, zOdd, 0, b, 3, &err));
  ck_assert_mem_eq(b, "odd", 3);
  /* past the end: never short data */
  CK_RC(store_read_range(st, zKey, n - 10, b, 20, &err), STORE_ERR_SHORT_READ);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/rt/db/0000/") != NULL, "%s", err.msg);
  CK_RC(store_read_range(st, zKey, n + 10, b, 20, &err), STORE_ERR_SHORT_READ);

  /* suffix: shorter and longer than the object */
  CK_OK(store_read_suffix(st, zKey, b, 4096, &nRead, &size, &err));
  ck_assert_uint_eq(nRead, 4096);
  ck_assert_uint_eq(size, n);
  ck_assert_mem_eq(b, a + n - 4096, 4096);
  CK_OK(store_read_suffix(st, zOdd, b, 4096, &nRead, &size, &err));
  ck_assert_uint_eq(nRead, 3);
  ck_assert_uint_eq(size, 3);
  ck_assert_mem_eq(b, "odd", 3);

  /* head: size and the etag the put returned */
  CK_OK(st->ops->head(st, zKey, &size, zEtagHead, sizeof(zEtagHead), &err));
  ck_assert_uint_eq(size, n);
  ck_assert_str_eq(zEtagHead, zEtagPut);

  /* the litestream timestamp went in as metadata, RFC 3339 as Go writes it */
  {
    char zMeta[2048];
    size_t nMeta = 0;
    snprintf(zMeta, sizeof(zMeta), "%s/data/" BUCKET "/rt/db/0000/%s._S3rver_metadata.json",
             srv.zDir, "0000000000000001-0000000000000001.ltx");
    char *zJson = (char *)tu_read_file(zMeta, &nMeta);
    ck_assert_msg(zJson != NULL, "no metadata file %s", zMeta);
    ck_assert_msg(
        strstr(zJson, "\"x-amz-meta-litestream-timestamp\": \"2023-11-14T22:13:20.123Z\""), "%s",
        zJson);
    free(zJson);
  }

  /* delete (a missing key is fine), then it is gone */
  const char *azDel[] = {zKey, zOdd, "0000/never-existed.ltx"};
  CK_OK(store_delete(st, azDel, 3, &err));
  CK_OK(store_list(st, "0000/", NULL, &l, &err));
  ck_assert_uint_eq(l.n, 0);
  store_object_list_free(&l);
  CK_RC(st->ops->head(st, zKey, &size, NULL, 0, &err), STORE_ERR_NOT_FOUND);
  CK_OK(store_delete(st, azDel, 0, &err));

  free(a);
  free(b);
  store_close(st);
}
END_TEST

START_TEST(test_s3_timestamp_formats_like_go_rfc3339nano) {
  static const struct {
    int64_t ms;
    const char *zWant;
  } aCase[] = {
      {0, "1970-01-01T00:00:00Z"},
      {1700000000000, "2023-11-14T22:13:20Z"},
      {1700000000100, "2023-11-14T22:13:20.1Z"},
      {951782400001, "2000-02-29T00:00:00.001Z"},
  };
  store *st = open_at("ts", 0, NULL);
  ltx_error err = {0};
  for (size_t i = 0; i < sizeof(aCase) / sizeof(aCase[0]); i++) {
    char zKey[32], zMeta[2048], zWant[128];
    size_t n = 0;
    snprintf(zKey, sizeof(zKey), "k%zu", i);
    CK_OK(store_put(st, zKey, U8("x"), 1, aCase[i].ms, STORE_PUT_ALWAYS, NULL, NULL, 0, &err));
    snprintf(zMeta, sizeof(zMeta), "%s/data/" BUCKET "/ts/%s._S3rver_metadata.json", srv.zDir,
             zKey);
    char *zJson = (char *)tu_read_file(zMeta, &n);
    ck_assert_ptr_nonnull(zJson);
    snprintf(zWant, sizeof(zWant), "\"x-amz-meta-litestream-timestamp\": \"%s\"", aCase[i].zWant);
    ck_assert_msg(strstr(zJson, zWant) != NULL, "want %s in %s", zWant, zJson);
    ck_assert_int_eq(ltx_time_parse(aCase[i].zWant), aCase[i].ms);
    free(zJson);
  }
  store_close(st);
}
END_TEST

START_TEST(test_s3_sign_payload_and_session_token_verify) {
  /* s3rver checks the signature over x-amz-content-sha256 and every signed
  ** header, the security token included */
  setenv("AWS_SESSION_TOKEN", "session-token-value", 1);
  store *st = open_at("signed", 0, "sign-payload=true");
  ltx_error err = {0};
  /* 3 MiB: past curl's "Expect: 100-continue" threshold */
  size_t n = 3u << 20;
  uint8_t *a = random_bytes(n, 7), b[100];
  CK_OK(store_put(st, "0000/a.ltx", a, n, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err));
  CK_OK(store_read_range(st, "0000/a.ltx", n - 100, b, 100, &err));
  ck_assert_mem_eq(b, a + n - 100, 100);
  const char *azDel[] = {"0000/a.ltx"};
  CK_OK(store_delete(st, azDel, 1, &err));
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_s3_litestream_credential_aliases_win) {
  ltx_error err = {0};
  uint8_t b[1];
  /* the AWS pair is wrong, the LITESTREAM pair right: it works */
  setenv("AWS_SECRET_ACCESS_KEY", "wrong", 1);
  setenv("LITESTREAM_ACCESS_KEY_ID", "S3RVER", 1);
  setenv("LITESTREAM_SECRET_ACCESS_KEY", SECRET, 1);
  store *st = open_at("alias", 0, NULL);
  put_ok(st, "k", "v", 1);
  CK_OK(store_read_range(st, "k", 0, b, 1, &err));
  store_close(st);
  /* and the other way round: the wrong LITESTREAM secret is used */
  setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
  setenv("LITESTREAM_SECRET_ACCESS_KEY", "wrong", 1);
  st = open_at("alias", 0, NULL);
  CK_RC(store_read_range(st, "k", 0, b, 1, &err), STORE_ERR_AUTH);
  store_close(st);
}
END_TEST

#define N_MANY 5000
#define PUT_THREADS 16

typedef struct put_arg {
  store *st;
  void (*xKey)(int i, char *zKey, size_t n);
  int iFirst, iStep, nKey;
  int rc;
  ltx_error err;
} put_arg;

/* object i holds the first i % 97 bytes of this */
static const char zFill[] =
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz"
    "0123456789abcdefghijklmnopqrstuvwxyz";

static void many_key(int i, char *zKey, size_t n) {
  snprintf(zKey, n, "0000/%016x-%016x.ltx", (unsigned)(i + 1), (unsigned)(i + 1));
}

static void *put_many_main(void *pArg) {
  put_arg *a = pArg;
  for (int i = a->iFirst; i < a->nKey && a->rc == LTX_OK; i += a->iStep) {
    char zKey[64];
    a->xKey(i, zKey, sizeof(zKey));
    a->rc = store_put(a->st, zKey, U8(zFill), (size_t)(i % 97), -1, STORE_PUT_ALWAYS, NULL, NULL, 0,
                      &a->err);
  }
  return NULL;
}

/* Puts keys xKey(0..nKey) from PUT_THREADS threads sharing st. */
static void put_many(store *st, void (*xKey)(int, char *, size_t), int nKey) {
  put_arg aArg[PUT_THREADS];
  pthread_t aThread[PUT_THREADS];
  for (int t = 0; t < PUT_THREADS; t++) {
    aArg[t] = (put_arg){st, xKey, t, PUT_THREADS, nKey, LTX_OK, {0, ""}};
    ck_assert_int_eq(pthread_create(&aThread[t], NULL, put_many_main, &aArg[t]), 0);
  }
  for (int t = 0; t < PUT_THREADS; t++) pthread_join(aThread[t], NULL);
  for (int t = 0; t < PUT_THREADS; t++) {
    ck_assert_msg(aArg[t].rc == LTX_OK, "thread %d: %s", t, aArg[t].err.msg);
  }
}

/* s3rver answers 1000 keys per page, so this walks continuation tokens.
** The 5000 objects are written straight into s3rver's directory (one
** "<key>._S3rver_object" file each, which is all it needs), because 5000
** signed PUTs keep the single-threaded s3rver busy for 10 s; the puts
** themselves are tested elsewhere, from 16 threads. */
START_TEST(test_s3_list_5000_pages_with_start_after) {
  store *st = open_at("many", 0, NULL);
  ltx_error err = {0};
  store_object_list l = {0};
  char zKey[64], zFile[2048];
  int64_t ms0 = now_ms();

  snprintf(zFile, sizeof(zFile), "%s/data/" BUCKET "/many/0000", srv.zDir);
  ck_assert_int_eq(tu_mkdirs(zFile), 0);
  for (int i = 0; i < N_MANY; i++) {
    many_key(i, zKey, sizeof(zKey));
    snprintf(zFile, sizeof(zFile), "%s/data/" BUCKET "/many/%s._S3rver_object", srv.zDir, zKey);
    ck_assert_int_eq(tu_write_file(zFile, zFill, (size_t)(i % 97)), 0);
  }
  int64_t ms1 = now_ms();

  CK_OK(store_list(st, "0000/", NULL, &l, &err));
  ck_assert_uint_eq(l.n, N_MANY);
  for (int i = 0; i < N_MANY; i++) {
    many_key(i, zKey, sizeof(zKey));
    ck_assert_str_eq(l.items[i].key, zKey);
    ck_assert_uint_eq(l.items[i].size, (uint64_t)(i % 97));
  }
  store_object_list_free(&l);

  /* start-after in the middle of a page, and then across pages */
  many_key(2499, zKey, sizeof(zKey));
  CK_OK(store_list(st, "0000/", zKey, &l, &err));
  ck_assert_uint_eq(l.n, N_MANY - 2500);
  many_key(2500, zKey, sizeof(zKey));
  ck_assert_str_eq(l.items[0].key, zKey);
  store_object_list_free(&l);
  /* a narrower prefix: names 0x100..0x1ff (256 of them) */
  snprintf(zKey, sizeof(zKey), "0000/%014x", 1u);
  CK_OK(store_list(st, zKey, NULL, &l, &err));
  ck_assert_uint_eq(l.n, 256);
  ck_assert_str_eq(l.items[0].key, "0000/0000000000000100-0000000000000100.ltx");
  store_object_list_free(&l);
  int64_t ms2 = now_ms();

  /* deletes show in the next listing (s3rver scans the whole directory for
  ** every key it deletes, so the batches have their own test) */
  {
    char azDel[3][64];
    const char *apDel[3] = {azDel[0], azDel[1], azDel[2]};
    many_key(0, azDel[0], 64);
    many_key(2500, azDel[1], 64);
    many_key(N_MANY - 1, azDel[2], 64);
    CK_OK(store_delete(st, apDel, 3, &err));
    CK_OK(store_list(st, "0000/", NULL, &l, &err));
    ck_assert_uint_eq(l.n, N_MANY - 3);
    many_key(1, zKey, sizeof(zKey));
    ck_assert_str_eq(l.items[0].key, zKey);
    store_object_list_free(&l);
  }
  fprintf(stderr, "check_s3: 5000 objects %lld ms, 3 listings %lld ms, delete 3 + list %lld ms\n",
          (long long)(ms1 - ms0), (long long)(ms2 - ms1), (long long)(now_ms() - ms2));
  store_close(st);
}
END_TEST

/* Whether two listings name the same files, field by field (the structs
** have padding, which memcmp would compare). */
static int same_files(const store_ltx_list *a, const store_ltx_list *b) {
  if (a->n != b->n) return 0;
  for (size_t i = 0; i < a->n; i++) {
    const store_ltx_file *x = &a->files[i], *y = &b->files[i];
    if (x->level != y->level || x->min_txid != y->min_txid || x->max_txid != y->max_txid ||
        x->size != y->size || x->timestamp_ms != y->timestamp_ms)
      return 0;
  }
  return 1;
}

/* Appends level lv's files after (after_min, after_max) to l, level by
** level as store_list_level lists them (the truth the start is held to). */
static void append_level(store *st, int lv, uint64_t after_min, uint64_t after_max,
                         store_ltx_list *l) {
  store_ltx_list one = {0};
  ltx_error err = {0};
  CK_OK(store_list_level(st, lv, after_min, after_max, &one, &err));
  l->files = realloc(l->files, (l->n + one.n + 1) * sizeof(*l->files));
  if (one.n > 0) memcpy(l->files + l->n, one.files, one.n * sizeof(*one.files));
  l->n += one.n;
  store_ltx_list_free(&one);
}

/* store_list_levels_start: one page of the levels' common prefix. Files on
** levels 0, 1, 3 and 9 among keys that are no LTX file (inside a level,
** beside the levels, past them); for every page size the start plus the
** open levels listed one by one is the whole listing, the page's levels
** are whole, and a page that covers everything is one request and leaves
** nothing open. */
START_TEST(test_s3_list_levels_start_pages_and_leaves_levels_open) {
  static const char *azKey[] = {
      "0000/0000000000000005-0000000000000005.ltx", "0000/0000000000000006-0000000000000006.ltx",
      "0001/0000000000000001-0000000000000004.ltx", "0001/notes.txt",
      "0003/0000000000000001-0000000000000006.ltx", "0003/0000000000000007-0000000000000007.ltx",
      "0005x",                                      "0009/0000000000000001-0000000000000006.ltx",
      "000a/0000000000000001-0000000000000001.ltx", "000z",
  };
  const size_t nKey = sizeof(azKey) / sizeof(azKey[0]);
  store_counters c = {0};
  store *st = NULL;
  ltx_error err = {0};
  store_ltx_list want = {0}, got = {0};
  int open = -1;

  st = open_at("lv", 0, NULL);
  for (size_t i = 0; i < nKey; i++) put_ok(st, azKey[i], "x", 1);
  for (int lv = 0; lv <= STORE_MAX_LEVEL; lv++) append_level(st, lv, 0, 0, &want);
  ck_assert_uint_eq(want.n, 6);
  CK_OK(store_counting_wrap(st, &c, &st, &err));

  CK_OK(store_list_levels_start(st, 0, NULL, &got, &open, &err));
  ck_assert_int_eq(open, STORE_MAX_LEVEL + 1);
  ck_assert_uint_eq(atomic_load(&c.requests), 1);
  ck_assert(same_files(&got, &want));
  store_ltx_list_free(&got);

  /* a page of k keys ends at azKey[k-1]: the levels before that key's own
  ** are whole, the rest open */
  static const int aOpen[] = {0, 0, 1, 1, 3, 3, 6, 9, 10, 10};
  for (size_t k = 1; k <= nKey; k++) {
    CK_OK(store_list_levels_start(st, (unsigned)k, NULL, &got, &open, &err));
    ck_assert_msg(open == aOpen[k - 1] || (k == nKey && open == STORE_MAX_LEVEL + 1),
                  "page of %zu keys: open %d, want %d", k, open, aOpen[k - 1]);
    for (size_t i = 0; i < got.n; i++) ck_assert_int_lt(got.files[i].level, open);
    for (int lv = open; lv <= STORE_MAX_LEVEL; lv++) append_level(st, lv, 0, 0, &got);
    ck_assert_msg(same_files(&got, &want),
                  "page of %zu keys: %zu files, want %zu", k, got.n, want.n);
    store_ltx_list_free(&got);
  }
  CK_OK(store_list_all(st, &got, &err));
  ck_assert(same_files(&got, &want));
  store_ltx_list_free(&got);
  store_ltx_list_free(&want);

  /* After what a poll has seen (level 0 up to 5, level 3 up to [1, 6]):
  ** each level only after its entry, as level by level, and a page that
  ** covers the rest is one request; for every page size, the start plus
  ** the open levels listed one by one is that listing. */
  store_ltx_file after[STORE_MAX_LEVEL + 1] = {{0}};
  after[0] = (store_ltx_file){0, 5, 5, 0, 0};
  after[3] = (store_ltx_file){3, 1, 6, 0, 0};
  for (int lv = 0; lv <= STORE_MAX_LEVEL; lv++)
    append_level(st, lv, after[lv].min_txid, after[lv].max_txid, &want);
  ck_assert_uint_eq(want.n, 4); /* 0:6, 1:[1,4], 3:7, 9:[1,6] */
  atomic_store(&c.requests, 0);
  CK_OK(store_list_levels_start(st, 0, after, &got, &open, &err));
  ck_assert_int_eq(open, STORE_MAX_LEVEL + 1);
  ck_assert_uint_eq(atomic_load(&c.requests), 1);
  ck_assert(same_files(&got, &want));
  store_ltx_list_free(&got);
  for (size_t k = 1; k <= nKey; k++) {
    CK_OK(store_list_levels_start(st, (unsigned)k, after, &got, &open, &err));
    for (size_t i = 0; i < got.n; i++) ck_assert_int_lt(got.files[i].level, open);
    for (int lv = open; lv <= STORE_MAX_LEVEL; lv++)
      append_level(st, lv, after[lv].min_txid, after[lv].max_txid, &got);
    ck_assert_msg(same_files(&got, &want), "after, page of %zu keys: %zu files, want %zu", k,
                  got.n, want.n);
    store_ltx_list_free(&got);
  }
  store_ltx_list_free(&want);
  store_close(st);
}
END_TEST

#define N_DEL 2001

static void spread_key(int i, char *zKey, size_t n) { snprintf(zKey, n, "%04d/k.ltx", i); }
/* every 10th of them: 201 objects, in all three batches below */
static void tenth_key(int i, char *zKey, size_t n) { spread_key(i * 10, zKey, n); }

/* Deleting 2001 keys takes 3 DeleteObjects requests (1000 + 1000 + 1), sent
** together; 201 of the keys exist (put from 16 threads sharing one store),
** the rest are missing, which is not an error. The keys sit in separate
** directories on s3rver's disk, because s3rver rescans a deleted key's
** directory (quadratic in a directory of thousands). */
START_TEST(test_s3_delete_2001_in_batches_of_1000) {
  store *stDirect = open_at("del", 0, NULL);
  store *st = open_at("del", 1, "timeout-ms=30000");
  ltx_error err = {0};
  store_object_list l = {0};
  char **azKey = calloc(N_DEL, sizeof(*azKey));
  ck_assert_ptr_nonnull(azKey);
  fault_clear();
  int64_t ms0 = now_ms();
  put_many(stDirect, tenth_key, N_DEL / 10 + 1);
  store_close(stDirect);
  int64_t ms1 = now_ms();
  CK_OK(store_list(st, NULL, NULL, &l, &err));
  ck_assert_uint_eq(l.n, N_DEL / 10 + 1);
  ck_assert_str_eq(l.items[l.n - 1].key, "2000/k.ltx");
  store_object_list_free(&l);
  for (int i = 0; i < N_DEL; i++) {
    azKey[i] = malloc(64);
    spread_key(i, azKey[i], 64);
  }
  fault("reset-stats");
  CK_OK(store_delete(st, (const char *const *)azKey, N_DEL, &err));
  ck_assert_msg(strstr(zLastStats, "\"requests\":0") != NULL, "%s", zLastStats);
  fault("stats");
  ck_assert_msg(strstr(zLastStats, "\"requests\":3,") != NULL, "%s", zLastStats);
  CK_OK(store_list(st, NULL, NULL, &l, &err));
  ck_assert_uint_eq(l.n, 0);
  fprintf(stderr, "check_s3: %d puts %lld ms, delete + lists %lld ms\n", N_DEL / 10 + 1,
          (long long)(ms1 - ms0), (long long)(now_ms() - ms1));
  for (int i = 0; i < N_DEL; i++) free(azKey[i]);
  free(azKey);
  store_close(st);
}
END_TEST

/* ---- conditional puts ---- */

START_TEST(test_s3_conditional_puts) {
  store *st = open_at("cond", 0, NULL);
  ltx_error err = {0};
  char zE1[STORE_ETAG_CAP], zE2[STORE_ETAG_CAP];

  CK_OK(store_put(st, "lock.json", U8("a"), 1, -1, STORE_PUT_IF_ABSENT, NULL, zE1, sizeof(zE1),
                  &err));
  CK_RC(store_put(st, "lock.json", U8("b"), 1, -1, STORE_PUT_IF_ABSENT, NULL, NULL, 0, &err),
        STORE_ERR_PRECONDITION);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/cond/lock.json: HTTP 412") != NULL, "%s", err.msg);
  CK_OK(
      store_put(st, "lock.json", U8("cc"), 2, -1, STORE_PUT_IF_MATCH, zE1, zE2, sizeof(zE2), &err));
  ck_assert_str_ne(zE1, zE2);
  /* the old etag no longer matches */
  CK_RC(store_put(st, "lock.json", U8("d"), 1, -1, STORE_PUT_IF_MATCH, zE1, NULL, 0, &err),
        STORE_ERR_PRECONDITION);
  uint8_t b[2];
  CK_OK(store_read_range(st, "lock.json", 0, b, 2, &err));
  ck_assert_mem_eq(b, "cc", 2);
  /* If-Match on a missing key */
  CK_RC(store_put(st, "nope.json", U8("e"), 1, -1, STORE_PUT_IF_MATCH, zE2, NULL, 0, &err),
        STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/cond/nope.json") != NULL, "%s", err.msg);
  store_close(st);
}
END_TEST

#define RACERS 8

typedef struct racer {
  store *st;
  pthread_barrier_t *bar;
  const char *zKey;
  int id, rc;
} racer;

static void *racer_main(void *pArg) {
  racer *r = pArg;
  ltx_error err = {0};
  char zData[16];
  snprintf(zData, sizeof(zData), "racer %d", r->id);
  pthread_barrier_wait(r->bar);
  r->rc = store_put(r->st, r->zKey, (const uint8_t *)zData, strlen(zData), -1, STORE_PUT_IF_ABSENT,
                    NULL, NULL, 0, &err);
  return NULL;
}

START_TEST(test_s3_racing_if_absent_puts_have_one_winner) {
  store *st = open_at("race", 0, NULL);
  for (int round = 0; round < 5; round++) {
    pthread_barrier_t bar;
    pthread_t aThread[RACERS];
    racer aR[RACERS];
    char zKey[32];
    int nWin = 0, iWin = -1;
    snprintf(zKey, sizeof(zKey), "lock-%d.json", round);
    pthread_barrier_init(&bar, NULL, RACERS);
    for (int t = 0; t < RACERS; t++) {
      aR[t] = (racer){st, &bar, zKey, t, -1};
      ck_assert_int_eq(pthread_create(&aThread[t], NULL, racer_main, &aR[t]), 0);
    }
    for (int t = 0; t < RACERS; t++) pthread_join(aThread[t], NULL);
    pthread_barrier_destroy(&bar);
    for (int t = 0; t < RACERS; t++) {
      if (aR[t].rc == LTX_OK) {
        nWin++;
        iWin = t;
      } else {
        ck_assert_int_eq(aR[t].rc, STORE_ERR_PRECONDITION);
      }
    }
    ck_assert_int_eq(nWin, 1);
    /* the object holds the winner's data */
    char zWant[32], zGot[32] = "";
    size_t nRead = 0;
    uint64_t size = 0;
    ltx_error err = {0};
    snprintf(zWant, sizeof(zWant), "racer %d", iWin);
    CK_OK(store_read_suffix(st, zKey, (uint8_t *)zGot, sizeof(zGot) - 1, &nRead, &size, &err));
    ck_assert_str_eq(zGot, zWant);
  }
  store_close(st);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_s3_wrong_secret_is_auth_error_and_never_leaks) {
  const char *zSecret = "wr0ng-S3cret-Xq9Zt7Kp";
  ltx_error err = {0};
  uint8_t b[8];
  size_t nRead;
  uint64_t size;
  store_object_list l = {0};
  const char *azDel[] = {"k"};
  setenv("AWS_SECRET_ACCESS_KEY", zSecret, 1);
  store *st = open_at("auth", 0, NULL);

  CK_RC(store_read_range(st, "0000/x.ltx", 0, b, 8, &err), STORE_ERR_AUTH);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/auth/0000/x.ltx: HTTP 403 SignatureDoesNotMatch"),
                "%s", err.msg);
  ck_assert_ptr_null(strstr(err.msg, zSecret));
  CK_RC(store_read_suffix(st, "0000/x.ltx", b, 8, &nRead, &size, &err), STORE_ERR_AUTH);
  ck_assert_ptr_null(strstr(err.msg, zSecret));
  CK_RC(store_list(st, "0000/", NULL, &l, &err), STORE_ERR_AUTH);
  ck_assert_ptr_null(strstr(err.msg, zSecret));
  CK_RC(store_put(st, "k", U8("v"), 1, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err), STORE_ERR_AUTH);
  ck_assert_ptr_null(strstr(err.msg, zSecret));
  CK_RC(st->ops->head(st, "k", &size, NULL, 0, &err), STORE_ERR_AUTH);
  ck_assert_ptr_null(strstr(err.msg, zSecret));
  CK_RC(store_delete(st, azDel, 1, &err), STORE_ERR_AUTH);
  ck_assert_ptr_null(strstr(err.msg, zSecret));
  store_close(st);

  /* an unknown access key is an auth error too */
  setenv("AWS_ACCESS_KEY_ID", "NOBODY", 1);
  st = open_at("auth", 0, NULL);
  CK_RC(store_read_range(st, "0000/x.ltx", 0, b, 8, &err), STORE_ERR_AUTH);
  ck_assert_msg(strstr(err.msg, "InvalidAccessKeyId") != NULL, "%s", err.msg);
  ck_assert_ptr_null(strstr(err.msg, zSecret));
  store_close(st);
}
END_TEST

START_TEST(test_s3_missing_key_and_bucket_are_not_found_naming_them) {
  store *st = open_at("nf/db", 0, NULL);
  ltx_error err = {0};
  uint8_t b[8];
  uint64_t size;
  CK_RC(store_read_range(st, "0000/missing.ltx", 0, b, 8, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/nf/db/0000/missing.ltx: HTTP 404 NoSuchKey"), "%s",
                err.msg);
  CK_RC(st->ops->head(st, "0000/missing.ltx", &size, NULL, 0, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/nf/db/0000/missing.ltx: HTTP 404") != NULL, "%s",
                err.msg);
  store_close(st);

  char zUrl[256];
  snprintf(zUrl, sizeof(zUrl), "s3://no-such-bucket/db?endpoint=http://127.0.0.1:%d",
           srv.portServer);
  CK_OK(store_s3_open(zUrl, &st, &err));
  store_object_list l = {0};
  CK_RC(store_list(st, "0000/", NULL, &l, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, "s3://no-such-bucket/db/0000/ (list): HTTP 404 NoSuchBucket"), "%s",
                err.msg);
  store_close(st);
}
END_TEST

/* ---- parallel range reads ---- */

#define N_OBJ 4
#define OBJ_SIZE (256 * 1024)
#define N_RANGES 200

START_TEST(test_s3_read_ranges_200_at_concurrency_8) {
  store *st = open_at("ranges", 1, "concurrency=8");
  ltx_error err = {0};
  uint8_t *aObj[N_OBJ];
  char azKey[N_OBJ][32];
  store_range aR[N_RANGES];
  uint64_t seed = 42;

  fault_clear();
  for (int i = 0; i < N_OBJ; i++) {
    snprintf(azKey[i], sizeof(azKey[i]), "0000/obj%d.ltx", i);
    aObj[i] = random_bytes(OBJ_SIZE, 100 + (uint64_t)i);
    put_ok(st, azKey[i], aObj[i], OBJ_SIZE);
  }
  for (int k = 0; k < N_RANGES; k++) {
    int i = (int)(tu_rand(&seed) % N_OBJ);
    size_t n = 1 + (size_t)(tu_rand(&seed) % 20000);
    uint64_t off = tu_rand(&seed) % (OBJ_SIZE - n + 1);
    aR[k] = (store_range){azKey[i], off, malloc(n), n, -1};
    ck_assert_ptr_nonnull(aR[k].buf);
  }
  /* 20 ms per request: one at a time this would take >= 4 s */
  fault("set?mode=latency&ms=20");
  fault("reset-stats");
  int64_t ms0 = now_ms();
  int rc = st->ops->read_ranges(st, aR, N_RANGES, &err);
  int64_t ms = now_ms() - ms0;
  ck_assert_msg(rc == LTX_OK, "%s", err.msg);
  ck_assert_int_eq(fault("stats"), N_RANGES);
  /* several connections, never more than the cap */
  ck_assert_msg(stat_field("connections") >= 2 && stat_field("connections") <= 8, "%s", zLastStats);
  for (int k = 0; k < N_RANGES; k++) {
    ck_assert_int_eq(aR[k].rc, LTX_OK);
    for (int i = 0; i < N_OBJ; i++) {
      if (aR[k].key == azKey[i]) ck_assert_mem_eq(aR[k].buf, aObj[i] + aR[k].off, aR[k].n);
    }
  }
  ck_assert_msg(ms < 2500, "200 ranges at concurrency 8 took %lld ms", (long long)ms);
  fault_clear();

  /* one range past the end fails alone; the others still arrive */
  aR[7].off = OBJ_SIZE - 1;
  aR[7].n = 2;
  rc = st->ops->read_ranges(st, aR, 20, &err);
  ck_assert_int_eq(rc, STORE_ERR_SHORT_READ);
  ck_assert_int_eq(aR[7].rc, STORE_ERR_SHORT_READ);
  ck_assert_int_eq(aR[6].rc, LTX_OK);
  ck_assert_int_eq(aR[8].rc, LTX_OK);
  CK_OK(st->ops->read_ranges(st, aR, 0, &err));

  for (int k = 0; k < N_RANGES; k++) free(aR[k].buf);
  for (int i = 0; i < N_OBJ; i++) free(aObj[i]);
  store_close(st);
}
END_TEST

/* One thread's calls go over one kept-alive connection. */
START_TEST(test_s3_sequential_calls_reuse_one_connection) {
  store *st = open_at("reuse", 1, NULL);
  ltx_error err = {0};
  uint8_t b[16];
  uint64_t size;
  store_object_list l = {0};
  fault_clear();
  put_ok(st, "0000/r.ltx", zFill, 64);
  fault("reset-stats");
  for (int i = 0; i < 30; i++) {
    CK_OK(store_read_range(st, "0000/r.ltx", (uint64_t)i, b, sizeof(b), &err));
    ck_assert_mem_eq(b, zFill + i, sizeof(b));
  }
  CK_OK(st->ops->head(st, "0000/r.ltx", &size, NULL, 0, &err));
  CK_OK(store_list(st, "0000/", NULL, &l, &err));
  store_object_list_free(&l);
  fault("stats");
  ck_assert_msg(stat_field("requests") == 32 && stat_field("connections") == 1, "%s", zLastStats);
  store_close(st);
}
END_TEST

/* Runs a short command to completion, output discarded; 0 if it succeeds. */
static int run_cmd(char *const argv[]) {
  int status = -1;
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open("/dev/null", O_WRONLY);
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(argv[0], argv);
    _exit(127);
  }
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* An HTTPS server with a self-signed certificate: refused by default (and
** not retried), accepted with skip-verify=true, and with AWS_CA_BUNDLE
** naming the certificate. */
START_TEST(test_s3_https_verifies_unless_skip_verify_and_honours_ca_bundle) {
  char zDir[1024], zCert[1100], zKey[1100], zData[1100], zPpid[32], zUrl[512], zServer[2048];
  pid_t pid = 0;
  int fd = -1, port;
  ltx_error err = {0};
  store *st = NULL;
  uint8_t b[5];

  need_servers();
  ck_assert_ptr_nonnull(tu_mkdtemp(zDir, sizeof(zDir), "tls"));
  snprintf(zCert, sizeof(zCert), "%s/cert.pem", zDir);
  snprintf(zKey, sizeof(zKey), "%s/key.pem", zDir);
  snprintf(zData, sizeof(zData), "%s/data", zDir);
  snprintf(zPpid, sizeof(zPpid), "%d", (int)getpid());
  snprintf(zServer, sizeof(zServer), "%s/tests/s3/server.js", srcdir());
  char *const argvCert[] = {"openssl",
                            "req",
                            "-x509",
                            "-newkey",
                            "ec",
                            "-pkeyopt",
                            "ec_paramgen_curve:prime256v1",
                            "-nodes",
                            "-keyout",
                            zKey,
                            "-out",
                            zCert,
                            "-days",
                            "2",
                            "-subj",
                            "/CN=127.0.0.1",
                            "-addext",
                            "subjectAltName=IP:127.0.0.1",
                            NULL};
  ck_assert_msg(run_cmd(argvCert) == 0, "openssl could not make a certificate");
  char *const argvServer[] = {"node",  "--openssl-legacy-provider",
                              zServer, "--port",
                              "0",     "--dir",
                              zData,   "--bucket",
                              BUCKET,  "--parent-pid",
                              zPpid,   "--tls-cert",
                              zCert,   "--tls-key",
                              zKey,    NULL};
  port = spawn_node(argvServer, &pid, &fd);
  ck_assert_msg(port > 0, "%s", srv.zWhy);

  /* (1) the system CAs do not know it: a verification error, at once */
  unsetenv("AWS_CA_BUNDLE");
  snprintf(zUrl, sizeof(zUrl),
           "s3://" BUCKET "/tls?endpoint=https://127.0.0.1:%d&max-attempts=3&retry-base-ms=5",
           port);
  CK_OK(store_s3_open(zUrl, &st, &err));
  CK_RC(store_read_range(st, "k", 0, b, 5, &err), STORE_ERR_NETWORK);
  ck_assert_msg(strstr(err.msg, "certificate") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "attempts") == NULL, "retried: %s", err.msg);
  store_close(st);

  /* (2) skip-verify=true */
  strncat(zUrl, "&skip-verify=true", sizeof(zUrl) - strlen(zUrl) - 1);
  CK_OK(store_s3_open(zUrl, &st, &err));
  CK_OK(store_put(st, "k", U8("hello"), 5, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err));
  CK_OK(store_read_range(st, "k", 0, b, 5, &err));
  ck_assert_mem_eq(b, "hello", 5);
  store_close(st);

  /* (3) AWS_CA_BUNDLE names the certificate */
  setenv("AWS_CA_BUNDLE", zCert, 1);
  snprintf(zUrl, sizeof(zUrl), "s3://" BUCKET "/tls?endpoint=https://127.0.0.1:%d", port);
  CK_OK(store_s3_open(zUrl, &st, &err));
  CK_OK(store_read_range(st, "k", 1, b, 4, &err));
  ck_assert_mem_eq(b, "ello", 4);
  store_close(st);

  stop_node(&pid, &fd);
  tu_rmtree(zDir);
}
END_TEST

/* ---- faults, through the proxy ---- */

/* A 64 KiB object under zPath, through the proxy; the data in *pa. */
static store *fault_store(const char *zPath, const char *zExtra, uint8_t **pa) {
  store *st = open_at(zPath, 1, zExtra);
  fault_clear();
  *pa = random_bytes(65536, 9);
  put_ok(st, "0000/f.ltx", *pa, 65536);
  fault("reset-stats");
  return st;
}

START_TEST(test_s3_fault_503_burst_is_retried) {
  uint8_t *a, b[30000];
  store *st = fault_store("f503", NULL, &a);
  ltx_error err = {0};
  fault("set?mode=503&n=3");
  CK_OK(store_read_range(st, "0000/f.ltx", 1000, b, sizeof(b), &err));
  ck_assert_mem_eq(b, a + 1000, sizeof(b));
  ck_assert_int_eq(fault("stats"), 3);
  /* a listing and a put (whose body is sent again) are retried too */
  store_object_list l = {0};
  fault("set?mode=503&n=2");
  CK_OK(store_list(st, "0000/", NULL, &l, &err));
  ck_assert_uint_eq(l.n, 1);
  store_object_list_free(&l);
  fault("set?mode=503&n=2&method=PUT");
  put_ok(st, "0000/g.ltx", a, 65536);
  ck_assert_int_eq(fault("stats"), 3 + 2 + 2);
  CK_OK(store_read_range(st, "0000/g.ltx", 0, b, sizeof(b), &err));
  ck_assert_mem_eq(b, a, sizeof(b));
  fault_clear();
  free(a);
  store_close(st);
}
END_TEST

/* A streamed read tells the range in pieces as they arrive; an answer cut
** in the middle is retried and told again from 0, the same bytes; error
** answers (503) are never told. */
START_TEST(test_s3_sink_streams_a_range_and_a_retry_tells_the_same_bytes) {
  enum { BIG = 3 << 20, OFF = 1000, N = BIG - 2000 };
  uint8_t *a, *big = random_bytes(BIG, 77);
  store *st = fault_store("fsink", NULL, &a);
  ltx_error err = {0};
  tu_sink rec;
  store_sink sink = {tu_sink_fn, &rec};
  put_ok(st, "0000/big.ltx", big, BIG);

  tu_sink_init(&rec, N);
  CK_OK(store_read_range_sink(st, "0000/big.ltx", OFF, N, &sink, &err));
  ck_assert_uint_eq(rec.have, N);
  ck_assert_mem_eq(rec.buf, big + OFF, N);
  ck_assert_msg(rec.calls > 1, "3 MB told in %d piece(s)", rec.calls);
  ck_assert_int_eq(rec.replays + rec.gaps, 0);
  tu_sink_free(&rec);

  fault("reset-stats");
  fault("set?mode=truncate&n=1&method=GET"); /* half the body, then FIN */
  tu_sink_init(&rec, N);
  CK_OK(store_read_range_sink(st, "0000/big.ltx", OFF, N, &sink, &err));
  ck_assert_int_eq(fault("stats"), 1);
  ck_assert_uint_eq(rec.have, N);
  ck_assert_mem_eq(rec.buf, big + OFF, N);
  ck_assert_msg(rec.replays >= 1, "the retry did not start again from 0 (%d calls)", rec.calls);
  ck_assert_int_eq(rec.differ + rec.gaps, 0);
  tu_sink_free(&rec);

  fault("reset-stats");
  fault("set?mode=503&n=2&method=GET");
  tu_sink_init(&rec, N);
  CK_OK(store_read_range_sink(st, "0000/big.ltx", OFF, N, &sink, &err));
  ck_assert_int_eq(fault("stats"), 2);
  ck_assert_mem_eq(rec.buf, big + OFF, N);
  ck_assert_int_eq(rec.replays + rec.gaps, 0); /* the error bodies were not told */
  tu_sink_free(&rec);

  /* an answer that is not the range asked (a 200 to a range at 1000, as
  ** from a server that ignores Range): nothing of it is told, the read
  ** fails */
  fault("reset-stats");
  fault("set?mode=as200&n=-1&method=GET");
  tu_sink_init(&rec, N);
  ck_assert_int_ne(store_read_range_sink(st, "0000/big.ltx", OFF, N, &sink, &err), LTX_OK);
  ck_assert_int_ge(fault("stats"), 1);
  ck_assert_msg(strstr(err.msg, "200") != NULL, "%s", err.msg);
  ck_assert_int_eq(rec.calls, 0);
  tu_sink_free(&rec);

  /* a sink that has had enough stops the read: one request, not retried,
  ** and the store goes on working */
  fault_clear();
  fault("reset-stats");
  tu_sink_init(&rec, N);
  rec.stop_at = 100 << 10;
  ck_assert_int_eq(store_read_range_sink(st, "0000/big.ltx", OFF, N, &sink, &err), STORE_ERR_STOPPED);
  ck_assert_msg(strstr(err.msg, "big.ltx") != NULL && strstr(err.msg, "stopped") != NULL, "%s", err.msg);
  fault("stats");
  ck_assert_int_eq(stat_field("requests"), 1);
  ck_assert_uint_ge(rec.have, 100 << 10);
  ck_assert_uint_lt(rec.have, N);
  ck_assert_mem_eq(rec.buf, big + OFF, rec.have);
  ck_assert_int_eq(rec.replays + rec.gaps, 0);
  tu_sink_free(&rec);
  tu_sink_init(&rec, N);
  CK_OK(store_read_range_sink(st, "0000/big.ltx", OFF, N, &sink, &err));
  ck_assert_mem_eq(rec.buf, big + OFF, N);
  tu_sink_free(&rec);

  fault_clear();
  tu_sink_init(&rec, 100);
  ck_assert_int_eq(store_read_range_sink(st, "0000/none.ltx", 0, 100, &sink, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, "none.ltx") != NULL, "%s", err.msg);
  ck_assert_int_eq(rec.calls, 0);
  tu_sink_free(&rec);
  free(big);
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_s3_fault_429_is_retried) {
  uint8_t *a, b[100];
  size_t nRead;
  uint64_t size;
  store *st = fault_store("f429", NULL, &a);
  ltx_error err = {0};
  fault("set?mode=429&n=2");
  CK_OK(store_read_suffix(st, "0000/f.ltx", b, sizeof(b), &nRead, &size, &err));
  ck_assert_uint_eq(nRead, 100);
  ck_assert_uint_eq(size, 65536);
  ck_assert_mem_eq(b, a + 65536 - 100, 100);
  ck_assert_int_eq(fault("stats"), 2);
  fault_clear();
  free(a);
  store_close(st);
}
END_TEST

/* Copies the main fixture's level-0 files with max TXID in [lo, hi] into
** the S3 layout of st. */
static void put_main_files(store *st, uint64_t lo, uint64_t hi) {
  char zDir[1024];
  store_ltx_list l = {0};
  store *fix = NULL;
  ltx_error err = {0};
  CK_OK(store_open(tu_fixture_path(zDir, sizeof(zDir), "main"), &fix, &err));
  CK_OK(store_list_level(fix, 0, 0, 0, &l, &err));
  for (size_t i = 0; i < l.n; i++) {
    char zKey[128], zPath[1200];
    size_t n = 0;
    if (l.files[i].max_txid < lo || l.files[i].max_txid > hi) continue;
    store_ltx_key(fix, 0, l.files[i].min_txid, l.files[i].max_txid, zKey, sizeof(zKey));
    snprintf(zPath, sizeof(zPath), "%s/%s", zDir, zKey);
    uint8_t *a = tu_read_file(zPath, &n);
    ck_assert_ptr_nonnull(a);
    store_ltx_key(st, 0, l.files[i].min_txid, l.files[i].max_txid, zKey, sizeof(zKey));
    put_ok(st, zKey, a, n);
    free(a);
  }
  store_ltx_list_free(&l);
  store_close(fix);
}

/* The read path over S3: 8 threads miss the same cold page at once while
** every request takes 300 ms; one range GET serves all of them (the others
** wait for the fetch in flight), and all get the same bytes. */
typedef struct miss_job {
  replica *r;
  replica_view *v;
  pthread_barrier_t *go;
  uint8_t page[4096];
  int rc;
} miss_job;

static void *miss_thread(void *arg) {
  miss_job *j = arg;
  ltx_error err = {0};
  pthread_barrier_wait(j->go);
  j->rc = replica_read_page(j->r, j->v, 20, j->page, NULL, &err);
  return NULL;
}

START_TEST(test_s3_replica_coalesces_identical_misses) {
  char zUrl[1024];
  store *st = open_at("coal", 1, NULL);
  ltx_error err = {0};
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat before, after;
  pthread_barrier_t go;
  pthread_t th[8];
  miss_job jobs[8];

  fault_clear();
  put_main_files(st, 1, 11);

  snprintf(zUrl, sizeof(zUrl), "s3://" BUCKET "/coal?endpoint=http://127.0.0.1:%d",
           srv.portProxy);
  replica_config cfg = {.poll_ms = 60000, .cache_bytes = 64u << 20, .open_timeout_ms = 2000, .prefetch_max = 0}; /* every page lazily */
  CK_OK(replica_acquire(zUrl, &cfg, &r, &err));
  CK_OK(replica_latest(r, &v, &err));
  ck_assert_uint_eq(replica_view_txid(v), 11);

  fault("set?mode=latency&ms=300");
  fault("reset-stats");
  replica_stats(r, &before);
  pthread_barrier_init(&go, NULL, 8);
  for (int i = 0; i < 8; i++) {
    jobs[i] = (miss_job){r, v, &go, {0}, -1};
    ck_assert_int_eq(pthread_create(&th[i], NULL, miss_thread, &jobs[i]), 0);
  }
  for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
  replica_stats(r, &after);
  fault("stats");
  ck_assert_msg(stat_field("requests") == 1, "%s", zLastStats);
  ck_assert_uint_eq(after.requests - before.requests, 1);
  ck_assert_uint_ge(after.coalesced - before.coalesced, 1);
  for (int i = 0; i < 8; i++) {
    ck_assert_int_eq(jobs[i].rc, LTX_OK);
    ck_assert_mem_eq(jobs[i].page, jobs[0].page, sizeof(jobs[0].page));
  }
  pthread_barrier_destroy(&go);
  fault_clear();
  replica_view_release(v);
  replica_release(r);
  store_close(st);
}
END_TEST

/* While the store fails, polls fail and back off; the view stays usable;
** once the store answers again the poller catches up by itself. */
START_TEST(test_s3_replica_poller_backs_off_and_recovers) {
  char zUrl[1024];
  store *st = open_at("recover", 0, NULL);
  ltx_error err = {0};
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s0, s1;
  put_main_files(st, 1, 5);
  snprintf(zUrl, sizeof(zUrl),
           "s3://" BUCKET "/recover?endpoint=http://127.0.0.1:%d&max-attempts=1&timeout-ms=2000",
           srv.portProxy);
  replica_config cfg = {.poll_ms = 50, .cache_bytes = 64u << 20, .open_timeout_ms = 2000, .prefetch_max = 4u << 20};
  fault_clear();
  CK_OK(replica_acquire(zUrl, &cfg, &r, &err));
  CK_OK(replica_latest(r, &v, &err));
  ck_assert_uint_eq(replica_view_txid(v), 5);
  replica_view_release(v);

  fault("set?mode=503&n=-1");
  replica_stats(r, &s0);
  /* Four failed polls in a row: without backoff they take ~0.2 s at a
  ** 50 ms interval, with it at least 100+200+400 ms between them. A
  ** loaded machine only makes this slower, never faster. */
  int64_t t0 = now_ms(), deadline = t0 + 60000;
  do {
    usleep(5000);
    replica_stats(r, &s1);
  } while (s1.poll_errors < s0.poll_errors + 4 && now_ms() < deadline);
  ck_assert_msg(s1.poll_errors >= s0.poll_errors + 4, "poll errors %llu -> %llu in 60 s",
                (unsigned long long)s0.poll_errors, (unsigned long long)s1.poll_errors);
  ck_assert_msg(now_ms() - t0 >= 700, "4 failed polls in %lld ms: no backoff",
                (long long)(now_ms() - t0));
  ck_assert_msg(strstr(s1.last_poll_error, "503") != NULL, "%s", s1.last_poll_error);
  CK_OK(replica_latest(r, &v, &err)); /* the last view still serves */
  ck_assert_uint_eq(replica_view_txid(v), 5);
  replica_view_release(v);

  fault_clear();
  put_main_files(st, 6, 11);
  v = tu_wait_txid(r, 11); /* backoff is capped at 30 s */
  ck_assert_uint_eq(replica_view_txid(v), 11);
  replica_view_release(v);
  ck_assert_int_ge(replica_lag_seconds(r), 0);
  ck_assert_int_le(replica_lag_seconds(r), 1);
  replica_release(r);
  store_close(st);
}
END_TEST

/* ---- objects listed before they are complete ----
** Real S3 lists only complete objects, but S3-compatible servers list
** uploads in progress (s3rver does) and a listing can be stale: the poller
** must not depend on the listed size. */

static const size_t kPartial[] = {0, 4096, 100000};

/* The bytes of the main fixture's level-0 file of TXID t (free them). */
static uint8_t *main_file_bytes(uint64_t t, size_t *n) {
  char zPath[1200], zName[64], zRel[128];
  snprintf(zRel, sizeof(zRel), "main/ltx/0/%s", ltx_file_name(t, t, zName));
  uint8_t *a = tu_read_file(tu_fixture_path(zPath, sizeof(zPath), zRel), n);
  ck_assert_ptr_nonnull(a);
  return a;
}

/* Every page of v equals the same TXID of the main fixture read through a
** file:// replica. */
static void same_as_fixture(replica *r, replica_view *v) {
  char zDir[1024], zUrl[1100];
  replica *fr = NULL;
  replica_view *fv = NULL;
  ltx_error err = {0};
  uint8_t a[4096], b[4096];
  replica_config cfg = {.poll_ms = 0, .cache_bytes = 64u << 20, .open_timeout_ms = 2000, .prefetch_max = 4u << 20};
  snprintf(zUrl, sizeof(zUrl), "file://%s", tu_fixture_path(zDir, sizeof(zDir), "main"));
  CK_OK(replica_acquire(zUrl, &cfg, &fr, &err));
  CK_OK(replica_view_at(fr, replica_view_txid(v), -1, &fv, &err));
  ck_assert_uint_eq(replica_view_commit(fv), replica_view_commit(v));
  ck_assert_uint_eq(replica_view_page_size(v), sizeof(a));
  for (uint32_t pg = 1; pg <= replica_view_commit(v); pg++) {
    CK_OK(replica_read_page(r, v, pg, a, NULL, &err));
    CK_OK(replica_read_page(fr, fv, pg, b, NULL, &err));
    ck_assert_msg(memcmp(a, b, sizeof(a)) == 0, "page %u differs", pg);
  }
  replica_view_release(fv);
  replica_release(fr);
}

/* A replica of s3://BUCKET/zPath (through the proxy when bProxy) at TXID 2
** of main, polling every 20 ms. */
static replica *s3_replica_at_2(const char *zPath, int bProxy, store **pst) {
  char zUrl[1024];
  replica *r = NULL;
  ltx_error err = {0};
  replica_config cfg = {.poll_ms = 20, .cache_bytes = 64u << 20, .open_timeout_ms = 2000, .prefetch_max = 4u << 20};
  *pst = open_at(zPath, 0, NULL);
  put_main_files(*pst, 1, 2);
  snprintf(zUrl, sizeof(zUrl), "s3://" BUCKET "/%s?endpoint=http://127.0.0.1:%d&retry-base-ms=5",
           zPath, bProxy ? srv.portProxy : srv.portServer);
  CK_OK(replica_acquire(zUrl, &cfg, &r, &err));
  ck_assert_uint_eq(tu_latest_txid(r), 2);
  return r;
}

/* An object first stored empty or as a prefix of itself, then whole: the
** replica applies it once it is whole. */
START_TEST(test_s3_replica_applies_an_object_once_it_is_whole) {
  char zPath[64], zKey[128];
  size_t n = 0, nPrefix = kPartial[_i];
  store *st = NULL;
  snprintf(zPath, sizeof(zPath), "partial%d", _i);
  replica *r = s3_replica_at_2(zPath, 0, &st);
  uint8_t *a = main_file_bytes(3, &n);
  store_ltx_key(st, 0, 3, 3, zKey, sizeof(zKey));
  put_ok(st, zKey, a, nPrefix);
  tu_wait_poll_error(r, "0000000000000003-0000000000000003.ltx");
  ck_assert_uint_eq(tu_latest_txid(r), 2);
  put_ok(st, zKey, a, n);
  replica_view *v = tu_wait_txid(r, 3);
  ck_assert_uint_eq(replica_view_txid(v), 3);
  same_as_fixture(r, v);
  replica_view_release(v);
  free(a);
  replica_release(r);
  store_close(st);
}
END_TEST

/* The object is whole but every listing reports a partial size (the proxy
** rewrites it): the load asks the store for the real size and applies it. */
START_TEST(test_s3_replica_ignores_a_partial_listed_size) {
  char zPath[64], zKey[128], zSet[128];
  size_t n = 0;
  store *st = NULL;
  fault_clear();
  snprintf(zPath, sizeof(zPath), "listsize%d", _i);
  replica *r = s3_replica_at_2(zPath, 1, &st);
  uint8_t *a = main_file_bytes(3, &n);
  snprintf(zSet, sizeof(zSet), "set?mode=listsize&n=-1&key=0000000000000003-&size=%zu",
           kPartial[_i]);
  fault(zSet);
  store_ltx_key(st, 0, 3, 3, zKey, sizeof(zKey));
  put_ok(st, zKey, a, n);
  replica_view *v = tu_wait_txid(r, 3);
  ck_assert_int_ge(fault("stats"), 1); /* the listing really said so */
  same_as_fixture(r, v);
  replica_view_release(v);
  fault_clear();
  free(a);
  replica_release(r);
  store_close(st);
}
END_TEST

/* Closing the last reference while the server holds a poll's request
** returns within the documented bound (1 s), not after the request's 60 s
** deadline. */
START_TEST(test_s3_replica_close_while_the_server_hangs_is_bounded) {
  store *st = NULL;
  fault_clear();
  replica *r = s3_replica_at_2("hang", 1, &st);
  fault("set?mode=latency&ms=30000&n=-1&match=list-type");
  fault("reset-stats");
  int64_t deadline = now_ms() + 30000;
  while (fault("stats") < 1 && now_ms() < deadline) usleep(5000); /* a LIST is held */
  ck_assert_msg(fault("stats") >= 1, "no request was held: %s", zLastStats);
  int64_t t0 = now_ms();
  replica_release(r);
  int64_t took = now_ms() - t0;
  ck_assert_msg(took < 1500, "close took %lld ms", (long long)took);
  fault_clear();
  store_close(st);
}
END_TEST

/* Page pgno of the database in arg (4 KiB pages). */
static void copy_page(uint32_t pgno, uint8_t *page, void *arg) {
  memcpy(page, (const uint8_t *)arg + (size_t)(pgno - 1) * 4096, 4096);
}

/* `ltvfs hydrate` (hydrate_alone) of a 48 MB snapshot over S3 while one of
** its runs straggles (its body held back 4 s): the early pass's other
** runs are done long before, an idle worker takes the second half of the
** straggler's run, and the straggler's read stops where its run now ends
** (the proxy sees its client close early). The image is the snapshot's,
** page for page. */
START_TEST(test_s3_hydrate_splits_a_straggling_run) {
  enum { PAGES = 12000 };
  char zUrl[1024], zCache[1200], zKey[128], zImage[1400];
  store *st = open_at("steal", 0, NULL);
  ltx_membuf mb = {0};
  ltx_error err = {0};
  uint8_t *want = malloc((size_t)PAGES * 4096);
  uint64_t seed = 99;
  replica_config cfg = {.poll_ms = 1000, .cache_bytes = 8u << 20, .open_timeout_ms = 10000,
                        .prefetch_max = 4u << 20, .cache_dir = zCache, .hydrate = 1,
                        .hydrate_alone = 1};
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s;
  tu_fill_random(&seed, want, (size_t)PAGES * 4096);
  tu_encode_ltx(1, PAGES, NULL, PAGES, copy_page, want, &mb);
  store_ltx_key(st, 0, 1, 1, zKey, sizeof(zKey));
  put_ok(st, zKey, mb.buf, mb.len);
  ltx_membuf_free(&mb);
  snprintf(zCache, sizeof(zCache), "%s/steal-cache", srv.zDir);
  snprintf(zUrl, sizeof(zUrl), "s3://" BUCKET "/steal?endpoint=http://127.0.0.1:%d", srv.portProxy);
  fault("reset-stats");
  fault("set?mode=slow&n=1&method=GET&minsize=2000000&ms=4000&rate=50000000");
  CK_OK(replica_acquire(zUrl, &cfg, &r, &err));
  CK_OK(replica_latest(r, &v, &err));
  ck_assert_msg(replica_hydration_wait(r, 60000), "not hydrated in 60 s");
  replica_stats(r, &s);
  fault("stats");
  long injected = stat_field("injected"), closed = stat_field("slowClosed");
  ck_assert_msg(s.fill_steals >= 1 && injected == 1 && closed == 1,
                "%llu steals, %llu runs (%llu early): %s", (unsigned long long)s.fill_steals,
                (unsigned long long)s.fill_runs, (unsigned long long)s.fill_runs_early, zLastStats);
  fault_clear();
  snprintf(zImage, sizeof(zImage), "%s/image", s.image_dir);
  size_t n = 0;
  uint8_t *img = tu_read_file(zImage, &n);
  ck_assert_ptr_nonnull(img);
  ck_assert_uint_ge(n, (size_t)PAGES * 4096);
  for (uint32_t pg = 1; pg <= PAGES; pg++)
    ck_assert_msg(memcmp(img + (size_t)(pg - 1) * 4096, want + (size_t)(pg - 1) * 4096, 4096) == 0,
                  "image page %u differs", pg);
  free(img);
  free(want);
  replica_view_release(v);
  replica_release(r);
  store_close(st);
}
END_TEST

START_TEST(test_s3_fault_latency_within_deadline_works) {
  uint8_t *a, b[1000];
  store *st = fault_store("flat", "timeout-ms=3000", &a);
  ltx_error err = {0};
  fault("set?mode=latency&ms=300");
  int64_t ms0 = now_ms();
  CK_OK(store_read_range(st, "0000/f.ltx", 5, b, sizeof(b), &err));
  int64_t ms = now_ms() - ms0;
  ck_assert_mem_eq(b, a + 5, sizeof(b));
  ck_assert_msg(ms >= 290 && ms < 2500, "took %lld ms", (long long)ms);
  fault_clear();
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_s3_fault_latency_past_deadline_fails_in_time) {
  uint8_t *a, b[1000];
  store *st = fault_store("fdead", "timeout-ms=500", &a);
  ltx_error err = {0};
  fault("set?mode=latency&ms=3000");
  int64_t ms0 = now_ms();
  CK_RC(store_read_range(st, "0000/f.ltx", 0, b, sizeof(b), &err), STORE_ERR_NETWORK);
  int64_t ms = now_ms() - ms0;
  ck_assert_msg(ms < 1500, "took %lld ms", (long long)ms);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/fdead/0000/f.ltx") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "deadline") != NULL || strstr(err.msg, "imed out") != NULL, "%s",
                err.msg);
  fault_clear();
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_s3_fault_reset_mid_body_is_retried) {
  uint8_t *a, b[65536];
  store *st = fault_store("freset", NULL, &a);
  ltx_error err = {0};
  fault("set?mode=reset&n=2");
  CK_OK(store_read_range(st, "0000/f.ltx", 0, b, sizeof(b), &err));
  ck_assert_mem_eq(b, a, sizeof(b));
  ck_assert_int_eq(fault("stats"), 2);
  fault_clear();
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_s3_fault_truncated_body_is_retried_never_short) {
  uint8_t *a, b[40000];
  size_t nRead;
  uint64_t size;
  store *st = fault_store("ftrunc", "max-attempts=3", &a);
  ltx_error err = {0};
  fault("set?mode=truncate&n=2");
  CK_OK(store_read_range(st, "0000/f.ltx", 100, b, sizeof(b), &err));
  ck_assert_mem_eq(b, a + 100, sizeof(b));
  ck_assert_int_eq(fault("stats"), 2);
  fault("set?mode=truncate&n=1");
  CK_OK(store_read_suffix(st, "0000/f.ltx", b, 1000, &nRead, &size, &err));
  ck_assert_uint_eq(nRead, 1000);
  ck_assert_mem_eq(b, a + 65536 - 1000, 1000);
  /* truncated every time: an error, never the short data */
  fault("reset-stats");
  fault("set?mode=truncate&n=-1");
  CK_RC(store_read_range(st, "0000/f.ltx", 0, b, sizeof(b), &err), STORE_ERR_NETWORK);
  ck_assert_msg(strstr(err.msg, "after 3 attempts") != NULL, "%s", err.msg);
  ck_assert_int_eq(fault("stats"), 3);
  fault_clear();
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_s3_fault_persistent_503_fails_after_the_retry_budget) {
  uint8_t *a, b[10];
  store *st = fault_store("fperm", "max-attempts=4", &a);
  ltx_error err = {0};
  fault("set?mode=503&n=-1");
  CK_RC(store_read_range(st, "0000/f.ltx", 0, b, sizeof(b), &err), STORE_ERR_HTTP);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/fperm/0000/f.ltx: HTTP 503 SlowDown") != NULL,
                "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "after 4 attempts") != NULL, "%s", err.msg);
  ck_assert_int_eq(fault("stats"), 4);
  /* a 500 is retried the same way; a 400 is not */
  fault("reset-stats");
  fault("set?mode=status&code=400&n=-1");
  CK_RC(store_read_range(st, "0000/f.ltx", 0, b, sizeof(b), &err), STORE_ERR_HTTP);
  ck_assert_msg(strstr(err.msg, "HTTP 400 InjectedFault") != NULL, "%s", err.msg);
  ck_assert_int_eq(fault("stats"), 1);
  fault_clear();
  free(a);
  store_close(st);
}
END_TEST

/* A port nothing listens on: bind, read the port, close. */
static int dead_port(void) {
  struct sockaddr_in sa;
  socklen_t n = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &n), 0);
  port = ntohs(sa.sin_port);
  close(fd);
  return port;
}

START_TEST(test_s3_dead_server_fails_within_deadline_naming_endpoint) {
  char zUrl[256], zEndpoint[64];
  store *st = NULL;
  ltx_error err = {0};
  uint8_t b[10];
  int port = dead_port();
  snprintf(zEndpoint, sizeof(zEndpoint), "http://127.0.0.1:%d", port);
  snprintf(zUrl, sizeof(zUrl),
           "s3://" BUCKET
           "/db?endpoint=%s&timeout-ms=800&max-attempts=100&retry-base-ms=20"
           "&retry-max-ms=100",
           zEndpoint);
  CK_OK(store_s3_open(zUrl, &st, &err));
  int64_t ms0 = now_ms();
  CK_RC(store_read_range(st, "0000/x.ltx", 0, b, sizeof(b), &err), STORE_ERR_NETWORK);
  int64_t ms = now_ms() - ms0;
  ck_assert_msg(ms < 1500, "took %lld ms", (long long)ms);
  ck_assert_msg(strstr(err.msg, zEndpoint) != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "s3://" BUCKET "/db/0000/x.ltx") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "deadline") != NULL, "%s", err.msg);
  store_close(st);
}
END_TEST

/* ---- the XML scanner ---- */

START_TEST(test_xml_list_decodes_entities_and_pages) {
  static const char z[] =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<Name>b</Name><IsTruncated>true</IsTruncated>"
      "<NextContinuationToken>a+b/c=</NextContinuationToken>"
      "<Contents><Key>p/a&amp;b&lt;c&gt;&quot;&apos;&#65;&#x42;&#xe9;</Key>"
      "<LastModified>2024-01-02T03:04:05.678Z</LastModified><Size>42</Size></Contents>"
      "<!-- comment --><Contents><Key><![CDATA[x<y]]></Key><Size>0</Size></Contents>"
      "</ListBucketResult>";
  s3_xml_list l;
  ltx_error err = {0};
  CK_OK(s3_xml_parse_list(z, strlen(z), &l, &err));
  ck_assert_uint_eq(l.n, 2);
  ck_assert_str_eq(l.items[0].key, "p/a&b<c>\"'AB\xc3\xa9");
  ck_assert_uint_eq(l.items[0].size, 42);
  ck_assert_int_eq(l.items[0].mtime_ms, 1704164645678);
  ck_assert_str_eq(l.items[1].key, "x<y");
  ck_assert_int_eq(l.items[1].mtime_ms, -1);
  ck_assert_int_eq(l.truncated, 1);
  ck_assert_str_eq(l.next_token, "a+b/c=");
  s3_xml_list_free(&l);
}
END_TEST

START_TEST(test_xml_hostile_input_is_refused) {
  static const char *azBad[] = {
      "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><ListBucketResult>&a;</ListBucketResult>",
      "<ListBucketResult><Contents><Key>&unknown;</Key><Size>1</Size></Contents></"
      "ListBucketResult>",
      "<ListBucketResult><Contents><Key>&#0;</Key><Size>1</Size></Contents></ListBucketResult>",
      "<ListBucketResult><Contents><Key>&#xD800;</Key><Size>1</Size></Contents></ListBucketResult>",
      "<ListBucketResult><Contents><Key>&#x110000;</Key><Size>1</Size></Contents></"
      "ListBucketResult>",
      "<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
      "<ListBucketResult><Contents><Key>a</Key><Size>99999999999999999999</Size></Contents>"
      "</ListBucketResult>",
      "<ListBucketResult><Contents><Key>a</Key></Contents></ListBucketResult>",
      "<ListBucketResult><Contents><Key>a</Key><Key>b</Key><Size>1</Size></Contents>"
      "</ListBucketResult>",
      "<ListBucketResult><Contents>",
      "<ListBucketResult></Contents></ListBucketResult>",
      "<ListBucketResult/><ListBucketResult/>",
      "<Error><Code>x</Code></Error>",
      "text<ListBucketResult/>",
      "<ListBucketResult a=b/>",
      "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
      "",
  };
  for (size_t i = 0; i < sizeof(azBad) / sizeof(azBad[0]); i++) {
    s3_xml_list l;
    ltx_error err = {0};
    int rc = s3_xml_parse_list(azBad[i], strlen(azBad[i]), &l, &err);
    ck_assert_msg(rc == STORE_ERR_HTTP, "case %zu accepted: %s", i, azBad[i]);
    ck_assert_ptr_null(l.items);
  }
  /* NUL inside, nesting and length bounds */
  {
    static const char zNul[] = "<ListBucketResult>a\0b</ListBucketResult>";
    s3_xml_list l;
    ltx_error err = {0};
    CK_RC(s3_xml_parse_list(zNul, sizeof(zNul) - 1, &l, &err), STORE_ERR_HTTP);
  }
  {
    tu_buf b = {0};
    s3_xml_list l;
    ltx_error err = {0};
    tu_buf_append(&b, "<ListBucketResult>", 18);
    for (int i = 0; i < S3_XML_MAX_DEPTH; i++) tu_buf_append(&b, "<a>", 3);
    CK_RC(s3_xml_parse_list((char *)b.p, b.n, &l, &err), STORE_ERR_HTTP);
    ck_assert_msg(strstr(err.msg, "too deep") != NULL, "%s", err.msg);
    tu_buf_free(&b);
    tu_buf_append(&b, "<ListBucketResult><Contents><Key>", 33);
    for (int i = 0; i < S3_XML_MAX_TEXT + 1; i++) tu_buf_append(&b, "a", 1);
    tu_buf_append(&b, "</Key>", 6);
    CK_RC(s3_xml_parse_list((char *)b.p, b.n, &l, &err), STORE_ERR_HTTP);
    ck_assert_msg(strstr(err.msg, "too long") != NULL, "%s", err.msg);
    tu_buf_free(&b);
  }
}
END_TEST

START_TEST(test_xml_error_and_delete_results) {
  static const char zErr[] =
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>"
      "<Message>The key &amp; more</Message><Key>k</Key></Error>";
  static const char zDel[] =
      "<DeleteResult><Deleted><Key>a</Key></Deleted>"
      "<Error><Key>b</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
      "<Error><Key>c</Key><Code>InternalError</Code><Message>oops</Message></Error>"
      "</DeleteResult>";
  s3_xml_error e;
  s3_xml_delete d;
  ltx_error err = {0};
  char zEsc[64];
  CK_OK(s3_xml_parse_error(zErr, strlen(zErr), &e, &err));
  ck_assert_str_eq(e.code, "NoSuchKey");
  ck_assert_str_eq(e.message, "The key & more");
  s3_xml_error_free(&e);
  CK_OK(s3_xml_parse_delete(zDel, strlen(zDel), &d, &err));
  ck_assert_uint_eq(d.n_errors, 2);
  ck_assert_str_eq(d.key, "b");
  ck_assert_str_eq(d.code, "AccessDenied");
  s3_xml_delete_free(&d);
  ck_assert_uint_eq(s3_xml_escape("a&b<c>\"d'\n", zEsc, sizeof(zEsc)), 34);
  ck_assert_str_eq(zEsc, "a&amp;b&lt;c&gt;&quot;d&apos;&#10;");
  ck_assert_uint_eq(s3_xml_escape("a&b", zEsc, 3), 7);
  ck_assert_str_eq(zEsc, "a&");
  ck_assert_int_eq(ltx_time_parse("2024-01-02T03:04:05+01:30"), 1704159245000);
  ck_assert_int_eq(ltx_time_parse("2024-01-02 03:04:05Z"), 1704164645000);
  ck_assert_int_eq(ltx_time_parse("2024-13-02T03:04:05Z"), -1);
  ck_assert_int_eq(ltx_time_parse("2024-01-02T03:04:05.Z"), -1);
}
END_TEST

static Suite *s3_suite(void) {
  Suite *s = suite_create("s3");
  TCase *tc;

  tc = tcase_create("xml");
  tcase_add_test(tc, test_xml_list_decodes_entities_and_pages);
  tcase_add_test(tc, test_xml_hostile_input_is_refused);
  tcase_add_test(tc, test_xml_error_and_delete_results);
  suite_add_tcase(s, tc);

  tc = tcase_create("url");
  tcase_add_checked_fixture(tc, env_setup, NULL);
  tcase_add_loop_test(tc, test_url_bad_urls_fail_naming_the_problem, 0,
                      (int)(sizeof(aBadUrl) / sizeof(aBadUrl[0])));
  tcase_add_test(tc, test_url_env_tuning_errors_name_the_variable);
  tcase_add_test(tc, test_url_key_without_secret_is_an_auth_error);
  tcase_add_test(tc, test_url_identity_drops_only_the_tuning);
  tcase_add_test(tc, test_url_good_urls_open_with_s3_layout);
  tcase_add_test(tc, test_url_aws_is_virtual_host_style_in_the_region);
  tcase_add_test(tc, test_url_aws_dotted_bucket_or_forced_is_path_style);
  tcase_add_test(tc, test_url_custom_endpoint_is_path_style_unless_told);
  suite_add_tcase(s, tc);

  tc = tcase_create("server");
  tcase_add_checked_fixture(tc, env_setup, NULL);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_s3_put_list_read_head_delete_roundtrip);
  tcase_add_test(tc, test_s3_timestamp_formats_like_go_rfc3339nano);
  tcase_add_test(tc, test_s3_sign_payload_and_session_token_verify);
  tcase_add_test(tc, test_s3_litestream_credential_aliases_win);
  tcase_add_test(tc, test_s3_list_5000_pages_with_start_after);
  tcase_add_test(tc, test_s3_list_levels_start_pages_and_leaves_levels_open);
  tcase_add_test(tc, test_s3_delete_2001_in_batches_of_1000);
  tcase_add_test(tc, test_s3_conditional_puts);
  tcase_add_test(tc, test_s3_racing_if_absent_puts_have_one_winner);
  tcase_add_test(tc, test_s3_wrong_secret_is_auth_error_and_never_leaks);
  tcase_add_test(tc, test_s3_missing_key_and_bucket_are_not_found_naming_them);
  tcase_add_test(tc, test_s3_read_ranges_200_at_concurrency_8);
  tcase_add_test(tc, test_s3_sequential_calls_reuse_one_connection);
  tcase_add_test(tc, test_s3_https_verifies_unless_skip_verify_and_honours_ca_bundle);
  suite_add_tcase(s, tc);

  tc = tcase_create("faults");
  tcase_add_checked_fixture(tc, env_setup, NULL);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_s3_fault_503_burst_is_retried);
  tcase_add_test(tc, test_s3_sink_streams_a_range_and_a_retry_tells_the_same_bytes);
  tcase_add_test(tc, test_s3_fault_429_is_retried);
  tcase_add_test(tc, test_s3_fault_latency_within_deadline_works);
  tcase_add_test(tc, test_s3_replica_coalesces_identical_misses);
  tcase_add_test(tc, test_s3_replica_poller_backs_off_and_recovers);
  tcase_add_loop_test(tc, test_s3_replica_applies_an_object_once_it_is_whole, 0,
                      (int)(sizeof(kPartial) / sizeof(kPartial[0])));
  tcase_add_loop_test(tc, test_s3_replica_ignores_a_partial_listed_size, 0,
                      (int)(sizeof(kPartial) / sizeof(kPartial[0])));
  tcase_add_test(tc, test_s3_replica_close_while_the_server_hangs_is_bounded);
  tcase_add_test(tc, test_s3_hydrate_splits_a_straggling_run);
  tcase_add_test(tc, test_s3_fault_latency_past_deadline_fails_in_time);
  tcase_add_test(tc, test_s3_fault_reset_mid_body_is_retried);
  tcase_add_test(tc, test_s3_fault_truncated_body_is_retried_never_short);
  tcase_add_test(tc, test_s3_fault_persistent_503_fails_after_the_retry_budget);
  tcase_add_test(tc, test_s3_dead_server_fails_within_deadline_naming_endpoint);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  int rc;
  /* a server that dies must not kill the test with SIGPIPE */
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  servers_start();
  rc = tu_run_suite(s3_suite());
  servers_stop();
  curl_global_cleanup();
  return rc;
}
