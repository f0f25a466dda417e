#!/usr/bin/env python3
"""Load (issue 22): C concurrent HTTP clients post thumbnail jobs to one `kiln serve` for S
seconds, each over its own kept-alive connection, every job a new id (nothing from the result
cache). A well-behaved client: on 503 it waits for the `Retry-After` it was given (capped at
1 s, so the pressure stays on). Alongside, hostile clients: slow ones that send their request
headers one byte a second, slow ones that send a body one byte a second, and oversized bodies.

Checks and reports: only 200 and 503 (each 503 with Retry-After) for the well-behaved clients,
p50/p99 of the 200s, throughput, peak RSS (sampled every 100 ms from /proc) against --rss-mb,
whether the slow clients were cut off (and after how long) or still held their connection at
the end, and what the oversized bodies got (413 expected). Exits 1 when a check fails.

Usage: benches/load.py [--clients 300] [--seconds 20] [--slow 20] [--rss-mb 600]
                       [--bin target/release/kiln]
"""
import argparse, asyncio, glob, json, os, shutil, socket, subprocess, tempfile, time, urllib.request

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


async def read_response(reader):
    """(status, headers, body) of one HTTP/1.1 response with a Content-Length."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed")
    status = int(line.split()[1])
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return status, headers, body


def request(port, body):
    return (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def client(n, port, photos, until, stats):
    reader = writer = None
    i = 0
    while time.perf_counter() < until:
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        src = photos[(n + i) % len(photos)]
        i += 1
        body = json.dumps({"id": f"load-{n}-{i}", "kind": "thumbnail", "input": {"source": src, "outputs": [
            {"name": "128.jpg", "width": 128, "height": 128, "fit": "inside", "format": "jpeg", "quality": 75}]}}).encode()
        t = time.perf_counter()
        try:
            writer.write(request(port, body))
            await writer.drain()
            status, headers, _ = await read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            stats["conn_errors"] += 1
            stats["examples"].append(f"client {n}: {e!r}")
            writer = None
            continue
        ms = (time.perf_counter() - t) * 1e3
        stats["status"][status] = stats["status"].get(status, 0) + 1
        if status == 200:
            stats["lat"].append(ms)
        elif status == 503:
            ra = headers.get("retry-after")
            if ra is None:
                stats["503_without_retry_after"] += 1
                ra = "1"
            await asyncio.sleep(min(float(ra), 1.0))
        else:
            stats["examples"].append(f"client {n}: status {status}")
        if headers.get("connection", "").lower() == "close":
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def slow_client(port, mode, until, out):
    """Sends a request one byte a second; records when (if) the server cuts it off."""
    body = b'{"id":"slow","kind":"thumbnail","input":{}}' * 20
    if mode == "headers":
        data = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: " + "a" * 4096).encode()
    else:
        data = request(port, body)
        head_len = data.index(b"\r\n\r\n") + 4
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        if mode == "body":
            writer.write(data[:head_len])
            sent = head_len
        while time.perf_counter() < until and sent < len(data):
            writer.write(data[sent:sent + 1])
            sent += 1
            await writer.drain()
            try:
                got = await asyncio.wait_for(reader.read(1024), timeout=1.0)
                if got == b"" or got:
                    out.append((mode, "cut", time.perf_counter() - t0, got[:40]))
                    return
            except asyncio.TimeoutError:
                pass
        out.append((mode, "held", time.perf_counter() - t0, b""))
    except (ConnectionError, OSError):
        out.append((mode, "cut", time.perf_counter() - t0, b""))
    finally:
        writer.close()


async def oversized(port, max_body, out):
    body = b"x" * (max_body + 1)
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(port, body))
        await writer.drain()
        status, _, _ = await asyncio.wait_for(read_response(reader), timeout=30)
        out.append((status, time.perf_counter() - t0))
        writer.close()
    except Exception as e:
        out.append((repr(e), time.perf_counter() - t0))


async def run(a, port, pid, photos):
    stats = {"status": {}, "lat": [], "503_without_retry_after": 0, "conn_errors": 0, "examples": []}
    samples = []
    t0 = time.perf_counter()
    until = t0 + a.seconds

    async def sampler():
        while time.perf_counter() < until + 1:
            samples.append(rss_mb(pid))
            await asyncio.sleep(0.1)

    slow_out, big_out = [], []
    tasks = [asyncio.create_task(sampler())]
    tasks += [asyncio.create_task(client(n, port, photos, until, stats)) for n in range(a.clients)]
    tasks += [asyncio.create_task(slow_client(port, "headers" if k % 2 == 0 else "body", until, slow_out)) for k in range(a.slow)]
    tasks += [asyncio.create_task(oversized(port, a.max_body, big_out)) for _ in range(5)]
    await asyncio.gather(*tasks)
    return stats, samples, slow_out, big_out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--slow", type=int, default=20)
    ap.add_argument("--rss-mb", type=float, default=600)
    ap.add_argument("--max-body", type=int, default=1024 * 1024)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/kiln"))
    a = ap.parse_args()
    photos = sorted(p for p in glob.glob(f"{PHOTOS}/*/*.jpg") if os.path.getsize(p) < 400_000)
    if not photos or not os.path.exists(a.bin):
        raise SystemExit("missing photos or binary (scripts/fetch-photos.sh; a release build)")
    work = tempfile.mkdtemp(prefix="kiln-load-")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, KILN_LOG="warn", KILN_STORE_URL=f"file://{work}/store/",
               KILN_HTTP_ADDR=f"127.0.0.1:{port}", KILN_HTTP_MAX_BODY_BYTES=str(a.max_body),
               # `serve` reads only from the store and the allowlist (issue 19).
               KILN_SOURCES_ALLOW=f"file://{PHOTOS}/")
    env.pop("KILN_CONFIG", None)
    proc = subprocess.Popen([a.bin, "serve"], env=env, stdout=subprocess.DEVNULL)
    ok = True
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
        stats, samples, slow_out, big_out, wall = asyncio.run(run(a, port, proc.pid, photos))
        lat = sorted(stats["lat"])
        pct = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")
        peak = max(samples) if samples else 0
        codes = stats["status"]
        others = {k: v for k, v in codes.items() if k not in (200, 503)}
        print(f"| clients | seconds | 200 | 503 | other | 503 w/o Retry-After | conn errors | jobs/s | p50 ms | p99 ms | peak RSS MiB (bound) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {a.clients} | {a.seconds:.0f} | {codes.get(200, 0)} | {codes.get(503, 0)} | {sum(others.values())} | "
              f"{stats['503_without_retry_after']} | {stats['conn_errors']} | {codes.get(200, 0) / wall:.1f} | "
              f"{pct(0.5):.0f} | {pct(0.99):.0f} | {peak:.0f} ({a.rss_mb:.0f}) |")
        for mode in ("headers", "body"):
            rows = [r for r in slow_out if r[0] == mode]
            cut = [r[2] for r in rows if r[1] == "cut"]
            print(f"slow {mode}: {len(rows)} clients, {len(cut)} cut off"
                  + (f" after {min(cut):.1f}-{max(cut):.1f} s" if cut else "")
                  + f", {len(rows) - len(cut)} still connected at the end")
        print(f"oversized bodies ({a.max_body + 1} bytes): {[b[0] for b in big_out]} in {max((b[1] for b in big_out), default=0):.2f} s at most")
        if stats["examples"]:
            print("examples:", stats["examples"][:5])
        ok = (not others and stats["503_without_retry_after"] == 0 and stats["conn_errors"] == 0
              and peak <= a.rss_mb and all(b[0] == 413 for b in big_out))
        print("checks:", "ok" if ok else "FAILED")
    finally:
        proc.terminate(); proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
