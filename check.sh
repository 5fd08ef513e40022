#!/usr/bin/env bash
# check.sh: set up (as quickstart.sh does), then run every test suite: the
# Check unit suites per layer, the fuzz corpus replay, and the integration
# tests against real fixtures and the real Litestream VFS. Exits non-zero on
# any failure and prints each suite's summary line.
set -euo pipefail
cd "$(dirname "$0")"
./bootstrap.sh

# From npm: the real Litestream VFS (the peer producer/consumer of LTX files)
# and the S3 server the S3 suites run against on loopback (tests/s3/).
NPM_PACKAGES=(litestream-vfs-linux-amd64@0.5.17 @20minutes/s3rver@5.0.0)
npm_missing=()
for spec in "${NPM_PACKAGES[@]}"; do
  name=${spec%@*} version=${spec##*@}
  grep -qs "\"version\": \"$version\"" ".npm-deps/node_modules/$name/package.json" ||
    npm_missing+=("$spec")
done
if [ ${#npm_missing[@]} -gt 0 ]; then
  echo "check: npm install ${npm_missing[*]}"
  if ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] || { echo "check: npm missing: sudo apt-get install -y npm" >&2; exit 1; }
    apt-get install -y -qq nodejs npm >/dev/null
  fi
  npm install --silent --no-audit --no-fund --prefix .npm-deps "${NPM_PACKAGES[@]}" >/dev/null
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
