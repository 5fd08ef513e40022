/*
** check_store.c: the Check suite of the store layer.
**
** What it proves, by area:
**   url     replica URLs select the right backend and directory, and bad
**           ones fail with STORE_ERR_URL naming the URL and the problem.
**   file    the file:// backend in a temporary directory: round trips, atomic
**           puts that leave no temporary files, mtimes, conditional puts
**           (also raced from threads), errors that name the object.
**   layout  keys of both layouts, level listings (also of the real Litestream
**           fixture), and index reads with the number of requests they cost.
**   plan    the restore planner of docs/restore-plan.md on hand-made listings.
**
** Fixtures: $LTVFS_FIXTURES, else the copy in tests/fixtures.
*/
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "tests/testutil.h"

/* ---- helpers ---- */

static char zTmpRoot[512]; /* per-test temporary directory */

static const char *fixtures_dir(void) {
  const char *z = getenv("LTVFS_FIXTURES");
  if (z != NULL && z[0] != '\0') return z;
  return TOP_SRCDIR "/tests/fixtures";
}

static void tmp_setup(void) {
  const char *zBase = getenv("TMPDIR");
  if (zBase == NULL || zBase[0] == '\0') zBase = "/tmp";
  snprintf(zTmpRoot, sizeof(zTmpRoot), "%s/check_store.XXXXXX", zBase);
  ck_assert_msg(mkdtemp(zTmpRoot) != NULL, "mkdtemp %s: %s", zTmpRoot, strerror(errno));
}

static int rm_one(const char *zPath, const struct stat *s, int flag, struct FTW *ftw) {
  (void)s;
  (void)flag;
  (void)ftw;
  return remove(zPath);
}

static void tmp_teardown(void) {
  if (zTmpRoot[0] != '\0') nftw(zTmpRoot, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  zTmpRoot[0] = '\0';
}

/* zTmpRoot/rel in buf */
static const char *tmp_path(char *buf, size_t cap, const char *zRel) {
  snprintf(buf, cap, "%s/%s", zTmpRoot, zRel);
  return buf;
}

static store *open_tmp_store(void) {
  store *st = NULL;
  ltx_error err = {0};
  int rc = store_open(zTmpRoot, &st, &err);
  ck_assert_msg(rc == LTX_OK, "store_open %s: %s", zTmpRoot, err.msg);
  return st;
}

static void put_ok(store *st, const char *key, const char *data, int64_t mtime_ms) {
  ltx_error err = {0};
  int rc = store_put(st, key, (const uint8_t *)data, strlen(data), mtime_ms, STORE_PUT_ALWAYS,
                     NULL, NULL, 0, &err);
  ck_assert_msg(rc == LTX_OK, "put %s: %s", key, err.msg);
}

/* Whole content of key as a string (caller frees). */
static char *read_all(store *st, const char *key) {
  uint64_t size = 0;
  ltx_error err = {0};
  int rc = st->ops->head(st, key, &size, NULL, 0, &err);
  ck_assert_msg(rc == LTX_OK, "head %s: %s", key, err.msg);
  char *z = calloc(1, (size_t)size + 1);
  rc = store_read_range(st, key, 0, (uint8_t *)z, (size_t)size, &err);
  ck_assert_msg(rc == LTX_OK, "read %s: %s", key, err.msg);
  return z;
}

/* Counts directory entries under zDir (recursively) whose name contains
** zNeedle. */
static int count_names(const char *zDir, const char *zNeedle) {
  DIR *d = opendir(zDir);
  struct dirent *e;
  int n = 0;
  if (d == NULL) return 0;
  while ((e = readdir(d)) != NULL) {
    char zSub[1024];
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (strstr(e->d_name, zNeedle) != NULL) n++;
    snprintf(zSub, sizeof(zSub), "%s/%s", zDir, e->d_name);
    if (e->d_type == DT_DIR) n += count_names(zSub, zNeedle);
  }
  closedir(d);
  return n;
}

static int file_exists(const char *zPath) {
  struct stat s;
  return stat(zPath, &s) == 0;
}

/* ---- url ---- */

START_TEST(test_url_file_absolute_uses_the_directory) {
  char zUrl[1024], zPath[1024];
  store *st = NULL;
  ltx_error err = {0};
  snprintf(zUrl, sizeof(zUrl), "file://%s/replica", zTmpRoot);
  ck_assert_int_eq(store_open(zUrl, &st, &err), LTX_OK);
  ck_assert_str_eq(st->ops->scheme, "file");
  ck_assert_int_eq(st->layout, STORE_LAYOUT_FILE);
  ck_assert_str_eq(st->url, zUrl);
  put_ok(st, "ltx/0/a", "x", -1);
  ck_assert(file_exists(tmp_path(zPath, sizeof(zPath), "replica/ltx/0/a")));
  store_close(st);
}
END_TEST

START_TEST(test_url_file_localhost_and_short_form_are_absolute) {
  char zUrl[1024], zPath[1024];
  store *st = NULL;
  ltx_error err = {0};
  snprintf(zUrl, sizeof(zUrl), "file://localhost%s/a", zTmpRoot);
  ck_assert_msg(store_open(zUrl, &st, &err) == LTX_OK, "%s", err.msg);
  put_ok(st, "k", "x", -1);
  store_close(st);
  ck_assert(file_exists(tmp_path(zPath, sizeof(zPath), "a/k")));

  snprintf(zUrl, sizeof(zUrl), "file:%s/b", zTmpRoot);
  ck_assert_msg(store_open(zUrl, &st, &err) == LTX_OK, "%s", err.msg);
  put_ok(st, "k", "x", -1);
  store_close(st);
  ck_assert(file_exists(tmp_path(zPath, sizeof(zPath), "b/k")));
}
END_TEST

START_TEST(test_url_file_relative_is_relative_to_cwd) {
  char zPath[1024];
  store *st = NULL;
  ltx_error err = {0};
  int fdCwd = open(".", O_RDONLY | O_DIRECTORY);
  ck_assert_int_ge(fdCwd, 0);
  ck_assert_int_eq(chdir(zTmpRoot), 0);
  int rc = store_open("file://rel/dir", &st, &err);
  if (rc == LTX_OK) {
    put_ok(st, "k", "x", -1);
    store_close(st);
  }
  ck_assert_int_eq(fchdir(fdCwd), 0);
  close(fdCwd);
  ck_assert_msg(rc == LTX_OK, "%s", err.msg);
  ck_assert(file_exists(tmp_path(zPath, sizeof(zPath), "rel/dir/k")));
}
END_TEST

START_TEST(test_url_plain_path_is_literal) {
  char zDir[1024], zPath[1024];
  store *st = NULL;
  ltx_error err = {0};
  /* no percent decoding for plain paths: "%20" stays three characters */
  tmp_path(zDir, sizeof(zDir), "plain%20dir");
  ck_assert_msg(store_open(zDir, &st, &err) == LTX_OK, "%s", err.msg);
  ck_assert_str_eq(st->ops->scheme, "file");
  put_ok(st, "k", "x", -1);
  store_close(st);
  ck_assert(file_exists(tmp_path(zPath, sizeof(zPath), "plain%20dir/k")));
}
END_TEST

START_TEST(test_url_percent_escapes_are_decoded) {
  char zUrl[1024], zPath[1024];
  store *st = NULL;
  ltx_error err = {0};
  snprintf(zUrl, sizeof(zUrl), "file://%s/my%%20dir%%2Fsub", zTmpRoot);
  ck_assert_msg(store_open(zUrl, &st, &err) == LTX_OK, "%s", err.msg);
  put_ok(st, "k", "x", -1);
  store_close(st);
  ck_assert(file_exists(tmp_path(zPath, sizeof(zPath), "my dir/sub/k")));
}
END_TEST

/* URL, expected substring of the message. */
static const struct {
  const char *zUrl;
  const char *zWant;
} aBadUrl[] = {
    {"", "empty replica URL"},
    {"s3:///db", "no bucket name"},
    {"gs://bucket/db", "unsupported scheme 'gs'"},
    {"file://", "empty path"},
    {"file:///tmp/x?sync=1", "query string"},
    {"file:///tmp/x#frag", "fragment"},
    {"file:///tmp/x%zz", "bad percent escape"},
    {"file:///tmp/x%2", "bad percent escape"},
    {"file:///tmp/x%00y", "%00"},
    {"file:///etc/passwd", "not a directory"},
};

START_TEST(test_url_bad_urls_fail_naming_url_and_problem) {
  store *st = (store *)1;
  ltx_error err = {0};
  int rc = store_open(aBadUrl[_i].zUrl, &st, &err);
  ck_assert_int_eq(rc, STORE_ERR_URL);
  ck_assert_int_eq(err.code, STORE_ERR_URL);
  ck_assert_ptr_null(st);
  ck_assert_msg(strstr(err.msg, aBadUrl[_i].zWant) != NULL, "'%s': message '%s' lacks '%s'",
                aBadUrl[_i].zUrl, err.msg, aBadUrl[_i].zWant);
  if (aBadUrl[_i].zUrl[0] != '\0') {
    ck_assert_msg(strstr(err.msg, aBadUrl[_i].zUrl) != NULL, "message '%s' does not name '%s'",
                  err.msg, aBadUrl[_i].zUrl);
  }
}
END_TEST

/* ---- file backend ---- */

START_TEST(test_file_put_list_read_roundtrip) {
  store *st = open_tmp_store();
  store_object_list l = {0};
  ltx_error err = {0};
  uint8_t buf[64];
  size_t nRead = 0;
  uint64_t sz = 0;
  char zEtag[STORE_ETAG_CAP];

  put_ok(st, "ltx/0/b", "bbbb", -1);
  put_ok(st, "ltx/0/a", "a", -1);
  put_ok(st, "ltx/0/c", "0123456789", -1);
  put_ok(st, "ltx/1/a", "xx", -1);
  put_ok(st, "lock.json", "{}", -1);

  ck_assert_int_eq(store_list(st, "ltx/0/", NULL, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 3);
  ck_assert_str_eq(l.items[0].key, "ltx/0/a");
  ck_assert_str_eq(l.items[1].key, "ltx/0/b");
  ck_assert_str_eq(l.items[2].key, "ltx/0/c");
  ck_assert_uint_eq(l.items[0].size, 1);
  ck_assert_uint_eq(l.items[2].size, 10);
  store_object_list_free(&l);

  /* the whole replica, recursively, in key order */
  ck_assert_int_eq(store_list(st, "", NULL, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 5);
  ck_assert_str_eq(l.items[0].key, "lock.json");
  ck_assert_str_eq(l.items[1].key, "ltx/0/a");
  ck_assert_str_eq(l.items[4].key, "ltx/1/a");
  store_object_list_free(&l);

  /* a name prefix inside a directory, and `after` */
  ck_assert_int_eq(store_list(st, "ltx/", "ltx/0/b", &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 2);
  ck_assert_str_eq(l.items[0].key, "ltx/0/c");
  ck_assert_str_eq(l.items[1].key, "ltx/1/a");
  store_object_list_free(&l);
  ck_assert_int_eq(store_list(st, "lo", NULL, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 1);
  ck_assert_str_eq(l.items[0].key, "lock.json");
  store_object_list_free(&l);

  ck_assert_int_eq(store_read_range(st, "ltx/0/c", 3, buf, 4, &err), LTX_OK);
  ck_assert_mem_eq(buf, "3456", 4);
  ck_assert_int_eq(store_read_suffix(st, "ltx/0/c", buf, 4, &nRead, &sz, &err), LTX_OK);
  ck_assert_uint_eq(nRead, 4);
  ck_assert_uint_eq(sz, 10);
  ck_assert_mem_eq(buf, "6789", 4);
  ck_assert_int_eq(store_read_suffix(st, "ltx/0/c", buf, sizeof(buf), &nRead, &sz, &err), LTX_OK);
  ck_assert_uint_eq(nRead, 10);
  ck_assert_mem_eq(buf, "0123456789", 10);
  ck_assert_int_eq(st->ops->head(st, "ltx/0/b", &sz, zEtag, sizeof(zEtag), &err), LTX_OK);
  ck_assert_uint_eq(sz, 4);
  ck_assert_uint_gt(strlen(zEtag), 0);

  /* a replacing put is seen whole */
  put_ok(st, "ltx/0/b", "BB", -1);
  char *z = read_all(st, "ltx/0/b");
  ck_assert_str_eq(z, "BB");
  free(z);
  store_close(st);
}
END_TEST

START_TEST(test_file_put_leaves_no_temporary_files) {
  store *st = open_tmp_store();
  store_object_list l = {0};
  ltx_error err = {0};
  char zPath[1024];
  char zEtag[STORE_ETAG_CAP];

  for (int i = 0; i < 20; i++) put_ok(st, "ltx/0/k", "data", -1);
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"1", 1, -1, STORE_PUT_IF_ABSENT,
                             NULL, zEtag, sizeof(zEtag), &err),
                   LTX_OK);
  /* failed conditional puts must clean up too */
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"2", 1, -1, STORE_PUT_IF_ABSENT,
                             NULL, NULL, 0, &err),
                   STORE_ERR_PRECONDITION);
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"3", 1, -1, STORE_PUT_IF_MATCH,
                             "stale", NULL, 0, &err),
                   STORE_ERR_PRECONDITION);
  ck_assert_int_eq(count_names(zTmpRoot, ".tmp"), 0);

  /* dot-names (another writer's temporary file, the lock) are never listed */
  FILE *f = fopen(tmp_path(zPath, sizeof(zPath), "ltx/0/.k.tmp.1.1"), "w");
  ck_assert_ptr_nonnull(f);
  fclose(f);
  ck_assert_int_eq(store_list(st, "", NULL, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 2);
  ck_assert_str_eq(l.items[0].key, "lock.json");
  ck_assert_str_eq(l.items[1].key, "ltx/0/k");
  store_object_list_free(&l);
  store_close(st);
}
END_TEST

