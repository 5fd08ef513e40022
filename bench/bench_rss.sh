#!/bin/bash
# bench/bench_rss.sh: peak memory (max RSS) of the CLI's long jobs on a large
# database: `ltvfs import` of a 2 GiB database, `ltvfs ltx dump` and `ltx
# verify` of its 2 GiB snapshot, and `ltvfs restore` of it, each beside the
# database size. Target: every job under 100 MB, flat in the database size.
#
# The database is made with plain sqlite3: 4 KiB pages (524,288 of them:
# the page index is as large as a 2 GiB database's can be), zero-filled
# blobs, so it is quick to build and compresses well; what is measured is
# memory, which does not depend on the bytes. Needs ~5 GB of free disk in
# BENCH_DIR (default /tmp/ltvfs-bench-rss).
#
#   bench/bench_rss.sh            2 GiB
#   BENCH_GB=1 bench/bench_rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LTVFS=${LTVFS:-tools/ltvfs}
GB=${BENCH_GB:-2}
D=${BENCH_DIR:-/tmp/ltvfs-bench-rss}
rm -rf "$D"
mkdir -p "$D"
rows=$((GB * 4))
sqlite3 "$D/big.db" "PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
  CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $rows)
  INSERT INTO t SELECT i, zeroblob(268435456 - 8192) FROM s;" >/dev/null
db_bytes=$(stat -c %s "$D/big.db")

# rss CMD...: runs it, prints its max RSS in MB (GNU time's %M is KiB).
rss() {
  /usr/bin/time -f '%M %e' -o "$D/time.out" "$@" >"$D/cmd.out" 2>&1 || {
    echo "failed: $*" >&2
    tail -5 "$D/cmd.out" >&2
    exit 1
  }
  read -r kb secs <"$D/time.out"
  printf '%s %s\n' "$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')" "$secs"
}
snap() { ls "$D"/rep/ltx/0/*.ltx | head -1; }

read -r m_import s_import <<<"$(rss "$LTVFS" import "$D/big.db" "file://$D/rep")"
ltx_bytes=$(stat -c %s "$(snap)")
read -r m_dump s_dump <<<"$(rss "$LTVFS" ltx dump "$(snap)")"
read -r m_verify s_verify <<<"$(rss "$LTVFS" ltx verify "$(snap)")"
read -r m_restore s_restore <<<"$(rss "$LTVFS" restore "file://$D/rep" -o "$D/out.db" -q)"
# Page 1 differs by the change counter the backup copy bumped: compare the rest.
cmp -s <(tail -c +4097 "$D/big.db") <(tail -c +4097 "$D/out.db") && same=yes || same=NO

printf '\n%s\n' "bench_rss: database $((db_bytes / 1048576)) MiB ($((db_bytes / 4096)) pages of 4 KiB), snapshot $((ltx_bytes / 1048576)) MiB"
printf '| %-28s | %12s | %8s |\n' job "max RSS (MB)" "wall (s)"
printf '|%s|%s|%s|\n' "------------------------------" "--------------" "----------"
printf '| %-28s | %12s | %8s |\n' "ltvfs import" "$m_import" "$s_import"
printf '| %-28s | %12s | %8s |\n' "ltvfs ltx dump" "$m_dump" "$s_dump"
printf '| %-28s | %12s | %8s |\n' "ltvfs ltx verify" "$m_verify" "$s_verify"
printf '| %-28s | %12s | %8s |\n' "ltvfs restore" "$m_restore" "$s_restore"
echo "restored = source beyond page 1: $same"
rm -rf "$D"
