/*
** snapshot.c: a database file as an LTX snapshot [1, txid], streamed.
**
** `ltvfs import` seeds a replica with it. (The primary's snapshots read
** the database through its WAL instead: primary/primary.c.) Also the file
** sink every streaming encoder here writes with (cache_fd_sink_write).
** The pages are read one at a time with pread and the
** encoded file is written as it is produced, so a database of any size
** costs a page buffer, the encoder's page index (about 16 bytes a page)
** and nothing else.
**
** The file must be a consistent copy (the caller takes one with SQLite's
** backup API, or holds a lock that keeps writers out): pages are read as
** they are on disk.
*/
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"

int cache_fd_sink_write(void *ctx, const uint8_t *buf, size_t n, ltx_error *err) {
  cache_fd_sink *s = ctx;
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(s->fd, buf + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return ltx_error_set(err, CACHE_ERR_IO, "write: %s", strerror(errno));
    done += (size_t)w;
  }
  s->written += n;
  return LTX_OK;
}

/* The page size a database header states (offset 16; 1 means 65536). */
static uint32_t header_page_size(const uint8_t hdr[100]) {
  uint32_t ps = ((uint32_t)hdr[16] << 8) | hdr[17];
  return ps == 1 ? 65536 : ps;
}

int cache_snapshot_encode(int db_fd, uint64_t txid, int64_t timestamp_ms, int out_fd,
                          ltx_header *out_header, uint64_t *out_size, ltx_error *err) {
  ltx_encoder *enc = NULL;
  uint8_t *page = NULL, hdr[100];
  cache_fd_sink sink = {out_fd, 0};
  struct stat sb;
  ltx_header h = {0};
  uint32_t lock;
  int rc = LTX_OK;

  if (fstat(db_fd, &sb) != 0 || pread(db_fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "read the database header: %s",
                       errno ? strerror(errno) : "shorter than a database header");
    goto out;
  }
  h.page_size = header_page_size(hdr);
  if (h.page_size < 512 || (h.page_size & (h.page_size - 1)) != 0 ||
      sb.st_size % h.page_size != 0) {
    rc = ltx_error_set(err, LTX_ERR_PAGE_SIZE,
                       "not a database file: page size %u, file size %lld", h.page_size,
                       (long long)sb.st_size);
    goto out;
  }
  h.commit = (uint32_t)(sb.st_size / h.page_size);
  h.flags = LTX_HEADER_FLAG_NO_CHECKSUM;
  h.min_txid = 1;
  h.max_txid = txid;
  h.timestamp_ms = timestamp_ms;
  rc = ltx_encoder_open(&enc, &h, cache_fd_sink_write, &sink, err);
  if (rc != LTX_OK) goto out;
  page = malloc(h.page_size);
  if (page == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  lock = ltx_lock_pgno(h.page_size);
  for (uint32_t pgno = 1; pgno <= h.commit; pgno++) {
    if (pgno == lock) continue; /* never stored (LTX format, the lock page) */
    ssize_t got = pread(db_fd, page, h.page_size, (off_t)(pgno - 1) * h.page_size);
    if (got != (ssize_t)h.page_size) {
      rc = ltx_error_set(err, CACHE_ERR_IO, "read page %u: %s", pgno,
                         got < 0 ? strerror(errno) : "the file shrank");
      goto out;
    }
    rc = ltx_encoder_put(enc, pgno, page, err);
    if (rc != LTX_OK) goto out;
  }
  rc = ltx_encoder_close(enc, 0, err);
  if (rc != LTX_OK) goto out;
  if (out_header) *out_header = h;
  if (out_size) *out_size = sink.written;
out:
  ltx_encoder_free(enc);
  free(page);
  return rc;
}
