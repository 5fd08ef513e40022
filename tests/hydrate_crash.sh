#!/bin/bash
# Crash loop of the local image: kill -9 of a hydrating reader at random
# moments, during the bulk fill of a 47 MB snapshot and while new LTX files
# (growth, shrinks, changed pages) are applied; after every kill the next
# process must open from the image, offline (the replica moved away) and
# online, at exactly the TXID the image's meta claims, serve every page it
# holds from disk without fetching it again, and give the bytes of a restore
# of that TXID for every page (tests/hydrate_crash.c check). Every third
# round starts from an empty cache as `ltvfs hydrate` does, so the kill
# lands in the early pass (reads sent before the indexes are read).
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
DRIVER=${HYDRATE_CRASH:-$top_builddir/tests/hydrate_crash}
ROUNDS=${HYDRATE_CRASH_ROUNDS:-24}

. "$srcdir/tests/lib_fixtures.sh"
test_workdir hydrate_crash
REP=$WORK/replica
CACHE=$WORK/cache
mkdir -p "$REP/ltx/0"
"$DRIVER" write "$REP" 1
next=2
seed=${HYDRATE_CRASH_SEED:-$$}
RANDOM=$seed
echo "# seed $seed (HYDRATE_CRASH_SEED reproduces the kill times)"

for round in $(seq 1 "$ROUNDS"); do
  # every third round as `ltvfs hydrate` into an empty cache: the early
  # pass (reads sent before the indexes) is what gets killed
  mode=
  if [ $((round % 3)) = 0 ]; then
    rm -rf "$CACHE"
    mode=--alone
  fi
  coproc RUN { exec "$DRIVER" run "file://$REP" "$CACHE" $mode 2>"$WORK/run$round.log"; }
  pid=$RUN_PID
  exec {out_fd}<&"${RUN[0]}"
  line=""
  read -r -t 60 -u "$out_fd" line || true
  case $line in
    ready*) ;;
    *) notok "round $round: the reader opened (got '$line')"
       kill -9 "$pid" 2>/dev/null || true
       wait "$pid" 2>/dev/null || true
       exec {out_fd}<&-
       continue ;;
  esac
  # the writer commits meanwhile: one to three files a round
  for _ in $(seq 1 $((1 + RANDOM % 3))); do
    "$DRIVER" write "$REP" "$next"
    next=$((next + 1))
  done
  # kill at a random moment within 0..600 ms (0..60 ms into the early pass,
  # which fills the snapshot from file:// in about that long)
  sleep "0.$(printf '%03d' $((RANDOM % ${mode:+60}${mode:-600})))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  exec {out_fd}<&-

  mv "$REP" "$REP.away"
  if out=$("$DRIVER" check "file://$REP" "$CACHE" --offline 2>&1); then
    ok "round $round: offline, opens from the image ($out)"
  else
    notok "round $round: offline, opens from the image"
    diag <<<"$out"
    echo "# what the killed reader logged:"
    diag <"$WORK/run$round.log"
  fi
  mv "$REP.away" "$REP"
  if out=$("$DRIVER" check "file://$REP" "$CACHE" 2>&1); then
    ok "round $round: online, every page = restore at the image's TXID, held pages from disk ($out)"
  else
    notok "round $round: online, every page = restore at the image's TXID"
    diag <<<"$out"
  fi
done
finish
