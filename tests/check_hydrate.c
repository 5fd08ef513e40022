/*
** check_hydrate.c: the local image of a replica (cache/image.c,
** cache/hydrate.c), without SQLite, over file:// replicas built from the
** main fixture.
**
** - Read-through: once the image holds the open's map, every page a reader
**   fetches lands in the image; a warm reopen serves every page from it and
**   reads no byte from the store (only LISTs), at the cached TXID.
** - Hydration fills the whole image, and the image file equals a restore of
**   the same TXID page for page.
** - New LTX files are applied to the image in TXID order, including the
**   VACUUM shrink of TXID 11 (the image file is truncated).
** - A view pinned at an older TXID reads the right bytes (the image serves it
**   only the pages whose file is the one its map names).
** - A damaged meta is discarded with a log line, never trusted; a second
**   open of the same cache directory is refused (CACHE_ERR_BUSY).
** - A store that has gone (the replica directory moved away) does not stop
**   a warm open: it opens at the cached TXID and serves what it holds.
** - A budget (cache_max, or a file system with little room: a 512 KiB tmpfs)
**   smaller than the database caches it partially: never more than fits,
**   never a failed write, every read still right; a reader that sweeps a
**   database four times the budget keeps the image's blocks under it (cold
**   extents evicted, holes punched) and its hot pages in the image.
** - `ltvfs hydrate` into an empty image (hydrate_alone) starts its reads from
**   the listing, before the indexes (the early pass): the image equals a
**   restore and the pass after it has nothing left to fetch; an open that
**   fails (a corrupt index), a budget the database does not fit and a
**   close while the reads are under way each end it at once and leave an
**   image that the next open fills right.
** Every wait on the background threads has a deadline and prints what it saw.
*/
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "tests/testutil.h"

#define PATH_CAP 1024

static char g_tmp[256], g_rep[PATH_CAP], g_url[PATH_CAP + 8], g_cache[PATH_CAP];
static char g_log[64][512];
static int g_nlog;

static void capture_log(int level, const char *msg) {
  (void)level;
  if (g_nlog < 64) snprintf(g_log[g_nlog++], sizeof(g_log[0]), "%s", msg);
}

static int logged(const char *what) {
  for (int i = 0; i < g_nlog; i++)
    if (strstr(g_log[i], what)) return 1;
  return 0;
}

/* The main fixture's level-0 file of TXID t into the replica (temporary
** file and rename, as Litestream writes). */
static void add_txid(int t) {
  char src[PATH_CAP * 2], dst[PATH_CAP * 2], name[64];
  size_t n = 0;
  tu_fixture_path(src, sizeof(src), "main/ltx/0");
  snprintf(src + strlen(src), sizeof(src) - strlen(src), "/%s",
           ltx_file_name((uint64_t)t, (uint64_t)t, name));
  snprintf(dst, sizeof(dst), "%s/ltx/0/%s", g_rep, name);
  uint8_t *b = tu_read_file(src, &n);
  ck_assert_ptr_nonnull(b);
  ck_assert_int_eq(tu_write_file_atomic(dst, b, n), 0);
  free(b);
}

static void setup(void) {
  char l0[PATH_CAP + 16];
  ck_assert_ptr_nonnull(tu_mkdtemp(g_tmp, sizeof(g_tmp), "hydrate"));
  snprintf(g_rep, sizeof(g_rep), "%s/replica", g_tmp);
  snprintf(l0, sizeof(l0), "%s/ltx/0", g_rep);
  ck_assert_int_eq(tu_mkdirs(l0), 0);
  snprintf(g_url, sizeof(g_url), "file://%s", g_rep);
  snprintf(g_cache, sizeof(g_cache), "%s/cache", g_tmp);
  g_nlog = 0;
  replica_set_log(capture_log);
}

static void teardown(void) {
  char cmd[PATH_CAP];
  replica_set_log(NULL);
  /* a test that failed with its tmpfs mounted must not leave it behind */
  snprintf(cmd, sizeof(cmd), "umount -l '%s/tmpfs' 2>/dev/null", g_tmp);
  if (system(cmd) != 0) { /* not mounted: nothing to do */
  }
  tu_rmtree(g_tmp);
}

static replica_config cfg_with(int hydrate) {
  replica_config c = {.poll_ms = 20, .cache_bytes = 8u << 20, .open_timeout_ms = 2000,
                      .prefetch_max = 0, .cache_dir = g_cache, .hydrate = hydrate};
  return c;
}

