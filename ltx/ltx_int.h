/*
** ltx_int.h: what the files of ltx/ share and nobody else should see.
**
** Big-endian field access, the legacy (LZ4F) frame step used by the random
** access, streaming and in-memory decoders, and the encoder entry the
** compactor uses to copy an already compressed block without compressing the
** page again. Nothing here is part of the ltx.h interface.
*/
#ifndef LTVFS_LTX_INT_H
#define LTVFS_LTX_INT_H

#include <lz4frame.h>

#include "ltx/ltx.h"

static inline uint16_t ltx_get_be16(const uint8_t *p) {
  return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}
static inline uint32_t ltx_get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t ltx_get_be64(const uint8_t *p) {
  return (uint64_t)ltx_get_be32(p) << 32 | ltx_get_be32(p + 4);
}
static inline void ltx_put_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void ltx_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static inline void ltx_put_be64(uint8_t *p, uint64_t v) {
  ltx_put_be32(p, (uint32_t)(v >> 32));
  ltx_put_be32(p + 4, (uint32_t)v);
}

/* Largest csize a current frame may declare: LZ4_COMPRESSBOUND(page_size).
** Spelled out so that ltx.h need not include lz4.h. */
static inline uint32_t ltx_csize_max(uint32_t page_size) {
  return page_size + page_size / 255u + 16u;
}

/* One step of decoding the LZ4F payload of a legacy frame into page.
** *n_src: bytes available at src on entry, bytes consumed on return.
** *produced: page bytes written so far (0 before the first step).
** *done: set once the LZ4F frame has ended with exactly page_size bytes.
** Returns LTX_OK (call again with more input unless *done), or
** LTX_ERR_DECOMPRESS with a message that the caller prefixes with the page
** number and offset. The dctx must be fresh or have finished a frame. */
int ltx_legacy_step(LZ4F_dctx *dctx, const uint8_t *src, size_t *n_src, uint8_t *page,
                    uint32_t page_size, size_t *produced, int *done, ltx_error *err);

/* Adds page pgno whose current-format LZ4 block (csize bytes) the caller
** already holds and has checked to decompress to page: the compactor copies
** blocks instead of compressing every page again. Same rules as
** ltx_encoder_put. */
int ltx_encoder_put_block(ltx_encoder *e, uint32_t pgno, const uint8_t *page,
                          const uint8_t *block, uint32_t csize, ltx_error *err);

#endif /* LTVFS_LTX_INT_H */
