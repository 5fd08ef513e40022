/*
** fuzz_s3_xml.c: libFuzzer target for the S3 XML scanner (store/s3_xml.c),
** which reads bodies from a network peer that may be hostile.
**
** One input goes through all three body parsers (ListObjectsV2,
** DeleteObjects, Error) and the timestamp parser. Besides "no crash, no
** sanitizer report", two oracles abort on a logic error:
**
**   1. every key a successful list parse returns is within the text bound
**      and has no NUL inside (the scanner promises both);
**   2. escape/parse round trip: the keys and the continuation token, written
**      back with s3_xml_escape into a fresh ListBucketResult, parse to the
**      same keys, sizes and token. This ties the entity decoder to the
**      encoder the DeleteObjects request uses.
**
** Build (clang with libFuzzer, ASan, UBSan):
**   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
**     -D_GNU_SOURCE -I. store/s3_xml.c ltx/error.c tests/fuzz/fuzz_s3_xml.c -o fuzz_s3_xml
** and with tests/fuzz/replay_main.c instead of libFuzzer to replay a corpus.
*/
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *zWhy) {
  fprintf(stderr, "fuzz_s3_xml: oracle failed: %s\n", zWhy);
  abort();
}

/* Appends z to *pz (length *pn); aborts when out of memory (a fuzzer
** finding, not a silent pass). */
static void append(char **pz, size_t *pn, const char *z, size_t n) {
  char *zNew = realloc(*pz, *pn + n + 1);
  if (zNew == NULL) fail("out of memory");
  memcpy(zNew + *pn, z, n);
  *pn += n;
  zNew[*pn] = '\0';
  *pz = zNew;
}

static void append_escaped(char **pz, size_t *pn, const char *z) {
  size_t n = s3_xml_escape(z, NULL, 0);
  char *zEsc = malloc(n + 1);
  if (zEsc == NULL) fail("out of memory");
  if (s3_xml_escape(z, zEsc, n + 1) != n) fail("escape length differs between calls");
  append(pz, pn, zEsc, n);
  free(zEsc);
}

static void check_round_trip(const s3_xml_list *l) {
  char *z = NULL, zSize[96];
  size_t n = 0;
  s3_xml_list l2;
  ltx_error err;

  append(&z, &n, "<ListBucketResult>", 18);
  append(&z, &n,
         l->truncated ? "<IsTruncated>true</IsTruncated>" : "<IsTruncated>false</IsTruncated>",
         l->truncated ? 31 : 32);
  if (l->next_token != NULL) {
    append(&z, &n, "<NextContinuationToken>", 23);
    append_escaped(&z, &n, l->next_token);
    append(&z, &n, "</NextContinuationToken>", 24);
  }
  for (size_t i = 0; i < l->n; i++) {
    append(&z, &n, "<Contents><Key>", 15);
    append_escaped(&z, &n, l->items[i].key);
    snprintf(zSize, sizeof(zSize), "</Key><Size>%llu</Size></Contents>",
             (unsigned long long)l->items[i].size);
    append(&z, &n, zSize, strlen(zSize));
  }
  append(&z, &n, "</ListBucketResult>", 19);

  if (s3_xml_parse_list(z, n, &l2, &err) != LTX_OK) {
    fprintf(stderr, "re-parse: %s\n", err.msg);
    /* an escaped key can be longer than the text bound allows only if the
    ** original was; otherwise this is a real disagreement */
    fail("escaped list does not parse");
  }
  if (l2.n != l->n || l2.truncated != l->truncated) fail("round trip changed the list");
  if ((l->next_token == NULL) != (l2.next_token == NULL) ||
      (l->next_token != NULL && strcmp(l->next_token, l2.next_token) != 0)) {
    fail("round trip changed the token");
  }
  for (size_t i = 0; i < l->n; i++) {
    if (strcmp(l->items[i].key, l2.items[i].key) != 0) fail("round trip changed a key");
    if (l->items[i].size != l2.items[i].size) fail("round trip changed a size");
  }
  s3_xml_list_free(&l2);
  free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *z = (const char *)data;
  s3_xml_list l;
  s3_xml_delete d;
  s3_xml_error e;
  ltx_error err;
  char zTime[64];

  if (s3_xml_parse_list(z, size, &l, &err) == LTX_OK) {
    for (size_t i = 0; i < l.n; i++) {
      if (strlen(l.items[i].key) > S3_XML_MAX_TEXT) fail("key longer than the text bound");
    }
    check_round_trip(&l);
    s3_xml_list_free(&l);
  } else if (l.items != NULL || l.n != 0 || l.next_token != NULL) {
    fail("failed list parse left results behind");
  }
  if (s3_xml_parse_delete(z, size, &d, &err) == LTX_OK) {
    if (d.n_errors == 0 && (d.key != NULL || d.code != NULL)) fail("fields without an error");
    s3_xml_delete_free(&d);
  }
  if (s3_xml_parse_error(z, size, &e, &err) == LTX_OK) s3_xml_error_free(&e);

  /* the timestamp parser reads a C string */
  size_t nTime = size < sizeof(zTime) - 1 ? size : sizeof(zTime) - 1;
  memcpy(zTime, data, nTime);
  zTime[nTime] = '\0';
  (void)ltx_time_parse(zTime); /* the one RFC 3339 parser (ltx/time.c) */
  return 0;
}
