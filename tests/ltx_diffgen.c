/*
** ltx_diffgen: writes an incremental LTX file between two SQLite databases
** into level 0 of a replica. Used by tests/interop_go.sh to produce files of
** our encoder that the Litestream Go VFS must read.
**
**   ltx_diffgen OLD.db NEW.db REPLICA_URL TXID
**
** The file [TXID, TXID] holds every page of NEW that differs from the page
** at the same offset of OLD or lies beyond OLD's end, compared in LTX pages
** of NEW's SQLite page size (the lock page is skipped); commit = NEW's page
** count; flags 0x2 (no database checksums), like Litestream. TXID is hex
** ("2", "0x2" or "0000000000000002"). With TXID 1 the file is a snapshot
** holding every page of NEW; OLD may be "-" for an empty database. Errors go
** to stderr; exit status 1.
*/
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ltx/ltx.h"
#include "store/store.h"

typedef struct membuf {
  uint8_t *data;
  size_t n, cap;
} membuf;

static int membuf_write(void *ctx, const uint8_t *buf, size_t n, ltx_error *err) {
  membuf *m = ctx;
  if (m->n + n > m->cap) {
    size_t cap = m->cap ? m->cap : 65536;
    while (cap < m->n + n) cap *= 2;
    uint8_t *p = realloc(m->data, cap);
    if (!p) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory (%zu bytes)", cap);
    m->data = p;
    m->cap = cap;
  }
  memcpy(m->data + m->n, buf, n);
  m->n += n;
  return LTX_OK;
}

/* Reads a whole file; "-" is an empty file. */
static int read_file(const char *path, uint8_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (strcmp(path, "-") == 0) return 0;
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "ltx_diffgen: %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 1 << 20, len = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      fprintf(stderr, "ltx_diffgen: %s: out of memory\n", path);
      fclose(f);
      return -1;
    }
    size_t r = fread(buf + len, 1, cap - len, f);
    len += r;
    if (len < cap) break;
    cap *= 2;
    uint8_t *p = realloc(buf, cap);
    if (!p) free(buf);
    buf = p;
  }
  if (ferror(f)) {
    fprintf(stderr, "ltx_diffgen: %s: read error: %s\n", path, strerror(errno));
    free(buf);
    fclose(f);
    return -1;
  }
  fclose(f);
  *out = buf;
  *n = len;
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: ltx_diffgen OLD.db NEW.db REPLICA_URL TXID\n");
    return 2;
  }
  const char *old_path = argv[1], *new_path = argv[2], *url = argv[3];
  char *end = NULL;
  errno = 0;
  uint64_t txid = strtoull(argv[4], &end, 16);
  if (errno || !end || *end || txid == 0) {
    fprintf(stderr, "ltx_diffgen: bad TXID '%s' (hex, non-zero)\n", argv[4]);
    return 1;
  }

  uint8_t *oldb = NULL, *newb = NULL;
  size_t oldn = 0, newn = 0;
  if (read_file(old_path, &oldb, &oldn) || read_file(new_path, &newb, &newn)) return 1;
  if (newn < 100 || memcmp(newb, "SQLite format 3", 16) != 0) {
    fprintf(stderr, "ltx_diffgen: %s: not a SQLite database\n", new_path);
    return 1;
  }
  uint32_t ps = ((uint32_t)newb[16] << 8) | newb[17];
  if (ps == 1) ps = 65536;
  if (ps < LTX_MIN_PAGE_SIZE || ps > LTX_MAX_PAGE_SIZE || (ps & (ps - 1)) || newn % ps) {
    fprintf(stderr, "ltx_diffgen: %s: page size %u does not fit a file of %zu bytes\n",
            new_path, ps, newn);
    return 1;
  }
  uint32_t commit = (uint32_t)(newn / ps);
  uint32_t lock = ltx_lock_pgno(ps);

  ltx_header h;
  memset(&h, 0, sizeof h);
  h.flags = LTX_HEADER_FLAG_NO_CHECKSUM;
  h.page_size = ps;
  h.commit = commit;
  h.min_txid = txid;
  h.max_txid = txid;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  h.timestamp_ms = now_ms;

  ltx_error err;
  ltx_error_clear(&err);
  membuf out = {0};
  ltx_encoder *enc = NULL;
  store *st = NULL;
  int rc = ltx_encoder_open(&enc, &h, membuf_write, &out, &err);
  uint32_t nput = 0;
  for (uint32_t pg = 1; rc == LTX_OK && pg <= commit; pg++) {
    if (pg == lock) continue;
    size_t off = (size_t)(pg - 1) * ps;
    const uint8_t *np = newb + off;
    int same = off + ps <= oldn && memcmp(oldb + off, np, ps) == 0;
    if (same && txid != 1) continue;
    rc = ltx_encoder_put(enc, pg, np, &err);
    nput++;
  }
  if (rc == LTX_OK) rc = ltx_encoder_close(enc, 0, &err);
  if (rc != LTX_OK) {
    fprintf(stderr, "ltx_diffgen: encoding: %s\n", err.msg);
    goto fail;
  }

  rc = store_open(url, &st, &err);
  if (rc != LTX_OK) {
    fprintf(stderr, "ltx_diffgen: %s: %s\n", url, err.msg);
    goto fail;
  }
  char key[256];
  store_ltx_key(st, 0, txid, txid, key, sizeof key);
  rc = store_put(st, key, out.data, out.n, now_ms, STORE_PUT_ALWAYS, NULL, NULL, 0, &err);
  if (rc != LTX_OK) {
    fprintf(stderr, "ltx_diffgen: %s: put %s: %s\n", url, key, err.msg);
    goto fail;
  }
  printf("%s: %u pages of %u, commit %u, %zu bytes\n", key, nput, ps, commit, out.n);
  store_close(st);
  if (enc) ltx_encoder_free(enc);
  free(out.data);
  free(oldb);
  free(newb);
  return 0;

fail:
  if (st) store_close(st);
  if (enc) ltx_encoder_free(enc);
  free(out.data);
  free(oldb);
  free(newb);
  return 1;
}
