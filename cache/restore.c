/*
** restore.c: applying LTX files to a database image (docs/restore-plan.md,
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
#include "config.h"

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
/* Chunks fetched at once (in parallel where the store can): a window of up
** to 64 MiB of one large file, or a batch of whole small files. */
#define RESTORE_WINDOW_CHUNKS 8u
#define RESTORE_BATCH_BYTES ((uint64_t)RESTORE_CHUNK_SIZE * RESTORE_WINDOW_CHUNKS)
/* Consecutive pages are written in one pwrite of up to this many bytes. */
#define RESTORE_WRITE_BATCH (1u << 20)

/* Feeds one LTX file to the decoder: either from bytes already fetched
** (preloaded), or window by window, each window one parallel batch of chunk
** range reads. */
typedef struct chunk_reader {
  store *st;
  const char *key;
  uint64_t object_size;
  uint64_t next_off;     /* store offset of the byte after the window */
  uint8_t *win;
  size_t win_cap;
  size_t win_len;
  size_t win_pos;
  int preloaded;         /* win holds the whole object: never fetch */
  cache_apply_state *state;
} chunk_reader;

static void progress_add(cache_apply_state *state, uint64_t n) {
  state->bytes_done += n;
  if (state->progress) state->progress(state->progress_ctx, state->bytes_done, state->bytes_total);
}

/* Splits [off, off + n) of key into chunk-sized ranges at ranges[*count]. */
static void add_chunk_ranges(store_range *ranges, size_t *count, const char *key, uint64_t off,
                             uint8_t *buf, uint64_t n) {
  for (uint64_t done = 0; done < n; done += RESTORE_CHUNK_SIZE) {
    uint64_t len = n - done < RESTORE_CHUNK_SIZE ? n - done : RESTORE_CHUNK_SIZE;
    ranges[(*count)++] = (store_range){.key = key, .off = off + done, .buf = buf + done,
                                       .n = (size_t)len};
  }
}

static int window_fetch(chunk_reader *r, ltx_error *err) {
  store_range ranges[RESTORE_WINDOW_CHUNKS];
  size_t count = 0;
  uint64_t left = r->object_size - r->next_off;
  uint64_t want = left < r->win_cap ? left : r->win_cap;
  int rc;
  add_chunk_ranges(ranges, &count, r->key, r->next_off, r->win, want);
  rc = store_read_ranges(r->st, ranges, count, err);
  if (rc) return rc;
  r->next_off += want;
  r->win_len = (size_t)want;
  r->win_pos = 0;
  progress_add(r->state, want);
  return LTX_OK;
}

