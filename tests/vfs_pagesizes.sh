#!/bin/bash
# Integration test: the "litestream" VFS of libltvfs at every SQLite page size
# (512 .. 65536), through the real sqlite3 shell.
#
# Per page size PS: plain sqlite3 builds v1.db (3000 rows in a rowid table
# with an index on (grp, name), a WITHOUT ROWID table, payloads that overflow
# at every page size, up to 150 KB), v2.db (= v1 + updates, deletes, inserts,
# a new index and more large blobs) and v3.db (= v2 + a big DELETE and
# VACUUM: the database shrinks). `ltvfs import v1.db` seeds a file://
# replica (TXID 1), tests/ltx_diffgen writes v1 -> v2 as TXID 2 and
# v2 -> v3 as TXID 3. A fresh sqlite3 process that opens the replica through
# the VFS pinned at txid=1, 2, 3 and at latest answers exactly as plain
# sqlite3 does on v1/v2/v3.db: the sha256 of .dump, PRAGMA integrity_check,
# page_size, page_count, freelist_count, aggregates over every row and
# column, index-driven range queries, point lookups of overflowing rows and
# sha3_query over whole tables; litestream_txid() is the TXID, and
# ltvfs_stats() reports the page size.
#
# Run by `make check` from the build directory; standalone:
# `top_srcdir=. top_builddir=. tests/vfs_pagesizes.sh`.
# Environment overrides: SQLITE3, LTVFS, LTX_DIFFGEN, LTVFS_LIB,
# VFS_PAGESIZES (the page sizes, default all eight).
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
SQLITE3=${SQLITE3:-sqlite3}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
LTX_DIFFGEN=${LTX_DIFFGEN:-$top_builddir/tests/ltx_diffgen}
LIB=${LTVFS_LIB:-$top_builddir/libltvfs}
PAGESIZES=${VFS_PAGESIZES:-512 1024 2048 4096 8192 16384 32768 65536}

. "$srcdir/tests/lib_fixtures.sh"
test_workdir vfs_pagesizes

require_sqlite3
for p in "$LTVFS" "$LTX_DIFFGEN"; do
  if [ ! -x "$p" ]; then
    notok "$p exists"
    finish
  fi
done
if [ ! -f "$LIB.so" ] && [ ! -f "$LIB" ]; then
  notok "the extension exists at $LIB(.so)"
  finish
fi
LIB=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")
unset LITESTREAM_LOG_FILE LITESTREAM_LOG_LEVEL LITESTREAM_REPLICA_URL

# run NAME CMD...: ok when CMD exits 0 (output in $WORK/run.out).
run() {
  local name=$1 rc=0
  shift
  timeout 120 "$@" >"$WORK/run.out" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then ok "$name"; else
    notok "$name (exit $rc)"
    head -20 "$WORK/run.out" | diag
  fi
  return $rc
}

# "name<TAB>sql": the same on both sides, none of them may fail.
QUERIES=$(
  cat <<'EOF'
page_size	PRAGMA page_size;
page_count	PRAGMA page_count;
freelist_count	PRAGMA freelist_count;
integrity_check	PRAGMA integrity_check;
schema	SELECT type, name, tbl_name FROM sqlite_master ORDER BY type, name;
t_agg	SELECT count(*), sum(id), sum(grp), printf('%.4f', total(val)), sum(length(name)), sum(length(payload)) FROM t;
t_idx	SELECT count(*), sum(id), min(name), max(name) FROM t INDEXED BY t_grp_name WHERE grp BETWEEN 10 AND 20 AND name >= 'm';
t_desc	SELECT group_concat(id || ':' || hex(substr(payload, 1, 6)), ',') FROM (SELECT id, payload FROM t ORDER BY id DESC LIMIT 4);
t_big	SELECT id, length(payload), hex(substr(payload, length(payload) - 7, 8)), hex(sha3(payload)) FROM t WHERE length(payload) > 4000 ORDER BY id LIMIT 12;
t_sha3	SELECT hex(sha3_query('SELECT * FROM t ORDER BY id'));
u_agg	SELECT count(*), sum(length(v)), min(k), max(k) FROM u;
u_sha3	SELECT hex(sha3_query('SELECT * FROM u ORDER BY k'));
EOF
)
# The checks read through the VFS only.
VFS_QUERIES="txid	SELECT litestream_txid();
stats_page_size	SELECT json_extract(ltvfs_stats(), '\$.page_size');"

# Deterministic content: a payload of L bytes derived from the id.
PAYLOAD="CAST(substr(replace(printf('%.*c', L / 64 + 1, '.'), '.', hex(sha3(id || 'p'))), 1, L) AS BLOB)"
# rows FROM TO: INSERT of rows FROM..TO into t; every 97th row overflows a
# 4 KiB page, every 701st (and id 1500) holds 70..150 KB, which overflows a
# 64 KiB page too.
rows() {
  cat <<EOF
INSERT INTO t(id, grp, name, val, payload)
  SELECT id, id % 37, substr('abcdefghijklmnopqrstuvwxyz', 1 + id % 26, 1) || lower(substr(hex(sha3(id)), 1, 8)),
         id * 1.25 + (id % 7) / 8.0, $PAYLOAD
  FROM (SELECT i AS id, CASE WHEN i % 701 = 0 OR i = 1500 THEN 70000 + (i * 131) % 80000
                             WHEN i % 97 = 0 THEN 5000 + i % 3000
                             ELSE 20 + (i * 7919) % 400 END AS L
        FROM (WITH RECURSIVE s(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM s WHERE i < $2) SELECT i FROM s));
EOF
}

