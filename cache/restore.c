/*
** restore.c: applying LTX files to a database image (LTX.md section 3,
** "Applying a plan").
**
** For each file of a plan, in order: stream it from the store in chunks
** through the LTX decoder (which verifies every frame, the page index and the
** file checksum) and write each page at (pgno - 1) * page_size. After the
** last file, truncate the image to that file's commit.
**
** Truncating once, at the end, is what Litestream's own restore does (it
** compacts the plan: the newest copy of each page wins, pages above the final
** commit go). It differs from truncating after every file only for a shrink
** followed by growth whose file does not rewrite every regrown page: those
** pages keep their older content instead of zeros. SQLite never reads them
** (integrity_check calls them "never used"), but the image hashes in
** tests/fixtures/expected.tsv (vacuum_then_write at TXID 3) are Litestream's,
** and a restore must give the same bytes.
**
** Memory per file: one read chunk, one write batch and one page, whatever
** the database size. Requests per file: ceil(size / chunk).
**
** A restore writes a temporary file beside the output and renames it into
** place after fsync, so the output path holds either nothing new or the whole
** restored database, never a torn one.
*/
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"

/* Large enough that a restore makes few requests per file (the S3 target is
** O(files + size / 8 MiB) requests), small enough to stay cheap in memory. */
#define RESTORE_CHUNK_SIZE (8u << 20)
/* Consecutive pages are written in one pwrite of up to this many bytes. */
#define RESTORE_WRITE_BATCH (1u << 20)

/* Streams one store object to the decoder in RESTORE_CHUNK_SIZE range reads. */
typedef struct chunk_reader {
  store *st;
  const char *key;
  uint64_t object_size;
  uint64_t next_off;     /* store offset of the byte after the chunk */
  uint8_t *chunk;
  size_t chunk_len;
  size_t chunk_pos;
  cache_progress_fn progress;
  void *progress_ctx;
  uint64_t *bytes_done;
  uint64_t bytes_total;
} chunk_reader;

static int chunk_read(void *ctx, uint8_t *buf, size_t n, size_t *nread, ltx_error *err) {
  chunk_reader *r = ctx;
  int rc = LTX_OK;
  *nread = 0;
  if (r->chunk_pos == r->chunk_len) {
    uint64_t left = r->object_size - r->next_off;
    size_t want = left < RESTORE_CHUNK_SIZE ? (size_t)left : RESTORE_CHUNK_SIZE;
    if (want == 0) goto out; /* end of object */
    rc = store_read_range(r->st, r->key, r->next_off, r->chunk, want, err);
    if (rc) goto out;
    r->next_off += want;
    r->chunk_len = want;
    r->chunk_pos = 0;
    if (r->bytes_done) {
      *r->bytes_done += want;
      if (r->progress) r->progress(r->progress_ctx, *r->bytes_done, r->bytes_total);
    }
  }
  size_t avail = r->chunk_len - r->chunk_pos;
  size_t take = n < avail ? n : avail;
  memcpy(buf, r->chunk + r->chunk_pos, take);
  r->chunk_pos += take;
  *nread = take;
out:
  return rc;
}

/* Pages that follow each other are gathered and written with one pwrite. */
typedef struct write_batch {
  int fd;
  uint32_t page_size;
  uint32_t first_pgno;   /* 0 when empty */
  size_t len;
  uint8_t *buf;
} write_batch;

static int write_all_at(int fd, const uint8_t *buf, size_t n, off_t off, ltx_error *err) {
  while (n > 0) {
    ssize_t w = pwrite(fd, buf, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ltx_error_set(err, CACHE_ERR_IO, "write of %zu bytes at offset %lld: %s", n,
                           (long long)off, strerror(errno));
    }
    buf += w;
    n -= (size_t)w;
    off += w;
  }
  return LTX_OK;
}

static int batch_flush(write_batch *b, ltx_error *err) {
  int rc = LTX_OK;
  if (b->len > 0) {
    off_t off = (off_t)(b->first_pgno - 1) * b->page_size;
    rc = write_all_at(b->fd, b->buf, b->len, off, err);
  }
  b->len = 0;
  b->first_pgno = 0;
  return rc;
}

