#!/usr/bin/env python3
"""Cold start and warm latency of kiln as a Lambda function (through the cargo-lambda Runtime
API emulator), side by side with the same thumbnail job over kiln's HTTP API.

cold: process start -> first result received by the caller (a fresh kiln process each round).
warm: one process, N invocations / requests, each a new job id (so nothing is served from the
      stored-result cache).

Usage: benches/lambda_bench.py [--rounds 5] [--warm 50] [--bin target/release/kiln]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = os.path.realpath(os.path.join(ROOT, "data/mate-backgrounds/usr/share/backgrounds/mate/nature/Dune.jpg"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"nothing listens on {port}")


def job(i):
    return {"id": f"bench-{os.getpid()}-{i}-{time.time_ns()}", "kind": "thumbnail",
            "input": {"source": PHOTO, "outputs": [{"name": "256.jpg", "width": 256, "height": 256,
                                                    "fit": "inside", "format": "jpeg", "quality": 80}]}}


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.loads(r.read())
    res = json.loads(out["body"]) if "statusCode" in out else out
    if res.get("status") != "succeeded":
        raise SystemExit(f"job failed: {res}")
    return res


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/kiln"))
    ap.add_argument("--samples", help="also write every sample (ms) as JSON here "
                    "(raw input for the hybrid simulator, benches/sim/samples.json)")
    a = ap.parse_args()
    emu_bin = os.path.join(ROOT, ".tools/bin/cargo-lambda")
    for p in (a.bin, emu_bin, PHOTO):
        if not os.path.exists(p):
            raise SystemExit(f"missing {p} (make build-release fixtures)")
    work = tempfile.mkdtemp(prefix="kiln-lambda-bench-")
    fn = os.path.join(work, "fn")
    os.makedirs(os.path.join(fn, "src"))
    open(os.path.join(fn, "Cargo.toml"), "w").write('[package]\nname="f"\nversion="0.0.0"\nedition="2021"\n[workspace]\n')
    open(os.path.join(fn, "src/main.rs"), "w").write("fn main() {}\n")
    port = free_port()
    emu = subprocess.Popen([emu_bin, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
                           cwd=fn, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    invoke = f"http://127.0.0.1:{port}/2015-03-31/functions/_/invocations"
    # kiln confines what lambda and serve jobs may read: allow the photo's folder.
    base_env = dict(os.environ, KILN_LOG="warn", KILN_STORE_URL=f"file://{work}/store/",
                    KILN_SOURCES_ALLOW=f"file://{os.path.dirname(PHOTO)}/")
    lam_env = dict(base_env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}/.rt", AWS_LAMBDA_FUNCTION_NAME="_",
                   AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048")
    rows = {}
    try:
        wait_port(port)
        lam_cold, http_cold, init_ms = [], [], []
        lam_warm, http_warm = [], []
        for r in range(a.rounds):
            # Lambda: spawn, invoke at once (the emulator holds the event until the runtime polls).
            t0 = time.perf_counter()
            p = subprocess.Popen([a.bin], env=lam_env, stdout=subprocess.DEVNULL)
            res = post(invoke, job(f"lc{r}"))
            lam_cold.append((time.perf_counter() - t0) * 1e3)
            init_ms.append(res["lambda"]["init_ms"])
            if r == 0:
                for i in range(a.warm):
                    t = time.perf_counter()
                    post(invoke, job(f"lw{i}"))
                    lam_warm.append((time.perf_counter() - t) * 1e3)
            p.terminate(); p.wait()
            # HTTP: spawn, first result once the port answers (includes kiln's warm-up).
            hp = free_port()
            t0 = time.perf_counter()
            p = subprocess.Popen([a.bin, "serve"], env=dict(base_env, KILN_HTTP_ADDR=f"127.0.0.1:{hp}"),
                                 stdout=subprocess.DEVNULL)
            wait_port(hp)
            post(f"http://127.0.0.1:{hp}/v1/jobs", job(f"hc{r}"))
            http_cold.append((time.perf_counter() - t0) * 1e3)
            if r == 0:
                for i in range(a.warm):
                    t = time.perf_counter()
                    post(f"http://127.0.0.1:{hp}/v1/jobs", job(f"hw{i}"))
                    http_warm.append((time.perf_counter() - t) * 1e3)
            p.terminate(); p.wait()
        rows = {
            "lambda cold start (spawn -> first result)": lam_cold,
            "http cold start (spawn -> first result)": http_cold,
            "lambda warm invocation": lam_warm,
            "http warm request": http_warm,
        }
        print(f"| measure | n | p50 ms | p99 ms | mean ms |")
        print(f"|---|---|---|---|---|")
        for k, v in rows.items():
            print(f"| {k} | {len(v)} | {statistics.median(v):.1f} | {pct(v, 0.99):.1f} | {statistics.mean(v):.1f} |")
        print(f"\nkiln's own init (process start -> runtime ready), as reported: median {statistics.median(init_ms):.2f} ms")
        print(f"warm lambda / warm http (p50): {statistics.median(lam_warm) / statistics.median(http_warm):.2f}x")
        if a.samples:
            with open(a.samples, "w") as f:
                json.dump({"command": " ".join(["benches/lambda_bench.py"] + sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "load": "%.2f" % os.getloadavg()[0],
                           "samples_ms": rows, "kiln_init_ms": init_ms}, f, indent=1)
            print(f"lambda bench: wrote samples to {a.samples}", file=sys.stderr)
    finally:
        emu.terminate(); emu.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
