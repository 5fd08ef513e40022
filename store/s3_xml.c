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
/* Called when the element at p->depth (path p->names[0..depth-1]) closes.
** p->text is its decoded text (NUL-terminated) when it had no children. */
typedef int (*xml_close_fn)(void *ctx, xml_scan *p, ltx_error *err);

struct xml_scan {
  const char *z;
  size_t n, i;
  const char *root; /* expected root name */
  char names[S3_XML_MAX_DEPTH][S3_XML_MAX_NAME + 1];
  int has_child[S3_XML_MAX_DEPTH]; /* element has children */
  int depth;
  int root_done;
  char *text; /* text of the innermost */
  size_t text_len, text_cap;
  xml_close_fn on_close;
  void *ctx;
};

static int syntax_error(xml_scan *p, ltx_error *err, const char *why) {
  return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML at byte %zu: %s", p->i, why);
}

static int starts_with(const xml_scan *p, const char *lit) {
  size_t n = strlen(lit);
  return p->n - p->i >= n && memcmp(p->z + p->i, lit, n) == 0;
}

/* Moves past the next occurrence of end; an unterminated construct is an
** error (a truncated body must never look complete). */
static int skip_past(xml_scan *p, const char *end, ltx_error *err) {
  size_t end_len = strlen(end);
  for (; p->i + end_len <= p->n; p->i++) {
    if (p->z[p->i] == '\0') return syntax_error(p, err, "NUL byte");
    if (memcmp(p->z + p->i, end, end_len) == 0) {
      p->i += end_len;
      return LTX_OK;
    }
  }
  p->i = p->n;
  return syntax_error(p, err, "unterminated construct");
}

