/*
** crc64.c: CRC-64/GO-ISO (LTX.md "Checksums"), Go's hash/crc64 with the ISO
** table: reflected, reversed polynomial 0xD800000000000000, init and final
** xor ~0. ltx_crc64(0, "123456789", 9) == 0xB90956C775A41001.
**
** The file checksum covers every decompressed page byte, so this CRC sits on
** the decode path beside LZ4 and must be several times faster than LZ4
** decompression for verification to cost little. Two implementations:
**
**   fast      x86-64 with PCLMULQDQ + SSE4.1 (chosen at run time from cpuid):
**             carry-less-multiply folding, 8 x 128-bit lanes (128 bytes per
**             iteration), then single-lane folding, then Barrett reduction.
**             Tens of GB/s.
**   portable  slicing-by-8 over 8 tables of 256 entries (16 KiB), as Go's
**             own crc64 does. Every CPU; also finishes the < 16 byte tails
**             of the fast path. ~2-3 GB/s.
**
** Both are exposed (ltx_crc64 dispatches; ltx_crc64_portable is the fallback
** forced, for tests and benchmarks). One-time setup (tables, constants, the
** cpuid choice) runs under pthread_once, so any thread may call first.
**
** ---- The folding math (all in GF(2)[x]) ----
**
** P(x) = x^64 + x^4 + x^3 + x + 1. Bits are reflected: in a 64-bit word bit
** i is the coefficient of x^(63-i); a 16-byte block loaded little-endian
** into an __m128i has bit j = coefficient of x^(127-j). Feeding a message M
** of L bits into register state r gives the state (r*x^L + M*x^64) mod P,
** and since the state lines up with the first 64 message bits, that is the
** same as xoring r into the first 8 bytes and computing M'*x^64 mod P.
**
**  fold    A block A = H*x^64 + Lo (H = low qword, the first 8 bytes) that
**          lies D bits before block B may be replaced by a 128-bit V with
**          V == A*x^D (mod P), xored into B:
**            V = clmul(H, k(D+63)) ^ clmul(Lo, k(D-1)),  k(e) = x^e mod P.
**          The "-1" is because a carry-less product of two reflected 64-bit
**          values is a 127-bit value one position short of the 128-bit
**          layout: product bit m is the coefficient of x^(126-m).
**  reduce  The last block A (nothing after it) must become A*x^64 mod P:
**            T = clmul(H, k(127)) ^ (Lo moved to the low qword)  == A*x^64
**          then Barrett on T = T1*x^64 + T0 (T1 = low qword):
**            q = floor(T/P) = T1 ^ floor(T1*mu'/x^64)
**                           = t1 ^ (low64(clmul(t1, mu')) << 1)
**            R = T0 ^ (q*P' mod x^64) = t0 ^ q ^ q>>1 ^ q>>3 ^ q>>4
**          with mu = floor(x^128 / P) = x^64 + mu' and P' = x^4+x^3+x+1
**          (multiplying by x^k mod x^64 is a right shift by k when
**          reflected).
**
** The constants are computed once by crc_init() from these definitions
** (x^e mod P is e steps of the CRC's own shift-and-xor; mu by long
** division), not pasted in: the derivation is the code. For D = 1024 (the
** 8-lane loop) they come out as k(1087) = 0x..., and tests/check_ltx_crc.c
** checks every length 0..1024 and large buffers against a bitwise
** reference, which any wrong constant fails.
*/
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include "ltx/ltx.h"

#include <pthread.h>
#include <string.h>

#if defined(HAVE_PCLMUL) && defined(__x86_64__) && defined(__GNUC__)
#define CRC_HAVE_FOLD 1
#include <immintrin.h>
/* VPCLMULQDQ on zmm registers: compilers from 2018 on know the target. */
#if (defined(__clang__) && __clang_major__ >= 8) || (!defined(__clang__) && __GNUC__ >= 8)
#define CRC_HAVE_FOLD512 1
#endif
#endif

#define CRC64_ISO_REFLECTED 0xD800000000000000ull

