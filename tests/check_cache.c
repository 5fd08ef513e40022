/*
** check_cache.c: the cache layer's apply and restore (docs/restore-plan.md,
** "Applying a plan"), on replicas built with the encoder in a temp dir, and
** the in-memory page cache (hits, misses, LRU eviction, the byte limit).
*/
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "ltx/ltx.h"
#include "store/store.h"
#include "tests/testutil.h"

#define PS 4096

static char g_dir[256];
static store *g_st;

/* Page content that says which page and which TXID wrote it. */
static void fill_page(uint8_t *page, uint32_t pgno, uint64_t txid) {
  for (uint32_t i = 0; i < PS; i++) page[i] = (uint8_t)(pgno * 31 + txid * 7 + i / 64);
}

/* Writes [min, max] at level 0 holding pages pgnos (ascending), commit pages;
** with checksummed=1 the file carries database checksums computed from
** image (the whole database after this file, commit pages). */
static void put_file(uint64_t min, uint64_t max, uint32_t commit, const uint32_t *pgnos,
                     size_t n, int checksummed, uint64_t pre, uint64_t *post_out) {
  ltx_header h = {.flags = checksummed ? 0 : LTX_HEADER_FLAG_NO_CHECKSUM,
                  .page_size = PS, .commit = commit, .min_txid = min, .max_txid = max,
                  .timestamp_ms = 1700000000000 + (int64_t)max,
                  .pre_apply_checksum = checksummed && min != 1 ? pre : 0};
  ltx_encoder *enc = NULL;
  ltx_error err = {0};
  ltx_membuf s = {0};
  uint8_t page[PS];
  char key[128];
  ck_assert_int_eq(ltx_encoder_open(&enc, &h, ltx_membuf_write, &s, &err), LTX_OK);
  for (size_t i = 0; i < n; i++) {
    fill_page(page, pgnos[i], max);
    ck_assert_msg(ltx_encoder_put(enc, pgnos[i], page, &err) == LTX_OK, "%s", err.msg);
  }
  ck_assert_msg(ltx_encoder_close(enc, post_out ? *post_out : 0, &err) == LTX_OK, "%s",
                err.msg);
  ltx_encoder_free(enc);
  store_ltx_key(g_st, 0, min, max, key, sizeof key);
  ck_assert_msg(store_put(g_st, key, s.buf, s.len, h.timestamp_ms, STORE_PUT_ALWAYS, NULL,
                          NULL, 0, &err) == LTX_OK, "%s", err.msg);
  ltx_membuf_free(&s);
}