START_TEST(test_file_put_sets_mtime_to_timestamp) {
  store *st = open_tmp_store();
  store_object_list l = {0};
  ltx_error err = {0};
  char zPath[1024];
  struct stat s;
  const int64_t ts = 1795342761103; /* fixture main TXID 1 */

  put_ok(st, "ltx/0/f", "data", ts);
  ck_assert_int_eq(stat(tmp_path(zPath, sizeof(zPath), "ltx/0/f"), &s), 0);
  ck_assert_int_eq((int64_t)s.st_mtim.tv_sec, ts / 1000);
  ck_assert_int_eq(s.st_mtim.tv_nsec, (ts % 1000) * 1000000);
  ck_assert_int_eq(store_list(st, "ltx/0/", NULL, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 1);
  ck_assert_int_eq(l.items[0].mtime_ms, ts);
  store_object_list_free(&l);
  store_close(st);
}
END_TEST

START_TEST(test_file_put_if_absent_second_put_fails) {
  store *st = open_tmp_store();
  ltx_error err = {0};
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"first", 5, -1,
                             STORE_PUT_IF_ABSENT, NULL, NULL, 0, &err),
                   LTX_OK);
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"second", 6, -1,
                             STORE_PUT_IF_ABSENT, NULL, NULL, 0, &err),
                   STORE_ERR_PRECONDITION);
  ck_assert_ptr_nonnull(strstr(err.msg, "lock.json"));
  char *z = read_all(st, "lock.json");
  ck_assert_str_eq(z, "first");
  free(z);
  store_close(st);
}
END_TEST

START_TEST(test_file_put_if_match_needs_the_current_etag) {
  store *st = open_tmp_store();
  ltx_error err = {0};
  char zE1[STORE_ETAG_CAP], zE2[STORE_ETAG_CAP], zE3[STORE_ETAG_CAP], zHead[STORE_ETAG_CAP];
  uint64_t sz;

  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"A", 1, -1, STORE_PUT_IF_ABSENT,
                             NULL, zE1, sizeof(zE1), &err),
                   LTX_OK);
  ck_assert_int_eq(st->ops->head(st, "lock.json", &sz, zHead, sizeof(zHead), &err), LTX_OK);
  ck_assert_str_eq(zHead, zE1);
  /* same size and the same mtime on purpose: the etag must still move */
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"B", 1, 1000, STORE_PUT_IF_MATCH,
                             zE1, zE2, sizeof(zE2), &err),
                   LTX_OK);
  ck_assert_str_ne(zE1, zE2);
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"C", 1, 1000, STORE_PUT_IF_MATCH,
                             zE1, NULL, 0, &err),
                   STORE_ERR_PRECONDITION);
  ck_assert_ptr_nonnull(strstr(err.msg, "lock.json"));
  char *z = read_all(st, "lock.json");
  ck_assert_str_eq(z, "B");
  free(z);
  ck_assert_int_eq(store_put(st, "lock.json", (const uint8_t *)"D", 1, 1000, STORE_PUT_IF_MATCH,
                             zE2, zE3, sizeof(zE3), &err),
                   LTX_OK);
  ck_assert_str_ne(zE3, zE2);
  ck_assert_str_ne(zE3, zE1);
  z = read_all(st, "lock.json");
  ck_assert_str_eq(z, "D");
  free(z);
  /* a missing object matches no etag */
  ck_assert_int_eq(store_put(st, "other.json", (const uint8_t *)"E", 1, -1, STORE_PUT_IF_MATCH,
                             zE3, NULL, 0, &err),
                   STORE_ERR_PRECONDITION);
  char zPath[1024];
  ck_assert(!file_exists(tmp_path(zPath, sizeof(zPath), "other.json")));
  store_close(st);
}
END_TEST