static int chunk_read(void *ctx, uint8_t *buf, size_t n, size_t *nread, ltx_error *err) {
  chunk_reader *r = ctx;
  int rc = LTX_OK;
  *nread = 0;
  if (r->win_pos == r->win_len) {
    if (r->preloaded || r->next_off == r->object_size) goto out; /* end of object */
    rc = window_fetch(r, err);
    if (rc) goto out;
  }
  size_t avail = r->win_len - r->win_pos;
  size_t take = n < avail ? n : avail;
  memcpy(buf, r->win + r->win_pos, take);
  r->win_pos += take;
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

/* Decodes the file r delivers and writes its pages into the image. */
static int apply_from_reader(int fd, const store_ltx_file *f, chunk_reader *r,
                             cache_apply_state *state, ltx_error *err) {
  write_batch batch = {0};
  ltx_decoder *dec = NULL;
  uint8_t *page = NULL;
  const ltx_header *h;
  ltx_trailer trailer;
  int checksummed;
  int rc;

  rc = ltx_decoder_open(&dec, chunk_read, r, err);
  if (rc) goto out;
  h = ltx_decoder_header(dec);
  rc = store_check_ltx_name(f, h, err);
  if (rc) goto out;
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
  if (rc) ltx_error_prefix(err, "%s/%s", r->st->url, r->key);
  ltx_decoder_free(dec);
  free(batch.buf);
  free(page);
  return rc;
}

int cache_apply_ltx(int fd, store *st, const store_ltx_file *f, cache_apply_state *state,
                    ltx_error *err) {
  char key[128];
  chunk_reader reader;
  int rc;
  store_ltx_key(st, f->level, f->min_txid, f->max_txid, key, sizeof key);
  reader = (chunk_reader){.st = st, .key = key, .object_size = f->size, .state = state};
  reader.win_cap = f->size < RESTORE_BATCH_BYTES ? (size_t)f->size : (size_t)RESTORE_BATCH_BYTES;
  reader.win = malloc(reader.win_cap ? reader.win_cap : 1);
  if (!reader.win) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  rc = apply_from_reader(fd, f, &reader, state, err);
  free(reader.win);
  return rc;
}

/* Applies files[0..n) of at most RESTORE_BATCH_BYTES in all, fetched whole in
** one parallel batch: a plan of many small files costs one round trip per
** batch, not one per file. */
static int apply_small_batch(int fd, store *st, const store_ltx_file *files, size_t n,
                             cache_apply_state *state, ltx_error *err) {
  char (*keys)[128] = calloc(n, sizeof *keys);
  store_range *ranges = NULL;
  uint8_t *buf = NULL;
  size_t count = 0, max_ranges = 0;
  uint64_t total = 0, off = 0;
  int rc = LTX_OK;

  for (size_t i = 0; i < n; i++) {
    total += files[i].size;
    max_ranges += (size_t)(files[i].size / RESTORE_CHUNK_SIZE) + 1;
  }
  ranges = calloc(max_ranges, sizeof *ranges);
  buf = malloc(total ? (size_t)total : 1);
  if (!keys || !ranges || !buf) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    store_ltx_key(st, files[i].level, files[i].min_txid, files[i].max_txid, keys[i],
                  sizeof keys[i]);
    add_chunk_ranges(ranges, &count, keys[i], 0, buf + off, files[i].size);
    off += files[i].size;
  }
  rc = store_read_ranges(st, ranges, count, err);
  if (rc) goto out;
  progress_add(state, total);
  off = 0;
  for (size_t i = 0; i < n; i++) {
    chunk_reader r = {.st = st, .key = keys[i], .object_size = files[i].size,
                      .next_off = files[i].size, .win = buf + off,
                      .win_cap = (size_t)files[i].size, .win_len = (size_t)files[i].size,
                      .preloaded = 1, .state = state};
    rc = apply_from_reader(fd, &files[i], &r, state, err);
    if (rc) goto out;
    off += files[i].size;
  }
out:
  free(keys);
  free(ranges);
  free(buf);
  return rc;
}

/* rename(from, to) that fails with EEXIST instead of replacing to, in one
** step (no window between a check and the rename): renameat2's
** RENAME_NOREPLACE, or where the file system lacks it, link then unlink. */
static int rename_noreplace(const char *from, const char *to) {
#ifdef RENAME_NOREPLACE
  if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return -1;
#endif
  if (link(from, to) != 0) return -1;
  unlink(from);
  return 0;
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

int cache_restore(store *st, const store_plan *plan, const char *out_path, int replace,
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

  for (size_t i = 0; i < plan->n;) {
    size_t j = i;
    uint64_t batch = 0;
    while (j < plan->n && batch + plan->files[j].size <= RESTORE_BATCH_BYTES)
      batch += plan->files[j++].size;
    if (j == i) {
      /* Larger than a batch: streamed window by window. */
      rc = cache_apply_ltx(fd, st, &plan->files[i], &state, err);
      j = i + 1;
    } else {
      rc = apply_small_batch(fd, st, &plan->files[i], j - i, &state, err);
    }
    if (rc) goto out;
    i = j;
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
  if (replace ? rename(tmp_path, out_path) != 0 : rename_noreplace(tmp_path, out_path) != 0) {
    if (!replace && errno == EEXIST)
      rc = ltx_error_set(err, CACHE_ERR_EXISTS, "%s already exists (not replaced)", out_path);
    else
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
