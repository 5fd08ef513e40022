/*
** time.c: RFC 3339 timestamps, the one text form of time in ltvfs.
**
** Litestream writes Go's time.RFC3339Nano ("2006-01-02T15:04:05.999999999Z07:00",
** trailing zeros of the fraction dropped) into S3 metadata and prints it from
** its VFS functions; users type RFC 3339 into --timestamp, time= and
** litestream_set_time(). Pure arithmetic (H. Hinnant's civil-date algorithms):
** no timegm(), no time zone state, the same result in every thread.
*/
#include "config.h"

#include <stdio.h>

#include "ltx/ltx.h"

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

/* Reads exactly n digits at *pz; -1 if they are not all digits. */
static int64_t read_digits(const char **pz, int n) {
  int64_t v = 0;
  for (int k = 0; k < n; k++) {
    char c = (*pz)[k];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  *pz += n;
  return v;
}

int64_t ltx_time_parse(const char *z) {
  int64_t y, mo, d, h, mi, s, ms = 0, off = 0;
  if (z == NULL) return -1;
  if ((y = read_digits(&z, 4)) < 0 || *z++ != '-') return -1;
  if ((mo = read_digits(&z, 2)) < 1 || mo > 12 || *z++ != '-') return -1;
  if ((d = read_digits(&z, 2)) < 1 || d > 31 || (*z != 'T' && *z != 't' && *z != ' ')) return -1;
  z++;
  if ((h = read_digits(&z, 2)) < 0 || h > 23 || *z++ != ':') return -1;
  if ((mi = read_digits(&z, 2)) < 0 || mi > 59 || *z++ != ':') return -1;
  if ((s = read_digits(&z, 2)) < 0 || s > 60) return -1;
  if (*z == '.') {
    int nDigit = 0;
    z++;
    while (*z >= '0' && *z <= '9') {
      if (nDigit < 3) ms = ms * 10 + (*z - '0');
      nDigit++;
      z++;
    }
    if (nDigit == 0) return -1;
    for (; nDigit < 3; nDigit++) ms *= 10;
  }
  if (*z == 'Z' || *z == 'z') {
    z++;
  } else if (*z == '+' || *z == '-') {
    int sign = *z++ == '-' ? -1 : 1;
    int64_t oh, om;
    if ((oh = read_digits(&z, 2)) < 0 || oh > 23 || *z++ != ':') return -1;
    if ((om = read_digits(&z, 2)) < 0 || om > 59) return -1;
    off = sign * (oh * 60 + om) * 60;
  } else {
    return -1;
  }
  if (*z != '\0') return -1;
  return ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) - off) * 1000 + ms;
}

char *ltx_time_format(int64_t ms, char *buf, size_t cap) {
  int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
  int64_t ns = (ms - sec * 1000) * 1000000;
  int64_t days = sec >= 0 ? sec / 86400 : -((-sec + 86399) / 86400);
  int64_t rem = sec - days * 86400;
  /* civil_from_days */
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp + (mp < 10 ? 3 : -9);
  char zFrac[16] = "";
  if (m <= 2) y++;
  if (ns > 0) {
    int n = snprintf(zFrac, sizeof(zFrac), ".%09lld", (long long)ns);
    while (n > 1 && zFrac[n - 1] == '0') zFrac[--n] = '\0';
  }
  snprintf(buf, cap, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld%sZ", (long long)y, (long long)m,
           (long long)d, (long long)(rem / 3600), (long long)(rem / 60 % 60), (long long)(rem % 60),
           zFrac);
  return buf;
}
