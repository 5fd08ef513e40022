/*
** check_replica.c: unit tests of the replica object of the read path
** (cache/replica.c), without SQLite.
**
** - A view of every fixture database at every TXID serves, page for page,
**   the bytes of Litestream's restore (cache_restore). The one allowed
**   difference: pages that a shrink dropped and a later growth re-exposed
**   without rewriting (vacuum_then_write from TXID 3) read as zeros here and
**   keep their stale pre-shrink bytes in a restore; SQLite never reads them
**   as data (docs/restore-plan.md vs Litestream, see the plan.c header).
** - The latest view follows new files dropped into the replica (the poller),
**   including a shrink.
** - A compaction that replaces the L0 files by an L1 file straddling the
**   view's TXID, then deletes them (retention), changes nothing for readers:
**   a read of a vanished file re-plans at the same TXID.
** - An empty replica fails the first open after open_timeout, not never.
** - A file listed before it is complete (empty, a 4 KiB or a 100 KB prefix,
**   then completed in place) is applied as soon as it is complete; files
**   after it that loaded are kept, not read again; a file that is corrupt
**   for good is reported with its key and bypassed when other files cover
**   its TXIDs.
** Every wait on the poller has a deadline (tu_wait_*) and prints what the
** poller saw when it expires. The writer stand-ins write as Litestream does
** (temporary file, rename); in-place writers are tested on purpose.
*/
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"
#include "testutil.h"

#define PATH_CAP 1024

static const replica_config kCfg = {
    .poll_ms = 20, .cache_bytes = 64u << 20, .open_timeout_ms = 2000, .prefetch_max = 4u << 20};

/* ---- views against restores ---- */

static char g_tmp[256];

static void setup(void) { ck_assert_ptr_nonnull(tu_mkdtemp(g_tmp, sizeof(g_tmp), "replica")); }
static void teardown(void) { tu_rmtree(g_tmp); }

static int is_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* Every page of the view of r at txid (0 = latest) against a restore of url
** at the same TXID. Returns the number of pages where the view serves zeros
** and the restore stale bytes; fails the test on any other difference. */
static int compare_with_restore(replica *r, replica_view *v, const char *url, const char *tag) {
  char out[PATH_CAP];
  store *st = NULL;
  store_ltx_list all = {0};
  store_plan plan = {0};
  ltx_error err = {0};
  size_t n = 0;
  uint8_t *img, *page;
  uint32_t ps = replica_view_page_size(v), commit = replica_view_commit(v);
  int zeros = 0;

  snprintf(out, sizeof(out), "%s/%s-%llx.db", g_tmp, tag,
           (unsigned long long)replica_view_txid(v));
  ck_assert_int_eq(store_open(url, &st, &err), LTX_OK);
  ck_assert_int_eq(store_list_all(st, &all, &err), LTX_OK);
  ck_assert_msg(store_plan_build(all.files, all.n, replica_view_txid(v), -1, &plan, &err) == 0,
                "%s", err.msg);
  ck_assert_msg(cache_restore(st, &plan, out, 0, NULL, NULL, &err) == 0, "%s", err.msg);
  img = tu_read_file(out, &n);
  ck_assert_ptr_nonnull(img);
  ck_assert_uint_eq(n, (size_t)commit * ps);
  page = malloc(ps);
  for (uint32_t pg = 1; pg <= commit; pg++) {
    replica_readahead ra = {0};
    ck_assert_msg(replica_read_page(r, v, pg, page, &ra, &err) == LTX_OK, "%s page %u: %s", tag,
                  pg, err.msg);
    if (memcmp(page, img + (size_t)(pg - 1) * ps, ps) == 0) continue;
    ck_assert_msg(is_zero(page, ps), "%s TXID %llx page %u differs from the restore", tag,
                  (unsigned long long)replica_view_txid(v), pg);
    zeros++;
  }
  free(page);
  free(img);
  unlink(out);
  store_plan_free(&plan);
  store_ltx_list_free(&all);
  store_close(st);
  return zeros;
}

