#!/bin/bash
# Integration test: round trip with the real Litestream Go VFS (npm
# litestream-vfs-linux-amd64@0.5.17, which check.sh installs into
# $top_srcdir/.npm-deps; override the path with LTVFS_GO_VFS).
#
# (a) Our files read by theirs, at page sizes 4096, 1024 and 65536:
#     `ltvfs import` writes a snapshot of v1.db, tests/ltx_diffgen writes
#     incremental files for v2.db (TXID 2) and v3.db (TXID 3); a fresh Go VFS
#     connection answers as plain sqlite3 does on vN.db and reports
#     litestream_txid() = N; our own restore at each TXID is vN.db (byte for
#     byte, but for the page-1 counters at TXID 1).
# (b) Their files read by ours, at SQLite page sizes 4096 and 1024: the Go
#     VFS in write mode runs several steps against a fresh replica (one
#     process per step: it syncs one LTX file when the connection closes,
#     merging every transaction of the step; a rolled-back step writes
#     nothing); `ltvfs ltx verify` accepts every file, `ltvfs ltx dump` prints
#     the headers, and `ltvfs restore` at each TXID (and at latest) answers as
#     the Go VFS itself did at that TXID and as a plain database to which the
#     same SQL was applied (same .dump, and at 4096 the same image).
# The Go VFS blocks forever on an empty replica, so it is never opened on one.
#
# The Go VFS is always run with `env -u AWS_CA_BUNDLE` and under `timeout 60`.
# Environment overrides: LTVFS, LTX_DIFFGEN, LTVFS_GO_VFS, SQLITE3.
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
LTX_DIFFGEN=${LTX_DIFFGEN:-$top_builddir/tests/ltx_diffgen}
SQLITE3=${SQLITE3:-sqlite3}
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}

# ok/notok/diag/finish/check: the reporting the fixture tests use too.
. "$srcdir/tests/lib_fixtures.sh"
test_workdir interop_go
mkdir -p "$WORK/go"
# run NAME CMD...: ok when CMD exits 0 (output in $WORK/run.out).
run() {
  local name=$1 rc=0
  shift
  "$@" >"$WORK/run.out" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then ok "$name"; else
    notok "$name (exit $rc)"
    head -20 "$WORK/run.out" | diag
  fi
  return $rc
}

require_sqlite3
require_go_vfs
for p in "$LTVFS" "$LTX_DIFFGEN"; do
  if [ ! -x "$p" ]; then
    notok "$p exists"
    finish
  fi
done

# go_sql REPLICA_DIR read|write: runs the SQL on stdin through the Go VFS.
go_sql() { go_vfs_sql "file://$1" "$2" "$WORK"; }

# The checks, "name<TAB>sql", all without errors on every state used here
# (the line numbers in an error would differ between the Go and plain runs).
LOGICAL_QUERIES=$(
  cat <<'EOF'
page_size	PRAGMA page_size;
schema	SELECT type, name, tbl_name FROM sqlite_master ORDER BY type, name;
t_agg	SELECT count(*), sum(id), sum(grp), printf('%.4f', total(val)), sum(length(name)), sum(length(payload)) FROM t;
t_first	SELECT group_concat(id || ':' || name, ',') FROM (SELECT id, name FROM t ORDER BY id LIMIT 5);
t_last	SELECT group_concat(id || ':' || substr(hex(payload), 1, 12), ',') FROM (SELECT id, payload FROM t ORDER BY id DESC LIMIT 3);
t_range	SELECT count(*), sum(id) FROM t WHERE grp BETWEEN 10 AND 20 AND name >= 'm';
t_overflow	SELECT count(*), sum(length(payload)) FROM t WHERE length(payload) > 4000;
t_point	SELECT id, grp, name, length(payload) FROM t WHERE id IN (1, 77, 1234, 2345, 3456) ORDER BY id;
t_sha3	SELECT hex(sha3_query('SELECT * FROM t ORDER BY id'));
u_agg	SELECT count(*), sum(length(v)), min(k), max(k) FROM u;
u_sha3	SELECT hex(sha3_query('SELECT * FROM u ORDER BY k'));
EOF
)
PHYSICAL_QUERIES=$(
  cat <<'EOF'
page_count	PRAGMA page_count;
freelist_count	PRAGMA freelist_count;
integrity_check	PRAGMA integrity_check;
EOF
)
ALL_QUERIES="$LOGICAL_QUERIES
$PHYSICAL_QUERIES"