static void setup(void) {
  ltx_error err = {0};
  snprintf(g_dir, sizeof g_dir, "/tmp/check_cache.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(g_dir));
  ck_assert_msg(store_open(g_dir, &g_st, &err) == LTX_OK, "%s", err.msg);
}

static void teardown(void) {
  char cmd[300];
  store_close(g_st);
  g_st = NULL;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

static int restore_to(const char *out, uint64_t txid, ltx_error *err) {
  store_ltx_list all = {0};
  store_plan plan = {0};
  int rc = store_list_all(g_st, &all, err);
  if (rc == LTX_OK) rc = store_plan_build(all.files, all.n, txid, -1, &plan, err);
  if (rc == LTX_OK) rc = cache_restore(g_st, &plan, out, 1, NULL, NULL, err);
  store_plan_free(&plan);
  store_ltx_list_free(&all);
  return rc;
}

/* Page pgno of the image equals what TXID txid wrote there. */
static void assert_page(const char *path, uint32_t pgno, uint64_t txid) {
  uint8_t want[PS], have[PS];
  int fd = open(path, O_RDONLY);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pread(fd, have, PS, (off_t)(pgno - 1) * PS), PS);
  close(fd);
  fill_page(want, pgno, txid);
  ck_assert_msg(memcmp(want, have, PS) == 0, "page %u is not the one TXID %llu wrote", pgno,
                (unsigned long long)txid);
}

static off_t file_size(const char *path) {
  struct stat sb;
  ck_assert_int_eq(stat(path, &sb), 0);
  return sb.st_size;
}

static const uint32_t all10[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

START_TEST(test_restore_applies_files_in_order_newest_page_wins) {
  char out[300];
  ltx_error err = {0};
  const uint32_t upd[] = {2, 7};
  const uint32_t grow[] = {1, 11, 12};
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  put_file(2, 2, 10, upd, 2, 0, 0, NULL);
  put_file(3, 3, 12, grow, 3, 0, 0, NULL);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_msg(restore_to(out, 0, &err) == LTX_OK, "%s", err.msg);
  ck_assert_int_eq(file_size(out), 12 * PS);
  assert_page(out, 1, 3);
  assert_page(out, 2, 2);
  assert_page(out, 3, 1);
  assert_page(out, 7, 2);
  assert_page(out, 10, 1);
  assert_page(out, 12, 3);
}
END_TEST

START_TEST(test_restore_pinned_txid_stops_there) {
  char out[300];
  ltx_error err = {0};
  const uint32_t upd[] = {2};
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  put_file(2, 2, 10, upd, 1, 0, 0, NULL);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_msg(restore_to(out, 1, &err) == LTX_OK, "%s", err.msg);
  assert_page(out, 2, 1);
}
END_TEST

/* docs/restore-plan.md: an incremental shrink holds only some pages; the rest survive. */
START_TEST(test_shrink_drops_only_pages_above_final_commit) {
  char out[300];
  ltx_error err = {0};
  const uint32_t shrink[] = {1, 2};
  const uint32_t regrow[] = {6, 8};
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  put_file(2, 2, 5, shrink, 2, 0, 0, NULL);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_msg(restore_to(out, 0, &err) == LTX_OK, "%s", err.msg);
  ck_assert_int_eq(file_size(out), 5 * PS);
  assert_page(out, 3, 1);
  assert_page(out, 5, 1);
  assert_page(out, 2, 2);

  /* Growth after a shrink whose file does not rewrite page 7: as in
  ** Litestream's restore (a compaction of the plan), page 7 keeps TXID 1's
  ** content; only pages above the final commit go. */
  put_file(3, 3, 8, regrow, 2, 0, 0, NULL);
  unlink(out);
  ck_assert_msg(restore_to(out, 0, &err) == LTX_OK, "%s", err.msg);
  ck_assert_int_eq(file_size(out), 8 * PS);
  assert_page(out, 7, 1);
  assert_page(out, 8, 3);
}
END_TEST

START_TEST(test_corrupt_file_fails_naming_it_and_leaves_no_output) {
  char out[300], path[400];
  ltx_error err = {0};
  const uint32_t upd[] = {2, 3, 4};
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  put_file(2, 2, 10, upd, 3, 0, 0, NULL);
  snprintf(path, sizeof path, "%s/ltx/0/0000000000000002-0000000000000002.ltx", g_dir);
  {
    /* Flip one byte of the first frame's payload. */
    int fd = open(path, O_RDWR);
    uint8_t b;
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, &b, 1, 120), 1);
    b ^= 0x5a;
    ck_assert_int_eq(pwrite(fd, &b, 1, 120), 1);
    close(fd);
  }
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_int_ne(restore_to(out, 0, &err), LTX_OK);
  ck_assert_msg(strstr(err.msg, "0000000000000002-0000000000000002.ltx") != NULL,
                "message does not name the file: %s", err.msg);
  ck_assert_int_eq(access(out, F_OK), -1);
  {
    /* No temporary file left beside it either. */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", g_dir);
    ck_assert_int_ne(system(cmd), 0);
  }
}
END_TEST