static uint64_t crc_tab[8][256];     /* slicing-by-8 tables */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* ---- portable: slicing-by-8 ---- */

/* Little-endian 64-bit load that compiles to one mov on x86 and stays
** correct on big-endian CPUs. */
static inline uint64_t load_le64(const uint8_t *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
         (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
         (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* Raw register update: no init/final inversion. */
static uint64_t crc_slice8(uint64_t crc, const uint8_t *p, size_t n) {
  while (n && ((uintptr_t)p & 7)) {
    crc = crc_tab[0][(uint8_t)(crc ^ *p++)] ^ (crc >> 8);
    n--;
  }
  while (n >= 8) {
    crc ^= load_le64(p);
    crc = crc_tab[7][crc & 0xff] ^ crc_tab[6][(crc >> 8) & 0xff] ^
          crc_tab[5][(crc >> 16) & 0xff] ^ crc_tab[4][(crc >> 24) & 0xff] ^
          crc_tab[3][(crc >> 32) & 0xff] ^ crc_tab[2][(crc >> 40) & 0xff] ^
          crc_tab[1][(crc >> 48) & 0xff] ^ crc_tab[0][crc >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = crc_tab[0][(uint8_t)(crc ^ *p++)] ^ (crc >> 8);
  return crc;
}

/* ---- fast: PCLMULQDQ folding ---- */

#ifdef CRC_HAVE_FOLD

/* Per fold distance, the pair { k(D+63) for the low qword, k(D-1) for the
** high qword }, laid out so one _mm_load_si128 gives the multiplier. */
typedef struct { uint64_t lo, hi; } crc_kpair;

static struct {
  crc_kpair fold8;        /* D = 8*128: the 128-byte main loop */
  crc_kpair lane[7];      /* lane i of 8 folded onto lane 7: D = (7-i)*128 */
  crc_kpair fold1;        /* D = 128: single-lane loop */
  crc_kpair fold2048;     /* zmm path: 4 zmm = 256-byte main loop */
  crc_kpair fold512;      /* zmm path: one zmm (64 bytes) */
  crc_kpair fold1536, fold1024;  /* zmm path: collapsing 4 zmm onto one */
  uint64_t k127;          /* x^127 mod P: the final 128 -> 64 fold */
  uint64_t mu;            /* floor(x^128/P) without its x^64 term */
} crc_k;

static int crc_use_fold;     /* PCLMULQDQ + SSE4.1 */
#ifdef CRC_HAVE_FOLD512
static int crc_use_fold512;  /* VPCLMULQDQ + AVX-512F as well */
#endif

/* x^e mod P in the reflected layout: e shifts of the CRC register. */
static uint64_t xpow_mod(unsigned e) {
  uint64_t v = 1ull << 63;  /* x^0 */
  while (e--) v = (v & 1) ? (v >> 1) ^ CRC64_ISO_REFLECTED : v >> 1;
  return v;
}

/* floor(x^128 / P) minus x^64, reflected. Long division in the normal
** (unreflected) layout, 192 bits wide, then a bit reversal. */
static uint64_t barrett_mu(void) {
  uint64_t r[3] = {0, 0, 1};   /* r[2] bit 0 = x^128 */
  uint64_t q = 0;              /* quotient bits x^0..x^63 (x^64 implied) */
  const uint64_t pnorm = 0x1Bull;  /* P' = x^4+x^3+x+1, normal layout */
  for (int d = 128; d >= 64; d--) {
    if (!((r[d / 64] >> (d % 64)) & 1)) continue;
    int s = d - 64;            /* subtract P * x^s */
    if (s < 64) q |= 1ull << s;
    r[d / 64] ^= 1ull << (d % 64);                /* the x^64 * x^s term */
    r[s / 64] ^= pnorm << (s % 64);               /* P' * x^s */
    if (s % 64 > 59) r[s / 64 + 1] ^= pnorm >> (64 - s % 64);
  }
  uint64_t rev = 0;
  for (int i = 0; i < 64; i++) rev |= ((q >> i) & 1) << (63 - i);
  return rev;
}

static crc_kpair kpair(unsigned dbits) {
  crc_kpair k = {xpow_mod(dbits + 63), xpow_mod(dbits - 1)};
  return k;
}

__attribute__((target("pclmul,sse4.1")))
static inline __m128i fold(__m128i a, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00), _mm_clmulepi64_si128(a, k, 0x11));
}

__attribute__((target("pclmul,sse4.1")))
static inline __m128i kload(const crc_kpair *k) {
  return _mm_set_epi64x((long long)k->hi, (long long)k->lo);
}

__attribute__((target("pclmul,sse4.1")))
static uint64_t crc_fold_tail(__m128i x0, const uint8_t *p, size_t n);

/* Raw register update over n >= 16 bytes; the < 16 byte tail goes through
** the tables. */
__attribute__((target("pclmul,sse4.1")))
static uint64_t crc_fold(uint64_t crc, const uint8_t *p, size_t n) {
  __m128i x0 = _mm_loadu_si128((const __m128i *)p);
  x0 = _mm_xor_si128(x0, _mm_cvtsi64_si128((long long)crc));
  p += 16;
  n -= 16;

  if (n >= 112) {
    /* 8 lanes: x0..x7 hold consecutive 16-byte blocks of a 128-byte window;
    ** each pass folds the window onto the next 128 bytes. Eight independent
    ** multiply chains hide the clmul latency. */
    __m128i x1 = _mm_loadu_si128((const __m128i *)(p + 0));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(p + 48));
    __m128i x5 = _mm_loadu_si128((const __m128i *)(p + 64));
    __m128i x6 = _mm_loadu_si128((const __m128i *)(p + 80));
    __m128i x7 = _mm_loadu_si128((const __m128i *)(p + 96));
    p += 112;
    n -= 112;
    const __m128i k8 = kload(&crc_k.fold8);
    while (n >= 128) {
      x0 = _mm_xor_si128(fold(x0, k8), _mm_loadu_si128((const __m128i *)(p + 0)));
      x1 = _mm_xor_si128(fold(x1, k8), _mm_loadu_si128((const __m128i *)(p + 16)));
      x2 = _mm_xor_si128(fold(x2, k8), _mm_loadu_si128((const __m128i *)(p + 32)));
      x3 = _mm_xor_si128(fold(x3, k8), _mm_loadu_si128((const __m128i *)(p + 48)));
      x4 = _mm_xor_si128(fold(x4, k8), _mm_loadu_si128((const __m128i *)(p + 64)));
      x5 = _mm_xor_si128(fold(x5, k8), _mm_loadu_si128((const __m128i *)(p + 80)));
      x6 = _mm_xor_si128(fold(x6, k8), _mm_loadu_si128((const __m128i *)(p + 96)));
      x7 = _mm_xor_si128(fold(x7, k8), _mm_loadu_si128((const __m128i *)(p + 112)));
      p += 128;
      n -= 128;
    }
    /* Collapse onto lane 7, each lane by its own distance, in parallel. */
    __m128i acc = _mm_xor_si128(x7, fold(x0, kload(&crc_k.lane[0])));
    acc = _mm_xor_si128(acc, fold(x1, kload(&crc_k.lane[1])));
    acc = _mm_xor_si128(acc, fold(x2, kload(&crc_k.lane[2])));
    acc = _mm_xor_si128(acc, fold(x3, kload(&crc_k.lane[3])));
    acc = _mm_xor_si128(acc, fold(x4, kload(&crc_k.lane[4])));
    acc = _mm_xor_si128(acc, fold(x5, kload(&crc_k.lane[5])));
    x0 = _mm_xor_si128(acc, fold(x6, kload(&crc_k.lane[6])));
  }

  return crc_fold_tail(x0, p, n);
}

/* Single-lane folding of the remaining whole blocks into x0, the 128 -> 64
** reduction, and the < 16 byte tail by table. */
__attribute__((target("pclmul,sse4.1")))
static uint64_t crc_fold_tail(__m128i x0, const uint8_t *p, size_t n) {
  const __m128i k1 = kload(&crc_k.fold1);
  uint64_t crc;
  while (n >= 16) {
    x0 = _mm_xor_si128(fold(x0, k1), _mm_loadu_si128((const __m128i *)p));
    p += 16;
    n -= 16;
  }

  /* 128 -> 64 bits: T = H*x^128 + Lo*x^64 == A*x^64, then Barrett. */
  __m128i t = _mm_xor_si128(_mm_clmulepi64_si128(x0, _mm_cvtsi64_si128((long long)crc_k.k127), 0x00),
                            _mm_srli_si128(x0, 8));
  uint64_t t1 = (uint64_t)_mm_cvtsi128_si64(t);
  uint64_t t0 = (uint64_t)_mm_extract_epi64(t, 1);
  __m128i m = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)t1),
                                   _mm_cvtsi64_si128((long long)crc_k.mu), 0x00);
  uint64_t q = t1 ^ ((uint64_t)_mm_cvtsi128_si64(m) << 1);
  crc = t0 ^ q ^ (q >> 1) ^ (q >> 3) ^ (q >> 4);

  return n ? crc_slice8(crc, p, n) : crc;
}

