/*
** ltx.h: the LTX codec, the bottom layer of ltvfs.
**
** Exactly the format of docs/ltx-format.md (Litestream v0.5, "v3"
** files): a 100-byte header, a page block of frames, a page index, and a
** 16-byte trailer, with CRC-64/GO-ISO checksums.
**
** This layer is pure: buffers in, buffers out, callbacks for byte streams.
** No network, no threads, no global state. Every function that can fail
** returns an ltx_err code and, when given an ltx_error, a message that says
** what is wrong and where (file offset, page number).
*/
#ifndef LTVFS_LTX_H
#define LTVFS_LTX_H

#include <stddef.h>
#include <stdint.h>

#define LTX_MAGIC "LTX1"
#define LTX_HEADER_SIZE 100
#define LTX_TRAILER_SIZE 16
#define LTX_FRAME_HEADER_SIZE 6   /* pgno u32 | flags u16 */
#define LTX_FRAME_CSIZE_SIZE 4    /* csize u32, present when flags bit 0 set */
#define LTX_TERMINATOR_SIZE 6
#define LTX_MIN_PAGE_SIZE 512
#define LTX_MAX_PAGE_SIZE 65536

#define LTX_HEADER_FLAG_NO_CHECKSUM 0x2u
#define LTX_PAGE_FLAG_SIZE 0x1u         /* current frame: csize + LZ4 block */
#define LTX_CHECKSUM_FLAG 0x8000000000000000ull

/* Error codes. The layers above reuse ltx_error and add their own codes from
** 100 (store) and 200 (cache) upwards. */
typedef enum ltx_err {
  LTX_OK = 0,
  LTX_DONE = 1,            /* not an error: the page block has ended */
  LTX_ERR_NOMEM = 2,
  LTX_ERR_ARG = 3,         /* caller misuse: bad pgno order, etc. */
  LTX_ERR_IO = 4,          /* a read/write callback failed */
  LTX_ERR_MAGIC = 10,
  LTX_ERR_FLAGS = 11,      /* header flag bit other than NoChecksum */
  LTX_ERR_PAGE_SIZE = 12,
  LTX_ERR_TXID = 13,       /* min TXID 0 or max < min */
  LTX_ERR_HEADER = 14,     /* other header rule, e.g. checksum field form */
  LTX_ERR_TRUNCATED = 15,  /* input ends before the structure does */
  LTX_ERR_PAGE_ORDER = 16, /* pgno 0, not ascending, above commit, lock page */
  LTX_ERR_FRAME = 17,      /* bad page flags, impossible csize */
  LTX_ERR_DECOMPRESS = 18, /* LZ4 failed or did not give exactly one page */
  LTX_ERR_INDEX = 19,      /* page index malformed, outside the file, or
                           ** disagrees with the frames */
  LTX_ERR_FILE_CHECKSUM = 20,
  LTX_ERR_DB_CHECKSUM = 21,
  LTX_ERR_SNAPSHOT = 22,   /* snapshot does not hold every page 1..commit */
  LTX_ERR_TRAILING = 23,   /* bytes after the trailer */
  LTX_ERR_CONTIGUITY = 24  /* compactor inputs do not follow each other */
} ltx_err;

/* printf-style argument checking where the compiler has it, for every
** variadic formatter of the tree: LTX_PRINTF(format index, first arg). */
#if defined(__GNUC__)
#define LTX_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#else
#define LTX_PRINTF(fmt, first)
#endif

typedef struct ltx_error {
  int code;        /* an ltx_err, or a code of a layer above */
  char msg[512];
} ltx_error;

/* Records code and a printf-style message in err (err may be NULL); returns
** code so callers can write `return ltx_error_set(err, LTX_ERR_X, ...)`. */
int ltx_error_set(ltx_error *err, int code, const char *fmt, ...) LTX_PRINTF(3, 4);
/* Prepends "prefix: " to an existing message (e.g. the file name). */
void ltx_error_prefix(ltx_error *err, const char *fmt, ...) LTX_PRINTF(2, 3);
void ltx_error_clear(ltx_error *err);
/* Short stable name of a code, e.g. "LTX_ERR_MAGIC". */
const char *ltx_err_name(int code);
/* Whether code says the bytes are wrong (LTX_ERR_MAGIC..99: the input is not
** a valid LTX file), as opposed to misuse, memory or I/O. */
int ltx_error_is_data(int code);

