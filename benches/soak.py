#!/usr/bin/env python3
"""Memory under sustained load: `kiln serve` takes thumbnail jobs over HTTP from C concurrent
clients for N jobs over the mate-backgrounds photos (JPEG and PNG, every job a new id so
nothing comes from the result cache), while kiln's RSS is sampled every 100 ms from /proc.

Reports peak RSS, RSS after the first 10% of jobs and at the end (a plateau means memory is
bounded, growth means a leak), throughput, and latency percentiles.

Usage: benches/soak.py [--jobs 1500] [--concurrency 8] [--bin target/release/kiln]
"""
import argparse, glob, json, os, shutil, socket, statistics, subprocess, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "data/mate-backgrounds/usr/share/backgrounds/mate")


def rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/kiln"))
    a = ap.parse_args()
    photos = sorted(glob.glob(f"{PHOTOS}/*/*.jpg") + glob.glob(f"{PHOTOS}/*/*.png"))
    if not photos or not os.path.exists(a.bin):
        raise SystemExit("missing photos or binary (make build-release fixtures)")
    work = tempfile.mkdtemp(prefix="kiln-soak-")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, KILN_LOG="warn", KILN_STORE_URL=f"file://{work}/store/",
               KILN_HTTP_ADDR=f"127.0.0.1:{port}", KILN_QUEUE_DEPTH=str(a.concurrency * 4),
               # `serve` reads only from the store and the allowlist (issue 19).
               KILN_SOURCES_ALLOW=f"file://{PHOTOS}/")
    proc = subprocess.Popen([a.bin, "serve"], env=env, stdout=subprocess.DEVNULL)
    samples, lat, done_at, errors = [], [], [], []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append((time.perf_counter(), rss_mb(proc.pid)))
            time.sleep(0.1)

    counter = iter(range(a.jobs))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            src = photos[i % len(photos)]
            body = {"id": f"soak-{i}", "kind": "thumbnail", "input": {"source": src, "outputs": [
                {"name": "256.jpg", "width": 256, "height": 256, "fit": "inside", "format": "jpeg", "quality": 80},
                {"name": "128.webp", "width": 128, "height": 128, "fit": "cover", "format": "webp"}]}}
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/jobs", data=json.dumps(body).encode(), method="POST")
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    res = json.loads(r.read())
                if res.get("status") != "succeeded":
                    errors.append(res)
            except Exception as e:  # 503s would show here: the queue is sized to the clients
                errors.append(str(e))
            lat.append((time.perf_counter() - t) * 1e3)
            with lock:
                done_at.append((time.perf_counter(), rss_mb(proc.pid)))

    try:
        end = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                if time.time() > end:
                    raise SystemExit("kiln did not become ready")
                time.sleep(0.05)
        th = threading.Thread(target=sampler, daemon=True); th.start()
        t0 = time.perf_counter()
        clients = [threading.Thread(target=client) for _ in range(a.concurrency)]
        for c in clients: c.start()
        for c in clients: c.join()
        wall = time.perf_counter() - t0
        stop.set(); th.join()
        peak = max(r for _, r in samples)
        tenth = done_at[len(done_at) // 10][1]
        last = done_at[-1][1]
        lat.sort()
        print(f"| jobs | clients | wall s | jobs/s | p50 ms | p99 ms | RSS at 10% MB | RSS at end MB | peak RSS MB | errors |")
        print(f"|---|---|---|---|---|---|---|---|---|---|")
        print(f"| {a.jobs} | {a.concurrency} | {wall:.1f} | {a.jobs / wall:.1f} | {lat[len(lat) // 2]:.1f} | "
              f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f} | {tenth:.0f} | {last:.0f} | {peak:.0f} | {len(errors)} |")
        if errors:
            print("first error:", errors[0])
    finally:
        proc.terminate(); proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