START_TEST(test_views_match_restore) {
  static const struct {
    const char *db;
    uint64_t max;
  } kDb[] = {{"main", 11}, {"vacuum_then_write", 3}, {"ps1024", 0}, {"ps65536", 0},
             {"ps1024_vfs", 0}, {"shrink", 2}};
  for (size_t i = 0; i < sizeof(kDb) / sizeof(kDb[0]); i++) {
    char dir[PATH_CAP], url[PATH_CAP + 8];
    replica *r = NULL;
    replica_view *latest = NULL;
    ltx_error err = {0};
    uint64_t top;
    tu_fixture_path(dir, sizeof(dir), kDb[i].db);
    snprintf(url, sizeof(url), "file://%s", dir);
    ck_assert_msg(replica_acquire(url, &kCfg, &r, &err) == 0, "%s", err.msg);
    ck_assert_msg(replica_latest(r, &latest, &err) == 0, "%s: %s", kDb[i].db, err.msg);
    top = replica_view_txid(latest);
    if (kDb[i].max) ck_assert_uint_eq(top, kDb[i].max);
    for (uint64_t t = 1; t <= top; t++) {
      replica_view *v = NULL;
      int rc = replica_view_at(r, t, -1, &v, &err);
      if (rc == STORE_ERR_TXID_UNAVAILABLE) continue; /* inside a multi-TXID file */
      ck_assert_msg(rc == 0, "%s at %llu: %s", kDb[i].db, (unsigned long long)t, err.msg);
      ck_assert_uint_eq(replica_view_txid(v), t);
      int zeros = compare_with_restore(r, v, url, kDb[i].db);
      if (strcmp(kDb[i].db, "vacuum_then_write") != 0 || t < 3)
        ck_assert_msg(zeros == 0, "%s at %llu: %d zero pages", kDb[i].db,
                      (unsigned long long)t, zeros);
      replica_view_release(v);
    }
    replica_view_release(latest);
    replica_release(r);
  }
}
END_TEST

