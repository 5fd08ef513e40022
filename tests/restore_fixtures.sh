#!/bin/bash
# Integration test: `ltvfs restore` of the fixture replicas written by the real
# Litestream (tests/fixtures, see its README.md), checked against the truth in
# expected.tsv (rows with view `restore`) with the SQL of queries.tsv; the
# `shrink` fixture per its README; error cases (TXID not available, missing
# replica, corrupted LTX file); `ltvfs ltx verify` on every fixture file.
#
# Run by `make check` from the build directory ($srcdir set by automake);
# standalone: `srcdir=/path/to/src tests/restore_fixtures.sh`.
# Environment overrides: LTVFS (the CLI), SQLITE3 (the sqlite3 shell).
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
SQLITE3=${SQLITE3:-sqlite3}
FIXDIR=$(cd "$srcdir/tests/fixtures" && pwd)

. "$srcdir/tests/lib_fixtures.sh"
test_workdir restore_fixtures

require_sqlite3
if [ ! -x "$LTVFS" ]; then
  notok "ltvfs CLI exists at $LTVFS"
  finish
fi

fixtures_load_queries

# ---- every database at every TXID of expected.tsv, then at latest ----
fixture_url() { echo "file://$FIXDIR/$1"; }
restore_all_fixtures fixture_url

# ---- shrink: a 157-page snapshot, then an incremental shrink to 80 pages
# holding only pages {1,2,3,79,80} ----
shrink_checks() {
  local out=$1 label=$2
  check "$label t rows" "$("$SQLITE3" -batch "$out" 'SELECT count(*), sum(id), min(id), max(id) FROM t;' 2>&1)" \
    "1000|500500|1|1000"
  check "$label page_count" "$("$SQLITE3" -batch "$out" 'PRAGMA page_count;' 2>&1)" 80
  check "$label integrity_check" "$("$SQLITE3" -batch "$out" 'PRAGMA integrity_check;' 2>&1 | join_rows)" ok
  check "$label file size" "$(stat -c %s "$out")" $((80 * 4096))
}
out=$WORK/shrink-latest.db
if restore_ok "restore shrink (latest)" "$out" "file://$FIXDIR/shrink"; then
  shrink_checks "$out" "shrink@latest"
fi
out=$WORK/shrink-2.db
if restore_ok "restore shrink --txid 2" "$out" "file://$FIXDIR/shrink" --txid 0000000000000002; then
  shrink_checks "$out" "shrink@2"
fi
out=$WORK/shrink-1.db
if restore_ok "restore shrink --txid 1" "$out" "file://$FIXDIR/shrink" --txid 1; then
  check "shrink@1 page_count" "$("$SQLITE3" -batch "$out" 'PRAGMA page_count;' 2>&1)" 157
  check "shrink@1 integrity_check" "$("$SQLITE3" -batch "$out" 'PRAGMA integrity_check;' 2>&1 | join_rows)" ok
  check "shrink@1 t rows" "$("$SQLITE3" -batch "$out" 'SELECT count(*), min(id), max(id) FROM t;' 2>&1)" \
    "2000|1|2000"
fi

# ---- restore by timestamp (a copy of main with file mtimes = header
# timestamps, as the file backend of Litestream writes them) ----
TSREP=$WORK/main-ts
cp -r "$FIXDIR/main" "$TSREP"
chmod -R u+w "$TSREP"
python3 - "$TSREP" <<'EOF'
import glob, os, struct, sys
for p in glob.glob(os.path.join(sys.argv[1], 'ltx', '*', '*.ltx')):
    with open(p, 'rb') as f:
        ts = struct.unpack('>q', f.read(40)[32:40])[0]
    os.utime(p, ns=(ts * 1000000, ts * 1000000))
EOF
# TXID 5 was written at ms 1795342767364, TXID 6 at 1795342768985.
ts5=$(python3 -c 'import datetime; print(datetime.datetime.fromtimestamp(1795342768, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))')
ts4=$(python3 -c 'import datetime; print(datetime.datetime.fromtimestamp(1795342767, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))')
want5=$(awk -F'\t' '$1 == "main" && $2 == "0000000000000005" && $3 == "restore" && $4 == "dump_sha256" { print $5 }' "$FIXDIR/expected.tsv")
want4=$(awk -F'\t' '$1 == "main" && $2 == "0000000000000004" && $3 == "restore" && $4 == "dump_sha256" { print $5 }' "$FIXDIR/expected.tsv")
out=$WORK/main-ts5.db
if restore_ok "restore main --timestamp $ts5" "$out" "file://$TSREP" --timestamp "$ts5"; then
  check "main@$ts5 = main@0000000000000005 (dump_sha256)" "$(run_check "$out" dump_sha256)" "$want5"
