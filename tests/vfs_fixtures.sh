#!/bin/bash
# Integration test: the "litestream" VFS of libltvfs, driven through the real
# sqlite3 shell (`.load libltvfs`, `.open 'file:NAME?vfs=litestream&...'`),
# serves every fixture replica (tests/fixtures, written by the real
# Litestream) exactly as the truth in expected.tsv says: for every database
# with `restore` rows, at every TXID (`txid=` URI parameter) and at latest,
# every `restore` check of expected.tsv (the SQL of queries.tsv) and the
# sha256 of `.dump` read through the VFS give the expected values (all but
# img_sha256, which needs the raw file), and litestream_txid() /
# PRAGMA litestream_txid are the pinned (or latest) TXID,
# ltvfs_pinned_txid() is the pinned TXID (NULL at latest), nothing is
# printed on stderr. Once from file:// and once from the loopback S3 server
# (tests/s3/env.sh; the fixtures are copied there with tests/replica_copy as
# tests/restore_s3.sh does). A TXID that does not exist (max + 1, ff, 0)
# fails the open with a message that says "not available" (or names the
# reason) and names an available TXID. The replica URL also comes from
# LITESTREAM_REPLICA_URL, and the replica= URI parameter wins over it.
# `txid=5` is the same as `txid=0000000000000005`.
#
# One sqlite3 process answers all the checks of one open (each check is
# preceded by a ".print @@name" marker; .dump goes to a file via .output).
# Run by `make check` from the build directory; standalone:
# `top_srcdir=. top_builddir=. tests/vfs_fixtures.sh`.
# Environment overrides: SQLITE3, LTVFS_LIB (the library, default
# $top_builddir/libltvfs), REPLICA_COPY. VFS_FIXTURES_NO_S3=1 skips the S3 part.
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
SQLITE3=${SQLITE3:-sqlite3}
REPLICA_COPY=${REPLICA_COPY:-$top_builddir/tests/replica_copy}
LIB=${LTVFS_LIB:-$top_builddir/libltvfs}
FIXDIR=$(cd "$srcdir/tests/fixtures" && pwd)

. "$srcdir/tests/lib_fixtures.sh"
test_workdir vfs_fixtures

require_sqlite3
if [ ! -f "$LIB.so" ] && [ ! -f "$LIB" ]; then
  notok "the extension exists at $LIB(.so)"
  finish
fi
LIB=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")

fixtures_load_queries
# Log to stderr at the default level (warn): a clean read prints nothing.
unset LITESTREAM_LOG_FILE LITESTREAM_LOG_LEVEL LITESTREAM_REPLICA_URL LTVFS_OPEN_TIMEOUT

# vfs_run URI OUT [ENV...]: runs the sqlite3 input on stdin after loading the
# extension and opening URI; stdout -> OUT.out, stderr -> OUT.err.
vfs_run() {
  local uri=$1 out=$2
  shift 2
  { printf '.load %s\n.open %s\n' "$LIB" "'$uri'"; cat; } |
    env "$@" timeout 60 "$SQLITE3" -batch >"$out.out" 2>"$out.err" || true
}
# vfs_uri DBNAME URL [TXID]
vfs_uri() {
  local u="file:$1.db?vfs=litestream&replica=$(uri_escape "$2")"
  [ -z "${3:-}" ] || u+="&txid=$3"
  echo "$u"
}
# open_failed LABEL OUT: notok + diag when the .open failed.
open_failed() {
  if grep -q 'unable to open database' "$2.err" "$2.out"; then
    notok "$1: open"
    cat "$2.err" "$2.out" | head -10 | diag
    return 0
  fi
  return 1
}

# check_open LABEL DB URL TXID|"" WANT_TXID: one open of DB (pinned at TXID,
# or latest) checked against expected.tsv at WANT_TXID.
check_open() {
  local label=$1 db=$2 url=$3 txid=$4 want_txid=$5 out c want got pinned
  out=$WORK/$(echo "$label" | tr -c 'A-Za-z0-9_.\n-' _)
  fixtures_expected "$db" "$want_txid" | grep -v '^img_sha256' >"$out.want"
  {
    printf '.print @@txid\nSELECT litestream_txid();\n'
    printf '.print @@pragma_txid\nPRAGMA litestream_txid;\n'
    printf '.print @@pinned\nSELECT quote(ltvfs_pinned_txid());\n'
    while IFS=$'\t' read -r c want; do
      [ "$c" == dump_sha256 ] || printf '%s\t%s\n' "$c" "${SQL[$c]}"
    done <"$out.want" | sql_sections
    printf ".output '%s'\n.dump\n.output stdout\n.print @@end\n" "$out.dump"
  } | vfs_run "$(vfs_uri "$db" "$url" "$txid")" "$out"
  if open_failed "$label" "$out"; then return; fi
  parse_sections <"$out.out" >"$out.got"
  check "$label: litestream_txid()" "$(section "$out.got" txid)" "$want_txid"
  check "$label: PRAGMA litestream_txid" "$(section "$out.got" pragma_txid)" "$want_txid"
  if [ -n "$txid" ]; then pinned="'$want_txid'"; else pinned=NULL; fi
  check "$label: ltvfs_pinned_txid()" "$(section "$out.got" pinned)" "$pinned"
  while IFS=$'\t' read -r c want; do
    if [ "$c" == dump_sha256 ]; then
      got=$(sha256sum <"$out.dump" 2>/dev/null | cut -d' ' -f1)
    else
      got=$(section "$out.got" "$c")
    fi
    check "$label: $c" "$got" "$want"
  done <"$out.want"
  if [ -s "$out.err" ]; then
    notok "$label: nothing on stderr"
    head -10 "$out.err" | diag
  else
    ok "$label: nothing on stderr"
  fi
}

