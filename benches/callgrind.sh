#!/usr/bin/env bash
# Instructions per fast-path operation (see benches/callgrind.rs). Usage: benches/callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench callgrind --no-run 2>/dev/null
bin=$(ls -t target/release/deps/callgrind-* | grep -v '\.d$' | head -1)
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
for op in pipe queue lock; do
  a=$(count "$op" 10000); b=$(count "$op" 60000)
  echo "$op: $(( (b - a) / 50000 )) instructions per operation"
done
