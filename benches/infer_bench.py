#!/usr/bin/env python3
"""Infer benchmark: kiln serve (HTTP, dynamic batching) vs Python onnxruntime run one request
at a time, on the same photos and the same model (nudenet's YOLOv8n detector, 320x320).

usage: .tools/venv/bin/python benches/infer_bench.py [--requests N] [--kiln target/release/kiln]
       [--accel cpu|cuda] [--ort-dylib LIB]

With --accel cuda (benches/gpu/run.sh on a GPU host) the baseline session runs on ONNX Runtime's
CUDA execution provider and every kiln job asks for `"accel": "gpu"`, so a silent fallback to
the CPU fails the run instead of passing as a GPU number.

For each concurrency level (1, 4, 16) it sends N single-image jobs to `kiln serve` from that
many client threads and reports images/s and p50/p95 latency; then again at 16 with batching
off (max_batch = 1) to state what batching adds, and with two model instances (two sessions of
cores/2 intra-op threads each) at every concurrency. The baseline is what a Python user writes:
PIL decode (full size, and with draft() JPEG shrink-on-load), nudenet's letterbox (pad
bottom/right to a square, resize to 320), onnxruntime InferenceSession.run, numpy decoding
and NMS, one image after another. Needs scripts/fetch-tools.sh and a built kiln.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, ".tools/models/320n.onnx")
LIB = os.path.join(ROOT, ".tools/onnxruntime/libonnxruntime.so")
PHOTOS = os.path.join(ROOT, "data/mate-backgrounds/usr/share/backgrounds/mate")
SIZE = 320
THR, IOU = 0.25, 0.45


def photos():
    out = []
    for d, _, files in os.walk(PHOTOS):
        for f in sorted(files):
            p = os.path.join(d, f)
            # Skip the 16-24 MP giants: a detector service gets camera-sized images.
            if f.lower().endswith(".jpg") and os.path.getsize(p) < 3_000_000:
                out.append(p)
    return sorted(out)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))]


# ---------------------------------------------------------------- Python baseline
def py_preprocess(path, draft):
    im = Image.open(path)
    if draft:
        im.draft("RGB", (SIZE, SIZE))
    im = im.convert("RGB")
    w, h = im.size
    m = max(w, h)
    canvas = Image.new("RGB", (m, m))
    canvas.paste(im, (0, 0))
    canvas = canvas.resize((SIZE, SIZE), Image.BILINEAR)
    x = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    return x, m / SIZE


def py_postprocess(pred, factor):
    pred = pred[0].T
    scores = pred[:, 4:].max(axis=1)
    keep = scores >= THR
    boxes, cls, scores = pred[keep, :4], pred[keep, 4:].argmax(axis=1), scores[keep]
    order = np.argsort(-scores)
    kept = []
    for i in order:
        cx, cy, w, h = boxes[i]
        b = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        ok = True
        for c, s, k in kept:
            if c != cls[i]:
                continue
            iw = max(0, min(b[2], k[2]) - max(b[0], k[0]))
            ih = max(0, min(b[3], k[3]) - max(b[1], k[1]))
            inter = iw * ih
            union = (b[2] - b[0]) * (b[3] - b[1]) + (k[2] - k[0]) * (k[3] - k[1]) - inter
            if union > 0 and inter / union > IOU:
                ok = False
                break
        if ok:
            kept.append((cls[i], scores[i], b))
    return [(int(c), float(s), (b * factor).tolist()) for c, s, b in kept]


PROVIDERS = ["CPUExecutionProvider"]
LOG_DIR = None  # --kiln-logs: kiln's own log (KILN_LOG=info) per server, for a run on another host


def baseline(paths, n, draft):
    sess = ort.InferenceSession(MODEL, providers=PROVIDERS)
    if sess.get_providers()[0] != PROVIDERS[0]:
        sys.exit(f"baseline wanted {PROVIDERS[0]}, onnxruntime gave {sess.get_providers()}")
    name = sess.get_inputs()[0].name
    x, f = py_preprocess(paths[0], draft)
    sess.run(None, {name: x})
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        x, f = py_preprocess(paths[i % len(paths)], draft)
        (pred,) = sess.run(None, {name: x})
        py_postprocess(pred, f)
        lat.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    return n / wall, pct(lat, 0.5) * 1e3, pct(lat, 0.95) * 1e3


# ---------------------------------------------------------------- kiln
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Kiln:
    def __init__(self, kiln, max_batch, delay_ms, slots, tmp, lib=LIB, instances=1, intra=0, accel="cpu"):
        self.accel = "gpu" if accel == "cuda" else "cpu"
        cfg = os.path.join(tmp, f"kiln-{max_batch}-{instances}.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[scheduler]
cpu_slots = {slots}
queue_depth = 1024
[infer]
ort_dylib = "{lib}"
intra_threads = {intra}
[[models]]
name = "nudenet"
uri = "file://{MODEL}"
task = "detect"
input_size = [{SIZE}, {SIZE}]
letterbox = true
pad_align = "top_left"
pad_color = [0, 0, 0]
scale = 255.0
score_threshold = {THR}
nms_iou = {IOU}
max_batch = {max_batch}
max_delay_ms = {delay_ms}
instances = {instances}
warm = true
""")
        env = dict(os.environ, KILN_CONFIG=cfg, KILN_HTTP_ADDR=f"127.0.0.1:{free_port()}",
                   KILN_STORE_URL=f"file://{tmp}/store-{max_batch}-{instances}/", KILN_LOG="warn",
                   KILN_ACCEL="auto" if self.accel == "gpu" else "cpu")
        if LOG_DIR:
            env["KILN_LOG"] = "info"
            self.log = open(os.path.join(LOG_DIR, f"kiln-{accel}-{max_batch}-{instances}.log"), "w")
        else:
            self.log = None
        self.p = subprocess.Popen([kiln, "serve"], env=env, stdout=subprocess.PIPE, stderr=self.log)
        line = self.p.stdout.readline().decode()
        self.base = line.strip().split("kiln listening on ")[1]
        t0 = time.perf_counter()
        for _ in range(600):
            try:
                if urllib.request.urlopen(self.base + "/readyz", timeout=5).status == 200:
                    break
            except Exception:
                pass
            time.sleep(0.1)
        print(f"  (kiln ready after {time.perf_counter() - t0:.1f} s)", flush=True)

    def job(self, i, path):
        body = json.dumps({"id": f"b{time.time_ns()}-{i}", "kind": "infer",
                           "input": {"model": "nudenet", "images": [f"file://{path}"], "accel": self.accel}}).encode()
        s = time.perf_counter()
        r = urllib.request.urlopen(urllib.request.Request(self.base + "/v1/jobs", data=body, method="POST"), timeout=60)
        res = json.loads(r.read())
        assert res["status"] == "succeeded", res
        assert res["infer"]["device"] == ("cuda" if self.accel == "gpu" else "cpu"), res["infer"]
        return time.perf_counter() - s, res["infer"]["batches"][0]

    def load(self, paths, n, conc):
        lat, sizes = [], []
        lock = threading.Lock()

        def one(i):
            l, b = self.job(i, paths[i % len(paths)])
            with lock:
                lat.append(l)
                sizes.append(b)

        for i in range(conc):  # warm the HTTP path and the caches
            self.job(10_000 + i, paths[i % len(paths)])
        t0 = time.perf_counter()
        with ThreadPoolExecutor(conc) as ex:
            list(ex.map(one, range(n)))
        wall = time.perf_counter() - t0
        return n / wall, pct(lat, 0.5) * 1e3, pct(lat, 0.95) * 1e3, statistics.mean(sizes)

    def stop(self):
        self.p.terminate()
        self.p.wait(30)
        if self.log:
            self.log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target/release/kiln"))
    ap.add_argument("--delay-ms", type=int, default=10)
    ap.add_argument("--instance-batch", type=int, default=4, help="max_batch of the two-instance rows")
    ap.add_argument("--ort-dylib", default=LIB, help="kiln's ONNX Runtime library (onnxruntime-gpu's for CUDA)")
    ap.add_argument("--accel", choices=("cpu", "cuda"), default="cpu", help="where the baseline and kiln run the model")
    ap.add_argument("--levels", default="1,4,16", help="client concurrency levels of the kiln rows")
    ap.add_argument("--rows", default="batch,instances,off",
                    help="kiln row groups: batch (one session), instances (--instances sessions), off (max_batch 1)")
    ap.add_argument("--instances", default="2", help="comma list of instance counts for the instances rows")
    ap.add_argument("--kiln-logs", default=None, help="folder for kiln's logs (KILN_LOG=info)")
    a = ap.parse_args()
    global LOG_DIR
    LOG_DIR = a.kiln_logs
    if a.accel == "cuda":
        PROVIDERS.insert(0, "CUDAExecutionProvider")
    levels = [int(x) for x in a.levels.split(",")]
    groups = set(a.rows.split(","))
    paths = photos()
    print(f"{len(paths)} photos, {a.requests} requests per row, model {os.path.basename(MODEL)}, {os.cpu_count()} CPUs, "
          f"accel {a.accel}, onnxruntime {ort.__version__}", flush=True)
    rows = []

    def row(r):
        rows.append(r)
        name, c, ips, p50, p95, mb = r
        print(f"  {name} | c{c} | {ips:.1f} img/s | p50 {p50:.0f} ms | p95 {p95:.0f} ms | batch {mb:.1f}", flush=True)

    ips, p50, p95 = baseline(paths, a.requests, draft=False)
    row((f"python onnxruntime ({PROVIDERS[0]}), sequential (PIL full decode)", 1, ips, p50, p95, 1))
    base_ips = ips
    ips, p50, p95 = baseline(paths, a.requests, draft=True)
    row((f"python onnxruntime ({PROVIDERS[0]}), sequential (PIL draft decode)", 1, ips, p50, p95, 1))
    draft_ips = ips
    with tempfile.TemporaryDirectory() as tmp:
        def serve(label, levels, max_batch, delay_ms, **kw):
            k = Kiln(a.kiln, max_batch, delay_ms, 16, tmp, a.ort_dylib, accel=a.accel, **kw)
            try:
                for c in levels:
                    ips, p50, p95, mb = k.load(paths, a.requests, c)
                    row((label, c, ips, p50, p95, mb))
            finally:
                k.stop()

        if "batch" in groups:
            serve(f"kiln serve, batching (max_batch 16, {a.delay_ms} ms)", levels, 16, a.delay_ms)
        # N sessions of cores/N intra-op threads each, taking batches from one queue.
        if "instances" in groups:
            ib = a.instance_batch
            for n in (int(x) for x in a.instances.split(",")):
                t = max(1, (os.cpu_count() or 1) // n)
                serve(f"kiln serve, {n} instances x {t} thread(s), batching (max_batch {ib}, {a.delay_ms} ms)", levels, ib,
                      a.delay_ms, instances=n, intra=t)
        if "off" in groups:
            serve("kiln serve, batching off (max_batch 1)", (max(levels),), 1, 0)
    print(f"| runner | concurrency | images/s | p50 ms | p95 ms | mean batch | vs python (full) | vs python (draft) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, c, ips, p50, p95, mb in rows:
        print(f"| {name} | {c} | {ips:.1f} | {p50:.0f} | {p95:.0f} | {mb:.1f} | {ips / base_ips:.2f}x | {ips / draft_ips:.2f}x |")


if __name__ == "__main__":
    main()
