#!/bin/bash
# tests/sanitize.sh: the threaded suites under a sanitizer, in a copy of the
# tracked sources (build-tsan/ or build-asan/, refreshed at every run) built
# there, so the normal in-tree build is untouched.
#
#   tests/sanitize.sh tsan     ThreadSanitizer: check_replica (poller, views,
#                              close while polling), check_s3 (coalesced
#                              misses, poller backoff, close while S3 hangs),
#                              vfs_invariant.sh (8 reader threads while the Go
#                              VFS commits), check_primary (the primary's
#                              thread: capture, upload, lease)
#   tests/sanitize.sh asan     AddressSanitizer + UBSan over the same suites and
#                              check_ltx, check_store, check_cache
#
# Needs what check.sh installs (run it once first: .npm-deps, the build
# dependencies). Exits non-zero when a suite fails or the sanitizer reports
# anything (halt_on_error / exitcode). Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
kind=${1:-tsan}
case $kind in
  tsan) flags="-fsanitize=thread -g -O1"; suites="check_replica check_hydrate check_s3 check_primary" ;;
  asan) flags="-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1"
        suites="check_ltx check_store check_cache check_replica check_hydrate check_s3 check_primary" ;;
  *) echo "usage: tests/sanitize.sh tsan|asan" >&2; exit 2 ;;
esac
build=$top/build-$kind
mkdir -p "$build"
git ls-files -z | xargs -0 cp --parents -p -t "$build"
cd "$build"
if [ ! -f Makefile ]; then
  autoreconf -fi >/dev/null 2>&1
  ./configure -q CFLAGS="$flags" LDFLAGS="${flags%% -g*}" >/dev/null
fi
make -s -j2 >/dev/null
make -s -j2 $(for s in $suites; do printf 'tests/%s ' "$s"; done) tests/vfs_invariant >/dev/null
ln -sfn "$top/.npm-deps" "$build/.npm-deps" 2>/dev/null || true

export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1 exitcode=66 ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 exitcode=66 ${UBSAN_OPTIONS:-}"
status=0
for s in $suites; do
  if "tests/$s" >"tests/$s.$kind.log" 2>&1; then
    echo "$kind $s: $(grep -E '^[0-9]+%: Checks' "tests/$s.$kind.log" | tail -1)"
  else
    echo "$kind $s: FAILED (build-$kind/tests/$s.$kind.log)"; tail -40 "tests/$s.$kind.log"; status=1
  fi
done
# The invariant test: its C driver (tests/vfs_invariant) links the VFS, so
# the threads run under the sanitizer; the Go VFS writer runs as its own
# process. Helper processes must not inherit the sanitizer's preload.
if top_srcdir=$top top_builddir=$build VFS_INVARIANT_SECONDS=6 \
    "$top/tests/vfs_invariant.sh" >"tests/vfs_invariant.$kind.log" 2>&1; then
  echo "$kind vfs_invariant.sh: $(tail -1 "tests/vfs_invariant.$kind.log")"
else
  echo "$kind vfs_invariant.sh: FAILED (build-$kind/tests/vfs_invariant.$kind.log)"
  tail -40 "tests/vfs_invariant.$kind.log"; status=1
fi
exit $status
