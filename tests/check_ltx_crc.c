/*
** check_ltx_crc.c: CRC-64/GO-ISO (ltx/crc64.c) against a bitwise reference.
**
** ltx_crc64 has up to four implementations (slicing-by-8 tables, PCLMULQDQ
** folding, VPCLMULQDQ folding on ymm and on zmm registers) chosen from cpuid
** and input length.
** Every test that compares values runs each implementation this build and
** CPU have (ltx_crc64_impl), plus the dispatching ltx_crc64 itself, so a
** wrong fold constant or an off-by-one in a tail shows up as a mismatch with
** the one-bit-at-a-time reference below, which follows docs/ltx-format.md literally.
**
** ltx_crc_tcase() is added to the ltx suite by tests/check_ltx.c.
*/
#include "config.h"

#include "ltx/ltx.h"

#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define N_IMPL 4

/* Reflected, poly 0xD800000000000000, init and final xor ~0: one bit at a
** time, no tables, nothing shared with the code under test. */
static uint64_t ref_crc64(uint64_t crc, const uint8_t *p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ 0xD800000000000000ull : crc >> 1;
  }
  return ~crc;
}

/* Deterministic filler so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static void fill_random(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(rng() >> 32);
}

/* Checks every available implementation and the dispatcher on one input. */
static void check_all_impls(uint64_t seed, const uint8_t *p, size_t n, const char *what) {
  uint64_t want = ref_crc64(seed, p, n);
  uint64_t got = ltx_crc64(seed, p, n);
  ck_assert_msg(got == want, "%s: ltx_crc64 len %zu align %u: %016llx, want %016llx", what, n,
                (unsigned)((uintptr_t)p & 63), (unsigned long long)got, (unsigned long long)want);
  for (int impl = 0; impl < N_IMPL; impl++) {
    if (!ltx_crc64_impl_name(impl)) continue;
    got = ltx_crc64_impl(impl, seed, p, n);
    ck_assert_msg(got == want, "%s: impl %s len %zu align %u: %016llx, want %016llx", what,
                  ltx_crc64_impl_name(impl), n, (unsigned)((uintptr_t)p & 63),
                  (unsigned long long)got, (unsigned long long)want);
  }
}

START_TEST(test_crc_check_value) {
  const char *s = "123456789";
  ck_assert_uint_eq(ltx_crc64(0, s, 9), 0xB90956C775A41001ull);
  ck_assert_uint_eq(ref_crc64(0, (const uint8_t *)s, 9), 0xB90956C775A41001ull);
  for (int impl = 0; impl < N_IMPL; impl++)
    if (ltx_crc64_impl_name(impl))
      ck_assert_uint_eq(ltx_crc64_impl(impl, 0, s, 9), 0xB90956C775A41001ull);
}
END_TEST

START_TEST(test_crc_empty_input_is_identity) {
  uint8_t b[1] = {0xAA};
  ck_assert_uint_eq(ltx_crc64(0, b, 0), 0);
  ck_assert_uint_eq(ltx_crc64(0, NULL, 0), 0);
  ck_assert_uint_eq(ltx_crc64(0x0123456789ABCDEFull, b, 0), 0x0123456789ABCDEFull);
  for (int impl = 0; impl < N_IMPL; impl++)
    if (ltx_crc64_impl_name(impl))
      ck_assert_uint_eq(ltx_crc64_impl(impl, 0xFEDCBA9876543210ull, NULL, 0),
                        0xFEDCBA9876543210ull);
}
END_TEST

START_TEST(test_crc_impl_names) {
  /* The portable path always exists; the others are reported honestly. */
  ck_assert_str_eq(ltx_crc64_impl_name(0), "slice8");
  ck_assert_ptr_null(ltx_crc64_impl_name(-1));
  ck_assert_ptr_null(ltx_crc64_impl_name(N_IMPL));
  for (int impl = 1; impl < N_IMPL; impl++)  /* available ones form a prefix */
    if (ltx_crc64_impl_name(impl)) ck_assert_ptr_nonnull(ltx_crc64_impl_name(impl - 1));
#if defined(HAVE_PCLMUL) && defined(__x86_64__)
  /* Unless LTVFS_CRC64_IMPL caps the choice, a CPU with PCLMULQDQ uses it. */
  if (!getenv("LTVFS_CRC64_IMPL") && __builtin_cpu_supports("pclmul") &&
      __builtin_cpu_supports("sse4.1"))
    ck_assert_str_eq(ltx_crc64_impl_name(1), "pclmul");
#endif
}
END_TEST

