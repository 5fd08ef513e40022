#!/bin/sh
# Replays the seed corpus of the LTX decoder fuzz target (tests/fuzz/) on
# every `make check`: each input goes through the buffer, random-access and
# streaming decoders. Fails on a crash or a failed oracle (abort), or when
# the corpus cannot be read. Longer runs with libFuzzer: tests/fuzz/run.sh.
exec ./tests/fuzz_replay "${srcdir:-.}/tests/fuzz/corpus"