#define RACE_THREADS 4
#define RACE_ROUNDS 40

typedef struct race_arg {
  store *st;
  pthread_barrier_t *bar;
  int id;
  store_put_cond cond;
  char zEtag[RACE_ROUNDS][STORE_ETAG_CAP]; /* IF_MATCH: the etag to expect */
  int aRc[RACE_ROUNDS];
} race_arg;

static void *race_main(void *p) {
  race_arg *a = p;
  char zKey[64], zData[32];
  for (int r = 0; r < RACE_ROUNDS; r++) {
    ltx_error err = {0};
    snprintf(zKey, sizeof(zKey), a->cond == STORE_PUT_IF_ABSENT ? "race/%d" : "cas", r);
    snprintf(zData, sizeof(zData), "thread %d", a->id);
    pthread_barrier_wait(a->bar);
    a->aRc[r] = store_put(a->st, zKey, (const uint8_t *)zData, strlen(zData), -1, a->cond,
                          a->zEtag[r], NULL, 0, &err);
    pthread_barrier_wait(a->bar);
    /* the main thread reads the new etag for the next CAS round here */
    pthread_barrier_wait(a->bar);
  }
  return NULL;
}

/* Runs RACE_ROUNDS rounds of RACE_THREADS simultaneous conditional puts and
** checks that exactly one per round wins and its data is what is stored. */
static void run_race(store_put_cond cond) {
  store *st = open_tmp_store();
  pthread_barrier_t bar;
  pthread_t aThread[RACE_THREADS];
  race_arg *aArg = calloc(RACE_THREADS, sizeof(*aArg));
  ltx_error err = {0};
  char zEtag[STORE_ETAG_CAP] = "";

  ck_assert_ptr_nonnull(aArg);
  if (cond == STORE_PUT_IF_MATCH) {
    ck_assert_int_eq(store_put(st, "cas", (const uint8_t *)"init", 4, -1, STORE_PUT_ALWAYS,
                               NULL, zEtag, sizeof(zEtag), &err),
                     LTX_OK);
  }
  pthread_barrier_init(&bar, NULL, RACE_THREADS + 1);
  for (int t = 0; t < RACE_THREADS; t++) {
    aArg[t].st = st;
    aArg[t].bar = &bar;
    aArg[t].id = t;
    aArg[t].cond = cond;
    ck_assert_int_eq(pthread_create(&aThread[t], NULL, race_main, &aArg[t]), 0);
  }
  for (int r = 0; r < RACE_ROUNDS; r++) {
    for (int t = 0; t < RACE_THREADS; t++) {
      memcpy(aArg[t].zEtag[r], zEtag, sizeof(zEtag));
    }
    pthread_barrier_wait(&bar); /* go */
    pthread_barrier_wait(&bar); /* all done */
    int nWin = 0, iWin = -1;
    for (int t = 0; t < RACE_THREADS; t++) {
      if (aArg[t].aRc[r] == LTX_OK) {
        nWin++;
        iWin = t;
      } else {
        ck_assert_int_eq(aArg[t].aRc[r], STORE_ERR_PRECONDITION);
      }
    }
    ck_assert_msg(nWin == 1, "round %d: %d winners", r, nWin);
    char zKey[64], zWant[32];
    snprintf(zKey, sizeof(zKey), cond == STORE_PUT_IF_ABSENT ? "race/%d" : "cas", r);
    snprintf(zWant, sizeof(zWant), "thread %d", iWin);
    char *z = read_all(st, zKey);
    ck_assert_str_eq(z, zWant);
    free(z);
    if (cond == STORE_PUT_IF_MATCH) {
      ck_assert_int_eq(st->ops->head(st, "cas", NULL, zEtag, sizeof(zEtag), &err), LTX_OK);
    }
    pthread_barrier_wait(&bar); /* next round */
  }
  for (int t = 0; t < RACE_THREADS; t++) pthread_join(aThread[t], NULL);
  pthread_barrier_destroy(&bar);
  free(aArg);
  ck_assert_int_eq(count_names(zTmpRoot, ".tmp"), 0);
  store_close(st);
}

START_TEST(test_file_concurrent_put_if_absent_has_one_winner) { run_race(STORE_PUT_IF_ABSENT); }
END_TEST

START_TEST(test_file_concurrent_put_if_match_has_one_winner) { run_race(STORE_PUT_IF_MATCH); }
END_TEST

typedef struct lock_arg {
  store *st;
  const char *zEtag;
  atomic_int bDone;
  int rc;
} lock_arg;

static void *lock_main(void *p) {
  lock_arg *a = p;
  ltx_error err = {0};
  a->rc = store_put(a->st, "cas", (const uint8_t *)"new", 3, -1, STORE_PUT_IF_MATCH, a->zEtag,
                    NULL, 0, &err);
  atomic_store(&a->bDone, 1);
  return NULL;
}

/* The compare-and-swap is atomic because every conditional put holds the
** directory's flock: another process holding it must stall our put. */
START_TEST(test_file_conditional_put_waits_for_the_directory_lock) {
  store *st = open_tmp_store();
  ltx_error err = {0};
  char zEtag[STORE_ETAG_CAP], zLock[1024];
  lock_arg a = {.st = st, .zEtag = zEtag};
  pthread_t th;

  ck_assert_int_eq(store_put(st, "cas", (const uint8_t *)"old", 3, -1, STORE_PUT_ALWAYS, NULL,
                             zEtag, sizeof(zEtag), &err),
                   LTX_OK);
  int fd = open(tmp_path(zLock, sizeof(zLock), ".ltvfs.lock"), O_RDWR | O_CREAT, 0666);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(flock(fd, LOCK_EX), 0);
  ck_assert_int_eq(pthread_create(&th, NULL, lock_main, &a), 0);
  usleep(300 * 1000);
  int bEarly = atomic_load(&a.bDone);
  flock(fd, LOCK_UN);
  close(fd);
  pthread_join(th, NULL);
  ck_assert_msg(!bEarly, "conditional put finished while another writer held the lock");
  ck_assert_int_eq(a.rc, LTX_OK);
  char *z = read_all(st, "cas");
  ck_assert_str_eq(z, "new");
  free(z);
  store_close(st);
}
END_TEST

START_TEST(test_file_missing_object_errors_name_the_key) {
  store *st = open_tmp_store();
  ltx_error err = {0};
  uint8_t buf[8];
  size_t nRead;
  uint64_t sz;
  const char *key = "ltx/0/0000000000000001-0000000000000001.ltx";

  put_ok(st, "ltx/0/other", "x", -1); /* the root and level exist */
  ck_assert_int_eq(store_read_range(st, key, 0, buf, 8, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, key) != NULL, "%s", err.msg);
  ck_assert_int_eq(store_read_suffix(st, key, buf, 8, &nRead, &sz, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, key) != NULL, "%s", err.msg);
  ck_assert_int_eq(st->ops->head(st, key, &sz, NULL, 0, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, key) != NULL, "%s", err.msg);
  store_close(st);
}
END_TEST

START_TEST(test_file_short_read_names_key_offset_and_lengths) {
  store *st = open_tmp_store();
  ltx_error err = {0};
  uint8_t buf[16];
  put_ok(st, "ltx/0/ten", "0123456789", -1);
  ck_assert_int_eq(store_read_range(st, "ltx/0/ten", 5, buf, 10, &err), STORE_ERR_SHORT_READ);
  ck_assert_msg(strstr(err.msg, "ltx/0/ten") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "offset 5") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "10 bytes") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "got 5") != NULL, "%s", err.msg);
  /* reading up to the end exactly is fine */
  ck_assert_int_eq(store_read_range(st, "ltx/0/ten", 5, buf, 5, &err), LTX_OK);
  ck_assert_mem_eq(buf, "56789", 5);
  store_close(st);
}
END_TEST

