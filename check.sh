#!/usr/bin/env bash
# check.sh: set up (as quickstart.sh does), then run every test suite: the
# Check unit suites per layer, the fuzz corpus replay, and the integration
# tests against real fixtures and the real Litestream VFS. Exits non-zero on
# any failure and prints each suite's summary line.
set -euo pipefail
cd "$(dirname "$0")"
./bootstrap.sh

# The real Litestream VFS (the peer producer/consumer of LTX files) from npm.
GO_VFS_VERSION=0.5.17
if ! grep -qs "\"version\": \"$GO_VFS_VERSION\"" \
     .npm-deps/node_modules/litestream-vfs-linux-amd64/package.json; then
  echo "check: npm install litestream-vfs-linux-amd64@$GO_VFS_VERSION"
  command -v npm >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y -qq npm >/dev/null; }
  npm install --silent --no-audit --no-fund --prefix .npm-deps \
    "litestream-vfs-linux-amd64@$GO_VFS_VERSION" >/dev/null
fi

status=0
mkdir -p tests
make -s -j2 check > tests/make-check.out 2>&1 || status=$?

# Every suite's own summary: Check's "NN%: Checks: ..." and the scripts'
# "N passed, M failed".
passed=0 failed=0
for log in tests/*.log; do
  [ -f "$log" ] || continue
  name=$(basename "$log" .log)
  line=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1 || true)
  if [ -n "$line" ]; then
    total=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$line")
    bad=$(sed -E 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2/' <<<"$line" | awk '{print $1+$2}')
  else
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
    [ -n "$line" ] || line="no summary (see $log)"
    total=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' <<<"$line" | awk '{print $1+$2}')
    bad=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed.*/\2/p' <<<"$line")
  fi
  printf '%-20s %s\n' "$name:" "$line"
  passed=$((passed + ${total:-0} - ${bad:-0}))
  failed=$((failed + ${bad:-0}))
done
if [ "$status" -ne 0 ]; then
  echo
  echo "check: make check failed"; tail -n 40 tests/make-check.out
  echo "check: the failing suites' logs follow"
  for log in tests/*.log; do
    trs="${log%.log}.trs"
    if grep -qs ':test-result: \(FAIL\|ERROR\)' "$trs"; then
      echo "===== $log"; tail -n 60 "$log"
    fi
  done
  [ "$failed" -gt 0 ] || failed=1
fi
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
