/*
** hydrate_crash.c: the driver of tests/hydrate_crash.sh, which kills a
** hydrating process with kill -9 at random moments and checks what the next
** process finds.
**
**   hydrate_crash write DIR T        writes LTX file [T, T] into DIR/ltx/0 as
**                                    Litestream does (temporary file, rename):
**                                    T = 1 a snapshot of 12000 random 4 KiB
**                                    pages; later ones change random pages,
**                                    grow (with every new page) or shrink
**   hydrate_crash run URL CACHE [--alone]
**                                    opens the replica with its local image
**                                    (hydrate on, polling every 20 ms), prints
**                                    "ready TXID", then reads random pages of
**                                    the latest view until it is killed;
**                                    --alone: as `ltvfs hydrate` (no reads; an
**                                    empty image is filled by the early pass)
**   hydrate_crash check URL CACHE [--offline]
**                                    opens the replica from its image with no
**                                    poller: it must open at the TXID the
**                                    image's meta claims; online, every page
**                                    must equal a restore of that TXID and
**                                    every page the image held must be served
**                                    from it (no refetch); offline (the
**                                    replica moved away) it must still open.
**                                    Prints "ok TXID held/commit"; exit 1 on
**                                    any difference.
*/
#include "config.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache.h"

#define PS 4096
#define SNAPSHOT_PAGES 12000

static int die(const char *what, const char *msg) {
  fprintf(stderr, "hydrate_crash: %s: %s\n", what, msg);
  return 1;
}

