/*
** s3_xml.c: a bounded scanner for the S3 XML bodies the s3:// backend reads
** (see s3_xml.h for what it accepts and refuses, and why).
**
** One pass, no tree: the scanner keeps a stack of open element names (local
** names, bounded) and the decoded text of the innermost element, and calls
** the body's handler each time an element closes. The handler sees the path
** from the root and, for a leaf, its text. Three handlers follow the
** scanner: ListObjectsV2, DeleteObjects, Error.
**
**   <ListBucketResult>                         handler sees, on close:
**     <IsTruncated>true</IsTruncated>          [root, IsTruncated]  "true"
**     <NextContinuationToken>..</..>           [root, NextContinuationToken]
**     <Contents>
**       <Key>a&amp;b</Key>                     [root, Contents, Key] "a&b"
**       <Size>42</Size>                        [root, Contents, Size] "42"
**     </Contents>                              [root, Contents] -> one object
**   </ListBucketResult>
**
** Deliberately not done: DTDs and entity declarations (refused, so there is
** nothing to expand), namespaces beyond ignoring a prefix, mixed content
** (text of an element that also has children is dropped), encodings other
** than UTF-8 (bytes pass through unchanged).
*/
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "store/s3_xml.h"
#include "store/store.h"

typedef struct xml_scan xml_scan;
/* Called when the element at depth nDepth (path aName[0..nDepth-1]) closes.
** zText is its decoded text (NUL-terminated) when it had no children. */
typedef int (*xml_close_fn)(void *pCtx, xml_scan *p, ltx_error *err);

struct xml_scan {
  const char *z;
  size_t n, i;
  const char *zRoot; /* expected root name */
  char aName[S3_XML_MAX_DEPTH][S3_XML_MAX_NAME + 1];
  int aChild[S3_XML_MAX_DEPTH]; /* element has children */
  int nDepth;
  int bRootDone;
  char *zText; /* text of the innermost */
  size_t nText, nTextAlloc;
  xml_close_fn xClose;
  void *pCtx;
};

static int syntax_error(xml_scan *p, ltx_error *err, const char *zWhy) {
  return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML at byte %zu: %s", p->i, zWhy);
}

static int starts_with(const xml_scan *p, const char *zLit) {
  size_t n = strlen(zLit);
  return p->n - p->i >= n && memcmp(p->z + p->i, zLit, n) == 0;
}

/* Moves past the next occurrence of zEnd; an unterminated construct is an
** error (a truncated body must never look complete). */
static int skip_past(xml_scan *p, const char *zEnd, ltx_error *err) {
  size_t nEnd = strlen(zEnd);
  for (; p->i + nEnd <= p->n; p->i++) {
    if (p->z[p->i] == '\0') return syntax_error(p, err, "NUL byte");
    if (memcmp(p->z + p->i, zEnd, nEnd) == 0) {
      p->i += nEnd;
      return LTX_OK;
    }
  }
  p->i = p->n;
  return syntax_error(p, err, "unterminated construct");
}

