#!/usr/bin/env bash
# Routing overhead of `kiln route` (issue 16): p50/p99 latency of a trivial job (`debug`,
# hold_ms 0) sent N times, one at a time over a kept-alive connection, straight to a
# `kiln serve` worker and through `kiln route` in front of the same worker. Same machine.
#
# Usage: benches/route_overhead.sh [N] [KILN_BIN]
#   N defaults to 500; KILN_BIN to target/debug/kiln (a build with --features
#   kiln-worker/debug-kind: the `debug` kind is test-only).
set -euo pipefail
N="${1:-500}"
BIN="${2:-target/debug/kiln}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { stop_started; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

START_TRIES=300
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/start-listening.sh"

export KILN_LOG=warn KILN_HTTP_ADDR=127.0.0.1:0
ROUTER="$(start router KILN_ROUTE_SEED=1 "$BIN" route)"
WORKER="$(start worker KILN_DEBUG_KINDS=1 KILN_WORKER_ID=w1 KILN_STORE_URL="file://$WORK/store/" \
  KILN_ROUTER_URL="$ROUTER/v1/capacity" KILN_ROUTER_INTERVAL_MS=500 "$BIN" serve)"
for _ in $(seq 1 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$ROUTER/readyz")" = 200 ] && break; sleep 0.05
done

python3 - "$N" "$WORKER" "$ROUTER" <<'PY'
import http.client, json, sys, time, urllib.parse
n, worker, router = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def run(base, tag):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port)
    lat = []
    for i in range(n + 20):
        body = json.dumps({"id": f"{tag}-{i}", "kind": "debug", "input": {"hold_ms": 0}})
        t = time.perf_counter()
        c.request("POST", "/v1/jobs", body, {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        dt = (time.perf_counter() - t) * 1e3
        assert r.status == 200, (r.status, tag)
        if i >= 20: lat.append(dt)  # the first 20 warm up
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100 * len(lat) + 0.5)) - 1)]
    return pct(50), pct(99)
d = run(worker, "direct"); r = run(router, "routed")
print(f"jobs per path: {n} (sequential, keep-alive; debug kind, hold_ms 0)")
print(f"direct to worker : p50 {d[0]:.2f} ms  p99 {d[1]:.2f} ms")
print(f"through kiln route: p50 {r[0]:.2f} ms  p99 {r[1]:.2f} ms")
print(f"added by routing : p50 {r[0]-d[0]:.2f} ms  p99 {r[1]-d[1]:.2f} ms")
PY