/* Pages past commit and unmapped pages read as zeros; a read never fails
** for them. */
START_TEST(test_read_beyond_commit) {
  char dir[PATH_CAP], url[PATH_CAP + 8];
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  uint8_t page[4096];
  replica_readahead ra = {0};
  tu_fixture_path(dir, sizeof(dir), "main");
  snprintf(url, sizeof(url), "file://%s", dir);
  ck_assert_int_eq(replica_acquire(url, &kCfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  memset(page, 0xAB, sizeof(page));
  ck_assert_int_eq(replica_read_page(r, v, replica_view_commit(v) + 1, page, &ra, &err), 0);
  ck_assert(is_zero(page, sizeof(page)));
  replica_view_release(v);
  replica_release(r);
}
END_TEST

/* ---- polling, compaction, retention ---- */

static void copy_file(const char *from, const char *to) {
  size_t n = 0;
  uint8_t *b = tu_read_file(from, &n);
  ck_assert_ptr_nonnull(b);
  ck_assert_int_eq(tu_write_file_atomic(to, b, n), 0);
  free(b);
}

/* The names in the fixture's level 0, sorted (they sort by TXID). */
static int list_names(const char *dir, char names[][64], int cap) {
  struct dirent **ents = NULL;
  int n = scandir(dir, &ents, NULL, alphasort), k = 0;
  for (int i = 0; i < n; i++) {
    if (strstr(ents[i]->d_name, ".ltx") && k < cap) snprintf(names[k++], 64, "%.60s", ents[i]->d_name);
    free(ents[i]);
  }
  free(ents);
  return k;
}

/* A replica at g_tmp being filled with the main fixture's level-0 files,
** one per TXID 1..11. */
typedef struct main_replica {
  char src[PATH_CAP], l0[PATH_CAP], url[PATH_CAP];
  char names[16][64];
} main_replica;

static void main_replica_init(main_replica *m) {
  tu_fixture_path(m->src, sizeof(m->src), "main/ltx/0");
  ck_assert_int_eq(list_names(m->src, m->names, 16), 11);
  snprintf(m->l0, sizeof(m->l0), "%s/ltx/0", g_tmp);
  ck_assert_int_eq(tu_mkdirs(m->l0), 0);
  snprintf(m->url, sizeof(m->url), "file://%s", g_tmp);
}

/* Copies the files of TXIDs lo..hi into the replica's level 0. */
static void main_replica_add(main_replica *m, int lo, int hi) {
  char from[PATH_CAP * 2], to[PATH_CAP * 2];
  for (int t = lo; t <= hi; t++) {
    snprintf(from, sizeof(from), "%s/%s", m->src, m->names[t - 1]);
    snprintf(to, sizeof(to), "%s/%s", m->l0, m->names[t - 1]);
    copy_file(from, to);
  }
}

/* Removes the level-0 files of TXIDs lo..hi (retention). */
static void main_replica_remove(main_replica *m, int lo, int hi) {
  char to[PATH_CAP * 2];
  for (int t = lo; t <= hi; t++) {
    snprintf(to, sizeof(to), "%s/%s", m->l0, m->names[t - 1]);
    ck_assert_int_eq(unlink(to), 0);
  }
}

START_TEST(test_poll_follows_new_files) {
  main_replica m;
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  main_replica_init(&m);
  main_replica_add(&m, 1, 3);
  ck_assert_int_eq(replica_acquire(m.url, &kCfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  ck_assert_uint_eq(replica_view_txid(v), 3);
  replica_view_release(v);
  for (int t = 4; t <= 11; t++) { /* one new file at a time, to the final VACUUM */
    main_replica_add(&m, t, t);
    v = tu_wait_txid(r, (uint64_t)t);
    ck_assert_int_eq(compare_with_restore(r, v, m.url, "poll"), 0);
    replica_view_release(v);
  }
  replica_release(r);
}
END_TEST

typedef struct file_src {
  uint8_t *buf;
  size_t n;
} file_src;

static int mem_read_at(void *ctx, uint64_t off, uint8_t *buf, size_t n, ltx_error *err) {
  file_src *s = ctx;
  if (off + n > s->n) return ltx_error_set(err, LTX_ERR_TRUNCATED, "short");
  memcpy(buf, s->buf + off, n);
  return LTX_OK;
}

/* Compacts level-0 files [lo, hi] (1-based TXIDs of main) into one level-1
** file of the replica at g_tmp. */
/* Compacts level-0 files [lo, hi] (1-based TXIDs of main) into one file of
** dir; its bytes pass through fix (may be NULL) before they are written. */
static void compact_into(const char *l0, char names[][64], int lo, int hi, const char *dir,
                         void (*fix)(uint8_t *, size_t)) {
  file_src src[16];
  ltx_source in[16];
  ltx_membuf mb = {0};
  ltx_header h;
  ltx_error err = {0};
  char path[PATH_CAP];
  int k = 0;
  for (int t = lo; t <= hi; t++, k++) {
    snprintf(path, sizeof(path), "%s/%s", l0, names[t - 1]);
    src[k].buf = tu_read_file(path, &src[k].n);
    ck_assert_ptr_nonnull(src[k].buf);
    in[k].read_at = mem_read_at;
    in[k].ctx = &src[k];
    in[k].size = src[k].n;
  }
  ck_assert_msg(ltx_compact(in, (size_t)k, ltx_membuf_write, &mb, &h, &err) == 0, "%s", err.msg);
  if (fix) fix(mb.buf, mb.len);
  ck_assert_int_eq(tu_mkdirs(dir), 0);
  char name[64];
  snprintf(path, sizeof(path), "%s/%s", dir, ltx_file_name((uint64_t)lo, (uint64_t)hi, name));
  ck_assert_int_eq(tu_write_file_atomic(path, mb.buf, mb.len), 0);
  ltx_membuf_free(&mb);
  for (int i = 0; i < k; i++) free(src[i].buf);
}

/* ... into level 1 of the replica at g_tmp. */
static void compact_to_l1(const char *l0, char names[][64], int lo, int hi) {
  char l1[700];
  snprintf(l1, sizeof(l1), "%s/ltx/1", g_tmp);
  compact_into(l0, names, lo, hi, l1, NULL);
}

START_TEST(test_straddling_compaction_and_retention) {
  main_replica m;
  replica *r = NULL;
  replica_view *v = NULL, *held = NULL;
  ltx_error err = {0};
  /* A tiny page cache: every read goes to the store, so a vanished file
  ** cannot hide behind a cached page. */
  replica_config cfg = kCfg;
  cfg.cache_bytes = 0;
  main_replica_init(&m);
  main_replica_add(&m, 1, 8);
  ck_assert_int_eq(replica_acquire(m.url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &held, &err), 0);
  ck_assert_uint_eq(replica_view_txid(held), 8);

  /* The writer moves on to 9 and 10 and compacts 5..10 into L1: that file
  ** straddles our TXID 8. Then retention removes L0 files 1..10. */
  main_replica_add(&m, 9, 10);
  compact_to_l1(m.l0, m.names, 1, 4);
  compact_to_l1(m.l0, m.names, 5, 10);
  main_replica_remove(&m, 1, 10);
  /* The poller finds 10 through the straddling L1 file. */
  v = tu_wait_txid(r, 10);
  ck_assert_uint_eq(replica_view_txid(v), 10);
  ck_assert_int_eq(compare_with_restore(r, v, m.url, "straddle"), 0);
  replica_view_release(v);

  /* A reader still on TXID 8 (its files are gone) gets the same bytes: its
  ** reads re-plan... and TXID 8 is no longer reachable exactly, so the read
  ** fails with a message rather than serving another TXID's bytes. */
  {
    uint8_t page[4096];
    replica_readahead ra = {0};
    int rc = replica_read_page(r, held, 2, page, &ra, &err);
    ck_assert_int_eq(rc, STORE_ERR_TXID_UNAVAILABLE);
    ck_assert_msg(strstr(err.msg, "0000000000000008") != NULL, "%s", err.msg);
  }
  replica_view_release(held);

  /* The last file appears in L0 on top of the compacted state. */
  main_replica_add(&m, 11, 11);
  v = tu_wait_txid(r, 11);
  ck_assert_int_eq(compare_with_restore(r, v, m.url, "after"), 0);
  replica_view_release(v);
  replica_release(r);
}
END_TEST

/* Retention under a reader whose TXID is still reachable through the
** compacted file: reads re-plan and serve identical bytes. */
START_TEST(test_retention_replans_same_txid) {
  main_replica m;
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  replica_config cfg = kCfg;
  cfg.cache_bytes = 0;
  cfg.poll_ms = 60000; /* no poll in this test: the read itself must cope */
  main_replica_init(&m);
  main_replica_add(&m, 1, 6);
  ck_assert_int_eq(replica_acquire(m.url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  ck_assert_uint_eq(replica_view_txid(v), 6);
  compact_to_l1(m.l0, m.names, 1, 6);
  main_replica_remove(&m, 1, 6);
  ck_assert_int_eq(compare_with_restore(r, v, m.url, "replan"), 0);
  replica_view_release(v);
  replica_release(r);
}
END_TEST

/* Every byte of a page is *(int *)fill. */
static void fill_page(uint32_t pgno, uint8_t *page, void *fill) {
  (void)pgno;
  memset(page, *(int *)fill, 4096);
}

/* Writes an LTX file [txid, txid] of 4096-byte pages into DIR/ltx/0: a
** snapshot of pages 1..commit when txid is 1, else the one page pgno; page
** bytes are all `fill`. */
static void write_ltx(const char *dir, uint64_t txid, uint32_t commit, uint32_t pgno, int fill) {
  if (txid == 1) tu_write_ltx(dir, txid, commit, NULL, commit, fill_page, &fill);
  else tu_write_ltx(dir, txid, commit, &pgno, 1, fill_page, &fill);
}

/* Pages 1..10 after TXIDs 1..n where TXID t > 1 wrote page (t % 10) + 1
** with bytes t & 0xff. */
static void check_pages(replica *r, replica_view *v, uint64_t n) {
  uint8_t page[4096];
  ltx_error err = {0};
  for (uint32_t pg = 1; pg <= 10; pg++) {
    int want = 1;
    for (uint64_t t = 2; t <= n; t++)
      if ((uint32_t)(t % 10) + 1 == pg) want = (int)(t & 0xff);
    ck_assert_int_eq(replica_read_page(r, v, pg, page, NULL, &err), 0);
    ck_assert_msg(page[0] == want && page[4095] == want, "page %u after %llu: %d, want %d", pg,
                  (unsigned long long)n, page[0], want);
  }
}

/* Many one-page files: the views drop the files nothing maps any more
** (at open and while polling) and every page still reads right. */
START_TEST(test_many_files_pruned_views_stay_right) {
  char l0[PATH_CAP], url[PATH_CAP];
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  replica_config cfg = kCfg;
  cfg.cache_bytes = 0; /* every read goes to the files the map names */
  snprintf(l0, sizeof(l0), "%s/ltx/0", g_tmp);
  ck_assert_int_eq(tu_mkdirs(l0), 0);
  write_ltx(g_tmp, 1, 10, 0, 1);
  for (uint64_t t = 2; t <= 60; t++) write_ltx(g_tmp, t, 10, (uint32_t)(t % 10) + 1, (int)t);
  snprintf(url, sizeof(url), "file://%s", g_tmp);
  ck_assert_int_eq(replica_acquire(url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  ck_assert_uint_eq(replica_view_txid(v), 60);
  check_pages(r, v, 60);
  replica_view_release(v);
  for (uint64_t t = 61; t <= 200; t++) {
    write_ltx(g_tmp, t, 10, (uint32_t)(t % 10) + 1, (int)t);
    if (t % 20 == 0) {
      v = tu_wait_txid(r, t);
      check_pages(r, v, replica_view_txid(v));
      replica_view_release(v);
    }
  }
  replica_release(r);
}
END_TEST

/* ---- files listed before they are complete ----
** A file replica filled in place (cp, scp, rsync --inplace, NFS clients)
** is listed while it is empty or a prefix of itself. The poller applies it
** as soon as it is complete, whatever the prefix it saw first. */

static const size_t kPrefixes[] = {0, 4096, 100000};

/* The fixture bytes of main's TXID t and its path in the replica. */
static uint8_t *main_file(main_replica *m, int t, char *to, size_t cap, size_t *n) {
  char from[PATH_CAP * 2];
  snprintf(from, sizeof(from), "%s/%s", m->src, m->names[t - 1]);
  snprintf(to, cap, "%s/%s", m->l0, m->names[t - 1]);
  uint8_t *b = tu_read_file(from, n);
  ck_assert_ptr_nonnull(b);
  return b;
}

/* A replica polling every 20 ms at TXID 2 of main. */
static replica *open_main_at_2(main_replica *m) {
  replica *r = NULL;
  ltx_error err = {0};
  main_replica_init(m);
  main_replica_add(m, 1, 2);
  ck_assert_int_eq(replica_acquire(m->url, &kCfg, &r, &err), 0);
  ck_assert_uint_eq(tu_latest_txid(r), 2);
  return r;
}

START_TEST(test_file_completed_in_place_is_applied) {
  main_replica m;
  char to[PATH_CAP * 2], fixture[PATH_CAP], fixture_url[PATH_CAP + 8];
  size_t n = 0, prefix = kPrefixes[_i];
  replica *r = open_main_at_2(&m);
  uint8_t *b = main_file(&m, 3, to, sizeof(to), &n);
  ck_assert_uint_gt(n, prefix); /* 291 KB */

  ck_assert_int_eq(tu_write_file(to, b, prefix), 0); /* a copy under way */
  tu_wait_poll_error(r, m.names[2]);
  ck_assert_uint_eq(tu_latest_txid(r), 2);
  ck_assert_int_eq(tu_write_at(to, prefix, b + prefix, n - prefix), 0); /* done */
  replica_view *v = tu_wait_txid(r, 3);
  ck_assert_uint_eq(replica_view_txid(v), 3);
  tu_fixture_path(fixture, sizeof(fixture), "main");
  snprintf(fixture_url, sizeof(fixture_url), "file://%s", fixture);
  ck_assert_int_eq(compare_with_restore(r, v, fixture_url, "inplace"), 0);
  replica_view_release(v);

  /* and it goes on following */
  main_replica_add(&m, 4, 4);
  v = tu_wait_txid(r, 4);
  ck_assert_int_eq(compare_with_restore(r, v, m.url, "inplace4"), 0);
  replica_view_release(v);
  free(b);
  replica_release(r);
}
END_TEST

/* Files after an incomplete one load at the same poll and are kept: once
** the incomplete one is complete the replica reaches the end without
** reading them again (here: they are deleted meanwhile, so reading them
** again would fail). */
START_TEST(test_files_after_an_incomplete_one_are_kept) {
  main_replica m;
  char to[PATH_CAP * 2], gone[PATH_CAP * 2];
  size_t n = 0;
  replica *r = open_main_at_2(&m);
  uint8_t *b = main_file(&m, 3, to, sizeof(to), &n);
  ck_assert_int_eq(tu_write_file(to, b, 0), 0);
  tu_wait_poll_error(r, m.names[2]);
  main_replica_add(&m, 4, 5);
  tu_wait_polls(r, 2); /* a poll that started after 4 and 5 were written has ended */
  ck_assert_uint_eq(tu_latest_txid(r), 2);
  for (int t = 4; t <= 5; t++) {
    snprintf(gone, sizeof(gone), "%s/%s", m.l0, m.names[t - 1]);
    ck_assert_int_eq(unlink(gone), 0);
  }
  ck_assert_int_eq(tu_write_at(to, 0, b, n), 0);
  replica_view *v = tu_wait_txid(r, 5);
  ck_assert_uint_eq(replica_view_txid(v), 5);
  main_replica_add(&m, 4, 5); /* back, so that the pages can be read */
  ck_assert_int_eq(compare_with_restore(r, v, m.url, "kept"), 0);
  replica_view_release(v);
  free(b);
  replica_release(r);
}
END_TEST

/* A file that is corrupt for good (its size does not change) is reported
** with its key, and does not stop the replica from following once other
** files make it unnecessary: here a corrupt L1 file [3, 4] is the preferred
** chain, and the replica moves on through the L0 files 3 and 4. */
static void break_magic(uint8_t *b, size_t n) {
  if (n > 3) b[3] = '0'; /* LTX1 -> LTX0 */
}

START_TEST(test_corrupt_file_is_named_and_bypassed) {
  main_replica m;
  char l1[PATH_CAP * 2], name[64], fixture[PATH_CAP], fixture_url[PATH_CAP + 8];
  replica_stat s;
  replica *r = open_main_at_2(&m);
  /* (corrupted before it is written: the poller never sees a good copy) */
  snprintf(l1, sizeof(l1), "%s/ltx/1", g_tmp);
  compact_into(m.src, m.names, 3, 4, l1, break_magic);
  ltx_file_name(3, 4, name);

  tu_wait_poll_error(r, name);
  replica_stats(r, &s);
  ck_assert_msg(strstr(s.last_poll_error, "corrupt LTX file") != NULL, "%s", s.last_poll_error);
  ck_assert_uint_ge(s.poll_errors, 1);
  ck_assert_uint_eq(tu_latest_txid(r), 2);

  main_replica_add(&m, 3, 4);
  replica_view *v = tu_wait_txid(r, 4);
  tu_fixture_path(fixture, sizeof(fixture), "main");
  snprintf(fixture_url, sizeof(fixture_url), "file://%s", fixture);
  ck_assert_int_eq(compare_with_restore(r, v, fixture_url, "bypass"), 0);
  replica_view_release(v);

  /* Past it, polls are clean again. */
  main_replica_add(&m, 5, 5);
  v = tu_wait_txid(r, 5);
  replica_view_release(v);
  tu_wait_polls(r, 2);
  replica_stats(r, &s);
  ck_assert_msg(s.last_poll_error[0] == '\0', "%s", s.last_poll_error);
  replica_release(r);
}
END_TEST

START_TEST(test_empty_replica_times_out) {
  char l0[PATH_CAP], url[PATH_CAP];
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  replica_config cfg = kCfg;
  struct timespec t0, t1;
  cfg.open_timeout_ms = 300;
  snprintf(l0, sizeof(l0), "%s/ltx/0", g_tmp);
  ck_assert_int_eq(tu_mkdirs(l0), 0);
  snprintf(url, sizeof(url), "file://%s", g_tmp);
  ck_assert_int_eq(replica_acquire(url, &cfg, &r, &err), 0);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ck_assert_int_eq(replica_latest(r, &v, &err), CACHE_ERR_TIMEOUT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  ck_assert_msg(s >= 0.3 && s < 3.0, "waited %.2f s", s);
  ck_assert_msg(strstr(err.msg, "no LTX files") != NULL, "%s", err.msg);
  replica_release(r);
}
END_TEST

static Suite *replica_suite(void) {
  Suite *s = suite_create("replica");
  TCase *tc = tcase_create("views");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_views_match_restore);
  tcase_add_test(tc, test_read_beyond_commit);
  tcase_add_test(tc, test_poll_follows_new_files);
  tcase_add_test(tc, test_straddling_compaction_and_retention);
  tcase_add_test(tc, test_retention_replans_same_txid);
  tcase_add_test(tc, test_empty_replica_times_out);
  tcase_add_test(tc, test_many_files_pruned_views_stay_right);
  tcase_add_loop_test(tc, test_file_completed_in_place_is_applied, 0,
                      (int)(sizeof(kPrefixes) / sizeof(kPrefixes[0])));
  tcase_add_test(tc, test_files_after_an_incomplete_one_are_kept);
  tcase_add_test(tc, test_corrupt_file_is_named_and_bypassed);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(replica_suite()); }