/* Every length 0..1024 at every alignment 0..15 plus a random one, with a
** random running CRC: covers each implementation's thresholds (16, 128,
** 256), each loop's exits and every tail length. */
START_TEST(test_crc_every_length_and_alignment) {
  enum { MAXLEN = 1024 };
  uint8_t *buf = malloc(MAXLEN + 128);
  ck_assert_ptr_nonnull(buf);
  fill_random(buf, MAXLEN + 128);
  for (size_t n = 0; n <= MAXLEN; n++) {
    size_t off = n % 16;
    check_all_impls(rng(), buf + off, n, "len/align");
    check_all_impls(0, buf + 16 + rng() % 64, n, "random offset");
  }
  free(buf);
}
END_TEST

START_TEST(test_crc_large_buffers) {
  static const size_t lens[] = {(1u << 20) + 1, (1u << 20) + 7, (3u << 20) + 13, (1u << 20) + 255};
  size_t maxlen = (3u << 20) + 64;
  uint8_t *buf = malloc(maxlen + 64);
  ck_assert_ptr_nonnull(buf);
  fill_random(buf, maxlen + 64);
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
    check_all_impls(rng(), buf + i * 3, lens[i], "large");
  /* Long runs of one byte are the pages LZ4 loves; still the same CRC. */
  memset(buf, 0, maxlen);
  check_all_impls(0, buf + 5, (2u << 20) + 3, "large zeros");
  free(buf);
}
END_TEST

/* crc(crc(0, a), b) == crc(0, a || b) at every split of 300 bytes, for each
** implementation on both halves, and in three pieces of a larger buffer. */
START_TEST(test_crc_incremental_equals_one_shot) {
  uint8_t buf[300];
  fill_random(buf, sizeof buf);
  uint64_t whole = ref_crc64(0, buf, sizeof buf);
  for (size_t cut = 0; cut <= sizeof buf; cut++) {
    uint64_t c = ltx_crc64(ltx_crc64(0, buf, cut), buf + cut, sizeof buf - cut);
    ck_assert_msg(c == whole, "split at %zu: %016llx, want %016llx", cut, (unsigned long long)c,
                  (unsigned long long)whole);
    for (int impl = 0; impl < N_IMPL; impl++) {
      if (!ltx_crc64_impl_name(impl)) continue;
      c = ltx_crc64_impl(impl, ltx_crc64_impl(impl, 0, buf, cut), buf + cut, sizeof buf - cut);
      ck_assert_msg(c == whole, "impl %s split at %zu", ltx_crc64_impl_name(impl), cut);
    }
  }

  enum { BIG = 100003 };
  uint8_t *big = malloc(BIG);
  ck_assert_ptr_nonnull(big);
  fill_random(big, BIG);
  whole = ltx_crc64(0, big, BIG);
  ck_assert_uint_eq(whole, ref_crc64(0, big, BIG));
  for (int i = 0; i < 50; i++) {
    size_t a = rng() % BIG, b = rng() % BIG;
    if (a > b) { size_t t = a; a = b; b = t; }
    uint64_t c = ltx_crc64(ltx_crc64(ltx_crc64(0, big, a), big + a, b - a), big + b, BIG - b);
    ck_assert_msg(c == whole, "three pieces at %zu, %zu", a, b);
  }
  free(big);
}
END_TEST

