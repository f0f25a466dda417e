#!/usr/bin/env bash
# The hybrid on one machine (issue 16, `make demo-hybrid`): `kiln route` in front of one
# `kiln serve` container worker and `kiln` as a Lambda function under cargo-lambda's
# emulator (invoked through the Lambda Invoke API), all on 127.0.0.1 with one shared
# filesystem store. Sends a burst of mixed jobs (thumbnails of small and large photos,
# render pages, a short transcode) through the router, prints where each ran and why, the
# count and latency per tier, and last one JSON summary line:
#   {"jobs": N, "failed": 0, "by_tier": {"container": …, "serverless": …}, "overflowed": …,
#    "fallback_exercised": …, "dual_routed": …, "retried_on_other_tier": …}
# Everything it started is stopped on exit.
#
# Usage: scripts/demo-hybrid.sh [KILN_BIN]   (default target/debug/kiln)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/debug/kiln}"
ROOT="$PWD"
EMU="$ROOT/.tools/bin/cargo-lambda"
PHOTOS="$ROOT/data/mate-backgrounds/usr/share/backgrounds/mate/nature"
[ -x "$BIN" ] || { echo "no $BIN: build first (cargo build --workspace)" >&2; exit 1; }
[ -x "$EMU" ] || { echo "no $EMU: run scripts/fetch-tools.sh" >&2; exit 1; }
[ -d "$PHOTOS" ] || { echo "no photos: run scripts/fetch-photos.sh" >&2; exit 1; }
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  stop_started
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
. "$ROOT/scripts/start-listening.sh"

export KILN_LOG=warn KILN_HTTP_ADDR=127.0.0.1:0
unset KILN_CONFIG KILN_MODE || true
STORE="file://$WORK/store/"
ALLOW="file://$ROOT/data/,file://$WORK/media/"
mkdir -p "$WORK/media" "$WORK/fn/src"

# A 4 s test clip for the transcode.
ffmpeg -loglevel error -f lavfi -i testsrc2=size=640x360:rate=25:duration=4 -c:v libx264 -pix_fmt yuv420p \
  "$WORK/media/clip.mp4"

# The function: the emulator serves the Runtime API (kiln polls it) and the Invoke API.
PORT="$(free_port)"
printf '[package]\nname = "f"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n' >"$WORK/fn/Cargo.toml"
echo 'fn main() {}' >"$WORK/fn/src/main.rs"
(cd "$WORK/fn" && exec "$EMU" lambda watch --only-lambda-apis -A 127.0.0.1 -P "$PORT") >"$WORK/emu.out" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
env AWS_LAMBDA_RUNTIME_API="127.0.0.1:$PORT/.rt" AWS_LAMBDA_FUNCTION_NAME=_ AWS_LAMBDA_FUNCTION_VERSION=1 \
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE=2048 KILN_STORE_URL="$STORE" KILN_SOURCES_ALLOW="$ALLOW" \
  KILN_LAMBDA_KINDS=thumbnail,render KILN_LAMBDA_MAX_INPUT_BYTES=800000 \
  "$BIN" >"$WORK/fn.out" 2>"$WORK/fn.err" &
PIDS+=("$!")

# The policy: the defaults (thumbnails serverless-first, the rest container-first), the
# local function's name, a visible exercised-fallback share; no cold-start override (an
# idle container would always win against the cold function on one machine).
cat >"$WORK/policy.json" <<'JSON'
{"exercise_share": 0.1, "dual_share": 0.0, "cold_start_override": {"enabled": false},
 "serverless": {"function": "_"}}
JSON
ROUTER="$(start router KILN_ROUTE_POLICY="$WORK/policy.json" KILN_ROUTE_DECISION_LOG="$WORK/decisions.jsonl" \
  KILN_ROUTE_SEED=3 KILN_ROUTE_LAMBDA="http://127.0.0.1:$PORT" KILN_ROUTE_LAMBDA_STREAMING=emulator AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true "$BIN" route)"
WORKER="$(start worker KILN_WORKER_ID=container-1 KILN_STORE_URL="$STORE" KILN_SOURCES_ALLOW="$ALLOW" \
  KILN_ROUTER_URL="$ROUTER/v1/capacity" KILN_ROUTER_INTERVAL_MS=500 "$BIN" serve)"
