/*
** check_primary.c: the primary layer (primary/) without the VFS.
**
**   walscan   a WAL written by the real SQLite (autocheckpoint off): every
**             commit found, the frames of a rolled-back transaction not
**             taken, a scan from a captured frame, a flipped byte ending the
**             scan before the frame it is in, a frame of another generation
**             reported as gone;
**   spool     the state's two slots: a torn newer slot leaves the older
**             record, both damaged is an error naming the file; prune keeps
**             exactly the files between uploaded and spooled;
**   lease     over file://: created, renewed, held against another owner
**             (the message names holder and expiry), taken over once
**             expired (generation + 1), lost when replaced behind its back;
**   fingerprint  changes with a write, not with a read;
**   object    the primary object with its thread (what tests/sanitize.sh
**             runs under TSan): start-up snapshot of an existing database,
**             commits captured from the WAL by the thread and uploaded,
**             primary_sync, stats, and the replica restored equal to the
**             database.
*/
#include "config.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

#include "cache/cache.h"
#include "primary/primary_int.h"
#include "tests/testutil.h"

static char g_dir[512];

static void setup(void) { ck_assert_ptr_nonnull(tu_mkdtemp(g_dir, sizeof g_dir, "primary")); }
static void teardown(void) { tu_rmtree(g_dir); }

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s", sql, err ? err : "");
}

/* A database in WAL mode with its WAL kept (no checkpoint): n_commits
** committed transactions, then a rolled-back one that spilled frames.
** Leaves the connection open (the WAL stays) in *out. */
static void make_wal(const char *path, int n_commits, sqlite3 **out) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  exec(db, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=5;"
           "CREATE TABLE t(x, y)");
  for (int i = 0; i < n_commits - 1; i++) exec(db, "INSERT INTO t VALUES(randomblob(3000), 1)");
  exec(db, "BEGIN; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200) "
           "INSERT INTO t SELECT randomblob(3000), 2 FROM s; ROLLBACK");
  *out = db;
}

START_TEST(test_walscan_commits) {
  char db_path[600], wal_path[640];
  sqlite3 *db;
  wal_header wh;
  wal_scan sc;
  ltx_error err;
  int fd;
  snprintf(db_path, sizeof db_path, "%s/w.db", g_dir);
  snprintf(wal_path, sizeof wal_path, "%s-wal", db_path);
  make_wal(db_path, 12, &db);
  fd = open(wal_path, O_RDONLY);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(wal_read_header(fd, &wh, &err), LTX_OK);
  ck_assert_uint_eq(wh.page_size, 4096);
  ck_assert_int_eq(wal_scan_from(fd, &wh, 0, &sc, &err), LTX_OK);
  /* CREATE TABLE + 11 inserts; the spilled, rolled-back frames are not taken */
  ck_assert_uint_eq(sc.n_commits, 12);
  ck_assert_uint_eq(sc.n_frames, sc.commits[sc.n_commits - 1].frame);
  {
    struct stat s;
    fstat(fd, &s);
    uint32_t in_file = (uint32_t)((s.st_size - WAL_HEADER_SIZE) / (WAL_FRAME_HEADER_SIZE + 4096));
    ck_assert_msg(in_file > sc.n_frames + 10, "the rollback spilled frames (%u in the file, %zu taken)",
                  in_file, sc.n_frames);
  }
  /* From a captured commit on: only the commits after it. */
  {
    wal_scan rest;
    uint32_t from = sc.commits[5].frame;
    ck_assert_int_eq(wal_scan_from(fd, &wh, from, &rest, &err), LTX_OK);
    ck_assert_uint_eq(rest.n_commits, 6);
    ck_assert_uint_eq(rest.from_frame, from);
    wal_scan_free(&rest);
  }
  /* A flipped byte in the page of the 8th commit's frame ends the scan at the 7th. */
  {
    wal_scan cut;
    uint8_t b;
    off_t at = wal_frame_page_offset(&wh, sc.commits[7].frame) + 100;
    int wfd = open(wal_path, O_RDWR);
    ck_assert_int_eq(pread(wfd, &b, 1, at), 1);
    b ^= 0x55;
    ck_assert_int_eq(pwrite(wfd, &b, 1, at), 1);
    close(wfd);
    ck_assert_int_eq(wal_scan_from(fd, &wh, 0, &cut, &err), LTX_OK);
    ck_assert_uint_eq(cut.n_commits, 7);
    wal_scan_free(&cut);
  }
  /* A frame that is not this WAL's (other salts) is reported, not scanned past. */
  {
    wal_header other = wh;
    wal_scan none;
    other.salt1 ^= 1;
    ck_assert_int_eq(wal_scan_from(fd, &other, 3, &none, &err), PRIMARY_ERR_WAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "no longer in the WAL"));
  }
  wal_scan_free(&sc);
  close(fd);
  sqlite3_close(db);
}
END_TEST