/* Waits until the image is at TXID txid and, when done is set, hydrated. */
static void wait_image(replica *r, uint64_t txid, int done) {
  int64_t deadline = tu_mono_ms() + TU_POLL_DEADLINE_MS;
  replica_stat s;
  for (;;) {
    replica_stats(r, &s);
    if (s.image_txid == txid && (!done || s.hydrate_phase == REPLICA_HYDRATE_DONE)) return;
    if (tu_mono_ms() > deadline) break;
    usleep(5000);
  }
  ck_abort_msg("the image did not reach TXID %llx%s: at %llx, phase %d, %llu of %llu pages held, "
               "last poll error: %s",
               (unsigned long long)txid, done ? " hydrated" : "", (unsigned long long)s.image_txid,
               s.hydrate_phase, (unsigned long long)s.image.held,
               (unsigned long long)s.image_commit, s.last_poll_error);
}

/* A restore of the replica at txid, as an image in memory (free it). */
static uint8_t *restored(uint64_t txid, size_t *n) {
  char out[PATH_CAP + 32];
  store *st = NULL;
  store_ltx_list all = {0};
  store_plan plan = {0};
  ltx_error err = {0};
  snprintf(out, sizeof(out), "%s/restore-%llx.db", g_tmp, (unsigned long long)txid);
  ck_assert_int_eq(store_open(g_url, &st, &err), LTX_OK);
  ck_assert_int_eq(store_list_all(st, &all, &err), LTX_OK);
  ck_assert_msg(store_plan_build(all.files, all.n, txid, -1, &plan, &err) == 0, "%s", err.msg);
  ck_assert_msg(cache_restore(st, &plan, out, 1, NULL, NULL, &err) == 0, "%s", err.msg);
  uint8_t *img = tu_read_file(out, n);
  ck_assert_ptr_nonnull(img);
  unlink(out);
  store_plan_free(&plan);
  store_ltx_list_free(&all);
  store_close(st);
  return img;
}

/* Every page of v read through r equals the restore at v's TXID. */
static void check_view(replica *r, replica_view *v) {
  size_t n = 0;
  uint32_t ps = replica_view_page_size(v), commit = replica_view_commit(v);
  uint8_t *img = restored(replica_view_txid(v), &n), *page = malloc(ps);
  ltx_error err = {0};
  ck_assert_uint_eq(n, (size_t)commit * ps);
  for (uint32_t pg = 1; pg <= commit; pg++) {
    replica_readahead ra = {0};
    ck_assert_msg(replica_read_page(r, v, pg, page, &ra, &err) == LTX_OK, "page %u: %s", pg,
                  err.msg);
    ck_assert_msg(memcmp(page, img + (size_t)(pg - 1) * ps, ps) == 0,
                  "TXID %llx page %u differs from the restore",
                  (unsigned long long)replica_view_txid(v), pg);
  }
  free(page);
  free(img);
}

/* The image file of r equals the restore at txid, page for page. While the
** image is open a shrink punches the tail rather than cutting the file (it
** is mapped): whatever lies past the restore's end reads as zeros and holds
** no blocks. The path of the image file goes to path (may be NULL). */
static void check_image_file(replica *r, uint64_t txid, char *path_out, size_t cap) {
  replica_stat s;
  char path[sizeof(s.image_dir) + 16];
  size_t n = 0, m = 0;
  struct stat sb;
  replica_stats(r, &s);
  snprintf(path, sizeof(path), "%s/image", s.image_dir);
  if (path_out) snprintf(path_out, cap, "%s", path);
  uint8_t *img = tu_read_file(path, &n), *want = restored(txid, &m);
  ck_assert_ptr_nonnull(img);
  ck_assert_uint_ge(n, m);
  for (size_t off = 0; off < m; off += 4096)
    ck_assert_msg(memcmp(img + off, want + off, 4096) == 0, "image page %zu differs", off / 4096 + 1);
  for (size_t off = m; off < n; off++)
    ck_assert_msg(img[off] == 0, "byte %zu past the database's end is not zero", off);
  ck_assert_int_eq(stat(path, &sb), 0);
  /* (the file system's own blocks for a file written at many places at
  ** once, its extent tree: about 1/200 of it here) */
  ck_assert_msg((uint64_t)sb.st_blocks * 512 <= m + (64u << 10) + m / 128,
                "the image takes %llu bytes of disk for %zu bytes of pages",
                (unsigned long long)sb.st_blocks * 512, m);
  free(img);
  free(want);
}