/* Returns the slot for pgno's page, flushing first when pgno does not extend
** the batch or the batch is full. */
static int batch_slot(write_batch *b, uint32_t pgno, uint8_t **slot, ltx_error *err) {
  int rc = LTX_OK;
  int extends = b->first_pgno != 0 &&
                pgno == b->first_pgno + (uint32_t)(b->len / b->page_size);
  if (!extends || b->len + b->page_size > RESTORE_WRITE_BATCH) {
    rc = batch_flush(b, err);
    if (rc) goto out;
    b->first_pgno = pgno;
  }
  *slot = b->buf + b->len;
out:
  return rc;
}

/* The database checksum of the image: only needed for checksummed files,
** which Litestream never writes, so a full pass is an acceptable cost. */
static int image_checksum(int fd, uint32_t page_size, uint32_t commit, uint64_t *out,
                          ltx_error *err) {
  int rc = LTX_OK;
  uint8_t *page = malloc(page_size);
  uint64_t c = 0;
  uint32_t lock = ltx_lock_pgno(page_size);
  if (!page) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  for (uint32_t pgno = 1; pgno <= commit; pgno++) {
    if (pgno == lock) continue;
    ssize_t r = pread(fd, page, page_size, (off_t)(pgno - 1) * page_size);
    if (r < 0) {
      rc = ltx_error_set(err, CACHE_ERR_IO, "read of page %u: %s", pgno, strerror(errno));
      goto out;
    }
    /* Pages never written read as zeros (holes), as SQLite would see them. */
    if ((size_t)r < page_size) memset(page + r, 0, page_size - (size_t)r);
    c = ltx_db_checksum_fold(c, ltx_page_checksum(pgno, page, page_size));
  }
  *out = c;
out:
  free(page);
  return rc;
}

int cache_apply_ltx(int fd, store *st, const store_ltx_file *f, cache_apply_state *state,
                    ltx_error *err) {
  char key[128];
  chunk_reader reader = {0};
  write_batch batch = {0};
  ltx_decoder *dec = NULL;
  uint8_t *page = NULL;
  const ltx_header *h;
  ltx_trailer trailer;
  int checksummed;
  int rc;

  store_ltx_key(st, f->level, f->min_txid, f->max_txid, key, sizeof key);
  reader = (chunk_reader){.st = st, .key = key, .object_size = f->size,
                          .progress = state->progress, .progress_ctx = state->progress_ctx,
                          .bytes_done = &state->bytes_done, .bytes_total = state->bytes_total};
  reader.chunk = malloc(f->size < RESTORE_CHUNK_SIZE ? (size_t)f->size + 1 : RESTORE_CHUNK_SIZE);
  if (!reader.chunk) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }

  rc = ltx_decoder_open(&dec, chunk_read, &reader, err);
  if (rc) goto out;
  h = ltx_decoder_header(dec);
  if (h->min_txid != f->min_txid || h->max_txid != f->max_txid) {
    rc = ltx_error_set(err, CACHE_ERR_MISMATCH,
                       "header says TXIDs %016llx-%016llx but the file is named for "
                       "%016llx-%016llx",
                       (unsigned long long)h->min_txid, (unsigned long long)h->max_txid,
                       (unsigned long long)f->min_txid, (unsigned long long)f->max_txid);
    goto out;
  }
  if (state->page_size == 0) {
    state->page_size = h->page_size;
  } else if (state->page_size != h->page_size) {
    rc = ltx_error_set(err, CACHE_ERR_PAGE_SIZE,
                       "page size %u differs from %u of the files before it", h->page_size,
                       state->page_size);
    goto out;
  }

  checksummed = !(h->flags & LTX_HEADER_FLAG_NO_CHECKSUM);
  if (checksummed && !ltx_header_is_snapshot(h)) {
    uint64_t have;
    rc = image_checksum(fd, h->page_size, state->commit, &have, err);
    if (rc) goto out;
    if (have != h->pre_apply_checksum) {
      rc = ltx_error_set(err, LTX_ERR_DB_CHECKSUM,
                         "pre-apply checksum %016llx does not match the database before "
                         "it (%016llx)",
                         (unsigned long long)h->pre_apply_checksum, (unsigned long long)have);
      goto out;
    }
  }

  batch = (write_batch){.fd = fd, .page_size = h->page_size};
  batch.buf = malloc(RESTORE_WRITE_BATCH);
  page = malloc(h->page_size);
  if (!batch.buf || !page) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (;;) {
    uint32_t pgno;
    uint8_t *slot;
    rc = ltx_decoder_next(dec, &pgno, page, err);
    if (rc == LTX_DONE) break;
    if (rc) goto out;
    rc = batch_slot(&batch, pgno, &slot, err);
    if (rc) goto out;
    memcpy(slot, page, h->page_size);
    batch.len += h->page_size;
  }
  rc = batch_flush(&batch, err);
  if (rc) goto out;
  rc = ltx_decoder_finish(dec, &trailer, NULL, err);
  if (rc) goto out;
  state->commit = h->commit;
  if (checksummed) {
    uint64_t have;
    rc = image_checksum(fd, h->page_size, h->commit, &have, err);
    if (rc) goto out;
    if (have != trailer.post_apply_checksum) {
      rc = ltx_error_set(err, LTX_ERR_DB_CHECKSUM,
                         "post-apply checksum %016llx does not match the database after "
                         "it (%016llx)",
                         (unsigned long long)trailer.post_apply_checksum,
                         (unsigned long long)have);
      goto out;
    }
  }