START_TEST(test_wal_header_absent) {
  char path[600];
  wal_header wh;
  ltx_error err;
  int fd;
  snprintf(path, sizeof path, "%s/empty-wal", g_dir);
  ck_assert_int_eq(tu_write_file(path, "", 0), 0);
  fd = open(path, O_RDONLY);
  ck_assert_int_eq(wal_read_header(fd, &wh, &err), LTX_DONE);
  close(fd);
  ck_assert_int_eq(tu_write_file(path, "not a wal header, 32 bytes long.", 32), 0);
  fd = open(path, O_RDONLY);
  ck_assert_int_eq(wal_read_header(fd, &wh, &err), LTX_DONE);
  close(fd);
}
END_TEST

START_TEST(test_spool_state_slots) {
  char dir[600], path[700];
  spool *sp;
  spool_state s = {0}, got;
  ltx_error err;
  uint8_t b;
  snprintf(dir, sizeof dir, "%s/spool", g_dir);
  ck_assert_int_eq(spool_open(dir, &sp, &err), LTX_OK);
  ck_assert_int_eq(spool_read_state(sp, &got, &err), LTX_DONE);
  snprintf(s.owner, sizeof s.owner, "host-1");
  s.txid_spooled = 5;
  ck_assert_int_eq(spool_write_state(sp, &s, &err), LTX_OK);
  s.txid_spooled = 6;
  ck_assert_int_eq(spool_write_state(sp, &s, &err), LTX_OK);
  ck_assert_int_eq(spool_read_state(sp, &got, &err), LTX_OK);
  ck_assert_uint_eq(got.txid_spooled, 6);
  ck_assert_str_eq(got.owner, "host-1");
  /* A torn write of the newer slot: the older record stands. */
  snprintf(path, sizeof path, "%s/state", dir);
  ck_assert_int_eq(tu_write_at(path, (s.seq % 2) * 512 + 60, "\xff\xff", 2), 0);
  ck_assert_int_eq(spool_read_state(sp, &got, &err), LTX_OK);
  ck_assert_uint_eq(got.txid_spooled, 5);
  /* Both damaged: an error that names the file, never a guess. */
  b = 0xee;
  ck_assert_int_eq(tu_write_at(path, ((s.seq + 1) % 2) * 512 + 60, &b, 1), 0);
  ck_assert_int_ne(spool_read_state(sp, &got, &err), LTX_OK);
  ck_assert_ptr_nonnull(strstr(err.msg, "/state: no valid record"));
  spool_close(sp);
}
END_TEST

START_TEST(test_spool_prune) {
  char dir[600], path[800];
  spool *sp;
  ltx_error err;
  uint64_t bytes, files;
  snprintf(dir, sizeof dir, "%s/spool", g_dir);
  ck_assert_int_eq(spool_open(dir, &sp, &err), LTX_OK);
  for (uint64_t t = 1; t <= 6; t++) {
    spool_file_path(sp, t, path, sizeof path);
    ck_assert_int_eq(tu_write_file(path, "0123456789", 10), 0);
  }
  snprintf(path, sizeof path, "%s/ltx/0000000000000007.ltx.tmp", dir);
  ck_assert_int_eq(tu_write_file(path, "x", 1), 0);
  spool_prune(sp, 2, 4); /* uploaded through 2, spooled through 4 */
  spool_usage(sp, &bytes, &files);
  ck_assert_uint_eq(files, 2);
  ck_assert_uint_eq(bytes, 20);
  for (uint64_t t = 1; t <= 6; t++) {
    spool_file_path(sp, t, path, sizeof path);
    ck_assert_int_eq(access(path, F_OK) == 0, t == 3 || t == 4);
  }
  spool_close(sp);
}
END_TEST

