/*
** CRC-64/GO-ISO (LTX.md "Checksums"): Go's hash/crc64 with the ISO table.
** Simple table version; a faster implementation replaces it.
*/
#include "ltx/ltx.h"

#define CRC64_ISO_REFLECTED 0xD800000000000000ull

static uint64_t crc_table[256];
static int crc_table_ready;

static void crc_table_init(void) {
  for (int i = 0; i < 256; i++) {
    uint64_t c = (uint64_t)i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ CRC64_ISO_REFLECTED : c >> 1;
    crc_table[i] = c;
  }
  crc_table_ready = 1;
}

uint64_t ltx_crc64(uint64_t crc, const void *buf, size_t n) {
  const uint8_t *p = buf;
  if (!crc_table_ready) crc_table_init();
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = crc_table[(uint8_t)(crc ^ p[i])] ^ (crc >> 8);
  return ~crc;
}

uint64_t ltx_page_checksum(uint32_t pgno, const uint8_t *page, uint32_t page_size) {
  uint8_t be[4] = {(uint8_t)(pgno >> 24), (uint8_t)(pgno >> 16), (uint8_t)(pgno >> 8),
                   (uint8_t)pgno};
  return LTX_CHECKSUM_FLAG | ltx_crc64(ltx_crc64(0, be, 4), page, page_size);
}