out:
  if (rc) ltx_error_prefix(err, "%s/%s", st->url, key);
  ltx_decoder_free(dec);
  free(reader.chunk);
  free(batch.buf);
  free(page);
  return rc;
}

static int fsync_dir_of(const char *path, ltx_error *err) {
  int rc = LTX_OK;
  char *copy = strdup(path);
  int dfd = -1;
  if (!copy) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
  if (dfd < 0 || fsync(dfd) != 0)
    rc = ltx_error_set(err, CACHE_ERR_IO, "fsync of the directory of %s: %s", path,
                       strerror(errno));
  if (dfd >= 0) close(dfd);
  free(copy);
  return rc;
}

int cache_restore(store *st, const store_plan *plan, const char *out_path,
                  cache_progress_fn progress, void *progress_ctx, ltx_error *err) {
  char *tmp_path = NULL;
  int fd = -1;
  int rc = LTX_OK;
  cache_apply_state state = {.progress = progress, .progress_ctx = progress_ctx};
  size_t n = strlen(out_path);

  if (plan->n == 0) {
    rc = ltx_error_set(err, STORE_ERR_EMPTY, "nothing to restore: the plan holds no files");
    goto out;
  }
  for (size_t i = 0; i < plan->n; i++) state.bytes_total += plan->files[i].size;

  tmp_path = malloc(n + sizeof ".tmp-XXXXXX");
  if (!tmp_path) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  memcpy(tmp_path, out_path, n);
  memcpy(tmp_path + n, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
  fd = mkstemp(tmp_path);
  if (fd < 0) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "create %s: %s", tmp_path, strerror(errno));
    free(tmp_path);
    tmp_path = NULL;
    goto out;
  }
  if (fchmod(fd, 0644) != 0) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "chmod %s: %s", tmp_path, strerror(errno));
    goto out;
  }

  for (size_t i = 0; i < plan->n; i++) {
    rc = cache_apply_ltx(fd, st, &plan->files[i], &state, err);
    if (rc) goto out;
  }
  if (ftruncate(fd, (off_t)state.commit * state.page_size) != 0) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "truncate %s to %u pages: %s", tmp_path,
                       state.commit, strerror(errno));
    goto out;
  }
  if (fsync(fd) != 0) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "fsync %s: %s", tmp_path, strerror(errno));
    goto out;
  }
  if (close(fd) != 0) {
    fd = -1;
    rc = ltx_error_set(err, CACHE_ERR_IO, "close %s: %s", tmp_path, strerror(errno));
    goto out;
  }
  fd = -1;
  if (rename(tmp_path, out_path) != 0) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "rename %s to %s: %s", tmp_path, out_path,
                       strerror(errno));
    goto out;
  }
  free(tmp_path);
  tmp_path = NULL;
  rc = fsync_dir_of(out_path, err);

out:
  if (fd >= 0) close(fd);
  if (tmp_path) {
    unlink(tmp_path);
    free(tmp_path);
  }
  return rc;
}