START_TEST(test_lease) {
  char url[700], path[700];
  store *st;
  lease a = {0}, b = {0};
  ltx_error err;
  snprintf(url, sizeof url, "file://%s/rep", g_dir);
  snprintf(path, sizeof path, "%s/rep", g_dir);
  ck_assert_int_eq(tu_mkdirs(path), 0);
  ck_assert_int_eq(store_open(url, &st, &err), LTX_OK);
  ck_assert_int_eq(lease_acquire(st, &a, "host-a", 30000, &err), LTX_OK);
  ck_assert_uint_eq(a.generation, 1);
  ck_assert_int_eq(lease_renew(st, &a, 30000, &err), LTX_OK);
  /* Held: another owner is refused, naming the holder. */
  ck_assert_int_eq(lease_acquire(st, &b, "host-b", 30000, &err), PRIMARY_ERR_LEASE);
  ck_assert_ptr_nonnull(strstr(err.msg, "held by host-a until"));
  /* The same owner again (a restart of that host) takes it back. */
  {
    lease a2 = {0};
    ck_assert_int_eq(lease_acquire(st, &a2, "host-a", 30000, &err), LTX_OK);
    ck_assert_uint_eq(a2.generation, 1);
    a = a2;
  }
  /* Expired: another owner takes over, one generation later; the old
  ** holder's renewal is refused. */
  ck_assert_int_eq(lease_renew(st, &a, -1000, &err), LTX_OK); /* expires in the past */
  ck_assert_int_eq(lease_acquire(st, &b, "host-b", 30000, &err), LTX_OK);
  ck_assert_uint_eq(b.generation, 2);
  ck_assert_int_eq(lease_renew(st, &a, 30000, &err), PRIMARY_ERR_LEASE);
  ck_assert_ptr_nonnull(strstr(err.msg, "lost the replica's lease"));
  ck_assert_int_eq(a.held, 0);
  /* Released: the next owner gets it at once. */
  lease_release(st, &b);
  {
    lease c = {0};
    ck_assert_int_eq(lease_acquire(st, &c, "host-c", 30000, &err), LTX_OK);
    ck_assert_uint_eq(c.generation, 3);
  }
  store_close(st);
}
END_TEST

START_TEST(test_fingerprint) {
  char path[600];
  sqlite3 *db;
  db_fingerprint a, b;
  ltx_error err;
  int fd;
  snprintf(path, sizeof path, "%s/f.db", g_dir);
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
  fd = open(path, O_RDONLY);
  ck_assert_int_eq(db_fingerprint_read(fd, &a, &err), LTX_OK);
  exec(db, "SELECT * FROM t");
  ck_assert_int_eq(db_fingerprint_read(fd, &b, &err), LTX_OK);
  ck_assert(db_fingerprint_equal(&a, &b));
  exec(db, "INSERT INTO t VALUES(2)");
  ck_assert_int_eq(db_fingerprint_read(fd, &b, &err), LTX_OK);
  ck_assert(!db_fingerprint_equal(&a, &b));
  ck_assert_uint_eq(b.change_counter, a.change_counter + 1);
  close(fd);
  sqlite3_close(db);
}
END_TEST

START_TEST(test_primary_object) {
  char db_path[600], url[700], out[700];
  sqlite3 *db;
  primary_config cfg = {0};
  primary *p;
  primary_stats st;
  ltx_error err;
  store *rs;
  store_ltx_list files = {0};
  store_plan plan = {0};
  snprintf(db_path, sizeof db_path, "%s/o.db", g_dir);
  snprintf(url, sizeof url, "file://%s/rep", g_dir);
  snprintf(out, sizeof out, "%s/restored.db", g_dir);
  ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
  exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(randomblob(5000))");
  cfg.db_path = db_path;
  cfg.replica_url = url;
  cfg.sync_interval_ms = 0;
  ck_assert_msg(primary_acquire(&cfg, &p, &err) == LTX_OK, "%s", err.msg);
  /* Commits from a connection that is not the VFS: the thread finds them
  ** in the WAL all the same. */
  for (int i = 0; i < 20; i++) exec(db, "INSERT INTO t VALUES(randomblob(3000))");
  ck_assert_msg(primary_sync(p, 30000, &err) == LTX_OK, "%s", err.msg);
  primary_get_stats(p, &st);
  ck_assert_uint_ge(st.txid_uploaded, 2);
  ck_assert_uint_eq(st.txid_uploaded, st.txid_spooled);
  ck_assert_int_eq(st.lease_held, 1);
  ck_assert_uint_ge(st.snapshots, 1);
  primary_release(p);
  exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
  ck_assert_int_eq(store_open(url, &rs, &err), LTX_OK);
  ck_assert_int_eq(store_list_all(rs, &files, &err), LTX_OK);
  ck_assert_int_eq(store_plan_build(files.files, files.n, 0, -1, &plan, &err), LTX_OK);
  ck_assert_int_eq(cache_restore(rs, &plan, out, 0, NULL, NULL, &err), LTX_OK);
  {
    size_t na, nb;
    uint8_t *a = tu_read_file(db_path, &na), *b = tu_read_file(out, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_int_eq(memcmp(a, b, na), 0);
    free(a);
    free(b);
  }
  store_plan_free(&plan);
  store_ltx_list_free(&files);
  store_close(rs);
  sqlite3_close(db);
}
END_TEST

static Suite *primary_suite(void) {
  Suite *s = suite_create("primary");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_walscan_commits);
  tcase_add_test(tc, test_wal_header_absent);
  tcase_add_test(tc, test_spool_state_slots);
  tcase_add_test(tc, test_spool_prune);
  tcase_add_test(tc, test_lease);
  tcase_add_test(tc, test_fingerprint);
  tcase_add_test(tc, test_primary_object);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(primary_suite()); }
