#!/usr/bin/env bash
# Instructions per fast-path operation (see benches/callgrind/src/main.rs), on the library as users
# build it: Pipe 64 B send+recv, Queue put_pod+get_pod, Lock acquire+release, Connection::poll with
# nothing there, and crossbeam-channel's send+recv for comparison. Each is counted at two repeat
# counts and the difference divided, so set-up and tear-down cancel out.
# Usage: benches/callgrind.sh   (needs valgrind; the figures repeat from run to run)
set -euo pipefail
cd "$(dirname "$0")/callgrind"
CARGO_TARGET_DIR=../../target/callgrind cargo build --release -q
bin=../../target/callgrind/release/shmwire-callgrind
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
for op in pipe queue lock poll crossbeam; do
  a=$(count "$op" 10000); b=$(count "$op" 60000)
  echo "$op: $(( (b - a) / 50000 )) instructions per operation"
done