# part PS
part() {
  local PS=$1 D R n k out want
  D=$WORK/ps$PS
  R=$D/replica
  mkdir -p "$D"
  {
    echo "PRAGMA page_size = $PS;"
    echo "CREATE TABLE t(id INTEGER PRIMARY KEY, grp INT, name TEXT, val REAL, payload BLOB);"
    echo "CREATE TABLE u(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;"
    echo "BEGIN;"
    rows 1 3000
    echo "CREATE INDEX t_grp_name ON t(grp, name);"
    echo "INSERT INTO u SELECT printf('key%06d', id), $PAYLOAD FROM (SELECT id, 10 + id % 300 AS L FROM t WHERE id <= 1500);"
    echo "COMMIT;"
  } | "$SQLITE3" -batch "$D/v1.db"
  cp "$D/v1.db" "$D/v2.db"
  {
    echo "BEGIN;"
    echo "UPDATE t SET val = val * 2, name = upper(name) WHERE id % 3 = 0;"
    rows 3001 3800
    echo "DELETE FROM t WHERE id % 11 = 0;"
    echo "UPDATE t SET payload = CAST(replace(printf('%.*c', 90000, '.'), '.', 'z') AS BLOB) WHERE id IN (1, 77, 1234);"
    echo "UPDATE u SET v = CAST('updated' || k AS BLOB) WHERE k < 'key000300';"
    echo "DELETE FROM u WHERE k > 'key001400';"
    echo "CREATE INDEX t_name ON t(name);"
    echo "COMMIT;"
  } | "$SQLITE3" -batch "$D/v2.db"
  cp "$D/v2.db" "$D/v3.db"
  {
    echo "DELETE FROM t WHERE id BETWEEN 200 AND 2600;"
    echo "DROP INDEX t_name;"
    echo "VACUUM;"
  } | "$SQLITE3" -batch "$D/v3.db"
  for n in 1 2 3; do
    sql_sections <<<"$QUERIES" | "$SQLITE3" -batch "$D/v$n.db" 2>&1 | parse_sections >"$D/plain$n.tsv"
  done
  check "ps$PS: v1.db has page size $PS" "$(section "$D/plain1.tsv" page_size)" "$PS"
  check "ps$PS: v3.db is smaller than v2.db" \
    "$(($(section "$D/plain3.tsv" page_count) < $(section "$D/plain2.tsv" page_count)))" 1

  run "ps$PS: ltvfs import v1.db" "$LTVFS" import "$D/v1.db" "file://$R" || return 0
  run "ps$PS: ltx_diffgen v1 -> v2 as TXID 2" "$LTX_DIFFGEN" "$D/v1.db" "$D/v2.db" "file://$R" 2 || return 0
  run "ps$PS: ltx_diffgen v2 -> v3 as TXID 3" "$LTX_DIFFGEN" "$D/v2.db" "$D/v3.db" "file://$R" 3 || return 0

  for k in 1 2 3 latest; do
    n=$k
    [ "$k" == latest ] && n=3
    local uri="file:ps$PS.db?vfs=litestream&replica=$(uri_escape "file://$R")"
    [ "$k" == latest ] || uri+="&txid=$k"
    out=$D/vfs-$k
    {
      printf '.load %s\n.open %s\n' "$LIB" "'$uri'"
      sql_sections <<<"$VFS_QUERIES
$QUERIES"
      printf ".output '%s'\n.dump\n.output stdout\n.print @@end\n" "$out.dump"
    } | timeout 60 "$SQLITE3" -batch >"$out.out" 2>"$out.err" || true
    if grep -q 'unable to open database' "$out.out" "$out.err"; then
      notok "ps$PS @$k: open"
      cat "$out.err" | head -10 | diag
      continue
    fi
    parse_sections <"$out.out" >"$out.tsv"
    check "ps$PS @$k: litestream_txid()" "$(section "$out.tsv" txid)" "$(printf '%016x' "$n")"
    check "ps$PS @$k: ltvfs_stats() page_size" "$(section "$out.tsv" stats_page_size)" "$PS"
    while IFS=$'\t' read -r c _; do
      want=$(section "$D/plain$n.tsv" "$c")
      check "ps$PS @$k: $c = v$n.db" "$(section "$out.tsv" "$c")" "$want"
    done <<<"$QUERIES"
    check "ps$PS @$k: .dump = v$n.db .dump" "$(sha256sum <"$out.dump" | cut -d' ' -f1)" \
      "$("$SQLITE3" "$D/v$n.db" .dump </dev/null 2>&1 | sha256sum | cut -d' ' -f1)"
    if [ -s "$out.err" ]; then
      notok "ps$PS @$k: nothing on stderr"
      head -10 "$out.err" | diag
    else
      ok "ps$PS @$k: nothing on stderr"
    fi
  done
}

for ps in $PAGESIZES; do part "$ps"; done

finish
