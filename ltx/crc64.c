/*
** crc64.c: CRC-64/GO-ISO (docs/ltx-format.md, "Checksums"), Go's hash/crc64 with the ISO
** table: reflected, reversed polynomial 0xD800000000000000, init and final
** xor ~0. ltx_crc64(0, "123456789", 9) == 0xB90956C775A41001.
**
** The file checksum covers every decompressed page byte, so this CRC runs
** beside LZ4 on the decode path and must be several times faster than LZ4
** decompression for verification to cost little. Four implementations,
** chosen once from cpuid (ltx_crc64_impl forces one, for tests and benches);
** GB/s on EPYC Zen 4 for a 4 KiB page in L1 / 64 MiB from memory:
**
**   0 slice8          slicing-by-8, 8 tables x 256 (16 KiB), as Go's own
**                     crc64. Every CPU; inputs < 16 bytes (frame headers);
**                     the < 16 byte tails of the others.           2 / 2
**   1 pclmul          x86-64 PCLMULQDQ + SSE4.1: carry-less-multiply folding
**                     of 8 x 128-bit lanes (128 bytes per iteration), lanes
**                     collapsed, single-lane folding, Barrett.     14 / 14
**   2 vpclmul-avx2    the same folding on ymm registers (2 lanes each),
**                     4 ymm = 128 bytes per iteration; >= 128 bytes
**                     (Zen 3, Ice Lake and later).                 28 / 25
**   3 vpclmul-avx512  zmm registers (4 lanes each), 4 zmm = 256 bytes per
**                     iteration; >= 256 bytes.                     53 / 29
**
** The fast paths need HAVE_PCLMUL (configure: the compiler accepts
** target("pclmul")) and x86-64; 2 and 3 also a compiler that knows
** vpclmulqdq (GCC/clang >= 8). The environment variable LTVFS_CRC64_IMPL=N
** caps the choice at N, to measure the slower paths on a fast machine. All
** setup (tables, fold constants, the cpuid choice) runs under pthread_once,
** so any thread may call first; everything is read-only afterwards.
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
** crc_init() computes the constants from these definitions (x^e mod P is e
** steps of the CRC's own shift-and-xor; mu by long division) rather than
** pasting them in. An independent generator (128-bit normal-layout
** arithmetic, bit-reversed) gave the same values:
**   D = 128  (one lane)           k(191)  = 0x6b70000000000001
**                                 k(127)  = 0xf500000000000001
**   D = 1024 (8 xmm, 4 ymm loop)  k(1087) = 0xf501b0000001b000
**                                 k(1023) = 0xb001000000010000
**   D = 2048 (4 zmm loop)         k(2111) = 0x6b700000f5000000
**                                 k(2047) = 0x45000000b0000000
**   mu' = 0xd800000000000000 (= P' itself: P is so sparse that
**         floor(x^128/P) = x^64 + P')
** and tests/check_ltx_crc.c compares every implementation with a bitwise
** reference on every length 0..1024 and on large buffers, which any wrong
** constant fails.
*/
#include "config.h"

#include "ltx/ltx.h"

#include <pthread.h>
#include <stdlib.h>

#if defined(HAVE_PCLMUL) && defined(__x86_64__) && defined(__GNUC__)
#define CRC_HAVE_FOLD 1
#include <immintrin.h>
/* VPCLMULQDQ on ymm/zmm registers: compilers from 2018 on know the target. */
#if (defined(__clang__) && __clang_major__ >= 8) || (!defined(__clang__) && __GNUC__ >= 8)
#define CRC_HAVE_VFOLD 1
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

/* Raw register update: no init/final inversion. No alignment prologue:
** load_le64 is alignment-free, and the inputs that land here are mostly the
** 6- and 10-byte frame headers, where one would cost more than it saves. */
static uint64_t crc_slice8(uint64_t crc, const uint8_t *p, size_t n) {
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
** high qword }. */
typedef struct { uint64_t lo, hi; } crc_kpair;