#ifdef CRC_HAVE_FOLD512

/* The same folding four 128-bit blocks per zmm register, four registers
** (256 bytes) per iteration: a quarter of the instructions per byte. A zmm
** is a row of four lanes, so the zmm fold distances are 4x the xmm ones. */
#define CRC_TARGET512 __attribute__((target("pclmul,sse4.1,avx2,avx512f,vpclmulqdq")))

CRC_TARGET512
static inline __m512i fold512(__m512i a, __m512i k, __m512i data) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, k, 0x00),
                                   _mm512_clmulepi64_epi128(a, k, 0x11), data, 0x96);
}

CRC_TARGET512
static inline __m512i kload512(const crc_kpair *k) {
  return _mm512_set_epi64((long long)k->hi, (long long)k->lo, (long long)k->hi,
                          (long long)k->lo, (long long)k->hi, (long long)k->lo,
                          (long long)k->hi, (long long)k->lo);
}

/* Raw register update over n >= 256 bytes. */
CRC_TARGET512
static uint64_t crc_fold512(uint64_t crc, const uint8_t *p, size_t n) {
  __m512i z0 = _mm512_loadu_si512((const void *)(p + 0));
  __m512i z1 = _mm512_loadu_si512((const void *)(p + 64));
  __m512i z2 = _mm512_loadu_si512((const void *)(p + 128));
  __m512i z3 = _mm512_loadu_si512((const void *)(p + 192));
  z0 = _mm512_xor_si512(z0, _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, (long long)crc));
  p += 256;
  n -= 256;
  const __m512i k4 = kload512(&crc_k.fold2048);
  while (n >= 256) {
    z0 = fold512(z0, k4, _mm512_loadu_si512((const void *)(p + 0)));
    z1 = fold512(z1, k4, _mm512_loadu_si512((const void *)(p + 64)));
    z2 = fold512(z2, k4, _mm512_loadu_si512((const void *)(p + 128)));
    z3 = fold512(z3, k4, _mm512_loadu_si512((const void *)(p + 192)));
    p += 256;
    n -= 256;
  }
  z3 = fold512(z0, kload512(&crc_k.fold1536), z3);
  z3 = fold512(z1, kload512(&crc_k.fold1024), z3);
  z3 = fold512(z2, kload512(&crc_k.fold512), z3);
  const __m512i k1 = kload512(&crc_k.fold512);
  while (n >= 64) {
    z3 = fold512(z3, k1, _mm512_loadu_si512((const void *)p));
    p += 64;
    n -= 64;
  }
  /* Four lanes onto the last, as the 8-lane path does with its lanes 4-7. */
  __m128i x = _mm512_extracti32x4_epi32(z3, 3);
  x = _mm_xor_si128(x, fold(_mm512_extracti32x4_epi32(z3, 0), kload(&crc_k.lane[4])));
  x = _mm_xor_si128(x, fold(_mm512_extracti32x4_epi32(z3, 1), kload(&crc_k.lane[5])));
  x = _mm_xor_si128(x, fold(_mm512_extracti32x4_epi32(z3, 2), kload(&crc_k.lane[6])));
  return crc_fold_tail(x, p, n);
}