/* ---- checksums (CRC-64/GO-ISO, docs/ltx-format.md, "Checksums") ---- */

/* Go's crc64.Update with the ISO table: crc is the previous result (0 to
** start). ltx_crc64(0, "123456789", 9) == 0xB90956C775A41001. */
uint64_t ltx_crc64(uint64_t crc, const void *buf, size_t n);
/* For tests and benchmarks: ltx_crc64 by one chosen implementation.
** impl 0 = portable slicing-by-8 (every CPU), 1 = PCLMULQDQ folding,
** 2 = VPCLMULQDQ on AVX2 ymm, 3 = VPCLMULQDQ on AVX-512 zmm (x86-64;
** ltx_crc64 uses the highest the CPU has, capped by the environment variable
** LTVFS_CRC64_IMPL=0..3 if set). ltx_crc64_impl_name gives its short name,
** or NULL when this build or CPU lacks it (or the cap excludes it);
** ltx_crc64_impl then uses the best one below. */
const char *ltx_crc64_impl_name(int impl);
uint64_t ltx_crc64_impl(int impl, uint64_t crc, const void *buf, size_t n);
/* FLAG | crc(BE32(pgno) || page) */
uint64_t ltx_page_checksum(uint32_t pgno, const uint8_t *page, uint32_t page_size);
/* Folds a page checksum into a database checksum: FLAG | (db ^ page_cksum).
** Folding the same page checksum out again is the same call with the old
** page's checksum (XOR), then re-adding the flag. */
static inline uint64_t ltx_db_checksum_fold(uint64_t db, uint64_t page_cksum) {
  return LTX_CHECKSUM_FLAG | (db ^ page_cksum);
}

/* ---- time ---- */

/* RFC 3339: YYYY-MM-DD(T|t| )HH:MM:SS[.frac](Z|z|+HH:MM|-HH:MM) to ms since
** the epoch (fraction beyond ms dropped); -1 if malformed. */
int64_t ltx_time_parse(const char *z);
/* ms since the epoch as Go's RFC3339Nano in UTC, e.g. 2026-11-22T10:38:32.492Z
** (trailing zeros of the fraction dropped); buf >= 40 bytes; returns buf. */
char *ltx_time_format(int64_t ms, char *buf, size_t cap);
#define LTX_TIME_CAP 40

/* ---- header ---- */

typedef struct ltx_header {
  uint32_t flags;
  uint32_t page_size;
  uint32_t commit;               /* db size in pages after applying */
  uint64_t min_txid;
  uint64_t max_txid;
  int64_t timestamp_ms;          /* ms since the Unix epoch */
  uint64_t pre_apply_checksum;
  uint64_t wal_offset;
  uint64_t wal_size;
  uint32_t wal_salt1;
  uint32_t wal_salt2;
  uint64_t node_id;
} ltx_header;

typedef struct ltx_trailer {
  uint64_t post_apply_checksum;
  uint64_t file_checksum;
} ltx_trailer;

/* Parses and validates the 100 header bytes (magic, flags, page size, TXIDs,
** the checksum field's form for the NoChecksum flag). */
int ltx_header_decode(const uint8_t buf[LTX_HEADER_SIZE], ltx_header *h, ltx_error *err);
/* Validates the fields of h as ltx_header_decode would. */
int ltx_header_validate(const ltx_header *h, ltx_error *err);
void ltx_header_encode(const ltx_header *h, uint8_t buf[LTX_HEADER_SIZE]);
static inline int ltx_header_is_snapshot(const ltx_header *h) { return h->min_txid == 1; }
/* The page SQLite never writes: 0x40000000 / page_size + 1. */
static inline uint32_t ltx_lock_pgno(uint32_t page_size) {
  return (uint32_t)(0x40000000u / page_size) + 1u;
}
/* "%016llx-%016llx.ltx" into buf (>= 38 bytes); returns buf. */
char *ltx_file_name(uint64_t min_txid, uint64_t max_txid, char *buf);
/* A TXID as users write it: hex, an optional 0x, 1..16 digits, not zero
** (no sign, no spaces). 0 on success, -1 if s is not one. The one parser
** of the CLI, the URI's txid= and the SQL functions. */
int ltx_txid_parse(const char *s, uint64_t *out);
/* Parses a name made by ltx_file_name; 0 on success, -1 if not one. */
int ltx_file_name_parse(const char *name, uint64_t *min_txid, uint64_t *max_txid);