/* Fold distances are whole 16-byte blocks: by[b] folds by b blocks
** (D = 128*b bits). Used: 1 (single lane), 1..7 (collapsing 8 xmm lanes),
** 8 (xmm loop: 8 lanes = 128 bytes), 2/4/6 (collapsing ymm), 8 (ymm loop:
** 4 ymm = 128 bytes), 4/8/12 (collapsing zmm), 16 (zmm loop: 256 bytes). */
#define CRC_MAX_BLOCKS 16
static struct {
  crc_kpair by[CRC_MAX_BLOCKS + 1];
  uint64_t k127;          /* x^127 mod P: the final 128 -> 64 fold */
  uint64_t mu;            /* floor(x^128/P) without its x^64 term */
} crc_k;

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
static inline __m128i kload(unsigned blocks) {
  return _mm_set_epi64x((long long)crc_k.by[blocks].hi, (long long)crc_k.by[blocks].lo);
}

/* Single-lane folding of the remaining whole blocks into x0, the 128 -> 64
** reduction, and the < 16 byte tail by table. Shared by all fold paths. */
__attribute__((target("pclmul,sse4.1")))
static uint64_t crc_fold_tail(__m128i x0, const uint8_t *p, size_t n) {
  const __m128i k1 = kload(1);
  while (n >= 16) {
    x0 = _mm_xor_si128(fold(x0, k1), _mm_loadu_si128((const __m128i *)p));
    p += 16;
    n -= 16;
  }

  /* T = H*x^128 + Lo*x^64 == A*x^64, then Barrett (see the top). */
  __m128i t = _mm_xor_si128(
      _mm_clmulepi64_si128(x0, _mm_cvtsi64_si128((long long)crc_k.k127), 0x00),
      _mm_srli_si128(x0, 8));
  uint64_t t1 = (uint64_t)_mm_cvtsi128_si64(t);
  uint64_t t0 = (uint64_t)_mm_extract_epi64(t, 1);
  __m128i m = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)t1),
                                   _mm_cvtsi64_si128((long long)crc_k.mu), 0x00);
  uint64_t q = t1 ^ ((uint64_t)_mm_cvtsi128_si64(m) << 1);
  uint64_t crc = t0 ^ q ^ (q >> 1) ^ (q >> 3) ^ (q >> 4);

  return n ? crc_slice8(crc, p, n) : crc;
}

/* Raw register update over n >= 16 bytes. */
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
    const __m128i k8 = kload(8);
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
    __m128i acc = _mm_xor_si128(x7, fold(x0, kload(7)));
    acc = _mm_xor_si128(acc, fold(x1, kload(6)));
    acc = _mm_xor_si128(acc, fold(x2, kload(5)));
    acc = _mm_xor_si128(acc, fold(x3, kload(4)));
    acc = _mm_xor_si128(acc, fold(x4, kload(3)));
    acc = _mm_xor_si128(acc, fold(x5, kload(2)));
    x0 = _mm_xor_si128(acc, fold(x6, kload(1)));
  }
  return crc_fold_tail(x0, p, n);
}

#ifdef CRC_HAVE_VFOLD

/* The same folding on ymm registers (2 lanes each, AVX2 + VPCLMULQDQ: Zen 3,
** Ice Lake and later) and zmm registers (4 lanes each, AVX-512F as well).
** A register is a row of lanes, so its fold distances are in whole rows. */
#define CRC_TARGET256 __attribute__((target("pclmul,sse4.1,avx2,vpclmulqdq")))
#define CRC_TARGET512 __attribute__((target("pclmul,sse4.1,avx2,avx512f,vpclmulqdq")))

CRC_TARGET256
static inline __m256i fold256(__m256i a, __m256i k, __m256i data) {
  return _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(a, k, 0x00),
                                           _mm256_clmulepi64_epi128(a, k, 0x11)),
                          data);
}

CRC_TARGET256
static inline __m256i kload256(unsigned blocks) {
  const crc_kpair *k = &crc_k.by[blocks];
  return _mm256_set_epi64x((long long)k->hi, (long long)k->lo, (long long)k->hi,
                           (long long)k->lo);
}

