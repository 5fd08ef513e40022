/*
** bench_write.c: the commit path, for bench/bench_write.sh.
**
**   bench_write commit LIB DB N SYNC [URI_PARAMS]
**       N small transactions (one INSERT of a 100-byte row each, autocommit)
**       on DB in WAL mode at PRAGMA synchronous=SYNC. URI_PARAMS empty: plain
**       SQLite (the default VFS); else the database is opened as
**       file:DB?vfs=litestream-primary&URI_PARAMS. Prints one line:
**       "commits N secs S per_sec R p50_us A p99_us B", then, for a primary,
**       waits for the upload of everything (PRAGMA litestream_sync).
**   bench_write lag-writer LIB DB N GAP_MS URI_PARAMS
**       commits row i (i = 1..N) every GAP_MS ms through litestream-primary
**       and prints "i commit_wall_us" after each COMMIT returns.
**   bench_write lag-reader LIB URL N POLL_MS
**       a replica process: opens URL with the litestream VFS (poll=POLL_MS)
**       and queries max(id) every 2 ms, printing "i seen_wall_us" the first
**       time it sees each i, until it has seen N.
** The extension is loaded into a :memory: connection first, which registers
** its VFSs for the connections opened after it.
*/
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_us(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(sqlite3 *db, const char *what) {
  fprintf(stderr, "bench_write: %s: %s\n", what, db ? sqlite3_errmsg(db) : "failed");
  exit(1);
}

static void load(const char *lib) {
  sqlite3 *boot;
  char *err = NULL;
  if (sqlite3_open(":memory:", &boot) != SQLITE_OK) die(boot, "open :memory:");
  sqlite3_enable_load_extension(boot, 1);
  if (sqlite3_load_extension(boot, lib, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "bench_write: load %s: %s\n", lib, err ? err : "?");
    exit(1);
  }
  /* boot stays open: the library stays loaded */
}

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "bench_write: %s: %s\n", sql, err ? err : "?");
    exit(1);
  }
}

static sqlite3 *open_db(const char *db_path, const char *params) {
  sqlite3 *db = NULL;
  char uri[8192];
  if (params && *params)
    snprintf(uri, sizeof uri, "file:%s?vfs=litestream-primary&%s", db_path, params);
  else
    snprintf(uri, sizeof uri, "file:%s", db_path);
  if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) !=
      SQLITE_OK)
    die(db, uri);
  sqlite3_busy_timeout(db, 30000);
  return db;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int run_commit(const char *lib, const char *path, int n, const char *sync, const char *params) {
  sqlite3 *db;
  sqlite3_stmt *ins;
  int64_t *lat = malloc(sizeof(int64_t) * (size_t)n), t0, t1;
  char sql[128];
  load(lib);
  db = open_db(path, params);
  exec(db, "PRAGMA journal_mode=WAL");
  snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync);
  exec(db, sql);
  exec(db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)");
  if (sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES(randomblob(100))", -1, &ins, NULL) != SQLITE_OK)
    die(db, "prepare");
  t0 = now_us(CLOCK_MONOTONIC);
  for (int i = 0; i < n; i++) {
    int64_t a = now_us(CLOCK_MONOTONIC);
    if (sqlite3_step(ins) != SQLITE_DONE) die(db, "insert");
    sqlite3_reset(ins);
    lat[i] = now_us(CLOCK_MONOTONIC) - a;
  }
  t1 = now_us(CLOCK_MONOTONIC);
  qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
  printf("commits %d secs %.3f per_sec %.0f p50_us %lld p99_us %lld\n", n, (t1 - t0) / 1e6,
         n / ((t1 - t0) / 1e6), (long long)lat[n / 2], (long long)lat[(n * 99) / 100]);
  fflush(stdout);
  sqlite3_finalize(ins);
  if (params && *params) {
    exec(db, "PRAGMA litestream_sync('120s')");
    if (sqlite3_prepare_v2(db, "SELECT ltvfs_stats()", -1, &ins, NULL) == SQLITE_OK &&
        sqlite3_step(ins) == SQLITE_ROW)
      printf("stats %s\n", (const char *)sqlite3_column_text(ins, 0));
    sqlite3_finalize(ins);
  }
  sqlite3_close(db);
  free(lat);
  return 0;
}

static int run_lag_writer(const char *lib, const char *path, int n, int gap_ms, const char *params) {
  sqlite3 *db;
  sqlite3_stmt *ins;
  load(lib);
  db = open_db(path, params);
  exec(db, "PRAGMA journal_mode=WAL");
  exec(db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)");
  exec(db, "PRAGMA litestream_sync('60s')");
  if (sqlite3_prepare_v2(db, "INSERT INTO t(id, v) VALUES(?, randomblob(100))", -1, &ins, NULL) !=
      SQLITE_OK)
    die(db, "prepare");
  printf("ready\n");
  fflush(stdout);
  sleep(1); /* the reader is open and polling */
  for (int i = 1; i <= n; i++) {
    sqlite3_bind_int(ins, 1, i);
    if (sqlite3_step(ins) != SQLITE_DONE) die(db, "insert");
    sqlite3_reset(ins);
    printf("%d %lld\n", i, (long long)now_us(CLOCK_REALTIME));
    fflush(stdout);
    usleep((useconds_t)gap_ms * 1000);
  }
  sqlite3_finalize(ins);
  sqlite3_close(db);
  return 0;
}

static int run_lag_reader(const char *lib, const char *url, int n, int poll_ms) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q;
  char uri[8192];
  int seen = 0;
  int64_t give_up = now_us(CLOCK_MONOTONIC) + 120 * 1000000LL;
  load(lib);
  snprintf(uri, sizeof uri, "file:lag?vfs=litestream&replica=%s&poll=%d", url, poll_ms);
  if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK) die(db, uri);
  exec(db, "PRAGMA cache_size=10");
  while (seen < n && now_us(CLOCK_MONOTONIC) < give_up) {
    int top = 0;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM t", -1, &q, NULL) == SQLITE_OK) {
      if (sqlite3_step(q) == SQLITE_ROW) top = sqlite3_column_int(q, 0);
      sqlite3_finalize(q);
    }
    if (top > seen) {
      int64_t t = now_us(CLOCK_REALTIME);
      for (int i = seen + 1; i <= top; i++) printf("%d %lld\n", i, (long long)t);
      fflush(stdout);
      seen = top;
    }
    usleep(2000);
  }
  sqlite3_close(db);
  return seen >= n ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 6 && strcmp(argv[1], "commit") == 0)
    return run_commit(argv[2], argv[3], atoi(argv[4]), argv[5], argc > 6 ? argv[6] : "");
  if (argc >= 7 && strcmp(argv[1], "lag-writer") == 0)
    return run_lag_writer(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argv[6]);
  if (argc >= 6 && strcmp(argv[1], "lag-reader") == 0)
    return run_lag_reader(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
  fprintf(stderr, "usage: see the header of bench/bench_write.c\n");
  return 2;
}