/* ---- page index ---- */

typedef struct ltx_page_entry {
  uint32_t pgno;
  uint32_t size;      /* whole frame: header (+csize) + payload */
  uint64_t offset;    /* absolute file offset of the frame header */
} ltx_page_entry;

typedef struct ltx_index {
  ltx_page_entry *entries;  /* sorted by pgno, ascending offsets */
  size_t n;
} ltx_index;

/* Parses the page index from the last n_tail bytes of a file of file_size
** bytes (tail points at file offset file_size - n_tail). When the tail is too
** short to hold the whole index, returns LTX_ERR_TRUNCATED and sets *need to
** the number of tail bytes required (read that many and call again). Every
** entry is checked to lie inside the page block, in order, without overlap.
** *need is 0 when reading more cannot help (the file is too small). */
int ltx_index_parse_tail(const uint8_t *tail, size_t n_tail, uint64_t file_size,
                         ltx_index *idx, size_t *need, ltx_error *err);
/* Writes v as an unsigned LEB128 varint (the page index's encoding) at p,
** which has room for 10 bytes; returns the bytes written. */
size_t ltx_uvarint_put(uint8_t *p, uint64_t v);
/* A good first guess for n_tail: covers the index of most files. */
#define LTX_INDEX_TAIL_GUESS 16384
/* The most bytes a valid page index of a file with this commit can take
** (entries, the 0x00 end, the 8-byte length): at most one entry per page,
** each three varints of at most 5 + 10 + 5 bytes. A reader caps what it
** allocates for an index by this, whatever the file's tail claims. */
#define LTX_INDEX_MAX_BYTES(commit) ((uint64_t)(commit) * 20u + 1u + 8u)
void ltx_index_free(ltx_index *idx);
/* Binary search; NULL if pgno is not in the file. */
const ltx_page_entry *ltx_index_find(const ltx_index *idx, uint32_t pgno);

/* ---- one frame, random access ---- */

/* Upper bound of one frame's size (header, csize, payload) for page_size:
** LZ4_COMPRESSBOUND(page_size) plus the frame header and csize, plus room
** for the LZ4F framing of a legacy frame (header <= 19 bytes, block header,
** end mark, content checksum). Buffers of this size hold any valid frame;
** index entries and csize fields above it are rejected. */
static inline size_t ltx_frame_max_size(uint32_t page_size) {
  return (size_t)LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE + page_size + page_size / 255u +
         16u + 64u;
}

/* Decodes one whole frame (the size bytes at an index entry's offset) into
** page (page_size bytes). Accepts both frame kinds: current (flags 0x1,
** csize, LZ4 block) and legacy (flags 0, one LZ4F frame). Checks that the
** frame's pgno is expect_pgno (0 = any). */
int ltx_frame_decode(const uint8_t *frame, size_t n, uint32_t expect_pgno,
                     uint32_t page_size, uint8_t *page, ltx_error *err);

/* ---- streaming decoder ---- */

/* Pulls up to n bytes into buf; sets *nread (0 = end of input). Returns
** LTX_OK or an error code (with err filled). */
typedef int (*ltx_read_fn)(void *ctx, uint8_t *buf, size_t n, size_t *nread, ltx_error *err);

typedef struct ltx_decoder ltx_decoder;

/* Reads and validates the header. Memory stays bounded by one page, a small
** read buffer and, at the end, the page index. */
int ltx_decoder_open(ltx_decoder **out, ltx_read_fn read, void *ctx, ltx_error *err);
const ltx_header *ltx_decoder_header(const ltx_decoder *d);
/* verify_checksum = 0 skips the file checksum and the snapshot database
** checksum (no CRC work per page) for callers that verified the file
** already. The default is 1. Only effective before the first
** ltx_decoder_next; later calls are ignored. */
void ltx_decoder_set_verify_checksum(ltx_decoder *d, int verify_checksum);
/* Next page in the page block: LTX_OK with *pgno and page (page_size bytes)
** filled, or LTX_DONE once the terminator is read. Enforces ascending pgno,
** pgno <= commit, no lock page. */
int ltx_decoder_next(ltx_decoder *d, uint32_t *pgno, uint8_t *page, ltx_error *err);
/* After LTX_DONE: reads the page index and the trailer, checks the index
** against the frames seen, verifies the file checksum (unless turned off with
** ltx_decoder_set_verify_checksum), verifies the post-apply checksum of a
** checksummed snapshot, and
** requires end of input. idx (may be NULL) receives the parsed index. */
int ltx_decoder_finish(ltx_decoder *d, ltx_trailer *trailer, ltx_index *idx, ltx_error *err);
/* Bytes consumed so far (the offset of the next unread byte). */
uint64_t ltx_decoder_offset(const ltx_decoder *d);
void ltx_decoder_free(ltx_decoder *d);

