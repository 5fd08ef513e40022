/*
** s3_xml.h: the few S3 XML response bodies the s3:// backend reads.
**
** Not a general XML parser: a bounded scanner for the shapes S3 sends
** (ListObjectsV2 results, DeleteObjects results, <Error> bodies), built to be
** safe on hostile input from a misbehaving or malicious endpoint:
**
**   - no DTDs, no entity declarations, no external anything: a body with
**     "<!DOCTYPE" or "<!ENTITY" is refused, so nothing can expand;
**   - only the five predefined entities and numeric character references
**     (&#NN; &#xHH;) are decoded; any other "&name;" is an error;
**   - element nesting, name length and the text of one element are bounded
**     (S3_XML_MAX_DEPTH, S3_XML_MAX_NAME, S3_XML_MAX_TEXT); past a bound the
**     whole body is refused, never silently cut;
**   - a NUL byte anywhere, or a character reference to U+0000, is refused
**     (keys are C strings above this layer);
**   - memory is bounded by the input size times a small constant.
**
** Element names are matched by local name (a "ns:" prefix is ignored);
** attributes are checked for syntax and otherwise ignored.
**
** Errors are LTX_ERR_NOMEM or STORE_ERR_HTTP ("malformed S3 XML at byte N:
** why"); the caller prefixes the object URL.
*/
#ifndef LTVFS_S3_XML_H
#define LTVFS_S3_XML_H

#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"

#define S3_XML_MAX_DEPTH 16
#define S3_XML_MAX_NAME 128
#define S3_XML_MAX_TEXT 65536

/* One <Contents> entry of a ListObjectsV2 result. */
typedef struct s3_xml_object {
  char *key; /* decoded key, as stored in the bucket */
  uint64_t size;
  int64_t mtime_ms; /* from LastModified; -1 when absent or unparseable */
} s3_xml_object;

/* One page of a ListObjectsV2 result. */
typedef struct s3_xml_list {
  s3_xml_object *items;
  size_t n;
  int truncated;    /* IsTruncated was "true" */
  char *next_token; /* NextContinuationToken, NULL when absent */
} s3_xml_list;

/* The first <Error> of a DeleteObjects result, plus how many there were. */
typedef struct s3_xml_delete {
  size_t n_errors;
  char *key; /* of the first error, NULL when none */
  char *code;
  char *message;
} s3_xml_delete;

/* An S3 <Error> body. Fields are NULL when absent. */
typedef struct s3_xml_error {
  char *code;
  char *message;
} s3_xml_error;

/* Parses a ListObjectsV2 body (root <ListBucketResult>). */
int s3_xml_parse_list(const char *z, size_t n, s3_xml_list *out, ltx_error *err);
void s3_xml_list_free(s3_xml_list *l);

/* Parses a DeleteObjects body (root <DeleteResult>). */
int s3_xml_parse_delete(const char *z, size_t n, s3_xml_delete *out, ltx_error *err);
void s3_xml_delete_free(s3_xml_delete *d);

/* Parses an error body (root <Error>). */
int s3_xml_parse_error(const char *z, size_t n, s3_xml_error *out, ltx_error *err);
void s3_xml_error_free(s3_xml_error *e);


/* Writes z into buf (cap bytes, always NUL-terminated when cap > 0) with
** & < > " ' CR LF TAB escaped; returns the length the whole result needs
** (excluding the NUL), like snprintf. */
size_t s3_xml_escape(const char *z, char *buf, size_t cap);

#endif /* LTVFS_S3_XML_H */