/* Raw register update over n >= 128 bytes: 4 ymm = 128 bytes per pass. */
CRC_TARGET256
static uint64_t crc_fold256(uint64_t crc, const uint8_t *p, size_t n) {
  __m256i y0 = _mm256_loadu_si256((const __m256i *)(p + 0));
  __m256i y1 = _mm256_loadu_si256((const __m256i *)(p + 32));
  __m256i y2 = _mm256_loadu_si256((const __m256i *)(p + 64));
  __m256i y3 = _mm256_loadu_si256((const __m256i *)(p + 96));
  y0 = _mm256_xor_si256(y0, _mm256_set_epi64x(0, 0, 0, (long long)crc));
  p += 128;
  n -= 128;
  const __m256i k8 = kload256(8);
  while (n >= 128) {
    y0 = fold256(y0, k8, _mm256_loadu_si256((const __m256i *)(p + 0)));
    y1 = fold256(y1, k8, _mm256_loadu_si256((const __m256i *)(p + 32)));
    y2 = fold256(y2, k8, _mm256_loadu_si256((const __m256i *)(p + 64)));
    y3 = fold256(y3, k8, _mm256_loadu_si256((const __m256i *)(p + 96)));
    p += 128;
    n -= 128;
  }
  y3 = fold256(y0, kload256(6), y3);
  y3 = fold256(y1, kload256(4), y3);
  y3 = fold256(y2, kload256(2), y3);
  const __m256i k2 = kload256(2);
  while (n >= 32) {
    y3 = fold256(y3, k2, _mm256_loadu_si256((const __m256i *)p));
    p += 32;
    n -= 32;
  }
  __m128i x = _mm_xor_si128(_mm256_extracti128_si256(y3, 1),
                            fold(_mm256_castsi256_si128(y3), kload(1)));
  _mm256_zeroupper(); /* see crc_fold512 */
  return crc_fold_tail(x, p, n);
}

CRC_TARGET512
static inline __m512i fold512(__m512i a, __m512i k, __m512i data) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(a, k, 0x00),
                                   _mm512_clmulepi64_epi128(a, k, 0x11), data, 0x96);
}

CRC_TARGET512
static inline __m512i kload512(unsigned blocks) {
  const crc_kpair *k = &crc_k.by[blocks];
  return _mm512_set_epi64((long long)k->hi, (long long)k->lo, (long long)k->hi,
                          (long long)k->lo, (long long)k->hi, (long long)k->lo,
                          (long long)k->hi, (long long)k->lo);
}

/* Raw register update over n >= 256 bytes: 4 zmm = 256 bytes per pass. */
CRC_TARGET512
static uint64_t crc_fold512(uint64_t crc, const uint8_t *p, size_t n) {
  __m512i z0 = _mm512_loadu_si512((const void *)(p + 0));
  __m512i z1 = _mm512_loadu_si512((const void *)(p + 64));
  __m512i z2 = _mm512_loadu_si512((const void *)(p + 128));
  __m512i z3 = _mm512_loadu_si512((const void *)(p + 192));
  z0 = _mm512_xor_si512(z0, _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, (long long)crc));
  p += 256;
  n -= 256;
  const __m512i k16 = kload512(16);
  while (n >= 256) {
    z0 = fold512(z0, k16, _mm512_loadu_si512((const void *)(p + 0)));
    z1 = fold512(z1, k16, _mm512_loadu_si512((const void *)(p + 64)));
    z2 = fold512(z2, k16, _mm512_loadu_si512((const void *)(p + 128)));
    z3 = fold512(z3, k16, _mm512_loadu_si512((const void *)(p + 192)));
    p += 256;
    n -= 256;
  }
  z3 = fold512(z0, kload512(12), z3);
  z3 = fold512(z1, kload512(8), z3);
  z3 = fold512(z2, kload512(4), z3);
  const __m512i k4 = kload512(4);
  while (n >= 64) {
    z3 = fold512(z3, k4, _mm512_loadu_si512((const void *)p));
    p += 64;
    n -= 64;
  }
  /* Four lanes onto the last, as the xmm path does with its lanes 4-7. */
  __m128i x = _mm512_extracti32x4_epi32(z3, 3);
  x = _mm_xor_si128(x, fold(_mm512_extracti32x4_epi32(z3, 0), kload(3)));
  x = _mm_xor_si128(x, fold(_mm512_extracti32x4_epi32(z3, 1), kload(2)));
  x = _mm_xor_si128(x, fold(_mm512_extracti32x4_epi32(z3, 2), kload(1)));
  /* GCC emits no vzeroupper for target-attribute functions, and dirty upper
  ** register halves make later legacy-SSE code (crc_fold_tail, the caller's
  ** LZ4) run slower: measured 14 -> 10.6 GB/s for the xmm path. */
  _mm256_zeroupper();
  return crc_fold_tail(x, p, n);
}