static int text_append(xml_scan *p, const char *z, size_t n, ltx_error *err) {
  if (p->nDepth == 0) {
    /* Only whitespace may stand outside the root element. */
    for (size_t k = 0; k < n; k++) {
      if (z[k] != ' ' && z[k] != '\t' && z[k] != '\r' && z[k] != '\n') {
        return syntax_error(p, err, "text outside the root element");
      }
    }
    return LTX_OK;
  }
  if (p->aChild[p->nDepth - 1]) return LTX_OK; /* mixed content: dropped */
  if (p->nText + n > S3_XML_MAX_TEXT) return syntax_error(p, err, "element text too long");
  if (p->nText + n + 1 > p->nTextAlloc) {
    size_t nNew = p->nTextAlloc;
    while (nNew < p->nText + n + 1) nNew *= 2;
    char *zNew = realloc(p->zText, nNew);
    if (zNew == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
    p->zText = zNew;
    p->nTextAlloc = nNew;
  }
  memcpy(p->zText + p->nText, z, n);
  p->nText += n;
  p->zText[p->nText] = '\0';
  return LTX_OK;
}

static int is_name_start(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || c >= 0x80;
}

static int is_name_char(unsigned char c) {
  return is_name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void skip_space(xml_scan *p) {
  while (p->i < p->n && is_space(p->z[p->i])) p->i++;
}

/* Reads a name at p->i into zOut as its local name (after any "prefix:"). */
static int read_name(xml_scan *p, char *zOut, ltx_error *err) {
  size_t iStart = p->i, iLocal;
  if (p->i >= p->n || !is_name_start((unsigned char)p->z[p->i])) {
    return syntax_error(p, err, "expected a name");
  }
  while (p->i < p->n && is_name_char((unsigned char)p->z[p->i])) {
    if (p->i - iStart >= S3_XML_MAX_NAME) return syntax_error(p, err, "name too long");
    p->i++;
  }
  iLocal = iStart;
  for (size_t k = iStart; k < p->i; k++) {
    if (p->z[k] == ':') iLocal = k + 1;
  }
  if (iLocal == p->i) return syntax_error(p, err, "empty local name");
  memcpy(zOut, p->z + iLocal, p->i - iLocal);
  zOut[p->i - iLocal] = '\0';
  return LTX_OK;
}

/* Encodes code point c as UTF-8 into a (4 bytes); returns the length. */
static size_t utf8_encode(uint32_t c, char *a) {
  if (c < 0x80) {
    a[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    a[0] = (char)(0xC0 | (c >> 6));
    a[1] = (char)(0x80 | (c & 0x3F));
    return 2;
  }
  if (c < 0x10000) {
    a[0] = (char)(0xE0 | (c >> 12));
    a[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    a[2] = (char)(0x80 | (c & 0x3F));
    return 3;
  }
  a[0] = (char)(0xF0 | (c >> 18));
  a[1] = (char)(0x80 | ((c >> 12) & 0x3F));
  a[2] = (char)(0x80 | ((c >> 6) & 0x3F));
  a[3] = (char)(0x80 | (c & 0x3F));
  return 4;
}

/* Decodes the reference at p->i ('&') and appends it to the text. Only the
** predefined five and numeric references exist here: there is no DTD. */
static int read_entity(xml_scan *p, ltx_error *err) {
  static const struct {
    const char *zName;
    char c;
  } aPredef[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
  size_t iStart = ++p->i, nRef;
  char a[4];

  while (p->i < p->n && p->z[p->i] != ';' && p->i - iStart < 12) p->i++;
  if (p->i >= p->n || p->z[p->i] != ';') return syntax_error(p, err, "bad entity reference");
  nRef = p->i - iStart;
  p->i++;
  if (nRef >= 2 && p->z[iStart] == '#') {
    uint32_t c = 0;
    int bHex = p->z[iStart + 1] == 'x';
    size_t k = iStart + 1 + (size_t)bHex, nDigit = 0;
    for (; k < iStart + nRef; k++, nDigit++) {
      char d = p->z[k];
      uint32_t v;
      if (d >= '0' && d <= '9')
        v = (uint32_t)(d - '0');
      else if (bHex && d >= 'a' && d <= 'f')
        v = (uint32_t)(d - 'a' + 10);
      else if (bHex && d >= 'A' && d <= 'F')
        v = (uint32_t)(d - 'A' + 10);
      else
        return syntax_error(p, err, "bad character reference");
      c = c * (bHex ? 16u : 10u) + v;
      if (c > 0x10FFFF) return syntax_error(p, err, "character reference out of range");
    }
    /* (1) U+0000 would cut a C string short; (2) surrogates are not
    ** characters in UTF-8. */
    if (nDigit == 0 || c == 0 || (c >= 0xD800 && c <= 0xDFFF)) {
      return syntax_error(p, err, "invalid character reference");
    }
    return text_append(p, a, utf8_encode(c, a), err);
  }
  for (size_t k = 0; k < sizeof(aPredef) / sizeof(aPredef[0]); k++) {
    if (strlen(aPredef[k].zName) == nRef && memcmp(p->z + iStart, aPredef[k].zName, nRef) == 0) {
      return text_append(p, &aPredef[k].c, 1, err);
    }
  }
  return syntax_error(p, err, "unknown entity (no DTD entities are expanded)");
}

static int close_element(xml_scan *p, ltx_error *err) {
  int rc;
  /* The handler sees "" for an element with children (mixed content). */
  if (p->aChild[p->nDepth - 1]) {
    p->nText = 0;
    p->zText[0] = '\0';
  }
  rc = p->xClose(p->pCtx, p, err);
  p->nDepth--;
  p->nText = 0;
  p->zText[0] = '\0';
  if (p->nDepth == 0) p->bRootDone = 1;
  return rc;
}

static int open_tag(xml_scan *p, ltx_error *err) {
  char zName[S3_XML_MAX_NAME + 1];
  int rc;

  p->i++; /* '<' */
  rc = read_name(p, zName, err);
  if (rc != LTX_OK) return rc;
  if (p->bRootDone) return syntax_error(p, err, "a second root element");
  if (p->nDepth == 0 && strcmp(zName, p->zRoot) != 0) {
    return ltx_error_set(err, STORE_ERR_HTTP, "unexpected S3 XML root <%s> (want <%s>)", zName,
                         p->zRoot);
  }
  if (p->nDepth >= S3_XML_MAX_DEPTH) return syntax_error(p, err, "elements nested too deep");
  /* Attributes: checked for form, values skipped. */
  for (;;) {
    char zAttr[S3_XML_MAX_NAME + 1];
    char q;
    skip_space(p);
    if (p->i >= p->n) return syntax_error(p, err, "unterminated tag");
    if (p->z[p->i] == '>' || p->z[p->i] == '/') break;
    rc = read_name(p, zAttr, err);
    if (rc != LTX_OK) return rc;
    skip_space(p);
    if (p->i >= p->n || p->z[p->i] != '=') return syntax_error(p, err, "attribute without '='");
    p->i++;
    skip_space(p);
    if (p->i >= p->n || (p->z[p->i] != '"' && p->z[p->i] != '\'')) {
      return syntax_error(p, err, "attribute value not quoted");
    }
    q = p->z[p->i++];
    while (p->i < p->n && p->z[p->i] != q) {
      if (p->z[p->i] == '<' || p->z[p->i] == '\0')
        return syntax_error(p, err, "bad attribute value");
      p->i++;
    }
    if (p->i >= p->n) return syntax_error(p, err, "unterminated attribute value");
    p->i++;
  }
  if (p->nDepth > 0) p->aChild[p->nDepth - 1] = 1;
  memcpy(p->aName[p->nDepth], zName, strlen(zName) + 1);
  p->aChild[p->nDepth] = 0;
  p->nDepth++;
  p->nText = 0;
  if (p->z[p->i] == '/') {
    if (p->i + 1 >= p->n || p->z[p->i + 1] != '>') return syntax_error(p, err, "bad '/' in tag");
    p->i += 2;
    return close_element(p, err);
  }
  p->i++; /* '>' */
  return LTX_OK;
}

static int close_tag(xml_scan *p, ltx_error *err) {
  char zName[S3_XML_MAX_NAME + 1];
  int rc;

  p->i += 2; /* "</" */
  rc = read_name(p, zName, err);
  if (rc != LTX_OK) return rc;
  skip_space(p);
  if (p->i >= p->n || p->z[p->i] != '>') return syntax_error(p, err, "unterminated end tag");
  p->i++;
  if (p->nDepth == 0 || strcmp(zName, p->aName[p->nDepth - 1]) != 0) {
    return syntax_error(p, err, "end tag does not match the open element");
  }
  return close_element(p, err);
}

static int scan(const char *z, size_t n, const char *zRoot, xml_close_fn xClose, void *pCtx,
                ltx_error *err) {
  xml_scan *p = calloc(1, sizeof(*p));
  int rc = LTX_OK;

  if (p == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
    goto out;
  }
  p->z = z;
  p->n = n;
  p->zRoot = zRoot;
  p->xClose = xClose;
  p->pCtx = pCtx;
  p->nTextAlloc = 256;
  p->zText = malloc(p->nTextAlloc);
  if (p->zText == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
    goto out;
  }
  p->zText[0] = '\0';
  while (rc == LTX_OK && p->i < p->n) {
    char c = p->z[p->i];
    if (c == '<') {
      if (starts_with(p, "<?")) {
        rc = skip_past(p, "?>", err);
      } else if (starts_with(p, "<!--")) {
        rc = skip_past(p, "-->", err);
      } else if (starts_with(p, "<![CDATA[")) {
        size_t iStart = p->i + 9;
        p->i = iStart;
        rc = skip_past(p, "]]>", err);
        if (rc == LTX_OK) rc = text_append(p, p->z + iStart, p->i - 3 - iStart, err);
      } else if (starts_with(p, "<!")) {
        rc = syntax_error(p, err, "DTD or declaration refused");
      } else if (starts_with(p, "</")) {
        rc = close_tag(p, err);
      } else {
        rc = open_tag(p, err);
      }
    } else if (c == '&') {
      rc = read_entity(p, err);
    } else if (c == '\0') {
      rc = syntax_error(p, err, "NUL byte");
    } else {
      size_t iStart = p->i;
      while (p->i < p->n && p->z[p->i] != '<' && p->z[p->i] != '&' && p->z[p->i] != '\0') p->i++;
      rc = text_append(p, p->z + iStart, p->i - iStart, err);
    }
  }
  if (rc == LTX_OK && (p->nDepth != 0 || !p->bRootDone)) {
    rc = syntax_error(p, err, p->bRootDone ? "unclosed element" : "no complete root element");
  }
out:
  if (p != NULL) free(p->zText);
  free(p);
  return rc;
}

/* Is the closing element's path exactly the given names (below the root)? */
static int path_is(const xml_scan *p, int nDepth, const char *z1, const char *z2) {
  if (p->nDepth != nDepth) return 0;
  if (nDepth >= 2 && strcmp(p->aName[1], z1) != 0) return 0;
  if (nDepth >= 3 && strcmp(p->aName[2], z2) != 0) return 0;
  return 1;
}

static int dup_text(const xml_scan *p, char **pz, const char *zWhat, ltx_error *err) {
  if (*pz != NULL) return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: two <%s>", zWhat);
  *pz = malloc(p->nText + 1);
  if (*pz == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
  memcpy(*pz, p->zText, p->nText + 1);
  return LTX_OK;
}

/* Strict unsigned decimal: digits only, no sign, no overflow. */
static int parse_u64(const char *z, uint64_t *out) {
  uint64_t v = 0;
  if (*z == '\0') return -1;
  for (; *z; z++) {
    if (*z < '0' || *z > '9') return -1;
    if (v > (UINT64_MAX - (uint64_t)(*z - '0')) / 10) return -1;
    v = v * 10 + (uint64_t)(*z - '0');
  }
  *out = v;
  return 0;
}

/* ---- ListObjectsV2 ---- */

typedef struct list_ctx {
  s3_xml_list *pOut;
  size_t nAlloc;
  char *zKey; /* fields of the <Contents> being read */
  uint64_t size;
  int bSize;
  int64_t mtime_ms;
} list_ctx;

static int list_close(void *pCtx, xml_scan *p, ltx_error *err) {
  list_ctx *c = pCtx;
  s3_xml_list *l = c->pOut;

  if (path_is(p, 3, "Contents", "Key")) return dup_text(p, &c->zKey, "Key", err);
  if (path_is(p, 3, "Contents", "Size")) {
    if (c->bSize || parse_u64(p->zText, &c->size) != 0) {
      return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: bad <Size> '%.40s'", p->zText);
    }
    c->bSize = 1;
    return LTX_OK;
  }
  if (path_is(p, 3, "Contents", "LastModified")) {
    c->mtime_ms = ltx_time_parse(p->zText);
    return LTX_OK;
  }
  if (path_is(p, 2, "Contents", NULL)) {
    if (c->zKey == NULL || !c->bSize) {
      return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: <Contents> without %s",
                           c->zKey == NULL ? "<Key>" : "<Size>");
    }
    if (l->n == c->nAlloc) {
      size_t nNew = c->nAlloc ? c->nAlloc * 2 : 64;
      s3_xml_object *aNew = realloc(l->items, nNew * sizeof(*aNew));
      if (aNew == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
      l->items = aNew;
      c->nAlloc = nNew;
    }
    l->items[l->n].key = c->zKey;
    l->items[l->n].size = c->size;
    l->items[l->n].mtime_ms = c->mtime_ms;
    l->n++;
    c->zKey = NULL;
    c->bSize = 0;
    c->mtime_ms = -1;
    return LTX_OK;
  }
  if (path_is(p, 2, "IsTruncated", NULL)) {
    if (strcmp(p->zText, "true") != 0 && strcmp(p->zText, "false") != 0) {
      return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: bad <IsTruncated> '%.20s'",
                           p->zText);
    }
    l->truncated = strcmp(p->zText, "true") == 0;
    return LTX_OK;
  }
  if (path_is(p, 2, "NextContinuationToken", NULL)) {
    return dup_text(p, &l->next_token, "NextContinuationToken", err);
  }
  return LTX_OK;
}

int s3_xml_parse_list(const char *z, size_t n, s3_xml_list *out, ltx_error *err) {
  list_ctx c = {out, 0, NULL, 0, 0, -1};
  int rc;

  memset(out, 0, sizeof(*out));
  rc = scan(z, n, "ListBucketResult", list_close, &c, err);
  free(c.zKey);
  if (rc != LTX_OK) s3_xml_list_free(out);
  return rc;
}

void s3_xml_list_free(s3_xml_list *l) {
  if (l == NULL) return;
  for (size_t i = 0; i < l->n; i++) free(l->items[i].key);
  free(l->items);
  free(l->next_token);
  memset(l, 0, sizeof(*l));
}

/* ---- DeleteObjects ---- */

typedef struct delete_ctx {
  s3_xml_delete *pOut;
  char *zKey, *zCode, *zMessage; /* of the <Error> being read */
} delete_ctx;

static int delete_close(void *pCtx, xml_scan *p, ltx_error *err) {
  delete_ctx *c = pCtx;
  s3_xml_delete *d = c->pOut;

  if (path_is(p, 3, "Error", "Key")) return dup_text(p, &c->zKey, "Key", err);
  if (path_is(p, 3, "Error", "Code")) return dup_text(p, &c->zCode, "Code", err);
  if (path_is(p, 3, "Error", "Message")) return dup_text(p, &c->zMessage, "Message", err);
  if (path_is(p, 2, "Error", NULL)) {
    if (d->n_errors++ == 0) {
      d->key = c->zKey;
      d->code = c->zCode;
      d->message = c->zMessage;
    } else {
      free(c->zKey);
      free(c->zCode);
      free(c->zMessage);
    }
    c->zKey = c->zCode = c->zMessage = NULL;
  }
  return LTX_OK;
}

int s3_xml_parse_delete(const char *z, size_t n, s3_xml_delete *out, ltx_error *err) {
  delete_ctx c = {out, NULL, NULL, NULL};
  int rc;

  memset(out, 0, sizeof(*out));
  rc = scan(z, n, "DeleteResult", delete_close, &c, err);
  free(c.zKey);
  free(c.zCode);
  free(c.zMessage);
  if (rc != LTX_OK) s3_xml_delete_free(out);
  return rc;
}

void s3_xml_delete_free(s3_xml_delete *d) {
  if (d == NULL) return;
  free(d->key);
  free(d->code);
  free(d->message);
  memset(d, 0, sizeof(*d));
}

/* ---- Error ---- */

static int error_close(void *pCtx, xml_scan *p, ltx_error *err) {
  s3_xml_error *e = pCtx;
  if (path_is(p, 2, "Code", NULL)) return dup_text(p, &e->code, "Code", err);
  if (path_is(p, 2, "Message", NULL)) return dup_text(p, &e->message, "Message", err);
  return LTX_OK;
}

int s3_xml_parse_error(const char *z, size_t n, s3_xml_error *out, ltx_error *err) {
  int rc;
  memset(out, 0, sizeof(*out));
  rc = scan(z, n, "Error", error_close, out, err);
  if (rc != LTX_OK) s3_xml_error_free(out);
  return rc;
}

void s3_xml_error_free(s3_xml_error *e) {
  if (e == NULL) return;
  free(e->code);
  free(e->message);
  memset(e, 0, sizeof(*e));
}

/* ---- helpers ---- */

size_t s3_xml_escape(const char *z, char *buf, size_t cap) {
  size_t n = 0;
  for (; *z; z++) {
    const char *zRep = NULL;
    char one[2] = {*z, '\0'};
    switch (*z) {
      case '&':
        zRep = "&amp;";
        break;
      case '<':
        zRep = "&lt;";
        break;
      case '>':
        zRep = "&gt;";
        break;
      case '"':
        zRep = "&quot;";
        break;
      case '\'':
        zRep = "&apos;";
        break;
      /* A parser normalises raw CR and tabs in text; references survive. */
      case '\r':
        zRep = "&#13;";
        break;
      case '\n':
        zRep = "&#10;";
        break;
      case '\t':
        zRep = "&#9;";
        break;
      default:
        zRep = one;
        break;
    }
    for (; *zRep; zRep++, n++) {
      if (n + 1 < cap) buf[n] = *zRep;
    }
  }
  if (cap > 0) buf[n < cap ? n : cap - 1] = '\0';
  return n;
}