/* A streamed read of a file is told 256 KiB at a time, in order; a short
** object fails as read_range does, having told only bytes that are right. */
START_TEST(test_file_sink_tells_pieces_in_order_and_a_short_object_fails) {
  enum { SIZE = 700 << 10 };
  store *st = open_tmp_store();
  ltx_error err = {0};
  uint64_t seed = 5;
  uint8_t *a = malloc(SIZE);
  tu_sink rec;
  store_sink sink = {tu_sink_fn, &rec};
  tu_fill_random(&seed, a, SIZE);
  ck_assert_int_eq(store_put(st, "ltx/0/big", a, SIZE, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err), LTX_OK);
  tu_sink_init(&rec, SIZE);
  ck_assert_msg(store_read_range_sink(st, "ltx/0/big", 100, SIZE - 100, &sink, &err) == LTX_OK, "%s", err.msg);
  ck_assert_uint_eq(rec.have, SIZE - 100);
  ck_assert_mem_eq(rec.buf, a + 100, SIZE - 100);
  ck_assert_int_eq(rec.calls, 3);
  ck_assert_int_eq(rec.replays + rec.gaps, 0);
  tu_sink_free(&rec);
  tu_sink_init(&rec, SIZE);
  ck_assert_int_eq(store_read_range_sink(st, "ltx/0/big", 100, SIZE, &sink, &err), STORE_ERR_SHORT_READ);
  ck_assert_msg(strstr(err.msg, "ltx/0/big") != NULL, "%s", err.msg);
  ck_assert_uint_lt(rec.have, SIZE - 100);
  ck_assert_mem_eq(rec.buf, a + 100, rec.have);
  tu_sink_free(&rec);
  /* a sink that has had enough stops the read: no piece after that one */
  tu_sink_init(&rec, SIZE);
  rec.stop_at = 300 << 10;
  ck_assert_int_eq(store_read_range_sink(st, "ltx/0/big", 100, SIZE - 100, &sink, &err), STORE_ERR_STOPPED);
  ck_assert_msg(strstr(err.msg, "ltx/0/big") != NULL && strstr(err.msg, "stopped") != NULL, "%s", err.msg);
  ck_assert_int_eq(rec.calls, 2);
  ck_assert_uint_eq(rec.have, 512 << 10);
  ck_assert_mem_eq(rec.buf, a + 100, rec.have);
  tu_sink_free(&rec);
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_file_missing_level_is_empty_missing_root_is_not_found) {
  store *st = open_tmp_store();
  store *stGone = NULL;
  store_object_list l = {0};
  ltx_error err = {0};
  char zGone[1024];

  ck_assert_int_eq(store_list(st, "ltx/7/", NULL, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 0);
  store_close(st);

  ck_assert_int_eq(store_open(tmp_path(zGone, sizeof(zGone), "no-such-replica"), &stGone, &err),
                   LTX_OK);
  ck_assert_int_eq(store_list(stGone, "ltx/0/", NULL, &l, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, zGone) != NULL && strstr(err.msg, "does not exist") != NULL,
                "%s", err.msg);
  ck_assert_uint_eq(l.n, 0);
  store_close(stGone);
}
END_TEST

START_TEST(test_file_delete_removes_and_ignores_missing) {
  store *st = open_tmp_store();
  store_object_list l = {0};
  ltx_error err = {0};
  const char *aKey[] = {"ltx/0/a", "ltx/0/never-existed", "ltx/0/c"};
  put_ok(st, "ltx/0/a", "1", -1);
  put_ok(st, "ltx/0/b", "2", -1);
  put_ok(st, "ltx/0/c", "3", -1);
  ck_assert_int_eq(store_delete(st, aKey, 3, &err), LTX_OK);
  ck_assert_int_eq(store_list(st, "ltx/0/", NULL, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 1);
  ck_assert_str_eq(l.items[0].key, "ltx/0/b");
  store_object_list_free(&l);
  store_close(st);
}
END_TEST

START_TEST(test_file_rejects_keys_outside_the_root) {
  store *st = open_tmp_store();
  ltx_error err = {0};
  uint8_t buf[1];
  const char *aBad[] = {"", "/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", "a/.."};
  for (size_t i = 0; i < sizeof(aBad) / sizeof(aBad[0]); i++) {
    ck_assert_msg(store_put(st, aBad[i], (const uint8_t *)"x", 1, -1, STORE_PUT_ALWAYS, NULL,
                            NULL, 0, &err) == LTX_ERR_ARG,
                  "put '%s' accepted", aBad[i]);
    ck_assert_msg(store_read_range(st, aBad[i], 0, buf, 1, &err) == LTX_ERR_ARG,
                  "read '%s' accepted", aBad[i]);
  }
  store_close(st);
}
END_TEST

/* ---- layout ---- */

START_TEST(test_layout_keys_per_backend) {
  store *st = open_tmp_store();
  char zBuf[128];
  ck_assert_str_eq(store_ltx_key(st, 0, 1, 1, zBuf, sizeof(zBuf)),
                   "ltx/0/0000000000000001-0000000000000001.ltx");
  ck_assert_str_eq(store_ltx_key(st, 9, 1, 255, zBuf, sizeof(zBuf)),
                   "ltx/9/0000000000000001-00000000000000ff.ltx");
  ck_assert_str_eq(store_level_prefix(st, 3, zBuf, sizeof(zBuf)), "ltx/3/");
  st->layout = STORE_LAYOUT_S3;
  ck_assert_str_eq(store_ltx_key(st, 9, 1, 255, zBuf, sizeof(zBuf)),
                   "0009/0000000000000001-00000000000000ff.ltx");
  ck_assert_str_eq(store_ltx_key(st, 0, 0x1a2b, 0xffffffffffffffffull, zBuf, sizeof(zBuf)),
                   "0000/0000000000001a2b-ffffffffffffffff.ltx");
  ck_assert_str_eq(store_level_prefix(st, 3, zBuf, sizeof(zBuf)), "0003/");
  st->layout = STORE_LAYOUT_FILE;
  store_close(st);
}
END_TEST

START_TEST(test_list_level_fixture_main_has_11_sorted_files) {
  char zDir[1024], zPath[2048];
  store *st = NULL;
  store_ltx_list l = {0};
  ltx_error err = {0};

  snprintf(zDir, sizeof(zDir), "%s/main", fixtures_dir());
  ck_assert_msg(store_open(zDir, &st, &err) == LTX_OK, "%s", err.msg);
  ck_assert_msg(store_list_level(st, 0, 0, 0, &l, &err) == LTX_OK, "%s", err.msg);
  ck_assert_uint_eq(l.n, 11);
  for (size_t i = 0; i < l.n; i++) {
    struct stat s;
    char zName[64];
    ck_assert_int_eq(l.files[i].level, 0);
    ck_assert_uint_eq(l.files[i].min_txid, i + 1);
    ck_assert_uint_eq(l.files[i].max_txid, i + 1);
    snprintf(zPath, sizeof(zPath), "%s/ltx/0/%s", zDir, ltx_file_name(i + 1, i + 1, zName));
    ck_assert_int_eq(stat(zPath, &s), 0);
    ck_assert_uint_eq(l.files[i].size, (uint64_t)s.st_size);
    ck_assert_int_eq(l.files[i].timestamp_ms,
                     (int64_t)s.st_mtim.tv_sec * 1000 + s.st_mtim.tv_nsec / 1000000);
  }
  ck_assert_uint_eq(l.files[0].size, 48257);
  store_ltx_list_free(&l);

  /* only what is newer than (5, 5) */
  ck_assert_int_eq(store_list_level(st, 0, 5, 5, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 6);
  ck_assert_uint_eq(l.files[0].min_txid, 6);
  store_ltx_list_free(&l);

  ck_assert_int_eq(store_list_level(st, 1, 0, 0, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 0);
  store_ltx_list_free(&l);

  ck_assert_int_eq(store_list_all(st, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 11);
  ck_assert_uint_eq(l.files[10].max_txid, 11);
  store_ltx_list_free(&l);
  store_close(st);
}
END_TEST

START_TEST(test_list_level_skips_non_ltx_names_and_sorts) {
  store *st = open_tmp_store();
  store_ltx_list l = {0};
  ltx_error err = {0};

  put_ok(st, "ltx/1/0000000000000021-0000000000000030.ltx", "c", 3000);
  put_ok(st, "ltx/1/0000000000000001-0000000000000010.ltx", "a", 1000);
  put_ok(st, "ltx/1/0000000000000011-0000000000000020.ltx", "bb", 2000);
  put_ok(st, "ltx/1/notes.txt", "x", -1);
  put_ok(st, "ltx/1/0000000000000002-0000000000000001.ltx", "x", -1); /* max < min */
  put_ok(st, "ltx/1/0000000000000000-0000000000000001.ltx", "x", -1); /* min 0 */
  put_ok(st, "ltx/1/0000000000000001-0000000000000010.ltx.tmp", "x", -1);
  put_ok(st, "ltx/1/sub/0000000000000040-0000000000000040.ltx", "x", -1);
  put_ok(st, "ltx/9/0000000000000001-0000000000000030.ltx", "snap", 4000);

  ck_assert_int_eq(store_list_level(st, 1, 0, 0, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 3);
  ck_assert_uint_eq(l.files[0].min_txid, 0x01);
  ck_assert_uint_eq(l.files[1].min_txid, 0x11);
  ck_assert_uint_eq(l.files[2].min_txid, 0x21);
  ck_assert_uint_eq(l.files[1].max_txid, 0x20);
  ck_assert_uint_eq(l.files[1].size, 2);
  ck_assert_int_eq(l.files[1].timestamp_ms, 2000);
  ck_assert_int_eq(l.files[1].level, 1);
  store_ltx_list_free(&l);

  ck_assert_int_eq(store_list_level(st, 1, 0x11, 0x20, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 1);
  ck_assert_uint_eq(l.files[0].min_txid, 0x21);
  store_ltx_list_free(&l);

  ck_assert_int_eq(store_list_all(st, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 4);
  ck_assert_int_eq(l.files[3].level, 9);
  ck_assert_uint_eq(l.files[3].max_txid, 0x30);
  store_ltx_list_free(&l);
  /* a directory is walked in one go: every level, nothing left open */
  {
    int open = -1;
    ck_assert_int_eq(store_list_levels_start(st, 2, NULL, &l, &open, &err), LTX_OK);
    ck_assert_int_eq(open, STORE_MAX_LEVEL + 1);
    ck_assert_uint_eq(l.n, 4);
    ck_assert_uint_eq(l.files[0].min_txid, 0x01);
    ck_assert_int_eq(l.files[3].level, 9);
    store_ltx_list_free(&l);
    /* after what was seen: each level only after its entry */
    store_ltx_file after[STORE_MAX_LEVEL + 1] = {{0}};
    after[1] = (store_ltx_file){1, 0x11, 0x20, 0, 0};
    ck_assert_int_eq(store_list_levels_start(st, 2, after, &l, &open, &err), LTX_OK);
    ck_assert_int_eq(open, STORE_MAX_LEVEL + 1);
    ck_assert_uint_eq(l.n, 2);
    ck_assert_uint_eq(l.files[0].min_txid, 0x21);
    ck_assert_int_eq(l.files[1].level, 9);
    store_ltx_list_free(&l);
  }

  /* the S3 layout lists "0009/" instead */
  put_ok(st, "0009/0000000000000001-0000000000000031.ltx", "s", 5000);
  st->layout = STORE_LAYOUT_S3;
  ck_assert_int_eq(store_list_all(st, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 1);
  ck_assert_uint_eq(l.files[0].max_txid, 0x31);
  ck_assert_int_eq(l.files[0].level, 9);
  store_ltx_list_free(&l);
  st->layout = STORE_LAYOUT_FILE;
  store_close(st);
}
END_TEST

/* A store wrapper that counts the requests an index read makes. */
static const store_ops *pRealOps;
static int nSuffixReads, nRangeReads, nHeads;

static int counting_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                               ltx_error *err) {
  nRangeReads++;
  return pRealOps->read_range(st, key, off, buf, n, err);
}

static int counting_read_suffix(store *st, const char *key, uint8_t *buf, size_t n,
                                size_t *nread, uint64_t *object_size, ltx_error *err) {
  nSuffixReads++;
  return pRealOps->read_suffix(st, key, buf, n, nread, object_size, err);
}

static store_ops counting_ops;

static int counting_head(store *st, const char *key, uint64_t *size, char *etag, size_t cap,
                         ltx_error *err) {
  nHeads++;
  return pRealOps->head(st, key, size, etag, cap, err);
}

static void count_requests(store *st) {
  pRealOps = st->ops;
  counting_ops = *st->ops;
  counting_ops.read_range = counting_read_range;
  counting_ops.read_suffix = counting_read_suffix;
  counting_ops.head = counting_head;
  st->ops = &counting_ops;
  nSuffixReads = nRangeReads = nHeads = 0;
}

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *slurp(const char *zPath, size_t *pn) {
  FILE *f = fopen(zPath, "rb");
  ck_assert_msg(f != NULL, "open %s", zPath);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *a = malloc((size_t)n);
  ck_assert_uint_eq(fread(a, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *pn = (size_t)n;
  return a;
}

START_TEST(test_load_ltx_fixture_matches_frames_and_header) {
  /* commit of each fixture file, from manifest.tsv */
  static const uint32_t aCommit[11] = {18, 96, 96, 96, 164, 164, 233, 265, 265, 265, 59};
  char zDir[1024], zPath[2048];
  store *st = NULL;
  store_ltx_list l = {0};
  ltx_error err = {0};

  snprintf(zDir, sizeof(zDir), "%s/main", fixtures_dir());
  ck_assert_int_eq(store_open(zDir, &st, &err), LTX_OK);
  ck_assert_int_eq(store_list_level(st, 0, 0, 0, &l, &err), LTX_OK);
  ck_assert_uint_eq(l.n, 11);
  count_requests(st);
  for (size_t i = 0; i < l.n; i++) {
    store_ltx_loaded ld;
    char zName[64];
    size_t nFile, nFrame = 0;
    uint64_t off = LTX_HEADER_SIZE;
    int nSuffix0 = nSuffixReads, nRange0 = nRangeReads;

    int rc = store_load_ltx(st, &l.files[i], &ld, &err);
    ck_assert_msg(rc == LTX_OK, "file %zu: %s", i, err.msg);
    const ltx_header h = ld.header;
    const ltx_index idx = ld.idx;
    ck_assert_uint_eq(h.min_txid, i + 1);
    ck_assert_uint_eq(h.max_txid, i + 1);
    ck_assert_uint_eq(h.page_size, 4096);
    ck_assert_uint_eq(h.commit, aCommit[i]);
    ck_assert_uint_eq(h.flags, LTX_HEADER_FLAG_NO_CHECKSUM);
    /* a small file is one read, whole and verified; a larger one two ranges
    ** (header and tail, at once where the store can); never a HEAD */
    ck_assert_int_eq(nSuffixReads - nSuffix0, 0);
    ck_assert_int_eq(nRangeReads - nRange0, l.files[i].size > LTX_INDEX_TAIL_GUESS ? 2 : 1);
    ck_assert_int_eq(ld.whole != NULL, l.files[i].size <= LTX_INDEX_TAIL_GUESS);
    ck_assert_int_eq(nHeads, 0);
    ck_assert_uint_eq(ld.size, l.files[i].size);

    /* walk the current-format frames independently: pgno | flags | csize */
    snprintf(zPath, sizeof(zPath), "%s/ltx/0/%s", zDir, ltx_file_name(i + 1, i + 1, zName));
    uint8_t *a = slurp(zPath, &nFile);
    for (;;) {
      uint32_t pgno = get_be32(a + off);
      if (pgno == 0) break;
      ck_assert_uint_lt(nFrame, idx.n);
      uint32_t csize = get_be32(a + off + 6);
      ck_assert_uint_eq(idx.entries[nFrame].pgno, pgno);
      ck_assert_uint_eq(idx.entries[nFrame].offset, off);
      ck_assert_uint_eq(idx.entries[nFrame].size, 10 + csize);
      off += 10 + csize;
      nFrame++;
    }
    ck_assert_uint_eq(idx.n, nFrame);
    if (i == 0) ck_assert_uint_eq(idx.n, 18); /* a snapshot holds every page */
    free(a);
    store_ltx_loaded_free(&ld);
  }
  st->ops = pRealOps;
  store_ltx_list_free(&l);
  store_close(st);
}
END_TEST

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v) {
  put_be32(p, (uint32_t)(v >> 32));
  put_be32(p + 4, (uint32_t)v);
}

/* A structurally valid snapshot of nPage 512-byte pages whose frames hold
** 6 placeholder payload bytes each: the index is what matters here. */
static uint8_t *synthetic_ltx(uint32_t nPage, size_t *pn) {
  size_t nFrames = (size_t)nPage * 16;
  size_t nCap = LTX_HEADER_SIZE + nFrames + LTX_TERMINATOR_SIZE + (size_t)nPage * 30 + 1 + 8 +
                LTX_TRAILER_SIZE;
  uint8_t *a = calloc(1, nCap);
  size_t off = LTX_HEADER_SIZE, iIdx, nIdx;
  memcpy(a, LTX_MAGIC, 4);
  put_be32(a + 4, LTX_HEADER_FLAG_NO_CHECKSUM);
  put_be32(a + 8, 512);
  put_be32(a + 12, nPage);
  put_be64(a + 16, 1);
  put_be64(a + 24, 1);
  put_be64(a + 32, 1795342761103ull);
  for (uint32_t pg = 1; pg <= nPage; pg++) {
    put_be32(a + off, pg);
    a[off + 5] = 1;
    put_be32(a + off + 6, 6);
    off += 16;
  }
  off += LTX_TERMINATOR_SIZE;
  iIdx = off;
  for (uint32_t pg = 1; pg <= nPage; pg++) {
    off += ltx_uvarint_put(a + off, pg);
    off += ltx_uvarint_put(a + off, LTX_HEADER_SIZE + (uint64_t)(pg - 1) * 16);
    off += ltx_uvarint_put(a + off, 16);
  }
  a[off++] = 0;
  nIdx = off - iIdx;
  put_be64(a + off, nIdx);
  off += 8 + LTX_TRAILER_SIZE;
  *pn = off;
  return a;
}

START_TEST(test_load_ltx_large_index_takes_a_third_range) {
  store *st = open_tmp_store();
  ltx_error err = {0};
  store_ltx_loaded ld;
  size_t n;
  uint8_t *a = synthetic_ltx(5000, &n);
  store_ltx_file f = {.level = 0, .min_txid = 1, .max_txid = 1, .size = n};
  char zKey[128];

  store_ltx_key(st, 0, 1, 1, zKey, sizeof(zKey));
  ck_assert_int_eq(store_put(st, zKey, a, n, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err), LTX_OK);
  count_requests(st);
  ck_assert_msg(store_load_ltx(st, &f, &ld, &err) == LTX_OK, "%s", err.msg);
  ck_assert_uint_eq(ld.idx.n, 5000);
  ck_assert_uint_eq(ld.idx.entries[4999].pgno, 5000);
  ck_assert_uint_eq(ld.idx.entries[4999].offset, LTX_HEADER_SIZE + 4999 * 16);
  ck_assert_uint_eq(ld.header.commit, 5000);
  ck_assert_int_eq(nRangeReads, 3); /* header, tail, then the whole index */
  ck_assert_int_eq(nSuffixReads + nHeads, 0);
  store_ltx_loaded_free(&ld);
  st->ops = pRealOps;
  free(a);
  store_close(st);
}
END_TEST

START_TEST(test_load_ltx_header_must_match_the_name) {
  char zSrc[2048];
  store *st = open_tmp_store();
  ltx_error err = {0};
  store_ltx_loaded ld;
  size_t n;
  const char *key = "ltx/0/0000000000000003-0000000000000003.ltx";
  store_ltx_file f = {.level = 0, .min_txid = 3, .max_txid = 3};

  snprintf(zSrc, sizeof(zSrc), "%s/main/ltx/0/0000000000000002-0000000000000002.ltx",
           fixtures_dir());
  uint8_t *a = slurp(zSrc, &n);
  f.size = n;
  ck_assert_int_eq(store_put(st, key, a, n, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err), LTX_OK);
  ck_assert_int_eq(store_load_ltx(st, &f, &ld, &err), STORE_ERR_MISMATCH);
  ck_assert_msg(strstr(err.msg, key) != NULL && strstr(err.msg, "do not match") != NULL &&
                    strstr(err.msg, "corrupt LTX file") != NULL,
                "%s", err.msg);
  ck_assert_ptr_null(ld.idx.entries);
  ck_assert_ptr_null(ld.whole);

  /* a missing file names its key */
  f.min_txid = f.max_txid = 4;
  ck_assert_int_eq(store_load_ltx(st, &f, &ld, &err), STORE_ERR_NOT_FOUND);
  ck_assert_msg(strstr(err.msg, "0000000000000004-0000000000000004.ltx") != NULL, "%s", err.msg);
  free(a);
  store_close(st);
}
END_TEST

/* The listed size is a hint: listed at 0, at a prefix, a little short or a
** little long, a whole file loads at its real size, at the cost of one HEAD
** and a second load. */
START_TEST(test_load_ltx_listed_size_is_a_hint) {
  static const char *kFiles[] = {"0000000000000005-0000000000000005.ltx", /* 65 KB */
                                 "0000000000000001-0000000000000001.ltx"}; /* 48 KB */
  char zSrc[2048], zKey[128];
  store *st = open_tmp_store();
  ltx_error err = {0};
  store_ltx_loaded ld;
  size_t n;
  for (size_t k = 0; k < 2; k++) {
    uint64_t txid = k == 0 ? 5 : 1;
    snprintf(zSrc, sizeof(zSrc), "%s/main/ltx/0/%s", fixtures_dir(), kFiles[k]);
    uint8_t *a = slurp(zSrc, &n);
    store_ltx_key(st, 0, txid, txid, zKey, sizeof(zKey));
    ck_assert_int_eq(store_put(st, zKey, a, n, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err), LTX_OK);
    const uint64_t kListed[] = {0, 4096, 16384, n - 100, n + 100};
    for (size_t i = 0; i < sizeof(kListed) / sizeof(kListed[0]); i++) {
      store_ltx_file f = {.level = 0, .min_txid = txid, .max_txid = txid, .size = kListed[i]};
      count_requests(st);
      ck_assert_msg(store_load_ltx(st, &f, &ld, &err) == LTX_OK, "listed %llu: %s",
                    (unsigned long long)kListed[i], err.msg);
      ck_assert_uint_eq(ld.size, n);
      ck_assert_uint_eq(ld.header.max_txid, txid);
      ck_assert_int_eq(nHeads, 1);
      store_ltx_loaded_free(&ld);
      st->ops = pRealOps;
    }
    free(a);
  }
  store_close(st);
}
END_TEST

/* A tail that claims an index larger than the header's commit allows is
** corrupt: a clear error, and no allocation of what it claims. */
START_TEST(test_load_ltx_index_bigger_than_commit_allows_is_corrupt) {
  char zSrc[2048];
  store *st = open_tmp_store();
  ltx_error err = {0};
  store_ltx_loaded ld;
  size_t n;
  const char *key = "ltx/0/0000000000000003-0000000000000003.ltx";
  snprintf(zSrc, sizeof(zSrc), "%s/main/ltx/0/%s", fixtures_dir(),
           "0000000000000003-0000000000000003.ltx");
  uint8_t *a = slurp(zSrc, &n); /* 291 KB, commit 96 */
  put_be64(a + n - 24, n - 200); /* the index "takes" nearly the whole file */
  ck_assert_int_eq(store_put(st, key, a, n, -1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err), LTX_OK);
  store_ltx_file f = {.level = 0, .min_txid = 3, .max_txid = 3, .size = n};
  ck_assert_int_eq(store_load_ltx(st, &f, &ld, &err), LTX_ERR_INDEX);
  ck_assert_msg(strstr(err.msg, key) && strstr(err.msg, "corrupt LTX file") &&
                    strstr(err.msg, "96 pages need at most"),
                "%s", err.msg);
  free(a);
  store_close(st);
}
END_TEST

/* ---- plan ---- */

static store_ltx_file F(int level, uint64_t min, uint64_t max) {
  store_ltx_file f = {.level = level, .min_txid = min, .max_txid = max, .size = 100,
                      .timestamp_ms = (int64_t)max * 1000};
  return f;
}

/* Asserts the plan's files are exactly the (level, min, max) triples. */
static void assert_plan(const store_plan *p, const int (*aWant)[3], size_t nWant) {
  ck_assert_msg(p->n == nWant, "plan has %zu files, want %zu", p->n, nWant);
  for (size_t i = 0; i < nWant; i++) {
    ck_assert_msg(p->files[i].level == aWant[i][0] &&
                      p->files[i].min_txid == (uint64_t)aWant[i][1] &&
                      p->files[i].max_txid == (uint64_t)aWant[i][2],
                  "plan[%zu] = L%d %" PRIu64 "-%" PRIu64 ", want L%d %d-%d", i, p->files[i].level,
                  p->files[i].min_txid, p->files[i].max_txid, aWant[i][0], aWant[i][1],
                  aWant[i][2]);
  }
}

START_TEST(test_plan_latest_over_l0_only) {
  store_ltx_file a[] = {F(0, 3, 3), F(0, 1, 1), F(0, 2, 2), F(0, 5, 5), F(0, 4, 4)};
  static const int aWant[][3] = {{0, 1, 1}, {0, 2, 2}, {0, 3, 3}, {0, 4, 4}, {0, 5, 5}};
  store_plan p;
  ltx_error err = {0};
  ck_assert_msg(store_plan_build(a, 5, 0, -1, &p, &err) == LTX_OK, "%s", err.msg);
  ck_assert_uint_eq(p.txid, 5);
  assert_plan(&p, aWant, 5);
  store_plan_free(&p);
}
END_TEST

START_TEST(test_plan_snapshot_l1_l0_overlapping_takes_fewest_files) {
  store_ltx_file a[64] = {
      F(9, 1, 10), F(9, 1, 5),  F(2, 11, 30), F(1, 11, 20), F(1, 21, 30), F(1, 25, 32),
      F(0, 31, 31), F(0, 32, 32), F(0, 33, 33), F(0, 34, 34), F(0, 35, 35),
  };
  size_t n = 11;
  /* L0 files not pruned yet: the compactions must still be preferred */
  for (uint64_t t = 6; t <= 30; t++) a[n++] = F(0, t, t);
  static const int aWant[][3] = {{9, 1, 10}, {2, 11, 30}, {1, 25, 32},
                                 {0, 33, 33}, {0, 34, 34}, {0, 35, 35}};
  store_plan p;
  ltx_error err = {0};
  ck_assert_msg(store_plan_build(a, n, 0, -1, &p, &err) == LTX_OK, "%s", err.msg);
  ck_assert_uint_eq(p.txid, 35);
  assert_plan(&p, aWant, 6);
  store_plan_free(&p);
}
END_TEST

START_TEST(test_plan_prefers_highest_max_then_lowest_min_then_higher_level) {
  store_ltx_file a[] = {F(9, 1, 10), F(1, 11, 20), F(2, 11, 20), F(3, 5, 20), F(0, 11, 11)};
  static const int aWant[][3] = {{9, 1, 10}, {3, 5, 20}};
  store_ltx_file b[] = {F(9, 1, 10), F(1, 11, 20), F(2, 11, 20), F(0, 11, 11)};
  static const int bWant[][3] = {{9, 1, 10}, {2, 11, 20}};
  /* an L1 file from TXID 1 reaches as far as the snapshot: the snapshot wins
  ** the tie on level */
  store_ltx_file c[] = {F(1, 1, 10), F(9, 1, 10)};
  static const int cWant[][3] = {{9, 1, 10}};
  store_plan p;
  ltx_error err = {0};

  ck_assert_int_eq(store_plan_build(a, 5, 0, -1, &p, &err), LTX_OK);
  assert_plan(&p, aWant, 2);
  store_plan_free(&p);
  ck_assert_int_eq(store_plan_build(b, 4, 0, -1, &p, &err), LTX_OK);
  assert_plan(&p, bWant, 2);
  store_plan_free(&p);
  ck_assert_int_eq(store_plan_build(c, 2, 0, -1, &p, &err), LTX_OK);
  assert_plan(&p, cWant, 1);
  store_plan_free(&p);
}
END_TEST

START_TEST(test_plan_pinned_inside_compacted_range_is_unavailable) {
  /* L0 11..18 pruned after the L1 compaction covered them */
  store_ltx_file a[] = {F(9, 1, 10), F(1, 11, 20), F(0, 19, 19), F(0, 20, 20), F(0, 21, 21)};
  store_plan p;
  ltx_error err = {0};

  ck_assert_int_eq(store_plan_build(a, 5, 15, -1, &p, &err), STORE_ERR_TXID_UNAVAILABLE);
  ck_assert_ptr_null(p.files);
  ck_assert_msg(strstr(err.msg, "000000000000000f") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "000000000000000a below") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "0000000000000014 above") != NULL, "%s", err.msg);

  /* 19: a file ends there, but nothing reaches 18 before it */
  ck_assert_int_eq(store_plan_build(a, 5, 19, -1, &p, &err), STORE_ERR_TXID_UNAVAILABLE);
  ck_assert_msg(strstr(err.msg, "0000000000000014 above") != NULL, "%s", err.msg);

  /* past the end */
  ck_assert_int_eq(store_plan_build(a, 5, 100, -1, &p, &err), STORE_ERR_TXID_UNAVAILABLE);
  ck_assert_msg(strstr(err.msg, "0000000000000015 below and none above") != NULL, "%s", err.msg);

  /* the ends of files are available */
  static const int w20[][3] = {{9, 1, 10}, {1, 11, 20}};
  ck_assert_int_eq(store_plan_build(a, 5, 20, -1, &p, &err), LTX_OK);
  ck_assert_uint_eq(p.txid, 20);
  assert_plan(&p, w20, 2);
  store_plan_free(&p);
  static const int w10[][3] = {{9, 1, 10}};
  ck_assert_int_eq(store_plan_build(a, 5, 10, -1, &p, &err), LTX_OK);
  assert_plan(&p, w10, 1);
  store_plan_free(&p);
  static const int w21[][3] = {{9, 1, 10}, {1, 11, 20}, {0, 21, 21}};
  ck_assert_int_eq(store_plan_build(a, 5, 21, -1, &p, &err), LTX_OK);
  assert_plan(&p, w21, 3);
  store_plan_free(&p);
}
END_TEST

START_TEST(test_plan_available_txids_are_reachable_file_ends) {
  store_ltx_file a[] = {F(9, 1, 10), F(1, 11, 20), F(0, 19, 19), F(0, 20, 20),
                        F(0, 21, 21), F(0, 23, 23), F(0, 5, 5),  F(0, 1, 3)};
  static const uint64_t aWant[] = {3, 10, 20, 21};
  uint64_t *aTxid = NULL;
  size_t nTxid = 0;
  ltx_error err = {0};
  ck_assert_int_eq(store_plan_available_txids(a, 8, &aTxid, &nTxid, &err), LTX_OK);
  ck_assert_uint_eq(nTxid, 4);
  for (size_t i = 0; i < nTxid; i++) ck_assert_uint_eq(aTxid[i], aWant[i]);
  free(aTxid);
}
END_TEST

START_TEST(test_plan_gap_is_noncontiguous_naming_the_gap) {
  store_ltx_file a[] = {F(0, 1, 1), F(0, 2, 2), F(0, 3, 3), F(0, 6, 6), F(0, 5, 5)};
  store_ltx_file b[] = {F(0, 3, 3), F(0, 4, 4)};
  store_plan p;
  ltx_error err = {0};

  ck_assert_int_eq(store_plan_build(a, 5, 0, -1, &p, &err), STORE_ERR_NONCONTIGUOUS);
  ck_assert_ptr_null(p.files);
  ck_assert_msg(strstr(err.msg, "reach TXID 0000000000000003") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "level 0 file 0000000000000005-0000000000000005.ltx") != NULL,
                "%s", err.msg);
  /* the part before the gap is still restorable when pinned */
  ck_assert_int_eq(store_plan_build(a, 5, 3, -1, &p, &err), LTX_OK);
  ck_assert_uint_eq(p.n, 3);
  store_plan_free(&p);

  ck_assert_int_eq(store_plan_build(b, 2, 0, -1, &p, &err), STORE_ERR_NONCONTIGUOUS);
  ck_assert_msg(strstr(err.msg, "no snapshot") != NULL &&
                    strstr(err.msg, "0000000000000003-0000000000000003.ltx") != NULL,
                "%s", err.msg);
}
END_TEST

START_TEST(test_plan_straddling_l1_file_is_followed) {
  /* an L1 compaction that began before the snapshot and ends after it */
  store_ltx_file a[] = {F(9, 1, 10), F(1, 5, 15), F(0, 11, 11), F(0, 12, 12),
                        F(0, 16, 16), F(0, 17, 17)};
  static const int aWant[][3] = {{9, 1, 10}, {1, 5, 15}, {0, 16, 16}, {0, 17, 17}};
  store_plan p;
  ltx_error err = {0};
  ck_assert_msg(store_plan_build(a, 6, 0, -1, &p, &err) == LTX_OK, "%s", err.msg);
  ck_assert_uint_eq(p.txid, 17);
  assert_plan(&p, aWant, 4);
  store_plan_free(&p);
}
END_TEST

START_TEST(test_plan_by_time_uses_files_strictly_before) {
  store_ltx_file a[] = {F(0, 1, 1), F(0, 2, 2), F(0, 3, 3), F(0, 4, 4), F(0, 5, 5)};
  store_plan p;
  ltx_error err = {0};

  /* timestamps are max * 1000: the file at 3000 does not count at 3000 */
  ck_assert_int_eq(store_plan_build(a, 5, 0, 3000, &p, &err), LTX_OK);
  ck_assert_uint_eq(p.txid, 2);
  store_plan_free(&p);
  ck_assert_int_eq(store_plan_build(a, 5, 0, 3001, &p, &err), LTX_OK);
  ck_assert_uint_eq(p.txid, 3);
  ck_assert_uint_eq(p.n, 3);
  store_plan_free(&p);
  ck_assert_int_eq(store_plan_build(a, 5, 0, 1000, &p, &err), STORE_ERR_TXID_UNAVAILABLE);
  ck_assert_msg(strstr(err.msg, "1970-01-01T00:00:01Z") != NULL, "%s", err.msg);

  /* a gap before the target time: the newest restorable state before it */
  store_ltx_file b[] = {F(0, 1, 1), F(0, 2, 2), F(0, 4, 4), F(1, 3, 5)};
  ck_assert_int_eq(store_plan_build(b, 4, 0, 4500, &p, &err), LTX_OK);
  ck_assert_uint_eq(p.txid, 2);
  store_plan_free(&p);

  /* files before the time, but no snapshot among them */
  store_ltx_file c[] = {F(0, 2, 2), F(0, 1, 3)};
  ck_assert_int_eq(store_plan_build(c, 2, 0, 2500, &p, &err), STORE_ERR_TXID_UNAVAILABLE);
  ck_assert_msg(strstr(err.msg, "no restorable state") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_plan_empty_listing_is_empty) {
  store_ltx_file bad[] = {F(0, 0, 1), F(0, 5, 4), F(12, 1, 1)};
  store_plan p;
  ltx_error err = {0};
  ck_assert_int_eq(store_plan_build(NULL, 0, 0, -1, &p, &err), STORE_ERR_EMPTY);
  ck_assert_ptr_null(p.files);
  ck_assert_int_eq(store_plan_build(bad, 3, 0, -1, &p, &err), STORE_ERR_EMPTY);
  ck_assert_ptr_nonnull(strstr(err.msg, "3 entries ignored"));
}
END_TEST

START_TEST(test_plan_ignores_invalid_and_duplicate_entries) {
  store_ltx_file a[] = {F(0, 2, 2),  F(0, 1, 1), F(0, 2, 2), F(0, 3, 3), F(0, 1, 1),
                        F(0, 9, 2),  F(0, 0, 7), F(11, 1, 9), F(-1, 1, 9), F(0, 3, 3)};
  static const int aWant[][3] = {{0, 1, 1}, {0, 2, 2}, {0, 3, 3}};
  store_plan p;
  ltx_error err = {0};
  ck_assert_msg(store_plan_build(a, 10, 0, -1, &p, &err) == LTX_OK, "%s", err.msg);
  assert_plan(&p, aWant, 3);
  store_plan_free(&p);
}
END_TEST

START_TEST(test_plan_handles_100k_files) {
  const uint64_t N = 100000;
  size_t n = 0;
  store_ltx_file *a = malloc((N + N / 100 + N / 10000 + 1) * sizeof(*a));
  uint64_t *aTxid = NULL;
  size_t nTxid = 0;
  store_plan p;
  ltx_error err = {0};

  for (uint64_t t = N; t >= 1; t--) a[n++] = F(0, t, t);
  for (uint64_t j = 0; j < N / 100; j++) a[n++] = F(1, 100 * j + 1, 100 * j + 100);
  for (uint64_t k = 0; k < N / 10000; k++) a[n++] = F(2, 10000 * k + 1, 10000 * k + 10000);
  a[n++] = F(9, 1, 50000);

  ck_assert_int_eq(store_plan_build(a, n, 0, -1, &p, &err), LTX_OK);
  ck_assert_uint_eq(p.txid, N);
  ck_assert_uint_eq(p.n, 6); /* the snapshot, then five L2 files */
  store_plan_free(&p);

  ck_assert_int_eq(store_plan_build(a, n, 99950, -1, &p, &err), LTX_OK);
  ck_assert_uint_eq(p.txid, 99950);
  ck_assert_uint_eq(p.n, 1 + 4 + 99 + 50);
  store_plan_free(&p);

  ck_assert_int_eq(store_plan_available_txids(a, n, &aTxid, &nTxid, &err), LTX_OK);
  ck_assert_uint_eq(nTxid, N);
  ck_assert_uint_eq(aTxid[N - 1], N);
  free(aTxid);
  free(a);
}
END_TEST

static Suite *store_suite(void) {
  Suite *s = suite_create("store");
  TCase *tc;

  tc = tcase_create("url");
  tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
  tcase_add_test(tc, test_url_file_absolute_uses_the_directory);
  tcase_add_test(tc, test_url_file_localhost_and_short_form_are_absolute);
  tcase_add_test(tc, test_url_file_relative_is_relative_to_cwd);
  tcase_add_test(tc, test_url_plain_path_is_literal);
  tcase_add_test(tc, test_url_percent_escapes_are_decoded);
  tcase_add_loop_test(tc, test_url_bad_urls_fail_naming_url_and_problem, 0,
                      (int)(sizeof(aBadUrl) / sizeof(aBadUrl[0])));
  suite_add_tcase(s, tc);

  tc = tcase_create("file");
  tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_file_put_list_read_roundtrip);
  tcase_add_test(tc, test_file_put_leaves_no_temporary_files);
  tcase_add_test(tc, test_file_put_sets_mtime_to_timestamp);
  tcase_add_test(tc, test_file_put_if_absent_second_put_fails);
  tcase_add_test(tc, test_file_put_if_match_needs_the_current_etag);
  tcase_add_test(tc, test_file_concurrent_put_if_absent_has_one_winner);
  tcase_add_test(tc, test_file_concurrent_put_if_match_has_one_winner);
  tcase_add_test(tc, test_file_conditional_put_waits_for_the_directory_lock);
  tcase_add_test(tc, test_file_missing_object_errors_name_the_key);
  tcase_add_test(tc, test_file_short_read_names_key_offset_and_lengths);
  tcase_add_test(tc, test_file_sink_tells_pieces_in_order_and_a_short_object_fails);
  tcase_add_test(tc, test_file_missing_level_is_empty_missing_root_is_not_found);
  tcase_add_test(tc, test_file_delete_removes_and_ignores_missing);
  tcase_add_test(tc, test_file_rejects_keys_outside_the_root);
  suite_add_tcase(s, tc);

  tc = tcase_create("layout");
  tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
  tcase_add_test(tc, test_layout_keys_per_backend);
  tcase_add_test(tc, test_list_level_fixture_main_has_11_sorted_files);
  tcase_add_test(tc, test_list_level_skips_non_ltx_names_and_sorts);
  tcase_add_test(tc, test_load_ltx_fixture_matches_frames_and_header);
  tcase_add_test(tc, test_load_ltx_large_index_takes_a_third_range);
  tcase_add_test(tc, test_load_ltx_listed_size_is_a_hint);
  tcase_add_test(tc, test_load_ltx_index_bigger_than_commit_allows_is_corrupt);
  tcase_add_test(tc, test_load_ltx_header_must_match_the_name);
  suite_add_tcase(s, tc);

  tc = tcase_create("plan");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_plan_latest_over_l0_only);
  tcase_add_test(tc, test_plan_snapshot_l1_l0_overlapping_takes_fewest_files);
  tcase_add_test(tc, test_plan_prefers_highest_max_then_lowest_min_then_higher_level);
  tcase_add_test(tc, test_plan_pinned_inside_compacted_range_is_unavailable);
  tcase_add_test(tc, test_plan_available_txids_are_reachable_file_ends);
  tcase_add_test(tc, test_plan_gap_is_noncontiguous_naming_the_gap);
  tcase_add_test(tc, test_plan_straddling_l1_file_is_followed);
  tcase_add_test(tc, test_plan_by_time_uses_files_strictly_before);
  tcase_add_test(tc, test_plan_empty_listing_is_empty);
  tcase_add_test(tc, test_plan_ignores_invalid_and_duplicate_entries);
  tcase_add_test(tc, test_plan_handles_100k_files);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(store_suite()); }
