#!/bin/sh
# Replays the seed corpus of the LTX decoder fuzz target (tests/fuzz/) on
# every `make check`: each input goes through the buffer, random-access and
# streaming decoders. Fails on a crash or a failed oracle (abort), or when
# the corpus cannot be read. Longer runs with libFuzzer: tests/fuzz/run.sh.
corpus="${top_srcdir:-${srcdir:-.}}/tests/fuzz/corpus"
n=$(find "$corpus" -type f | wc -l)
if ./tests/fuzz_replay "$corpus"; then
  echo "$n passed, 0 failed"
else
  echo "0 passed, $n failed"
  exit 1
fi