#endif /* CRC_HAVE_FOLD512 */

#endif /* CRC_HAVE_FOLD */

/* ---- setup and entry points ---- */

static int crc_best;  /* the fastest implementation this CPU runs: 0, 1, 2 */

static void crc_init(void) {
  for (int i = 0; i < 256; i++) {
    uint64_t c = (uint64_t)i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ CRC64_ISO_REFLECTED : c >> 1;
    crc_tab[0][i] = c;
  }
  for (int i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
#ifdef CRC_HAVE_FOLD
  crc_k.fold8 = kpair(8 * 128);
  for (unsigned i = 0; i < 7; i++) crc_k.lane[i] = kpair((7 - i) * 128);
  crc_k.fold1 = kpair(128);
  crc_k.k127 = xpow_mod(127);
  crc_k.mu = barrett_mu();
  crc_k.fold2048 = kpair(2048);
  crc_k.fold1536 = kpair(1536);
  crc_k.fold1024 = kpair(1024);
  crc_k.fold512 = kpair(512);
  __builtin_cpu_init();
  if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1")) {
    crc_best = 1;
#ifdef CRC_HAVE_FOLD512
    /* libgcc's avx512f test includes the OS saving zmm state (XCR0). */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq"))
      crc_best = 2;
#endif
  }
#endif
}