# query_script QUERIES: the sqlite3 input that prints "@@name" before each.
query_script() {
  while IFS=$'\t' read -r n q; do printf '.print @@%s\n%s\n' "$n" "$q"; done <<<"$1"
}
# Turns the output into "name<TAB>rows joined with ' ; '" lines.
parse_results() {
  awk '/^@@/ { if (n != "") print n "\t" r; n = substr($0, 3); r = ""; first = 1; next }
       { r = first ? $0 : r " ; " $0; first = 0 }
       END { if (n != "") print n "\t" r }'
}
# plain_q DB QUERIES >OUT
plain_q() { query_script "$2" | "$SQLITE3" -batch "$1" 2>&1 | parse_results; }
# go_q REPLICA_DIR QUERIES >OUT (also the TXID, as check "txid")
go_q() {
  { printf '.print @@txid\nSELECT litestream_txid();\n'; query_script "$2"; } |
    go_sql "$1" read 2>&1 | parse_results
}
# compare LABEL GOT_FILE WANT_FILE [QUERIES]: one check per query of WANT
# (or of QUERIES' names when given).
compare() {
  local label=$1 got=$2 want=$3 names n k v
  local -A G=() W=()
  while IFS=$'\t' read -r k v; do [ -n "${G[$k]+x}" ] || G[$k]=$v; done <"$got"
  while IFS=$'\t' read -r k v; do [ -n "${W[$k]+x}" ] || W[$k]=$v; done <"$want"
  if [ $# -ge 4 ]; then names=$(cut -f1 <<<"$4"); else names=$(cut -f1 "$want"); fi
  for n in $names; do
    check "$label $n" "${G[$n]-}" "${W[$n]-}"
  done
}
get() { awk -F'\t' -v n="$2" '$1 == n { sub(/^[^\t]*\t/, ""); print; exit }' "$1"; }
dump_sha() { "$SQLITE3" "$1" .dump </dev/null 2>&1 | sha256sum | cut -d' ' -f1; }
# img_sha DB [OFF...]: sha256 of a database file with page-1 bytes 24..27 and
# 92..95 (the change counters) zeroed, and the 4 bytes at each OFF too.
img_sha() {
  python3 - "$@" <<'PYEOF'
import hashlib, sys
b = bytearray(open(sys.argv[1], 'rb').read())
for off in [24, 92] + [int(x) for x in sys.argv[2:]]:
    b[off:off + 4] = bytes(4)
print(hashlib.sha256(b).hexdigest())
PYEOF
}

# Deterministic content: a payload of L bytes derived from the id.
PAYLOAD="CAST(substr(replace(printf('%.*c', L / 64 + 1, '.'), '.', hex(sha3(id))), 1, L) AS BLOB)"
# rows FROM TO: INSERT of rows FROM..TO into t (every 97th row overflows).
rows() {
  cat <<EOF
INSERT INTO t(id, grp, name, val, payload)
  SELECT id, id % 37, substr('abcdefghijklmnopqrstuvwxyz', 1 + id % 26, 1) || lower(substr(hex(sha3(id)), 1, 8)),
         id * 1.25 + (id % 7) / 8.0, $PAYLOAD
  FROM (SELECT i AS id, CASE WHEN i % 97 = 0 THEN 5000 + i % 3000 ELSE 20 + (i * 7919) % 600 END AS L
        FROM (WITH RECURSIVE s(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM s WHERE i < $2) SELECT i FROM s));
EOF
}
SCHEMA="CREATE TABLE t(id INTEGER PRIMARY KEY, grp INT, name TEXT, val REAL, payload BLOB);
CREATE TABLE u(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;"

# =====================================================================
# (a) our files, read by the Go VFS
# =====================================================================
# part_a PS: the round trip with SQLite (= LTX) page size PS.
part_a() {
  local PS=$1 A RA RN n i f out want
  A=$WORK/a-$PS
  RA=$A/replica
  mkdir -p "$A" "$RA"
  {
    echo "PRAGMA page_size = $PS;"
    echo "$SCHEMA"
    echo "BEGIN;"
    rows 1 3000
    echo "CREATE INDEX t_grp_name ON t(grp, name);"
    echo "INSERT INTO u SELECT printf('key%06d', id), $PAYLOAD FROM (SELECT id, 10 + id % 200 AS L FROM t WHERE id <= 1500);"
    echo "COMMIT;"
  } | "$SQLITE3" -batch "$A/v1.db"
  cp "$A/v1.db" "$A/v2.db"
  {
    echo "BEGIN;"
    echo "UPDATE t SET val = val * 2, name = upper(name) WHERE id % 3 = 0;"
    rows 3001 3500
    echo "DELETE FROM t WHERE id % 11 = 0;"
    echo "UPDATE u SET v = CAST('updated' || k AS BLOB) WHERE k < 'key000300';"
    echo "DELETE FROM u WHERE k > 'key001400';"
    echo "COMMIT;"
  } | "$SQLITE3" -batch "$A/v2.db"
  cp "$A/v2.db" "$A/v3.db"
  {
    echo "BEGIN;"
    echo "DROP INDEX t_grp_name;"
    echo "CREATE INDEX t_name ON t(name);"
    rows 3501 4200
    echo "UPDATE t SET payload = CAST(replace(printf('%.*c', 9000, '.'), '.', 'z') AS BLOB) WHERE id IN (1, 77, 1234);"
    echo "DELETE FROM t WHERE id BETWEEN 2000 AND 2300;"
    echo "INSERT INTO u VALUES ('zz-a', x'00ff00ff'), ('zz-b', zeroblob(3000));"
    echo "COMMIT;"
  } | "$SQLITE3" -batch "$A/v3.db"
  for n in 1 2 3; do plain_q "$A/v$n.db" "$ALL_QUERIES" >"$A/plain$n.tsv"; done

  if run "ps$PS: import v1.db into an empty replica" "$LTVFS" import "$A/v1.db" "file://$RA"; then
    check "ps$PS: import wrote L0 0000000000000001-0000000000000001.ltx" \
      "$(cd "$RA" && find . -name '*.ltx' | sort | tr '\n' ' ')" "./ltx/0/0000000000000001-0000000000000001.ltx "
  fi
  run "ps$PS: ltx_diffgen v1 -> v2 as TXID 2" "$LTX_DIFFGEN" "$A/v1.db" "$A/v2.db" "file://$RA" 2 || true
  run "ps$PS: ltx_diffgen v2 -> v3 as TXID 3" "$LTX_DIFFGEN" "$A/v2.db" "$A/v3.db" "file://$RA" 0000000000000003 || true
  check "ps$PS: replica holds TXIDs 1, 2, 3" "$(cd "$RA" && find . -name '*.ltx' | sort | tr '\n' ' ')" \
    "./ltx/0/0000000000000001-0000000000000001.ltx ./ltx/0/0000000000000002-0000000000000002.ltx ./ltx/0/0000000000000003-0000000000000003.ltx "
  run "ps$PS: ltx verify of our files" "$LTVFS" ltx verify "$RA"/ltx/0/*.ltx || true

  # The Go VFS reads the replica as it grows: a copy of it holding only the
  # files up to TXID n.
  for n in 1 2 3; do
    RN=$A/replica-upto-$n
    mkdir -p "$RN/ltx/0"
    for i in $(seq 1 "$n"); do
      f=$(printf '%016x-%016x.ltx' "$i" "$i")
      if [ -f "$RA/ltx/0/$f" ]; then cp "$RA/ltx/0/$f" "$RN/ltx/0/"; fi
    done
    if [ ! -f "$RN/ltx/0/$f" ]; then
      # (the Go VFS would block forever on an empty replica)
      notok "ps$PS: go vfs on our replica @$n: no file for TXID $n"
      continue
    fi
    go_q "$RN" "$ALL_QUERIES" >"$A/go$n.tsv"
    check "ps$PS: go vfs on our replica @$n: litestream_txid()" "$(get "$A/go$n.tsv" txid)" "$(printf '%016x' "$n")"
    compare "ps$PS: go vfs on our replica @$n = sqlite3 on v$n.db:" "$A/go$n.tsv" "$A/plain$n.tsv"
  done

  # Our own restore of the same replica: byte-identical to vN.db.
  for n in 1 2 3 latest; do
    out=$A/restore-$n.db
    want=$n
    [ "$n" == latest ] && want=3
    if [ "$n" == latest ]; then
      run "ps$PS: restore our replica at latest" "$LTVFS" restore "file://$RA" -o "$out" || continue
    else
      run "ps$PS: restore our replica --txid $n" "$LTVFS" restore "file://$RA" -o "$out" --txid "$n" || continue
    fi
    if [ "$n" == 1 ]; then
      # import may copy with the backup API, which rewrites the page-1
      # counters (change counter, schema cookie, version-valid-for); every
      # other byte must be v1's, or the diff of TXID 2 against v1.db would
      # not apply.
      check "ps$PS: restore @1 = v1.db but for page-1 bytes 24..27, 40..43, 92..95" \
        "$(img_sha "$out" 40)" "$(img_sha "$A/v1.db" 40)"
    elif cmp -s "$out" "$A/v$want.db"; then ok "ps$PS: restore @$n is byte-identical to v$want.db"; else
      notok "ps$PS: restore @$n is byte-identical to v$want.db"
      cmp "$out" "$A/v$want.db" 2>&1 | head -3 | diag || true
    fi
    plain_q "$out" "$ALL_QUERIES" >"$A/restore-$n.tsv"
    compare "ps$PS: restore of our replica @$n = sqlite3 on v$want.db:" "$A/restore-$n.tsv" "$A/plain$want.tsv"
  done
}
for ps in 4096 1024 65536; do part_a "$ps"; done

# =====================================================================
# (b) the Go VFS's files, read by ours
# =====================================================================
# step_sql K: the SQL of step K (applied through the Go VFS in write mode and
# to a plain database); BPS is the SQLite page size.
NSTEPS=8
step_sql() {
  case $1 in
  1)
    echo "PRAGMA page_size = $BPS;"
    echo "$SCHEMA"
    rows 1 2000
    ;;
  2) echo "UPDATE t SET name = upper(name), val = val + 0.5 WHERE id % 4 = 0;" ;;
  3) echo "DELETE FROM t WHERE id % 5 = 0;" ;;
  4)
    echo "CREATE INDEX t_grp_name ON t(grp, name);"
    echo "INSERT INTO u SELECT printf('key%06d', id), $PAYLOAD FROM (SELECT id, 10 + id % 300 AS L FROM t WHERE id <= 1200);"
    ;;
  5) # three SQLite transactions, one sync
    rows 2001 2100
    echo "UPDATE u SET v = CAST('v2-' || k AS BLOB) WHERE k < 'key000100';"
    echo "DELETE FROM u WHERE k BETWEEN 'key000500' AND 'key000600';"
    ;;
  6) # rolled back: no LTX file
    echo "BEGIN;"
    echo "DELETE FROM t;"
    echo "ROLLBACK;"
    ;;
  7) rows 2101 2700 ;;
  8) # pages go to the freelist, the database does not shrink
    echo "CREATE TABLE tmp AS SELECT * FROM t WHERE id < 800;"
    echo "DROP TABLE tmp;"
    echo "UPDATE t SET payload = CAST(replace(printf('%.*c', 6000, '.'), '.', 'q') AS BLOB) WHERE id IN (1, 77, 1234);"
    ;;
  esac
}
# TXID expected after step K (step 6 writes nothing).
step_txid() { if [ "$1" -ge 6 ]; then echo $(($1 - 1)); else echo "$1"; fi; }

# part_b BPS: the Go VFS writes a fresh replica with SQLite page size BPS.
part_b() {
  local BPS=$1 L="b-ps$1" B RB PLAIN k rc s f name last want_files i txid out
  B=$WORK/b-$BPS
  RB=$B/replica
  PLAIN=$B/plain.db
  mkdir -p "$B"
  for k in $(seq 1 "$NSTEPS"); do
    rc=0
    step_sql "$k" | go_sql "$RB" write >"$B/write$k.out" 2>&1 || rc=$?
    if [ $rc -ne 0 ] || [ -s "$B/write$k.out" ]; then
      notok "$L: go vfs write step $k (exit $rc)"
      head -10 "$B/write$k.out" | diag
    else
      ok "$L: go vfs write step $k"
    fi
    step_sql "$k" | "$SQLITE3" -batch "$PLAIN"
    cp "$PLAIN" "$B/plain$k.db"
    plain_q "$B/plain$k.db" "$ALL_QUERIES" >"$B/plain$k.tsv"
    if ! ls "$RB"/ltx/0/*.ltx >/dev/null 2>&1; then
      # (the Go VFS would block forever on an empty replica)
      notok "$L: go vfs @step $k: the replica is still empty"
      continue
    fi
    go_q "$RB" "$ALL_QUERIES" >"$B/go$k.tsv"
    check "$L: go vfs @step $k: litestream_txid()" "$(get "$B/go$k.tsv" txid)" "$(printf '%016x' "$(step_txid "$k")")"
    # Sanity of the harness: the Go VFS agrees with the plain database.
    compare "$L: go vfs @step $k = plain db:" "$B/go$k.tsv" "$B/plain$k.tsv" "$LOGICAL_QUERIES"
  done

  last=$(step_txid "$NSTEPS")
  want_files=
  for i in $(seq 1 "$last"); do want_files+="./ltx/0/$(printf '%016x-%016x.ltx' "$i" "$i") "; done
  check "$L: go vfs wrote one L0 file per syncing step" "$(cd "$RB" && find . -name '*.ltx' | sort | tr '\n' ' ')" "$want_files"

  for f in "$RB"/ltx/*/*.ltx; do
    name=$(basename "$f")
    run "$L: ltx verify $name (written by the go vfs)" "$LTVFS" ltx verify "$f" || true
    if run "$L: ltx dump $name" "$LTVFS" ltx dump "$f"; then
      if grep -q 4096 "$WORK/run.out"; then ok "$L: ltx dump $name shows the page size"; else
        notok "$L: ltx dump $name shows the page size"
        head -10 "$WORK/run.out" | diag
      fi
    fi
  done
  run "$L: ltx verify of all go vfs files at once" "$LTVFS" ltx verify "$RB"/ltx/*/*.ltx || true
  if run "$L: ls of the go vfs replica" "$LTVFS" ls "file://$RB"; then
    if grep -q "$(printf '%016x' "$last")" "$WORK/run.out"; then ok "$L: ls shows TXID $(printf '%016x' "$last")"; else
      notok "$L: ls shows TXID $(printf '%016x' "$last")"
      head -10 "$WORK/run.out" | diag
    fi
  fi

  for k in $(seq 1 "$NSTEPS") latest; do
    if [ "$k" == latest ]; then
      s=$NSTEPS
      out=$B/restore-latest.db
      run "$L: restore go vfs replica at latest" "$LTVFS" restore "file://$RB" -o "$out" || continue
    else
      s=$k
      [ "$k" -eq 6 ] && continue # same TXID as step 5
      txid=$(printf '%016x' "$(step_txid "$k")")
      out=$B/restore-$k.db
      run "$L: restore go vfs replica --txid $txid" "$LTVFS" restore "file://$RB" -o "$out" --txid "$txid" || continue
    fi
    # SQLite lays the pages out the same way over both VFSes, so the images
    # match too (checked before anything else opens the restored file).
    # (With SQLite pages of 1024 the Go VFS keeps 4096-byte LTX pages, so the
    # restored file may end with up to 3 pages more than the plain one.)
    if [ "$BPS" -ge 4096 ]; then
      check "$L: restore @$k image = plain db @step $s image" "$(img_sha "$out")" "$(img_sha "$B/plain$s.db")"
    fi
    plain_q "$out" "$ALL_QUERIES" >"$B/restore-$k.tsv"
    if [ "$BPS" -ge 4096 ]; then
      compare "$L: restore @$k = go vfs @step $s:" "$B/restore-$k.tsv" "$B/go$s.tsv" "$ALL_QUERIES"
    else
      # The Go VFS randomises page-1 bytes 24..27, so SQLite sizes the
      # database from the file: 4096-byte LTX pages pad it with "never used"
      # 1024-byte pages that the restored header does not count.
      compare "$L: restore @$k = go vfs @step $s:" "$B/restore-$k.tsv" "$B/go$s.tsv" "$LOGICAL_QUERIES"
    fi
    compare "$L: restore @$k = plain db @step $s:" "$B/restore-$k.tsv" "$B/plain$s.tsv" "$LOGICAL_QUERIES"
    check "$L: restore @$k dump = plain db @step $s dump" "$(dump_sha "$out")" "$(dump_sha "$B/plain$s.db")"
  done
}
part_b 4096
# SQLite page size 1024: the Go VFS stores it in 4096-byte LTX pages.
part_b 1024

finish
