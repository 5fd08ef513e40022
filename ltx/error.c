/*
** error.c: the ltx_error value every layer of ltvfs returns.
**
** An error is a code (ltx_err, or a code of a layer above: store from 100,
** cache from 200) and one message that says what is wrong and where. Layers
** above add context with ltx_error_prefix ("ltx/0/0000...-0000....ltx: page 7
** at offset 4242: ..."), so the message reads from the outside in.
**
** No allocation: the message lives in the struct and is cut at 511 bytes.
*/
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ltx/ltx.h"

int ltx_error_set(ltx_error *err, int code, const char *fmt, ...) {
  va_list ap;
  if (err == NULL) goto out;
  err->code = code;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
  va_end(ap);
out:
  return code;
}

/* Appends s to buf (holding n bytes, capacity sizeof(ltx_error.msg)),
** keeping it NUL-terminated; returns the new length. */
static size_t append(char *buf, size_t n, const char *s) {
  size_t cap = sizeof(((ltx_error *)0)->msg) - 1;
  while (n < cap && *s) buf[n++] = *s++;
  buf[n] = '\0';
  return n;
}

void ltx_error_prefix(ltx_error *err, const char *fmt, ...) {
  char prefix[sizeof(err->msg)];
  char joined[sizeof(err->msg)];
  size_t n;
  va_list ap;
  if (err == NULL) goto out;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof(prefix), fmt, ap);
  va_end(ap);
  /* Join in a second buffer (err->msg is one of the parts), cutting at the
  ** end of the buffer: a long message loses its tail, never its start. */
  n = append(joined, 0, prefix);
  n = append(joined, n, ": ");
  n = append(joined, n, err->msg);
  memcpy(err->msg, joined, n + 1);
out:
  return;
}

int ltx_error_is_data(int code) { return code >= LTX_ERR_MAGIC && code < 100; }

void ltx_error_clear(ltx_error *err) {
  if (err != NULL) {
    err->code = LTX_OK;
    err->msg[0] = '\0';
  }
}

const char *ltx_err_name(int code) {
  /* Codes of the layers above are not known here; they get a generic name
  ** formatted into a per-thread buffer (valid until the next call in the
  ** same thread). */
  static _Thread_local char other[32];
  switch (code) {
    case LTX_OK: return "LTX_OK";
    case LTX_DONE: return "LTX_DONE";
    case LTX_ERR_NOMEM: return "LTX_ERR_NOMEM";
    case LTX_ERR_ARG: return "LTX_ERR_ARG";
    case LTX_ERR_IO: return "LTX_ERR_IO";
    case LTX_ERR_MAGIC: return "LTX_ERR_MAGIC";
    case LTX_ERR_FLAGS: return "LTX_ERR_FLAGS";
    case LTX_ERR_PAGE_SIZE: return "LTX_ERR_PAGE_SIZE";
    case LTX_ERR_TXID: return "LTX_ERR_TXID";
    case LTX_ERR_HEADER: return "LTX_ERR_HEADER";
    case LTX_ERR_TRUNCATED: return "LTX_ERR_TRUNCATED";
    case LTX_ERR_PAGE_ORDER: return "LTX_ERR_PAGE_ORDER";
    case LTX_ERR_FRAME: return "LTX_ERR_FRAME";
    case LTX_ERR_DECOMPRESS: return "LTX_ERR_DECOMPRESS";
    case LTX_ERR_INDEX: return "LTX_ERR_INDEX";
    case LTX_ERR_FILE_CHECKSUM: return "LTX_ERR_FILE_CHECKSUM";
    case LTX_ERR_DB_CHECKSUM: return "LTX_ERR_DB_CHECKSUM";
    case LTX_ERR_SNAPSHOT: return "LTX_ERR_SNAPSHOT";
    case LTX_ERR_TRAILING: return "LTX_ERR_TRAILING";
    case LTX_ERR_CONTIGUITY: return "LTX_ERR_CONTIGUITY";
    default: break;
  }
  snprintf(other, sizeof(other), "error %d", code);
  return other;
}