#endif /* CRC_HAVE_VFOLD */

#endif /* CRC_HAVE_FOLD */

/* ---- setup and entry points ---- */

static int crc_best;  /* the fastest implementation this CPU runs, 0..3 */

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
  for (unsigned b = 1; b <= CRC_MAX_BLOCKS; b++) crc_k.by[b] = kpair(128 * b);
  crc_k.k127 = xpow_mod(127);
  crc_k.mu = barrett_mu();
  __builtin_cpu_init();
  /* libgcc's avx2/avx512f answers include the OS saving ymm/zmm state. */
  if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1")) {
    crc_best = 1;
#ifdef CRC_HAVE_VFOLD
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq")) {
      crc_best = 2;
      if (__builtin_cpu_supports("avx512f")) crc_best = 3;
    }
#endif
  }
#endif
  /* LTVFS_CRC64_IMPL=0..3 caps the choice: to measure or rule out the fast
  ** paths on a machine that has them. */
  const char *cap = getenv("LTVFS_CRC64_IMPL");
  if (cap && cap[0] >= '0' && cap[0] <= '3' && cap[1] == 0 && cap[0] - '0' < crc_best)
    crc_best = cap[0] - '0';
}

/* Minimum lengths: one block, one 4-ymm window, one 4-zmm window. Measured
** on EPYC Zen 4, xmm folding already beats the tables at 16 bytes (2.1 vs
** 1.8 GB/s) and is 2.7x faster at 64. */
#define CRC_FOLD_MIN 16
#define CRC_FOLD256_MIN 128
#define CRC_FOLD512_MIN 256

/* Raw register update with implementation impl or, below its minimum
** length, the next one down. */
static uint64_t crc_raw(int impl, uint64_t reg, const uint8_t *p, size_t n) {
#ifdef CRC_HAVE_VFOLD
  if (impl >= 3 && n >= CRC_FOLD512_MIN) return crc_fold512(reg, p, n);
  if (impl >= 2 && n >= CRC_FOLD256_MIN) return crc_fold256(reg, p, n);
#endif
#ifdef CRC_HAVE_FOLD
  if (impl >= 1 && n >= CRC_FOLD_MIN) return crc_fold(reg, p, n);
#endif
  (void)impl;
  return crc_slice8(reg, p, n);
}

uint64_t ltx_crc64(uint64_t crc, const void *buf, size_t n) {
  pthread_once(&crc_once, crc_init);
  return ~crc_raw(crc_best, ~crc, buf, n);
}

const char *ltx_crc64_impl_name(int impl) {
  static const char *const names[] = {"slice8", "pclmul", "vpclmul-avx2", "vpclmul-avx512"};
  pthread_once(&crc_once, crc_init);
  return impl >= 0 && impl <= crc_best ? names[impl] : NULL;
}

uint64_t ltx_crc64_impl(int impl, uint64_t crc, const void *buf, size_t n) {
  pthread_once(&crc_once, crc_init);
  if (impl > crc_best) impl = crc_best;
  return ~crc_raw(impl, ~crc, buf, n);
}

uint64_t ltx_page_checksum(uint32_t pgno, const uint8_t *page, uint32_t page_size) {
  uint8_t be[4] = {(uint8_t)(pgno >> 24), (uint8_t)(pgno >> 16), (uint8_t)(pgno >> 8),
                   (uint8_t)pgno};
  return LTX_CHECKSUM_FLAG | ltx_crc64(ltx_crc64(0, be, 4), page, page_size);
}