/* Decodes and verifies a whole in-memory file: header, every frame, index,
** trailer, checksums. h/trailer may be NULL. */
int ltx_verify_buffer(const uint8_t *buf, size_t n, ltx_header *h, ltx_trailer *trailer,
                      ltx_error *err);

/* ---- encoder ---- */

typedef int (*ltx_write_fn)(void *ctx, const uint8_t *buf, size_t n, ltx_error *err);

typedef struct ltx_encoder ltx_encoder;

/* Starts a file. h->flags = LTX_HEADER_FLAG_NO_CHECKSUM (the Litestream-
** compatible default: pre = post = 0) or 0 for checksummed mode, which needs
** h->pre_apply_checksum (0 for a snapshot). Writes the header. */
int ltx_encoder_open(ltx_encoder **out, const ltx_header *h, ltx_write_fn write, void *ctx,
                     ltx_error *err);
/* Adds one page as a current-format frame. Pages must come in strictly
** ascending pgno, 1 <= pgno <= commit, never the lock page. */
int ltx_encoder_put(ltx_encoder *e, uint32_t pgno, const uint8_t *page, ltx_error *err);
/* Writes the terminator, the page index and the trailer. post_apply_checksum
** must be 0 in NoChecksum mode. A snapshot must have received every page
** 1..commit except the lock page. */
int ltx_encoder_close(ltx_encoder *e, uint64_t post_apply_checksum, ltx_error *err);
/* Bytes written so far. */
uint64_t ltx_encoder_size(const ltx_encoder *e);
void ltx_encoder_free(ltx_encoder *e);

/* A growable memory buffer that is an ltx_write_fn sink, for encoding a
** file into memory: ltx_encoder_open(&e, &h, ltx_membuf_write, &mb, &err).
** Start from {0}; release with ltx_membuf_free. */
typedef struct ltx_membuf {
  uint8_t *buf;
  size_t len;
  size_t cap;
} ltx_membuf;
int ltx_membuf_write(void *ctx, const uint8_t *buf, size_t n, ltx_error *err);
void ltx_membuf_free(ltx_membuf *mb);

/* ---- compactor ---- */

/* Random access to one input file: read n bytes at off into buf. */
typedef struct ltx_source {
  int (*read_at)(void *ctx, uint64_t off, uint8_t *buf, size_t n, ltx_error *err);
  void *ctx;
  uint64_t size;
} ltx_source;

/* Merges n files, oldest first, each following the previous as Litestream's
** ltx.IsContiguous has it (min[i] <= max[i-1] + 1 and max[i] > max[i-1]: a
** gap or a file that does not advance is LTX_ERR_CONTIGUITY; overlap is
** allowed), into one: newest page wins, pages above the final
** commit are dropped, min TXID and pre-apply checksum come from the first,
** commit, max TXID, timestamp and post-apply checksum from the last. The
** output is NoChecksum when any input is. As in Litestream (compactor and
** restore alike), a page that a middle input's shrink cut off but that lies
** below the final commit keeps its newest older version. Memory: the
** indexes plus one page. */
int ltx_compact(const ltx_source *inputs, size_t n, ltx_write_fn write, void *ctx,
                ltx_header *out_header, ltx_error *err);
/* ltx_compact, with the output's TXIDs given (non-zero) instead of taken
** from the inputs: the primary merges the captures of one sync interval,
** numbered by its spool, into the one L0 file [T, T] that goes up. */
int ltx_compact_as(const ltx_source *inputs, size_t n, uint64_t min_txid, uint64_t max_txid,
                   ltx_write_fn write, void *ctx, ltx_header *out_header, ltx_error *err);

#endif /* LTVFS_LTX_H */