/* Below this many bytes the fold setup and reduction cost more than the
** tables (measured: at 64 bytes folding is already ~1.5x faster). */
#define CRC_FOLD_MIN 64
#define CRC_FOLD512_MIN 256   /* crc_fold512 needs one whole 4-zmm window */

/* Raw register update with implementation impl or, below its minimum
** length, the next one down. forced lowers the xmm threshold to its hard
** minimum so tests reach that code with short inputs too. */
static uint64_t crc_raw(int impl, int forced, uint64_t reg, const uint8_t *p, size_t n) {
#ifdef CRC_HAVE_FOLD512
  if (impl >= 2 && n >= CRC_FOLD512_MIN) return crc_fold512(reg, p, n);
#endif
#ifdef CRC_HAVE_FOLD
  if (impl >= 1 && n >= (forced ? 16 : CRC_FOLD_MIN)) return crc_fold(reg, p, n);
#endif
  (void)impl;
  (void)forced;
  return crc_slice8(reg, p, n);
}

uint64_t ltx_crc64(uint64_t crc, const void *buf, size_t n) {
  pthread_once(&crc_once, crc_init);
  return ~crc_raw(crc_best, 0, ~crc, buf, n);
}

const char *ltx_crc64_impl_name(int impl) {
  static const char *const names[] = {"slice8", "pclmul", "vpclmul-avx512"};
  pthread_once(&crc_once, crc_init);
  return impl >= 0 && impl <= crc_best ? names[impl] : NULL;
}

uint64_t ltx_crc64_impl(int impl, uint64_t crc, const void *buf, size_t n) {
  pthread_once(&crc_once, crc_init);
  if (impl > crc_best) impl = crc_best;
  return ~crc_raw(impl, 1, ~crc, buf, n);
}

uint64_t ltx_page_checksum(uint32_t pgno, const uint8_t *page, uint32_t page_size) {
  uint8_t be[4] = {(uint8_t)(pgno >> 24), (uint8_t)(pgno >> 16), (uint8_t)(pgno >> 8),
                   (uint8_t)pgno};
  return LTX_CHECKSUM_FLAG | ltx_crc64(ltx_crc64(0, be, 4), page, page_size);
}