START_TEST(test_existing_output_untouched_on_failure) {
  char out[300];
  ltx_error err = {0};
  FILE *f;
  char buf[16] = {0};
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  f = fopen(out, "w");
  fputs("precious", f);
  fclose(f);
  /* TXID 5 does not exist: the plan fails before anything is written. */
  ck_assert_int_eq(restore_to(out, 5, &err), STORE_ERR_TXID_UNAVAILABLE);
  f = fopen(out, "r");
  ck_assert_ptr_nonnull(fgets(buf, sizeof buf, f));
  fclose(f);
  ck_assert_str_eq(buf, "precious");
}
END_TEST

/* Without replace, an existing output is refused at the rename (one step,
** no check-then-rename window) and left as it was; no temporary file stays
** behind. With replace it is replaced. */
START_TEST(test_existing_output_refused_unless_replace) {
  char out[300];
  ltx_error err = {0};
  store_ltx_list all = {0};
  store_plan plan = {0};
  size_t n = 0;
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_int_eq(tu_write_file(out, "precious", 8), 0);
  ck_assert_int_eq(store_list_all(g_st, &all, &err), LTX_OK);
  ck_assert_int_eq(store_plan_build(all.files, all.n, 0, -1, &plan, &err), LTX_OK);
  ck_assert_int_eq(cache_restore(g_st, &plan, out, 0, NULL, NULL, &err), CACHE_ERR_EXISTS);
  ck_assert_msg(strstr(err.msg, out) && strstr(err.msg, "already exists"), "%s", err.msg);
  uint8_t *b = tu_read_file(out, &n);
  ck_assert_uint_eq(n, 8);
  ck_assert_mem_eq(b, "precious", 8);
  free(b);
  {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | grep -vc '^ltx$\\|^out.db$') -eq 0", g_dir);
    ck_assert_msg(system(cmd) == 0, "a temporary file was left in %s", g_dir);
  }
  ck_assert_int_eq(cache_restore(g_st, &plan, out, 1, NULL, NULL, &err), LTX_OK);
  ck_assert_int_eq(file_size(out), 10 * PS);
  store_plan_free(&plan);
  store_ltx_list_free(&all);
}
END_TEST

