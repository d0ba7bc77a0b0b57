#!/usr/bin/env bash
# The full benchmark: builds the iceoryx2 peer (outside the workspace), then runs `shmwire bench` with
# it (paired with the other round trips), writing the two plots next to BENCHMARKS.md.
# Usage: benches/run.sh [extra shmwire bench flags], e.g. benches/run.sh --runs 5
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --manifest-path benches/peers/iceoryx2/Cargo.toml
cargo build --release -p shmwire-cli
./target/release/shmwire bench --iceoryx2 benches/peers/iceoryx2/target/release/shmwire-peer-iceoryx2 \
  --plot benches/latency-by-size.svg --plot-throughput benches/throughput-by-size.svg "$@"