fi
out=$WORK/main-ts4.db
if restore_ok "restore main --timestamp $ts4" "$out" "file://$TSREP" --timestamp "$ts4"; then
  check "main@$ts4 = main@0000000000000004 (dump_sha256)" "$(run_check "$out" dump_sha256)" "$want4"
fi

# ---- ltvfs ls ----
rc=0
lsout=$("$LTVFS" ls "file://$FIXDIR/main" 2>&1) || rc=$?
check "ls main exits 0" "$rc" 0
check_contains "ls main shows the last TXID" "$lsout" 000000000000000b

# ---- error cases ----
# A TXID that no file ends at.
mkdir -p "$WORK/err1"
rc=0
"$LTVFS" restore "file://$FIXDIR/main" -o "$WORK/err1/out.db" --txid ff >"$WORK/err.out" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then ok "restore --txid ff fails (exit $rc)"; else notok "restore --txid ff fails (exit 0)"; fi
check_contains "restore --txid ff says 'not available'" "$(cat "$WORK/err.out")" "not available"
check "restore --txid ff leaves no file" "$(ls -A "$WORK/err1")" ""

# A replica directory that does not exist.
mkdir -p "$WORK/err2"
rc=0
"$LTVFS" restore "file://$WORK/no-such-replica" -o "$WORK/err2/out.db" >"$WORK/err.out" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then ok "restore of a missing replica fails (exit $rc)"; else notok "restore of a missing replica fails (exit 0)"; fi
check_contains "restore of a missing replica names it" "$(cat "$WORK/err.out")" "no-such-replica"
check "restore of a missing replica leaves no file" "$(ls -A "$WORK/err2")" ""

# A corrupted copy: one byte flipped inside a page frame of TXID 2's file
# (inside the literal "SQLite format 3" of page 1 when found, so that LZ4
# still decodes and only the checksum can tell).
CORRUPT=$WORK/main-corrupt
cp -r "$FIXDIR/main" "$CORRUPT"
chmod -R u+w "$CORRUPT"
BAD=$CORRUPT/ltx/0/0000000000000002-0000000000000002.ltx
python3 - "$BAD" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
i = b.find(b'SQLite format 3', 100)
off = i + 3 if i > 0 else 100 + 10 + 40
b[off] ^= 0x01
open(p, 'wb').write(bytes(b))
EOF
mkdir -p "$WORK/err3"
rc=0
"$LTVFS" restore "file://$CORRUPT" -o "$WORK/err3/out.db" >"$WORK/err.out" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then ok "restore of a corrupted replica fails (exit $rc)"; else notok "restore of a corrupted replica fails (exit 0)"; fi
check_contains "restore of a corrupted replica names the file" "$(cat "$WORK/err.out")" \
  "0000000000000002-0000000000000002.ltx"
check "restore of a corrupted replica leaves no file" "$(ls -A "$WORK/err3")" ""
# TXID 1 does not need the damaged file.
out=$WORK/err3/txid1.db
if restore_ok "restore of the corrupted replica at TXID 1 (before the damage)" "$out" \
  "file://$CORRUPT" --txid 1; then
  want=$(awk -F'\t' '$1 == "main" && $2 == "0000000000000001" && $3 == "restore" && $4 == "dump_sha256" { print $5 }' "$FIXDIR/expected.tsv")
  check "corrupted replica @1 dump_sha256" "$(run_check "$out" dump_sha256)" "$want"
fi

# ---- ltvfs ltx verify ----
for f in "$FIXDIR"/*/ltx/*/*.ltx; do
  rel=${f#"$FIXDIR"/}
  rc=0
  "$LTVFS" ltx verify "$f" >"$WORK/verify.out" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then ok "ltx verify $rel"; else
    notok "ltx verify $rel (exit $rc)"
    head -5 "$WORK/verify.out" | diag
  fi
done
rc=0
"$LTVFS" ltx verify "$FIXDIR"/main/ltx/0/*.ltx >"$WORK/verify.out" 2>&1 || rc=$?
check "ltx verify of all main files at once exits 0" "$rc" 0
rc=0
"$LTVFS" ltx verify "$BAD" >"$WORK/verify.out" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then ok "ltx verify of the corrupted file fails (exit $rc)"; else notok "ltx verify of the corrupted file fails (exit 0)"; fi
check_contains "ltx verify of the corrupted file names it" "$(cat "$WORK/verify.out")" \
  "0000000000000002-0000000000000002.ltx"
rc=0
"$LTVFS" ltx verify "$CORRUPT/ltx/0/0000000000000001-0000000000000001.ltx" "$BAD" >"$WORK/verify.out" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then ok "ltx verify good+corrupted fails (exit $rc)"; else notok "ltx verify good+corrupted fails (exit 0)"; fi

finish
