#!/bin/sh
# Builds the LTX decoder fuzz target with libFuzzer, ASan and UBSan, and runs
# it over a copy of the seed corpus.
#
#   tests/fuzz/run.sh [SECONDS]      (default 60)
#
# Needs clang with libFuzzer (Debian: clang-14 + libclang-rt-14-dev) and
# liblz4. Everything goes to tests/tmp/fuzz: the binary, the working corpus
# (seeds plus what the run found), crash-* files for findings. The seed corpus
# in tests/fuzz/corpus is not modified; copy new interesting inputs there by
# hand. CC overrides the compiler.
#
# The seeds: a few small Litestream fixture files (fixture-*), files from our
# encoder (enc-*: page sizes 512..65536, checksummed and not, an empty
# incremental), files with legacy LZ4F frames (legacy-*), one of each
# malformed kind (bad-*), and the inputs under 8 KiB of a merged (-merge=1)
# 60-second run (found-*), which `make check` replays as regression cases.
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
out="$top/tests/tmp/fuzz"
cc=${CC:-clang}

mkdir -p "$out/corpus"
# shellcheck disable=SC2046
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -D_GNU_SOURCE -I"$top" "$top"/ltx/*.c "$top/tests/fuzz/fuzz_ltx_decode.c" \
  $(pkg-config --cflags --libs liblz4) -lpthread -o "$out/fuzz_ltx_decode"
cp "$top"/tests/fuzz/corpus/* "$out/corpus/"

cd "$out"
exec ./fuzz_ltx_decode -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -dict="$top/tests/fuzz/ltx.dict" -print_final_stats=1 corpus
