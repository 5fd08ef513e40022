/*
** cache.h: the local image of a replica, the layer above store/.
**
** Now: applying LTX files to a database image file, which is what a restore
** does (LTX.md section 3, "Applying a plan"). Later: the hydrated image, its
** page-presence map and the in-memory page cache of the read path.
*/
#ifndef LTVFS_CACHE_H
#define LTVFS_CACHE_H

#include <stdint.h>

#include "ltx/ltx.h"
#include "store/store.h"

enum {
  CACHE_ERR_IO = 200,        /* local file I/O failed */
  CACHE_ERR_PAGE_SIZE = 201, /* files of one plan disagree on page size */
  CACHE_ERR_MISMATCH = 202   /* file header disagrees with its listing */
};

/* Progress of a long job: called after each chunk; done <= total bytes. */
typedef void (*cache_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* What an apply needs to know of the image and reports back. */
typedef struct cache_apply_state {
  uint32_t page_size;   /* 0 before the first file (set from it), then enforced */
  uint32_t commit;      /* database size in pages after the last file applied */
  cache_progress_fn progress;
  void *progress_ctx;
  uint64_t bytes_done;  /* LTX bytes fetched so far, for progress */
  uint64_t bytes_total;
} cache_apply_state;

/* Applies one LTX file from the store to the image open at fd: streams it in
** chunks (bounded memory), verifies header, frames, index and file checksum,
** and writes each page at (pgno-1)*page_size. It does not truncate: the
** caller decides when pages above state->commit go (see cache_restore). */
int cache_apply_ltx(int fd, store *st, const store_ltx_file *f, cache_apply_state *state,
                    ltx_error *err);

/* Restores the plan into out_path atomically: a temporary file beside it,
** every file applied in order, fsync, rename, fsync of the directory. On
** error nothing is left at out_path (an existing file is untouched). */
int cache_restore(store *st, const store_plan *plan, const char *out_path,
                  cache_progress_fn progress, void *progress_ctx, ltx_error *err);

#endif /* LTVFS_CACHE_H */