# check_bad_txid LABEL DB URL TXID NEEDLE...: the open fails and the open's
# error message contains every NEEDLE.
check_bad_txid() {
  local label=$1 db=$2 url=$3 txid=$4 out msg n
  shift 4
  out=$WORK/$(echo "$label" | tr -c 'A-Za-z0-9_.\n-' _)
  printf 'SELECT litestream_txid();\n' | vfs_run "$(vfs_uri "$db" "$url" "$txid")" "$out"
  msg=$(grep -h 'unable to open database' "$out.err" "$out.out" || true)
  if [ -n "$msg" ]; then ok "$label: the open fails"; else
    notok "$label: the open fails"
    cat "$out.out" "$out.err" | head -10 | diag
    return
  fi
  for n in "$@"; do check_contains "$label: the open error contains '$n'" "$msg" "$n"; done
}

# all_fixtures KIND URL_OF: every database at every TXID of expected.tsv, at
# latest, then max + 1 (and 0 and ff on main).
all_fixtures() {
  local kind=$1 url_of=$2 db url txid last first next
  for db in $(fixtures_dbs); do
    url=$("$url_of" "$db")
    first=
    for txid in $(fixtures_txids "$db"); do
      check_open "$kind $db@$txid" "$db" "$url" "$txid" "$txid"
      [ -n "$first" ] || first=$txid
      last=$txid
    done
    check_open "$kind $db@latest" "$db" "$url" "" "$last"
    next=$(printf '%016x' $((16#$last + 1)))
    check_bad_txid "$kind $db txid=$next (max + 1)" "$db" "$url" "$next" "not available" "$last"
  done
  check_bad_txid "$kind main txid=ff" main "$("$url_of" main)" ff "not available" 000000000000000b
  check_bad_txid "$kind main txid=0" main "$("$url_of" main)" 0 "txid=0" "not a non-zero hex TXID"
}

# ---- file:// ----
file_url() { echo "file://$FIXDIR/$1"; }
all_fixtures file file_url
# A short hex TXID.
check_open "file main@5 (txid=5)" main "$(file_url main)" 5 0000000000000005

# The replica URL from the environment; the URI parameter wins over it.
out=$WORK/env
printf 'SELECT litestream_txid();\n' |
  vfs_run "file:main.db?vfs=litestream" "$out" "LITESTREAM_REPLICA_URL=$(file_url ps1024)"
if ! open_failed "LITESTREAM_REPLICA_URL" "$out"; then
  check "LITESTREAM_REPLICA_URL=ps1024: litestream_txid()" "$(cat "$out.out")" 0000000000000004
fi
out=$WORK/env-uri
printf 'SELECT litestream_txid();\n' |
  vfs_run "$(vfs_uri main "$(file_url ps65536)")" "$out" "LITESTREAM_REPLICA_URL=$(file_url ps1024)"
if ! open_failed "replica= over LITESTREAM_REPLICA_URL" "$out"; then
  check "replica=ps65536 wins over LITESTREAM_REPLICA_URL=ps1024: litestream_txid()" \
    "$(cat "$out.out")" 0000000000000003
fi

# ---- s3:// on the loopback server ----
if [ -n "${VFS_FIXTURES_NO_S3:-}" ]; then
  echo "# VFS_FIXTURES_NO_S3 set: skipping the S3 part"
  finish
fi
if ! command -v node >/dev/null 2>&1 || [ ! -x "$REPLICA_COPY" ]; then
  echo "# node or $REPLICA_COPY missing: skipping the S3 part"
  finish
fi
start_test_s3
s3_url() { echo "s3://$S3_BUCKET/$1?endpoint=$S3_ENDPOINT"; }
for db in $(fixtures_dbs); do
  rc=0
  timeout 60 "$REPLICA_COPY" "file://$FIXDIR/$db" "$(s3_url "$db")" >"$WORK/copy.out" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then ok "replica_copy $db to S3"; else
    notok "replica_copy $db to S3 (exit $rc)"
    head -10 "$WORK/copy.out" | diag
  fi
done
all_fixtures s3 s3_url

finish
