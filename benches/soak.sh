#!/usr/bin/env bash
# The soak: `shmwire stress` (mixed load, kills and stops) for DURATION (default 1h), sampled every
# INTERVAL seconds (default 60): RSS (and private memory) of the supervisor and of each participant process, bytes and
# segments this run holds in /dev/shm. Writes benches/soak.csv, benches/soak.log (the stress's own
# lines and summary) and benches/soak.svg (`shmwire plot-soak`).
#
#   benches/soak.sh [DURATION] [INTERVAL]        e.g. benches/soak.sh 1h 60
set -uo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-1h}
INTERVAL=${2:-60}
OUT=${SOAK_OUT:-benches}
BIN=${SHMWIRE_BIN:-target/release/shmwire}
[ -x "$BIN" ] || nice -n 10 env CARGO_BUILD_JOBS=1 cargo build --release -p shmwire-cli
export SHMWIRE_PREFIX=soak$$
CSV=$OUT/soak.csv
LOG=$OUT/soak.log
echo "seconds,supervisor_rss_kib,supervisor_private_kib,participants,participants_rss_kib,participant_rss_max_kib,shm_bytes,shm_segments,kills,rounds" >"$CSV"
nice -n 10 "$BIN" stress --duration "$DURATION" --interval "${INTERVAL}s" >"$LOG" 2>&1 &
SUP=$!
trap 'kill $SUP 2>/dev/null || true' INT TERM

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Private memory (RssAnon): the heap and stacks, without the shared pages (segments, the stress's
# ledger) that RSS also counts while they are mapped.
private() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
descendants() { # every process below $1
    local kids
    kids=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '{ s=$0; sub(/.*\) /, "", s); split(s, f, " "); if (f[2] == p) { match($0, /^[0-9]+/); print substr($0, RSTART, RLENGTH) } }')
    for k in $kids; do echo "$k"; descendants "$k"; done
}
sample() {
    local t=$1 sup priv n=0 tot=0 max=0 r bytes=0 segs=0 b kills rounds
    sup=$(rss $SUP)
    priv=$(private $SUP)
    for p in $(descendants $SUP); do
        r=$(rss "$p"); r=${r:-0}; n=$((n + 1)); tot=$((tot + r)); [ "$r" -gt "$max" ] && max=$r
    done
    for f in /dev/shm/shmwire.$SHMWIRE_PREFIX.*; do
        [ -e "$f" ] || continue
        b=$(stat -c '%b*%B' "$f"); bytes=$((bytes + b)); segs=$((segs + 1))
    done
    kills=$(grep -o 'kills [0-9]*' "$LOG" | tail -1 | awk '{print $2}'); kills=${kills:-0}
    rounds=$(grep -o 'rounds [0-9]*' "$LOG" | tail -1 | awk '{print $2}'); rounds=${rounds:-0}
    echo "$t,${sup:-0},${priv:-0},$n,$tot,$max,$bytes,$segs,$kills,$rounds" >>"$CSV"
}
START=$(date +%s)
sample 0
while kill -0 $SUP 2>/dev/null; do
    sleep "$INTERVAL"
    kill -0 $SUP 2>/dev/null || break
    sample $(( $(date +%s) - START ))
done
STATUS=0
wait $SUP || STATUS=$?
sample $(( $(date +%s) - START ))
"$BIN" plot-soak "$CSV" "$OUT/soak.svg" || true
echo "stress exited with $STATUS; $CSV, $LOG, $OUT/soak.svg"
exit $STATUS