for _ in $(seq 1 600); do
  curl -sf "$ROUTER/metrics" | grep -q 'kiln_route_capacity_reports_total{outcome="inserted"} 1' && break
  sleep 0.05
done
echo "router $ROUTER, container worker $WORKER, function http://127.0.0.1:$PORT (cargo-lambda emulator)"

python3 - "$ROUTER" "$PHOTOS" "$WORK" <<'PY'
import concurrent.futures as cf, json, os, sys, time, urllib.request
router, photos, work = sys.argv[1:4]
pics = sorted(os.listdir(photos))
jobs = []
for i in range(24):
    p = pics[i % len(pics)]
    jobs.append({"id": f"thumb-{i:02d}", "kind": "thumbnail", "priority": "interactive",
                 "input": {"source": f"{photos}/{p}", "outputs": [
                     {"name": "256.webp", "width": 256, "height": 256, "fit": "inside", "format": "webp"}]}})
for i in range(4):
    jobs.append({"id": f"render-{i}", "kind": "render", "priority": "batch", "input": {"format": "png", "pages": [
        {"width": 800, "height": 600, "dpi": 96, "background": "#ffffff", "layers": [
            {"type": "rect", "x": 40, "y": 40, "width": 300, "height": 200, "fill": "#3366ccff"},
            {"type": "text", "x": 60, "y": 320, "text": f"kiln hybrid demo {i}", "size": 32, "color": "#000000"}]}]}})
jobs.append({"id": "transcode-0", "kind": "transcode", "priority": "batch", "input": {
    "source": f"{work}/media/clip.mp4", "ladder": [{"height": 240, "bitrate_kbps": 400}], "segment_seconds": 2}})

def send(job):
    body = json.dumps(job).encode()
    req = urllib.request.Request(f"{router}/v1/jobs", body, {"content-type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, route, res = r.status, r.headers.get("x-kiln-route", ""), json.load(r)
    except urllib.error.HTTPError as e:
        status, route, res = e.code, e.headers.get("x-kiln-route", ""), json.load(e)
    ms = (time.perf_counter() - t) * 1e3
    f = dict(kv.split("=", 1) for kv in route.split("; ") if "=" in kv)
    return job, status, f, res, ms

with cf.ThreadPoolExecutor(8) as ex:
    done = list(ex.map(send, jobs))
decisions = {}
with open(f"{work}/decisions.jsonl") as fh:
    for line in fh:
        d = json.loads(line)
        decisions[d["job_id"]] = d
by_tier, lat, failed, retried = {}, {}, 0, 0
print(f"{'job':<13} {'ran on':<11} {'placed':<11} {'rule':<20} {'ms':>8}  where / note")
for job, status, f, res, ms in done:
    tier = f.get("tier", "none")
    ok = status == 200 and res.get("status") == "succeeded"
    failed += 0 if ok else 1
    by_tier[tier] = by_tier.get(tier, 0) + 1
    lat.setdefault(tier, []).append(ms)
    retried += tier not in ("none", f.get("placed"))
    note = f.get("note", "")
    print(f"{job['id']:<13} {tier:<11} {f.get('placed',''):<11} {f.get('rule',''):<20} {ms:8.1f}  {f.get('worker','')}"
          + (f" / {note}" if note else "") + ("" if ok else f"  FAILED {status} {res.get('error')}"))
    reasons = decisions.get(job["id"], {}).get("reasons", [])
    print(f"{'':<13} why: {'; '.join(reasons)}")
print()
for tier, xs in sorted(lat.items()):
    xs.sort()
    pct = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    print(f"{tier:<11} jobs {len(xs):3d}  p50 {pct(0.5):8.1f} ms  p95 {pct(0.95):8.1f} ms")
ds = [decisions[j["id"]] for j in jobs if j["id"] in decisions]
summary = {
    "jobs": len(done),
    "failed": failed,
    "by_tier": {"container": by_tier.get("container", 0), "serverless": by_tier.get("serverless", 0)},
    "overflowed": sum(1 for d in ds if any(r.startswith("share ") for r in d["reasons"])),
    "fallback_exercised": sum(1 for d in ds if d.get("exercise")),
    "dual_routed": sum(1 for d in ds if d.get("dual")),
    "retried_on_other_tier": retried,
}
print(json.dumps(summary))
sys.exit(1 if failed else 0)
PY
