#!/bin/bash
# Integration test: what libltvfs lets SQL do, and what it exports.
#
#  1. Exports: `nm -D libltvfs.so` shows exactly the functions ltvfs.h
#     declares (beside its static inline ones) and nothing else: no internal
#     helper, no sqlite3_api.
#  2. A database someone else made cannot write files through ltvfs: a view
#     and a trigger that call ltvfs_restore(..., 'force') on a path fail with
#     SQLite's "unsafe use" error (SQLITE_DIRECTONLY) when the database is
#     opened in a shell that loaded libltvfs, and the target file keeps its
#     bytes.
#  3. ltvfs_restore called by the application itself: an existing file is
#     refused (clear message naming it, file untouched) unless the fourth
#     argument is 'force'; a bad TXID ('-1', '0', 'xyz') and a bad fourth
#     argument are errors; NULL txid is the latest state.
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
LIB=${LTVFS_LIB:-$top_builddir/.libs/libltvfs.so}
SQLITE3=${SQLITE3:-sqlite3}
FIXDIR=$(cd "$srcdir/tests/fixtures" && pwd)

. "$srcdir/tests/lib_fixtures.sh"
test_workdir extension_safety
require_sqlite3

# ---- 1. exports ----
# Function names ltvfs.h declares outside "static inline" definitions.
declared=$(gcc -fpreprocessed -dD -E -P "$srcdir/ltvfs.h" | grep -v '^#' | tr '\n' ' ' | sed 's/;/;\n/g; s/{/{\n/g' |
  grep -v 'static inline' | grep -oE '[A-Za-z_][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' |
  grep -E '^(ltvfs_|sqlite3_)' | grep -vE '^(sqlite3_auto_extension|sqlite3_open|sqlite3_close)$' | sort -u)
exported=$(nm -D --defined-only "$LIB" | awk '$2 ~ /^[TDBRW]$/ { print $3 }' | sort -u)
check "libltvfs exports exactly what ltvfs.h declares" "$(echo $exported)" "$(echo $declared)"
check_contains "ltvfs.h declares the entry point" "$declared" sqlite3_ltvfs_init

# ---- 2. a hostile database ----
REPLICA="file://$FIXDIR/main"
TARGET=$WORK/precious
printf 'precious bytes\n' >"$TARGET"
before=$(sha256sum <"$TARGET")
"$SQLITE3" -batch "$WORK/hostile.db" <<SQL
CREATE TABLE t(x);
CREATE VIEW v AS SELECT ltvfs_restore('$REPLICA', '$TARGET', NULL, 'force') AS r;
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
  SELECT ltvfs_restore('$REPLICA', '$TARGET', NULL, 'force');
END;
SQL
out=$(timeout 30 "$SQLITE3" -batch -cmd ".load $LIB" "$WORK/hostile.db" "SELECT * FROM v;" 2>&1 || true)
check_contains "a view calling ltvfs_restore fails: unsafe use" "$out" "unsafe use of ltvfs_restore()"
check "the view left the target untouched" "$(sha256sum <"$TARGET")" "$before"
out=$(timeout 30 "$SQLITE3" -batch -cmd ".load $LIB" "$WORK/hostile.db" "INSERT INTO t VALUES (1);" 2>&1 || true)
check_contains "a trigger calling ltvfs_restore fails: unsafe use" "$out" "unsafe use of ltvfs_restore()"
check "the trigger left the target untouched" "$(sha256sum <"$TARGET")" "$before"
check "the trigger's INSERT did not happen" "$("$SQLITE3" -batch "$WORK/hostile.db" 'SELECT count(*) FROM t;')" 0

# ---- 3. the application's own calls ----
q() { timeout 60 "$SQLITE3" -batch -cmd ".load $LIB" :memory: "$1" 2>&1 || true; }
out=$(q "SELECT ltvfs_restore('$REPLICA', '$TARGET');")
check_contains "an existing output is refused, naming it" "$out" "$TARGET already exists"
check_contains "the refusal says how to replace it" "$out" "'force'"
check "the refused restore left the target untouched" "$(sha256sum <"$TARGET")" "$before"
ls "$WORK" | grep -q '\.tmp' && notok "no temporary file is left" || ok "no temporary file is left"
out=$(q "SELECT ltvfs_restore('$REPLICA', '$TARGET', NULL, 'force');")
check "with 'force' it replaces the file, at the latest TXID" "$out" 000000000000000b
check "the replaced file is the database" "$("$SQLITE3" -batch "$TARGET" 'PRAGMA integrity_check;')" ok
out=$(q "SELECT ltvfs_restore('$REPLICA', '$WORK/new.db', '4');")
check "a new output at txid 4" "$out" 0000000000000004
T_AGG_Q=$(awk -F'\t' '$1 == "t_agg" { print $2 }' "$FIXDIR/queries.tsv")
check "the new output is TXID 4's database (t_agg of expected.tsv)" \
  "$("$SQLITE3" -batch "$WORK/new.db" "$T_AGG_Q" | join_rows)" \
  "$(awk -F'\t' '$1 == "main" && $2 == "0000000000000004" && $3 == "restore" && $4 == "t_agg" { print $5 }' "$FIXDIR/expected.tsv")"
for bad in "'-1'" "'0'" "'xyz'" "'12345678901234567'"; do
  out=$(q "SELECT ltvfs_restore('$REPLICA', '$WORK/bad.db', $bad);")
  check_contains "txid $bad is refused" "$out" "txid must be a non-zero hex TXID"
done
out=$(q "SELECT ltvfs_restore('$REPLICA', '$WORK/bad.db', NULL, 'yes');")
check_contains "a fourth argument other than 'force'/1/0 is refused" "$out" "fourth argument"
[ ! -e "$WORK/bad.db" ] && ok "no output from refused calls" || notok "no output from refused calls"
finish
