#!/usr/bin/env bash
# valgrind memcheck over the single-process tests (the library's unit tests, two of
# tests/hostile.rs) and the fuzz-corpus replay (every kept input of every fuzz target, through the
# functions the targets call; forked test processes are checked too): zero
# errors expected. Every process valgrind sees (the test runner forks each test) writes its own log;
# the script sums their error counts and fails on any.
# Usage: benches/memcheck.sh   (needs valgrind; takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
logs=${MEMCHECK_LOGS:-$(mktemp -d)}
[ -n "${MEMCHECK_LOGS:-}" ] || trap 'rm -rf "$logs"' EXIT
export SHMWIRE_PREFIX="memcheck$$" SHMWIRE_TEST_TIMEOUT=1200

# The test binaries `cargo test` builds (the test profile: opt-level 2, debug info).
bin_of() {
  cargo test --features test-hooks,pickle "$@" --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
}
lib=$(bin_of --lib)
replay=$(bin_of --test transport)
hostile=$(bin_of --test hostile)

vg() {
  local what=$1; shift
  echo "== $what"
  # Unit tests run on one thread: valgrind serialises threads anyway, and the futex-timed tests
  # keep their margins that way.
  valgrind --tool=memcheck --error-exitcode=99 --track-origins=yes --trace-children=no \
    --log-file="$logs/$what.%p.log" "$@" > "$logs/$what.out" 2>&1 || {
    grep -A2 "panicked at" "$logs/$what.out" | head -20
    echo "$what: the tests failed under memcheck (see above)"
    failed=1
  }
  tail -3 "$logs/$what.out"
}
failed=0
start=$(date +%s)
# Skipped: a pool function's check reads the code ranges in /proc/self/maps, which under valgrind
# are valgrind's own (not a memory error; the test passes natively).
vg unit "$lib" --test-threads=1 --skip a_function_crosses_as_offsets
vg replay "$replay" fuzz_corpus_replays_without_a_panic a_small_pickle_never_builds_more_than_its_bound
# Hostile bytes and bounds on one machine word at a time: the sealed memfds, the dict whose
# entries a peer gave one hash.
vg hostile "$hostile" every_unnamed_object_is_a_sealed_memfd \
  a_dict_whose_entries_share_one_hash_grows_in_bounded_time
secs=$(( $(date +%s) - start ))

processes=$(ls "$logs"/*.log | wc -l)
# A process killed by a signal (a pool's workers at terminate()) writes no summary.
summed=$(grep -l "ERROR SUMMARY" "$logs"/*.log | wc -l)
errors=$(cat "$logs"/*.log | sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' | paste -sd+ | bc)
echo "memcheck: $processes processes ($summed ran to exit, the others were killed), $errors errors, ${secs}s"
if [ "$errors" != 0 ] || [ "$failed" != 0 ]; then
  grep -l "ERROR SUMMARY: [1-9]" "$logs"/*.log | head -3 | xargs -r cat
  exit 1
fi
ls /dev/shm | grep -q "^shmwire\.memcheck$$" && { echo "left in /dev/shm"; exit 1; }
exit 0