static uint64_t rng(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void fill(uint8_t *page, uint64_t seed) {
  for (size_t i = 0; i < PS; i += 8) {
    uint64_t v = rng(&seed);
    memcpy(page + i, &v, 8);
  }
}

/* The commit of file [t, t] in dir, or 0. */
static uint32_t commit_of(const char *dir, uint64_t t) {
  char path[2048], name[64];
  uint8_t hdr[LTX_HEADER_SIZE];
  ltx_header h;
  snprintf(path, sizeof(path), "%s/ltx/0/%s", dir, ltx_file_name(t, t, name));
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  size_t n = fread(hdr, 1, sizeof(hdr), f);
  fclose(f);
  return n == sizeof(hdr) && ltx_header_decode(hdr, &h, NULL) == LTX_OK ? h.commit : 0;
}

static int cmd_write(const char *dir, uint64_t t) {
  ltx_header h = {0};
  ltx_encoder *e = NULL;
  ltx_membuf mb = {0};
  ltx_error err = {0};
  uint8_t page[PS];
  uint64_t s = t * 0x9E3779B97F4A7C15ull + 1;
  uint32_t prev = t == 1 ? 0 : commit_of(dir, t - 1), commit;
  unsigned char *pick;
  char path[2048], tmp[2100], name[64];
  if (t > 1 && prev == 0) return die("write", "no previous file");
  switch (t == 1 ? 0 : rng(&s) % 4) {
    case 0: commit = t == 1 ? SNAPSHOT_PAGES : prev; break;
    case 1: commit = prev + 200 + (uint32_t)(rng(&s) % 800); break; /* growth */
    case 2: commit = prev > 3000 ? prev - 500 - (uint32_t)(rng(&s) % 1500) : prev; break; /* shrink */
    default: commit = prev; break;
  }
  pick = calloc(commit + 1, 1);
  if (pick == NULL) return die("write", "out of memory");
  for (uint32_t p = 1; p <= commit; p++)
    pick[p] = t == 1 || p > prev || rng(&s) % 8 == 0; /* new pages always, else ~1/8 */
  h.flags = LTX_HEADER_FLAG_NO_CHECKSUM;
  h.page_size = PS;
  h.commit = commit;
  h.min_txid = h.max_txid = t;
  h.timestamp_ms = 1800000000000 + (int64_t)t;
  if (ltx_encoder_open(&e, &h, ltx_membuf_write, &mb, &err) != LTX_OK) return die("encode", err.msg);
  for (uint32_t p = 1; p <= commit; p++) {
    if (!pick[p]) continue;
    fill(page, t << 32 | p);
    if (ltx_encoder_put(e, p, page, &err) != LTX_OK) return die("encode", err.msg);
  }
  if (ltx_encoder_close(e, 0, &err) != LTX_OK) return die("encode", err.msg);
  ltx_encoder_free(e);
  free(pick);
  snprintf(path, sizeof(path), "%s/ltx/0/%s", dir, ltx_file_name(t, t, name));
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (f == NULL || fwrite(mb.buf, 1, mb.len, f) != mb.len || fclose(f) != 0 || rename(tmp, path) != 0)
    return die("write", path);
  ltx_membuf_free(&mb);
  return 0;
}

static void log_stderr(int level, const char *msg) {
  if (level >= REPLICA_LOG_INFO) fprintf(stderr, "log: %s\n", msg);
}

static int cmd_run(const char *url, const char *cache, int alone) {
  replica_config cfg = {.poll_ms = 20, .cache_bytes = 1u << 20, .open_timeout_ms = 10000,
                        .prefetch_max = 0, .cache_dir = cache, .hydrate = 1,
                        .hydrate_alone = alone};
  replica *r = NULL;
  replica_view *v = NULL;
  ltx_error err = {0};
  uint8_t page[65536];
  uint64_t s = (uint64_t)getpid() * 2654435761u + 7;
  replica_set_log(log_stderr);
  if (replica_acquire(url, &cfg, &r, &err) != LTX_OK) return die("acquire", err.msg);
  if (replica_latest(r, &v, &err) != LTX_OK) return die("open", err.msg);
  /* "ready" once the image exists (has a map): a kill before that leaves
  ** no image to open offline, which is not what this loop tests */
  for (int i = 0; i < 6000; i++) {
    replica_stat st;
    replica_stats(r, &st);
    if (st.image_txid != 0) break;
    usleep(10000);
  }
  printf("ready %016" PRIx64 "\n", replica_view_txid(v));
  fflush(stdout);
  replica_view_release(v);
  while (alone) pause(); /* the hydrator fills and applies */
  for (;;) { /* readers write through while the hydrator fills and applies */
    if (replica_latest(r, &v, &err) != LTX_OK) return die("latest", err.msg);
    for (int i = 0; i < 64; i++) {
      uint32_t pg = 1 + (uint32_t)(rng(&s) % replica_view_commit(v));
      if (replica_read_page(r, v, pg, page, NULL, &err) != LTX_OK) return die("read", err.msg);
    }
    replica_view_release(v);
  }
}

static int cmd_check(const char *url, const char *cache, int offline) {
  replica_config cfg = {.poll_ms = 0, .cache_bytes = 1u << 20, .open_timeout_ms = 3000,
                        .prefetch_max = 0, .cache_dir = cache, .hydrate = 0};
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat s0, s1;
  store *st = NULL;
  store_ltx_list all = {0};
  store_plan plan = {0};
  ltx_error err = {0};
  char out[2048];
  uint8_t page[PS], want[PS];
  FILE *img = NULL;
  int bad = 0;
  replica_set_log(log_stderr);
  if (replica_acquire(url, &cfg, &r, &err) != LTX_OK) return die("acquire", err.msg);
  replica_stats(r, &s0);
  if (s0.image_dir[0] == '\0') return die("check", "no local image");
  if (replica_latest(r, &v, &err) != LTX_OK) return die("open from the image", err.msg);
  replica_stats(r, &s0);
  if (replica_view_txid(v) != s0.image_txid) return die("check", "the view is not at the image's TXID");
  if (offline) {
    printf("ok %016" PRIx64 " %" PRIu64 "/%u offline\n", replica_view_txid(v), s0.image.held,
           replica_view_commit(v));
    goto done;
  }
  /* the truth: a restore of the same TXID */
  snprintf(out, sizeof(out), "%s/check-restore.db", cache);
  if (store_open(url, &st, &err) != LTX_OK || store_list_all(st, &all, &err) != LTX_OK ||
      store_plan_build(all.files, all.n, replica_view_txid(v), -1, &plan, &err) != LTX_OK ||
      cache_restore(st, &plan, out, 1, NULL, NULL, &err) != LTX_OK)
    return die("restore", err.msg);
  img = fopen(out, "rb");
  if (img == NULL) return die("open", out);
  for (uint32_t pg = 1; pg <= replica_view_commit(v); pg++) {
    if (replica_read_page(r, v, pg, page, NULL, &err) != LTX_OK) return die("read", err.msg);
    if (fread(want, 1, PS, img) != PS) return die("restore", "short");
    if (memcmp(page, want, PS) != 0) {
      fprintf(stderr, "hydrate_crash: TXID %016" PRIx64 " page %u differs from the restore\n",
              replica_view_txid(v), pg);
      bad = 1;
    }
  }
  replica_stats(r, &s1);
  if (s1.image.hits < s0.image.held) {
    fprintf(stderr, "hydrate_crash: the image held %" PRIu64 " pages but served %" PRIu64 "\n",
            s0.image.held, s1.image.hits);
    bad = 1;
  }
  printf("%s %016" PRIx64 " %" PRIu64 "/%u\n", bad ? "BAD" : "ok", replica_view_txid(v),
         s0.image.held, replica_view_commit(v));
  fclose(img);
  unlink(out);
done:
  store_plan_free(&plan);
  store_ltx_list_free(&all);
  store_close(st);
  replica_view_release(v);
  replica_release(r);
  return bad;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "write") == 0) return cmd_write(argv[2], strtoull(argv[3], NULL, 10));
  if (argc >= 4 && strcmp(argv[1], "run") == 0)
    return cmd_run(argv[2], argv[3], argc == 5 && strcmp(argv[4], "--alone") == 0);
  if (argc >= 4 && strcmp(argv[1], "check") == 0)
    return cmd_check(argv[2], argv[3], argc == 5 && strcmp(argv[4], "--offline") == 0);
  fprintf(stderr, "usage: hydrate_crash write DIR T | run URL CACHE [--alone] | check URL CACHE "
                  "[--offline]\n");
  return 2;
}
