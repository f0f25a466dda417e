#!/usr/bin/env bash
# kill -9 loop (issue 22): a Kafka-consuming `kiln serve` (debug kind, 2 slots, queue 4,
# static membership: the same kafka.instance_id on every restart) is killed with SIGKILL
# KILLS times while it works through JOBS jobs on a tansu broker (.tools/bin/tansu), each time
# right after it has stored a few more results (so every restart is shown to rejoin and work);
# a last consumer finishes and drains. Prints the tally: jobs produced, results on the topic,
# duplicates, lost (must be 0), wall time and seconds per kill, and how soon each consumer
# was served: the group's first join, and the median and worst restart.
# KILN_KILL_LOOP_STATIC=0 runs the same loop without kafka.instance_id, for comparison.
#
# It is the ignored test `kill_9_loop_bench` in tests/tests/faults.rs (the ordinary suite runs
# the same loop with 5 kills).
#
# Usage: benches/kill_loop.sh [KILLS] [JOBS]   (defaults 50 and 1200)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KILN_KILL_LOOP_KILLS="${1:-50}" KILN_KILL_LOOP_JOBS="${2:-1200}"
cargo build --workspace --features kiln-worker/debug-kind -q
cargo test --workspace --features kiln-worker/debug-kind -q --test faults -- --ignored --nocapture kill_9_loop_bench 2>&1 \
  | grep -E '^kill loop:|test result|panicked'