START_TEST(test_page_size_change_is_rejected) {
  char out[300], key[128];
  ltx_error err = {0};
  /* A second file with page size 1024. */
  ltx_header h = {.flags = LTX_HEADER_FLAG_NO_CHECKSUM, .page_size = 1024, .commit = 1,
                  .min_txid = 2, .max_txid = 2, .timestamp_ms = 1};
  ltx_encoder *enc = NULL;
  ltx_membuf s = {0};
  uint8_t page[1024] = {1};
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  ck_assert_int_eq(ltx_encoder_open(&enc, &h, ltx_membuf_write, &s, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_put(enc, 1, page, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_close(enc, 0, &err), LTX_OK);
  ltx_encoder_free(enc);
  store_ltx_key(g_st, 0, 2, 2, key, sizeof key);
  ck_assert_int_eq(store_put(g_st, key, s.buf, s.len, 1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err),
                   LTX_OK);
  ltx_membuf_free(&s);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_int_eq(restore_to(out, 0, &err), CACHE_ERR_PAGE_SIZE);
  ck_assert_ptr_nonnull(strstr(err.msg, "page size"));
}
END_TEST

START_TEST(test_file_named_for_other_txids_is_rejected) {
  char out[300], from[400], to[400];
  ltx_error err = {0};
  put_file(1, 1, 10, all10, 10, 0, 0, NULL);
  put_file(2, 2, 10, all10, 3, 0, 0, NULL);
  /* Rename TXID 2's file to claim TXIDs 2-3. */
  snprintf(from, sizeof from, "%s/ltx/0/0000000000000002-0000000000000002.ltx", g_dir);
  snprintf(to, sizeof to, "%s/ltx/0/0000000000000002-0000000000000003.ltx", g_dir);
  ck_assert_int_eq(rename(from, to), 0);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_int_eq(restore_to(out, 0, &err), STORE_ERR_MISMATCH);
}
END_TEST

/* Database checksum of pages 1..commit as fill_page wrote them. */
static uint64_t db_checksum(uint32_t commit, const uint64_t *txid_of_page) {
  uint8_t page[PS];
  uint64_t c = 0;
  for (uint32_t p = 1; p <= commit; p++) {
    fill_page(page, p, txid_of_page[p]);
    c = ltx_db_checksum_fold(c, ltx_page_checksum(p, page, PS));
  }
  return c;
}

START_TEST(test_checksummed_files_verify_pre_and_post_apply) {
  char out[300];
  ltx_error err = {0};
  uint64_t owner[11];
  const uint32_t upd[] = {3};
  for (int i = 0; i <= 10; i++) owner[i] = 1;
  uint64_t c1 = db_checksum(10, owner);
  put_file(1, 1, 10, all10, 10, 1, 0, &c1);
  owner[3] = 2;
  uint64_t c2 = db_checksum(10, owner);
  put_file(2, 2, 10, upd, 1, 1, c1, &c2);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_msg(restore_to(out, 0, &err) == LTX_OK, "%s", err.msg);

  /* A wrong pre-apply checksum (the file does not follow this database). */
  unlink(out);
  put_file(3, 3, 10, upd, 1, 1, c1 ^ 0x1234, &c2);
  ck_assert_int_eq(restore_to(out, 0, &err), LTX_ERR_DB_CHECKSUM);
  ck_assert_ptr_nonnull(strstr(err.msg, "pre-apply"));
}
END_TEST

/* Random pages do not compress: a file over one 8 MiB chunk, so both the
** batch path (cache_restore) and the window path (cache_apply_ltx) split it
** into several range reads that must reassemble exactly. */
START_TEST(test_file_larger_than_a_chunk_reassembles_exactly) {
  enum { N = 2200 };
  char out[300], key[128];
  ltx_error err = {0};
  ltx_header h = {.flags = LTX_HEADER_FLAG_NO_CHECKSUM, .page_size = PS, .commit = N,
                  .min_txid = 1, .max_txid = 1, .timestamp_ms = 1};
  ltx_encoder *enc = NULL;
  ltx_membuf s = {0};
  uint8_t *pages = malloc((size_t)N * PS), *img = malloc((size_t)N * PS);
  uint32_t seed = 12345;
  ck_assert_ptr_nonnull(pages);
  ck_assert_ptr_nonnull(img);
  for (size_t i = 0; i < (size_t)N * PS; i++) {
    seed = seed * 1103515245u + 12345u;
    pages[i] = (uint8_t)(seed >> 16);
  }
  ck_assert_int_eq(ltx_encoder_open(&enc, &h, ltx_membuf_write, &s, &err), LTX_OK);
  for (uint32_t p = 1; p <= N; p++)
    ck_assert_int_eq(ltx_encoder_put(enc, p, pages + (size_t)(p - 1) * PS, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_close(enc, 0, &err), LTX_OK);
  ltx_encoder_free(enc);
  ck_assert_uint_gt(s.len, 8u << 20);
  store_ltx_key(g_st, 0, 1, 1, key, sizeof key);
  ck_assert_int_eq(store_put(g_st, key, s.buf, s.len, 1, STORE_PUT_ALWAYS, NULL, NULL, 0, &err),
                   LTX_OK);
  snprintf(out, sizeof out, "%s/out.db", g_dir);
  ck_assert_msg(restore_to(out, 0, &err) == LTX_OK, "%s", err.msg);
  {
    int fd = open(out, O_RDONLY);
    ck_assert_int_eq(pread(fd, img, (size_t)N * PS, 0), (ssize_t)N * PS);
    close(fd);
    ck_assert(memcmp(img, pages, (size_t)N * PS) == 0);
  }
  {
    store_ltx_file f = {.level = 0, .min_txid = 1, .max_txid = 1, .size = s.len};
    cache_apply_state state = {0};
    int fd = open(out, O_RDWR | O_TRUNC);
    ck_assert_msg(cache_apply_ltx(fd, g_st, &f, &state, &err) == LTX_OK, "%s", err.msg);
    ck_assert_uint_eq(state.commit, N);
    ck_assert_uint_eq(state.bytes_done, s.len);
    ck_assert_int_eq(pread(fd, img, (size_t)N * PS, 0), (ssize_t)N * PS);
    close(fd);
    ck_assert(memcmp(img, pages, (size_t)N * PS) == 0);
  }
  ltx_membuf_free(&s);
  free(pages);
  free(img);
}
END_TEST

/* ---- page cache ---- */

START_TEST(test_page_cache_lru) {
  uint8_t page[512], out[512];
  page_cache_stat st;
  /* Room for about 3 pages of 512 bytes with their overhead. */
  page_cache *pc = page_cache_new(3 * (512 + 200));
  ck_assert_ptr_nonnull(pc);
  for (uint32_t pg = 1; pg <= 3; pg++) {
    memset(page, (int)pg, sizeof(page));
    page_cache_put(pc, 7, pg, page, sizeof(page));
  }
  ck_assert_int_eq(page_cache_get(pc, 7, 1, out, sizeof(out)), 1); /* 1 is now recent */
  ck_assert_int_eq(out[0], 1);
  memset(page, 4, sizeof(page));
  page_cache_put(pc, 7, 4, page, sizeof(page)); /* evicts 2, the least recent */
  ck_assert_int_eq(page_cache_get(pc, 7, 2, out, sizeof(out)), 0);
  ck_assert_int_eq(page_cache_get(pc, 7, 1, out, sizeof(out)), 1);
  ck_assert_int_eq(page_cache_get(pc, 7, 4, out, sizeof(out)), 1);
  ck_assert_int_eq(out[511], 4);
  ck_assert_int_eq(page_cache_get(pc, 8, 4, out, sizeof(out)), 0); /* other file */
  page_cache_stats(pc, &st);
  ck_assert_uint_le(st.bytes, st.limit);
  ck_assert_uint_ge(st.evictions, 1);
  ck_assert_uint_eq(st.hits, 3);
  ck_assert_uint_eq(st.misses, 2);
  page_cache_set_limit(pc, 0);
  page_cache_stats(pc, &st);
  ck_assert_uint_eq(st.entries, 0);
  page_cache_put(pc, 7, 9, page, sizeof(page)); /* limit 0: caching off */
  ck_assert_int_eq(page_cache_get(pc, 7, 9, out, sizeof(out)), 0);
  page_cache_free(pc);
}
END_TEST

static Suite *cache_suite(void) {
  Suite *s = suite_create("cache");
  TCase *pc = tcase_create("page_cache");
  tcase_add_test(pc, test_page_cache_lru);
  suite_add_tcase(s, pc);
  TCase *tc = tcase_create("restore");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_restore_applies_files_in_order_newest_page_wins);
  tcase_add_test(tc, test_restore_pinned_txid_stops_there);
  tcase_add_test(tc, test_shrink_drops_only_pages_above_final_commit);
  tcase_add_test(tc, test_corrupt_file_fails_naming_it_and_leaves_no_output);
  tcase_add_test(tc, test_existing_output_untouched_on_failure);
  tcase_add_test(tc, test_page_size_change_is_rejected);
  tcase_add_test(tc, test_file_named_for_other_txids_is_rejected);
  tcase_add_test(tc, test_checksummed_files_verify_pre_and_post_apply);
  tcase_add_test(tc, test_file_larger_than_a_chunk_reassembles_exactly);
  tcase_add_test(tc, test_existing_output_refused_unless_replace);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(cache_suite()); }