START_TEST(test_read_through_then_warm_reopen_reads_nothing) {
  replica_config cfg = cfg_with(0);
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s, s0;
  ltx_error err = {0};
  for (int t = 1; t <= 11; t++) add_txid(t);
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  wait_image(r, 11, 0); /* the image holds the open's map */
  check_view(r, v);
  replica_stats(r, &s);
  ck_assert_uint_eq(s.image.held, replica_view_commit(v)); /* every page read went in */
  ck_assert_int_eq(s.hydrate_phase, REPLICA_HYDRATE_IDLE); /* hydrate=0: no background fill */
  replica_view_release(v);
  replica_release(r);

  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  replica_stats(r, &s0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  ck_assert_uint_eq(replica_view_txid(v), 11);
  check_view(r, v);
  tu_wait_polls(r, 2); /* the catch-up poll and the check of the replica have run */
  replica_stats(r, &s);
  ck_assert_uint_eq(s.bytes_fetched, s0.bytes_fetched); /* no page, no index: LISTs only */
  ck_assert_uint_ge(s.image.hits, replica_view_commit(v));
  replica_view_release(v);
  replica_release(r);
}
END_TEST

START_TEST(test_hydration_equals_restore_and_follows_new_files) {
  char image_path[sizeof(((replica_stat *)0)->image_dir) + 16];
  struct stat sb;
  replica_config cfg = cfg_with(1);
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  for (int t = 1; t <= 8; t++) add_txid(t);
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  replica_view_release(v);
  wait_image(r, 8, 1);
  ck_assert_int_eq(replica_hydration_percent(r), 100);
  check_image_file(r, 8, NULL, 0);
  /* The writer goes on: growth, then the VACUUM of TXID 11 that shrinks
  ** the database from 265 to 59 pages. */
  for (int t = 9; t <= 11; t++) {
    add_txid(t);
    v = tu_wait_txid(r, (uint64_t)t);
    replica_view_release(v);
  }
  wait_image(r, 11, 1);
  check_image_file(r, 11, image_path, sizeof(image_path));
  v = tu_wait_txid(r, 11);
  check_view(r, v);
  replica_view_release(v);

  /* A view pinned at TXID 5 gets TXID 5's bytes, whatever the image holds. */
  ck_assert_int_eq(replica_view_at(r, 5, -1, &v, &err), 0);
  check_view(r, v);
  replica_view_release(v);
  replica_release(r);
  /* closed: nothing maps the image any more, so its file is cut to TXID 11's 59 pages */
  ck_assert_int_eq(stat(image_path, &sb), 0);
  ck_assert_uint_eq((uint64_t)sb.st_size, 59u * 4096);
}
END_TEST

START_TEST(test_damaged_meta_is_discarded_and_busy_dir_refused) {
  replica_config cfg = cfg_with(1);
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s;
  ltx_error err = {0};
  cache_image *other = NULL;
  cache_image_meta meta;
  char note[256], meta_path[sizeof(s.image_dir) + 16];
  for (int t = 1; t <= 4; t++) add_txid(t);
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  replica_view_release(v);
  wait_image(r, 4, 1);
  replica_stats(r, &s);
  /* while r has it open, nobody else may */
  ck_assert_int_eq(cache_image_open(s.image_dir, g_url, &other, &meta, note, sizeof(note), &err),
                   CACHE_ERR_BUSY);
  replica_release(r);

  /* one flipped byte in the meta: its CRC fails, the image is not trusted */
  snprintf(meta_path, sizeof(meta_path), "%s/meta", s.image_dir);
  size_t n = 0;
  uint8_t *b = tu_read_file(meta_path, &n);
  ck_assert_ptr_nonnull(b);
  b[n / 2] ^= 0x40;
  ck_assert_int_eq(tu_write_file(meta_path, b, n), 0);
  free(b);
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_msg(logged("discarding the cache"), "no log line about the damaged cache");
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  check_view(r, v);
  replica_view_release(v);
  wait_image(r, 4, 1);
  check_image_file(r, 4, NULL, 0);
  replica_release(r);
}
END_TEST

START_TEST(test_warm_open_without_the_store) {
  replica_config cfg = cfg_with(1);
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  char moved[PATH_CAP + 16];
  size_t n = 0;
  for (int t = 1; t <= 6; t++) add_txid(t);
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  replica_view_release(v);
  wait_image(r, 6, 1);
  replica_release(r);
  uint8_t *want = restored(6, &n);

  /* the replica goes away: a warm open still opens at 6 and serves it */
  snprintf(moved, sizeof(moved), "%s.gone", g_rep);
  ck_assert_int_eq(rename(g_rep, moved), 0);
  cfg.poll_ms = 0; /* no poller: what the open itself does */
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_msg(replica_latest(r, &v, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(replica_view_txid(v), 6);
  uint8_t page[4096];
  for (uint32_t pg = 1; pg <= replica_view_commit(v); pg++) {
    ck_assert_msg(replica_read_page(r, v, pg, page, NULL, &err) == 0, "page %u: %s", pg, err.msg);
    ck_assert_msg(memcmp(page, want + (size_t)(pg - 1) * 4096, 4096) == 0, "page %u", pg);
  }
  replica_view_release(v);
  replica_release(r);
  ck_assert_int_eq(rename(moved, g_rep), 0);
  free(want);
}
END_TEST

/* A budget smaller than the database: the image holds at most that, is
** never "done", and every read is still right. */
static void budget_case(const char *cache_dir, uint64_t cache_max) {
  replica_config cfg = cfg_with(1);
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s;
  ltx_error err = {0};
  cfg.cache_dir = cache_dir;
  cfg.cache_max = cache_max;
  for (int t = 1; t <= 10; t++) add_txid(t); /* 265 pages, 1 MiB */
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  wait_image(r, 10, 0);
  check_view(r, v); /* reads fill the image up to the budget, then stop */
  check_view(r, v);
  replica_stats(r, &s);
  ck_assert_msg(s.image.held * 4096 <= (cache_max ? cache_max : 512u << 10),
                "held %llu pages", (unsigned long long)s.image.held);
  ck_assert_int_ne(s.hydrate_phase, REPLICA_HYDRATE_DONE);
  ck_assert_int_lt(replica_hydration_percent(r), 100);
  ck_assert_msg(logged("cached partially"), "no log line about the partial cache");
  replica_view_release(v);
  replica_release(r);
}

START_TEST(test_cache_max_smaller_than_the_database) {
  budget_case(g_cache, 256u << 10);
}
END_TEST

/* A nearly full file system (a 512 KiB tmpfs) under the cache: the image
** takes what fits, no write fails, reads stay right. Needs root to mount;
** skipped otherwise. */
START_TEST(test_small_file_system_is_never_filled) {
  char mnt[PATH_CAP + 16], cmd[PATH_CAP * 2];
  snprintf(mnt, sizeof(mnt), "%s/tmpfs", g_tmp);
  ck_assert_int_eq(tu_mkdirs(mnt), 0);
  snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=512k tmpfs '%s' 2>/dev/null", mnt);
  if (geteuid() != 0 || system(cmd) != 0) {
    fprintf(stderr, "# cannot mount a tmpfs here: the small file system case is skipped\n");
    return;
  }
  budget_case(mnt, 0);
  snprintf(cmd, sizeof(cmd), "umount '%s'", mnt);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Page p of write_snapshot's: p in its first four bytes, then bytes
** (p * 7) & 0xff. */
static void snapshot_page(uint32_t pgno, uint8_t *page, void *arg) {
  (void)arg;
  memset(page, (int)((pgno * 7) & 0xff), 4096);
  memcpy(page, &pgno, sizeof(pgno));
}

/* A snapshot [1, 1] of npages 4096-byte pages into the replica. */
static void write_snapshot(uint32_t npages) {
  tu_write_ltx(g_rep, 1, npages, NULL, npages, snapshot_page, NULL);
}

/* Reads pages [lo, hi] of v and checks each one's bytes. */
static void read_range(replica *r, replica_view *v, uint32_t lo, uint32_t hi) {
  uint8_t page[4096];
  ltx_error err = {0};
  replica_readahead ra = {0};
  for (uint32_t pg = lo; pg <= hi; pg++) {
    uint32_t got;
    ck_assert_msg(replica_read_page(r, v, pg, page, &ra, &err) == LTX_OK, "page %u: %s", pg, err.msg);
    memcpy(&got, page, sizeof(got));
    ck_assert_msg(got == pg && page[4095] == ((pg * 7) & 0xff), "page %u has the bytes of %u", pg, got);
  }
}

/* Bytes of disk the image file of r takes (its allocated blocks). */
static uint64_t image_blocks(replica *r) {
  replica_stat s;
  struct stat sb;
  char path[sizeof(s.image_dir) + 16];
  replica_stats(r, &s);
  snprintf(path, sizeof(path), "%s/image", s.image_dir);
  ck_assert_int_eq(stat(path, &sb), 0);
  return (uint64_t)sb.st_blocks * 512;
}

/* cache_max a quarter of the database (4 of 16 MiB): a reader that keeps
** coming back to its first MiB while it sweeps the rest gets right bytes
** everywhere, the image's allocated blocks stay under the budget all along
** (cold extents are evicted: entries cleared, blocks punched), and the hot
** MiB is still held at the end (served from the image, no miss). */
START_TEST(test_budget_evicts_cold_extents_keeps_hot_ones) {
  const uint32_t npages = 4096, hot = 256; /* 16 MiB; the first MiB is hot */
  const uint64_t budget = 4u << 20;
  replica_config cfg = cfg_with(1);
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s0, s1;
  ltx_error err = {0};
  cfg.cache_max = budget;
  cfg.cache_bytes = 256u << 10; /* the memory cache holds next to nothing */
  write_snapshot(npages);
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  wait_image(r, 1, 0);
  for (uint32_t lo = hot + 1; lo <= npages; lo += hot) {
    read_range(r, v, 1, hot);
    read_range(r, v, lo, lo + hot - 1);
    uint64_t used = image_blocks(r);
    replica_stats(r, &s0);
    ck_assert_msg(used <= budget, "after pages up to %u the image takes %llu bytes of disk "
                  "(budget %llu, %llu pages held)", lo + hot - 1, (unsigned long long)used,
                  (unsigned long long)budget, (unsigned long long)s0.image.held);
    ck_assert_uint_le(s0.image.held * 4096, budget);
  }
  replica_stats(r, &s0);
  ck_assert_msg(s0.image.held * 4096 >= budget / 2, "only %llu pages held",
                (unsigned long long)s0.image.held);
  ck_assert_uint_ge(s0.image.evicted, npages - hot - budget / 4096);
  read_range(r, v, 1, hot);
  replica_stats(r, &s1);
  /* (the store's request count would race with the poller's LISTs) */
  ck_assert_msg(s1.image.hits - s0.image.hits == hot && s1.image.misses == s0.image.misses,
                "the hot MiB was evicted: %llu of %u pages from the image",
                (unsigned long long)(s1.image.hits - s0.image.hits), hot);
  replica_view_release(v);
  replica_release(r);
}
END_TEST

/* 4 KiB of random bytes from *seed and pgno (they do not compress, as in a
** real database with blobs). */
static void random_page(uint32_t pgno, uint8_t *page, void *seed) {
  uint64_t s = *(uint64_t *)seed ^ ((uint64_t)pgno << 20);
  tu_fill_random(&s, page, 4096);
}

/* A 16 MiB snapshot (TXID 1, 4096 pages) and TXID 2, which changes every
** third page and grows the database to 4400 pages. */
static void write_random_replica(void) {
  uint32_t *p = malloc(4400 * sizeof(*p));
  size_t n = 0;
  for (uint32_t pg = 1; pg <= 4096; pg++) p[n++] = pg;
  uint64_t seed = 11;
  tu_write_ltx(g_rep, 1, 4096, p, n, random_page, &seed);
  n = 0;
  for (uint32_t pg = 1; pg <= 4400; pg++)
    if (pg % 3 == 0 || pg > 4096) p[n++] = pg;
  seed = 22;
  tu_write_ltx(g_rep, 2, 4400, p, n, random_page, &seed);
  free(p);
}

static replica_config cfg_alone(void) {
  replica_config c = cfg_with(1);
  c.hydrate_alone = 1; /* as `ltvfs hydrate` */
  c.poll_ms = 1000;
  return c;
}

START_TEST(test_early_pass_fills_an_empty_image) {
  replica_config cfg = cfg_alone();
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s;
  ltx_error err = {0};
  write_random_replica();
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_msg(replica_latest(r, &v, &err) == 0, "%s", err.msg);
  replica_view_release(v);
  wait_image(r, 2, 1);
  replica_stats(r, &s);
  /* the early pass fetched it all in several runs; the pass after it
  ** found nothing left */
  ck_assert_msg(s.fill_runs_early >= 4 && s.fill_runs == s.fill_runs_early,
                "%llu early runs of %llu", (unsigned long long)s.fill_runs_early,
                (unsigned long long)s.fill_runs);
  ck_assert_uint_eq(s.image.held, 4400);
  check_image_file(r, 2, NULL, 0);
  replica_release(r);
  /* and it is an ordinary image: a warm reopen, hydration on, is done at
  ** once and reads no page and no index (the image holds the whole map:
  ** no file needs loading), only LISTs */
  cfg = cfg_with(1);
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_eq(replica_latest(r, &v, &err), 0);
  ck_assert_uint_eq(replica_view_txid(v), 2);
  wait_image(r, 2, 1);
  check_view(r, v);
  replica_stats(r, &s);
  ck_assert_msg(s.bytes_fetched == 0 && s.fill_runs == 0, "%llu bytes fetched, %llu runs",
                (unsigned long long)s.bytes_fetched, (unsigned long long)s.fill_runs);
  replica_view_release(v);
  replica_release(r);
}
END_TEST

/* Each way an early pass can end before its map: the next open finds an
** image it can trust (or none) and fills it right. */
START_TEST(test_early_pass_ends_cleanly) {
  replica_config cfg = cfg_alone();
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s;
  ltx_error err = {0};
  char path[PATH_CAP * 2], name[64];
  write_random_replica();

  /* the open fails: TXID 2's index is damaged (its listing was fine) */
  snprintf(path, sizeof(path), "%s/ltx/0/%s", g_rep, ltx_file_name(2, 2, name));
  size_t n = 0;
  uint8_t *b = tu_read_file(path, &n), *good = malloc(n);
  ck_assert_ptr_nonnull(b);
  memcpy(good, b, n);
  for (size_t i = n - 200; i < n - 30; i++) b[i] ^= 0x5a;
  ck_assert_int_eq(tu_write_file(path, b, n), 0);
  int64_t t0 = tu_mono_ms();
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_int_ne(replica_latest(r, &v, &err), 0);
  ck_assert_msg(strstr(err.msg, name) != NULL, "the error does not name %s: %s", name, err.msg);
  ck_assert_msg(logged("early fill"), "no early pass was started");
  replica_release(r);
  ck_assert_msg(tu_mono_ms() - t0 < 5000, "the failed open took %lld ms",
                (long long)(tu_mono_ms() - t0));
  ck_assert_int_eq(tu_write_file(path, good, n), 0);
  free(b);
  free(good);

  /* the database does not fit the budget: the pass stops, nothing past it */
  cfg.cache_max = 1u << 20;
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_msg(replica_latest(r, &v, &err) == 0, "%s", err.msg);
  replica_view_release(v);
  wait_image(r, 2, 0);
  replica_stats(r, &s);
  ck_assert_msg(s.image.held * 4096 <= cfg.cache_max, "held %llu pages",
                (unsigned long long)s.image.held);
  ck_assert_msg(logged("cached partially"), "no log line about the partial cache");
  replica_release(r);

  /* closed at once, while the reads are under way: the next open fills
  ** the image right */
  cfg.cache_max = 0;
  t0 = tu_mono_ms();
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_msg(replica_latest(r, &v, &err) == 0, "%s", err.msg);
  replica_view_release(v);
  replica_release(r);
  ck_assert_msg(tu_mono_ms() - t0 < 5000, "open and close took %lld ms",
                (long long)(tu_mono_ms() - t0));
  ck_assert_int_eq(replica_acquire(g_url, &cfg, &r, &err), 0);
  ck_assert_msg(replica_latest(r, &v, &err) == 0, "%s", err.msg);
  replica_view_release(v);
  wait_image(r, 2, 1);
  check_image_file(r, 2, NULL, 0);
  replica_release(r);
}
END_TEST

static Suite *hydrate_suite(void) {
  Suite *s = suite_create("hydrate");
  TCase *tc = tcase_create("image");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_read_through_then_warm_reopen_reads_nothing);
  tcase_add_test(tc, test_hydration_equals_restore_and_follows_new_files);
  tcase_add_test(tc, test_damaged_meta_is_discarded_and_busy_dir_refused);
  tcase_add_test(tc, test_warm_open_without_the_store);
  tcase_add_test(tc, test_cache_max_smaller_than_the_database);
  tcase_add_test(tc, test_small_file_system_is_never_filled);
  tcase_add_test(tc, test_budget_evicts_cold_extents_keeps_hot_ones);
  tcase_add_test(tc, test_early_pass_fills_an_empty_image);
  tcase_add_test(tc, test_early_pass_ends_cleanly);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(hydrate_suite()); }
