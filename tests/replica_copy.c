/*
** replica_copy: copies every LTX file of every level from one replica to
** another, translating keys between the layouts (file:// "ltx/<L>/<name>",
** s3:// "<L %04x>/<name>"). Each object's timestamp (file mtime or S3
** litestream-timestamp) is carried over. Used by tests/restore_s3.sh and
** bench/bench_s3.sh to put the fixture replicas on the test S3 server.
**
**   replica_copy SRC_URL DST_URL
**
** Prints one line per file copied to stdout, errors to stderr; exit 1 on
** the first failure.
*/
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "ltx/ltx.h"
#include "store/store.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s SRC_URL DST_URL\n", argv[0]);
    return 2;
  }
  ltx_error err = {0};
  store *src = NULL, *dst = NULL;
  store_ltx_list list = {0};
  uint8_t *buf = NULL;
  int rc = 1;

  if (store_open(argv[1], &src, &err) != LTX_OK) {
    fprintf(stderr, "replica_copy: open %s: %s\n", argv[1], err.msg);
    goto out;
  }
  if (store_open(argv[2], &dst, &err) != LTX_OK) {
    fprintf(stderr, "replica_copy: open %s: %s\n", argv[2], err.msg);
    goto out;
  }
  if (store_list_all(src, &list, &err) != LTX_OK) {
    fprintf(stderr, "replica_copy: list %s: %s\n", argv[1], err.msg);
    goto out;
  }
  for (size_t i = 0; i < list.n; i++) {
    const store_ltx_file *f = &list.files[i];
    char skey[256], dkey[256];
    store_ltx_key(src, f->level, f->min_txid, f->max_txid, skey, sizeof skey);
    store_ltx_key(dst, f->level, f->min_txid, f->max_txid, dkey, sizeof dkey);
    if (f->size > (uint64_t)SIZE_MAX) {
      fprintf(stderr, "replica_copy: %s: too large\n", skey);
      goto out;
    }
    size_t n = (size_t)f->size;
    uint8_t *p = realloc(buf, n ? n : 1);
    if (!p) {
      fprintf(stderr, "replica_copy: out of memory (%zu bytes)\n", n);
      goto out;
    }
    buf = p;
    if (n && store_read_range(src, skey, 0, buf, n, &err) != LTX_OK) {
      fprintf(stderr, "replica_copy: read %s: %s\n", skey, err.msg);
      goto out;
    }
    if (store_put(dst, dkey, buf, n, f->timestamp_ms, STORE_PUT_ALWAYS, NULL, NULL, 0, &err) !=
        LTX_OK) {
      fprintf(stderr, "replica_copy: put %s: %s\n", dkey, err.msg);
      goto out;
    }
    printf("%s -> %s (%zu bytes)\n", skey, dkey, n);
  }
  rc = 0;
out:
  free(buf);
  store_ltx_list_free(&list);
  if (src) store_close(src);
  if (dst) store_close(dst);
  return rc;
}