/* The portable fallback and the fast paths agree with each other (not only
** with the reference) on page-shaped inputs. */
START_TEST(test_crc_fallback_equals_fast_path) {
  static const size_t lens[] = {4096, 4096 + 6, 512, 1024, 8192, 65536, 65536 + 10, 100, 17, 63};
  uint8_t *buf = malloc(65536 + 128);
  ck_assert_ptr_nonnull(buf);
  for (int round = 0; round < 20; round++) {
    fill_random(buf, 65536 + 128);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
      const uint8_t *p = buf + (rng() % 64);
      uint64_t seed = rng();
      uint64_t portable = ltx_crc64_impl(0, seed, p, lens[i]);
      ck_assert_uint_eq(ltx_crc64(seed, p, lens[i]), portable);
      for (int impl = 1; impl < N_IMPL; impl++)
        if (ltx_crc64_impl_name(impl))
          ck_assert_uint_eq(ltx_crc64_impl(impl, seed, p, lens[i]), portable);
    }
  }
  free(buf);
}
END_TEST

START_TEST(test_crc_page_checksum_vector) {
  uint8_t page[512];
  memset(page, '1', sizeof page);
  ck_assert_uint_eq(ltx_page_checksum(1, page, sizeof page), 0xeb1a999231044dddull);
  /* Same thing spelled out: FLAG | crc(BE32(pgno) || page). */
  uint8_t be[4] = {0, 0, 0, 1};
  ck_assert_uint_eq(LTX_CHECKSUM_FLAG | ref_crc64(ref_crc64(0, be, 4), page, sizeof page),
                    0xeb1a999231044dddull);
}
END_TEST

/* The database checksum vector of docs/ltx-format.md: 4 KiB pages of 'x', commit 262155, the
** lock page (262145) skipped. 1 GiB of CRC: also a throughput smoke test. */
START_TEST(test_crc_db_checksum_vector) {
  uint8_t *page = malloc(4096);
  ck_assert_ptr_nonnull(page);
  memset(page, 'x', 4096);
  uint64_t db = 0; /* the format starts from 0; the first fold sets the flag */
  ck_assert_uint_eq(ltx_lock_pgno(4096), 262145);
  for (uint32_t pgno = 1; pgno <= 262155; pgno++) {
    if (pgno == ltx_lock_pgno(4096)) continue;
    db = ltx_db_checksum_fold(db, ltx_page_checksum(pgno, page, 4096));
  }
  ck_assert_uint_eq(db, 0xc19b668c376662c7ull);
  free(page);
}
END_TEST

/* The one-time setup under pthread_once: many threads making the first
** call at once all get right answers. (First in this process when Check
** forks per test, the default.) */
struct crc_thread_arg {
  const uint8_t *buf;
  size_t n;
  uint64_t got;
};
static void *crc_thread(void *arg) {
  struct crc_thread_arg *a = arg;
  a->got = ltx_crc64(0, a->buf, a->n);
  return NULL;
}
START_TEST(test_crc_concurrent_first_use) {
  enum { NT = 8 };
  static uint8_t buf[8192];
  fill_random(buf, sizeof buf);
  pthread_t th[NT];
  struct crc_thread_arg args[NT];
  for (int i = 0; i < NT; i++) {
    args[i].buf = buf + i;
    args[i].n = sizeof buf - 8 - (size_t)i * 97;
    ck_assert_int_eq(pthread_create(&th[i], NULL, crc_thread, &args[i]), 0);
  }
  for (int i = 0; i < NT; i++) {
    ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_uint_eq(args[i].got, ref_crc64(0, args[i].buf, args[i].n));
  }
}
END_TEST

TCase *ltx_crc_tcase(void) {
  TCase *tc = tcase_create("crc64");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_crc_check_value);
  tcase_add_test(tc, test_crc_empty_input_is_identity);
  tcase_add_test(tc, test_crc_impl_names);
  tcase_add_test(tc, test_crc_every_length_and_alignment);
  tcase_add_test(tc, test_crc_large_buffers);
  tcase_add_test(tc, test_crc_incremental_equals_one_shot);
  tcase_add_test(tc, test_crc_fallback_equals_fast_path);
  tcase_add_test(tc, test_crc_page_checksum_vector);
  tcase_add_test(tc, test_crc_db_checksum_vector);
  tcase_add_test(tc, test_crc_concurrent_first_use);
  return tc;
}