static int text_append(xml_scan *p, const char *z, size_t n, ltx_error *err) {
  if (p->depth == 0) {
    /* Only whitespace may stand outside the root element. */
    for (size_t k = 0; k < n; k++) {
      if (z[k] != ' ' && z[k] != '\t' && z[k] != '\r' && z[k] != '\n') {
        return syntax_error(p, err, "text outside the root element");
      }
    }
    return LTX_OK;
  }
  if (p->has_child[p->depth - 1]) return LTX_OK; /* mixed content: dropped */
  if (p->text_len + n > S3_XML_MAX_TEXT) return syntax_error(p, err, "element text too long");
  if (p->text_len + n + 1 > p->text_cap) {
    size_t new_cap = p->text_cap;
    while (new_cap < p->text_len + n + 1) new_cap *= 2;
    char *grown = realloc(p->text, new_cap);
    if (grown == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
    p->text = grown;
    p->text_cap = new_cap;
  }
  memcpy(p->text + p->text_len, z, n);
  p->text_len += n;
  p->text[p->text_len] = '\0';
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

/* Reads a name at p->i into out as its local name (after any "prefix:"). */
static int read_name(xml_scan *p, char *out, ltx_error *err) {
  size_t start = p->i, local;
  if (p->i >= p->n || !is_name_start((unsigned char)p->z[p->i])) {
    return syntax_error(p, err, "expected a name");
  }
  while (p->i < p->n && is_name_char((unsigned char)p->z[p->i])) {
    if (p->i - start >= S3_XML_MAX_NAME) return syntax_error(p, err, "name too long");
    p->i++;
  }
  local = start;
  for (size_t k = start; k < p->i; k++) {
    if (p->z[k] == ':') local = k + 1;
  }
  if (local == p->i) return syntax_error(p, err, "empty local name");
  memcpy(out, p->z + local, p->i - local);
  out[p->i - local] = '\0';
  return LTX_OK;
}

/* Encodes code point c as UTF-8 into a (4 bytes); returns the length. */
static size_t utf8_encode(uint32_t c, char *buf) {
  if (c < 0x80) {
    buf[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    buf[0] = (char)(0xC0 | (c >> 6));
    buf[1] = (char)(0x80 | (c & 0x3F));
    return 2;
  }
  if (c < 0x10000) {
    buf[0] = (char)(0xE0 | (c >> 12));
    buf[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    buf[2] = (char)(0x80 | (c & 0x3F));
    return 3;
  }
  buf[0] = (char)(0xF0 | (c >> 18));
  buf[1] = (char)(0x80 | ((c >> 12) & 0x3F));
  buf[2] = (char)(0x80 | ((c >> 6) & 0x3F));
  buf[3] = (char)(0x80 | (c & 0x3F));
  return 4;
}

/* Decodes the reference at p->i ('&') and appends it to the text. Only the
** predefined five and numeric references exist here: there is no DTD. */
static int read_entity(xml_scan *p, ltx_error *err) {
  static const struct {
    const char *name;
    char c;
  } predefined[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
  size_t start = ++p->i, ref_len;
  char utf8[4];

  while (p->i < p->n && p->z[p->i] != ';' && p->i - start < 12) p->i++;
  if (p->i >= p->n || p->z[p->i] != ';') return syntax_error(p, err, "bad entity reference");
  ref_len = p->i - start;
  p->i++;
  if (ref_len >= 2 && p->z[start] == '#') {
    uint32_t c = 0;
    int hex = p->z[start + 1] == 'x';
    size_t k = start + 1 + (size_t)hex, n_digits = 0;
    for (; k < start + ref_len; k++, n_digits++) {
      char d = p->z[k];
      uint32_t v;
      if (d >= '0' && d <= '9')
        v = (uint32_t)(d - '0');
      else if (hex && d >= 'a' && d <= 'f')
        v = (uint32_t)(d - 'a' + 10);
      else if (hex && d >= 'A' && d <= 'F')
        v = (uint32_t)(d - 'A' + 10);
      else
        return syntax_error(p, err, "bad character reference");
      c = c * (hex ? 16u : 10u) + v;
      if (c > 0x10FFFF) return syntax_error(p, err, "character reference out of range");
    }
    /* (1) U+0000 would cut a C string short; (2) surrogates are not
    ** characters in UTF-8. */
    if (n_digits == 0 || c == 0 || (c >= 0xD800 && c <= 0xDFFF)) {
      return syntax_error(p, err, "invalid character reference");
    }
    return text_append(p, utf8, utf8_encode(c, utf8), err);
  }
  for (size_t k = 0; k < sizeof(predefined) / sizeof(predefined[0]); k++) {
    if (strlen(predefined[k].name) == ref_len &&
        memcmp(p->z + start, predefined[k].name, ref_len) == 0) {
      return text_append(p, &predefined[k].c, 1, err);
    }
  }
  return syntax_error(p, err, "unknown entity (no DTD entities are expanded)");
}

static int close_element(xml_scan *p, ltx_error *err) {
  int rc;
  /* The handler sees "" for an element with children (mixed content). */
  if (p->has_child[p->depth - 1]) {
    p->text_len = 0;
    p->text[0] = '\0';
  }
  rc = p->on_close(p->ctx, p, err);
  p->depth--;
  p->text_len = 0;
  p->text[0] = '\0';
  if (p->depth == 0) p->root_done = 1;
  return rc;
}

static int open_tag(xml_scan *p, ltx_error *err) {
  char name[S3_XML_MAX_NAME + 1];
  int rc;

  p->i++; /* '<' */
  rc = read_name(p, name, err);
  if (rc != LTX_OK) return rc;
  if (p->root_done) return syntax_error(p, err, "a second root element");
  if (p->depth == 0 && strcmp(name, p->root) != 0) {
    return ltx_error_set(err, STORE_ERR_HTTP, "unexpected S3 XML root <%s> (want <%s>)", name,
                         p->root);
  }
  if (p->depth >= S3_XML_MAX_DEPTH) return syntax_error(p, err, "elements nested too deep");
  /* Attributes: checked for form, values skipped. */
  for (;;) {
    char attr[S3_XML_MAX_NAME + 1];
    char q;
    skip_space(p);
    if (p->i >= p->n) return syntax_error(p, err, "unterminated tag");
    if (p->z[p->i] == '>' || p->z[p->i] == '/') break;
    rc = read_name(p, attr, err);
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
  if (p->depth > 0) p->has_child[p->depth - 1] = 1;
  memcpy(p->names[p->depth], name, strlen(name) + 1);
  p->has_child[p->depth] = 0;
  p->depth++;
  p->text_len = 0;
  if (p->z[p->i] == '/') {
    if (p->i + 1 >= p->n || p->z[p->i + 1] != '>') return syntax_error(p, err, "bad '/' in tag");
    p->i += 2;
    return close_element(p, err);
  }
  p->i++; /* '>' */
  return LTX_OK;
}

static int close_tag(xml_scan *p, ltx_error *err) {
  char name[S3_XML_MAX_NAME + 1];
  int rc;

  p->i += 2; /* "</" */
  rc = read_name(p, name, err);
  if (rc != LTX_OK) return rc;
  skip_space(p);
  if (p->i >= p->n || p->z[p->i] != '>') return syntax_error(p, err, "unterminated end tag");
  p->i++;
  if (p->depth == 0 || strcmp(name, p->names[p->depth - 1]) != 0) {
    return syntax_error(p, err, "end tag does not match the open element");
  }
  return close_element(p, err);
}

static int scan(const char *z, size_t n, const char *root, xml_close_fn on_close, void *ctx,
                ltx_error *err) {
  xml_scan *p = calloc(1, sizeof(*p));
  int rc = LTX_OK;

  if (p == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
    goto out;
  }
  p->z = z;
  p->n = n;
  p->root = root;
  p->on_close = on_close;
  p->ctx = ctx;
  p->text_cap = 256;
  p->text = malloc(p->text_cap);
  if (p->text == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
    goto out;
  }
  p->text[0] = '\0';
  while (rc == LTX_OK && p->i < p->n) {
    char c = p->z[p->i];
    if (c == '<') {
      if (starts_with(p, "<?")) {
        rc = skip_past(p, "?>", err);
      } else if (starts_with(p, "<!--")) {
        rc = skip_past(p, "-->", err);
      } else if (starts_with(p, "<![CDATA[")) {
        size_t start = p->i + 9;
        p->i = start;
        rc = skip_past(p, "]]>", err);
        if (rc == LTX_OK) rc = text_append(p, p->z + start, p->i - 3 - start, err);
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
      size_t start = p->i;
      while (p->i < p->n && p->z[p->i] != '<' && p->z[p->i] != '&' && p->z[p->i] != '\0') p->i++;
      rc = text_append(p, p->z + start, p->i - start, err);
    }
  }
  if (rc == LTX_OK && (p->depth != 0 || !p->root_done)) {
    rc = syntax_error(p, err, p->root_done ? "unclosed element" : "no complete root element");
  }
out:
  if (p != NULL) free(p->text);
  free(p);
  return rc;
}

/* Is the closing element's path exactly the given names (below the root)? */
static int path_is(const xml_scan *p, int depth, const char *z1, const char *z2) {
  if (p->depth != depth) return 0;
  if (depth >= 2 && strcmp(p->names[1], z1) != 0) return 0;
  if (depth >= 3 && strcmp(p->names[2], z2) != 0) return 0;
  return 1;
}

static int dup_text(const xml_scan *p, char **dst, const char *what, ltx_error *err) {
  if (*dst != NULL) return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: two <%s>", what);
  *dst = malloc(p->text_len + 1);
  if (*dst == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
  memcpy(*dst, p->text, p->text_len + 1);
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
  s3_xml_list *out;
  size_t cap;
  char *key; /* fields of the <Contents> being read */
  uint64_t size;
  int has_size;
  int64_t mtime_ms;
} list_ctx;

static int list_close(void *ctx, xml_scan *p, ltx_error *err) {
  list_ctx *c = ctx;
  s3_xml_list *l = c->out;

  if (path_is(p, 3, "Contents", "Key")) return dup_text(p, &c->key, "Key", err);
  if (path_is(p, 3, "Contents", "Size")) {
    if (c->has_size || parse_u64(p->text, &c->size) != 0) {
      return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: bad <Size> '%.40s'", p->text);
    }
    c->has_size = 1;
    return LTX_OK;
  }
  if (path_is(p, 3, "Contents", "LastModified")) {
    c->mtime_ms = ltx_time_parse(p->text);
    return LTX_OK;
  }
  if (path_is(p, 2, "Contents", NULL)) {
    if (c->key == NULL || !c->has_size) {
      return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: <Contents> without %s",
                           c->key == NULL ? "<Key>" : "<Size>");
    }
    if (l->n == c->cap) {
      size_t new_cap = c->cap ? c->cap * 2 : 64;
      s3_xml_object *grown = realloc(l->items, new_cap * sizeof(*grown));
      if (grown == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory parsing S3 XML");
      l->items = grown;
      c->cap = new_cap;
    }
    l->items[l->n].key = c->key;
    l->items[l->n].size = c->size;
    l->items[l->n].mtime_ms = c->mtime_ms;
    l->n++;
    c->key = NULL;
    c->has_size = 0;
    c->mtime_ms = -1;
    return LTX_OK;
  }
  if (path_is(p, 2, "IsTruncated", NULL)) {
    if (strcmp(p->text, "true") != 0 && strcmp(p->text, "false") != 0) {
      return ltx_error_set(err, STORE_ERR_HTTP, "malformed S3 XML: bad <IsTruncated> '%.20s'",
                           p->text);
    }
    l->truncated = strcmp(p->text, "true") == 0;
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
  free(c.key);
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
  s3_xml_delete *out;
  char *key, *code, *message; /* of the <Error> being read */
} delete_ctx;

static int delete_close(void *ctx, xml_scan *p, ltx_error *err) {
  delete_ctx *c = ctx;
  s3_xml_delete *d = c->out;

  if (path_is(p, 3, "Error", "Key")) return dup_text(p, &c->key, "Key", err);
  if (path_is(p, 3, "Error", "Code")) return dup_text(p, &c->code, "Code", err);
  if (path_is(p, 3, "Error", "Message")) return dup_text(p, &c->message, "Message", err);
  if (path_is(p, 2, "Error", NULL)) {
    if (d->n_errors++ == 0) {
      d->key = c->key;
      d->code = c->code;
      d->message = c->message;
    } else {
      free(c->key);
      free(c->code);
      free(c->message);
    }
    c->key = c->code = c->message = NULL;
  }
  return LTX_OK;
}

int s3_xml_parse_delete(const char *z, size_t n, s3_xml_delete *out, ltx_error *err) {
  delete_ctx c = {out, NULL, NULL, NULL};
  int rc;

  memset(out, 0, sizeof(*out));
  rc = scan(z, n, "DeleteResult", delete_close, &c, err);
  free(c.key);
  free(c.code);
  free(c.message);
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

static int error_close(void *ctx, xml_scan *p, ltx_error *err) {
  s3_xml_error *e = ctx;
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
    const char *rep = NULL;
    char one[2] = {*z, '\0'};
    switch (*z) {
      case '&':
        rep = "&amp;";
        break;
      case '<':
        rep = "&lt;";
        break;
      case '>':
        rep = "&gt;";
        break;
      case '"':
        rep = "&quot;";
        break;
      case '\'':
        rep = "&apos;";
        break;
      /* A parser normalises raw CR and tabs in text; references survive. */
      case '\r':
        rep = "&#13;";
        break;
      case '\n':
        rep = "&#10;";
        break;
      case '\t':
        rep = "&#9;";
        break;
      default:
        rep = one;
        break;
    }
    for (; *rep; rep++, n++) {
      if (n + 1 < cap) buf[n] = *rep;
    }
  }
  if (cap > 0) buf[n < cap ? n : cap - 1] = '\0';
  return n;
}
