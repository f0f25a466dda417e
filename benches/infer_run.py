#!/usr/bin/env python3
"""Infer through `kiln run` as a new user runs it: the default configuration (only the model
registered, nothing about the scheduler or sessions) vs a hand-tuned one vs Python onnxruntime
one image after another, on small and on large photos, side by side in one run.

usage: .tools/venv/bin/python benches/infer_run.py [--kiln target/release/kiln] [--jobs N]
       [--large-jobs N] [--rounds R]

Each kiln row is one `kiln run jobs.jsonl` process (one single-image infer job a line, every id
new, fresh store): images/s = jobs / the process's wall time (start-up, ONNX Runtime loading
and the warm model's session creation included), median of R rounds. The Python rows time the
same work in one process: session creation, then for each image PIL decode, nudenet's
letterbox, `InferenceSession.run`, YOLO decode + NMS (benches/infer_bench.py's baseline; once
with a full decode, once with PIL's draft() JPEG shrink-on-load). Model: nudenet 3.4.2's
320n.onnx (YOLOv8n, 320x320), ONNX Runtime 1.31 on both sides. Small photos: the 14
mate-backgrounds JPEGs under 3 MB (1280x1024 to 2560x1600); large: the two over 3 MB
(3840x2160, 5640x3172). The "mean batch" column is the mean over jobs of the batch each job's
image ran in (the result's `infer.batches`).

Configurations:
  default  [[models]] as the README documents it (max_batch 16, max_delay_ms 5, warm), nothing
           else: cpu_slots = cores, job_threads = 4 x cores, instances and intra-op threads
           from the cores.
  tuned    the issue's hand-tuned setting: scheduler.cpu_slots = 16, instances = 2,
           infer.intra_threads = 1, max_batch = 4.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import infer_bench as ib  # noqa: E402


def photo_sets():
    small, large = [], []
    for d, _, files in os.walk(ib.PHOTOS):
        for f in sorted(files):
            p = os.path.join(d, f)
            if f.lower().endswith(".jpg"):
                (small if os.path.getsize(p) < 3_000_000 else large).append(p)
    return sorted(small), sorted(large)


def python_run(paths, n, draft):
    t0 = time.perf_counter()
    sess = ort.InferenceSession(ib.MODEL, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for i in range(n):
        x, f = ib.py_preprocess(paths[i % len(paths)], draft)
        (pred,) = sess.run(None, {name: x})
        ib.py_postprocess(pred, f)
    return n / (time.perf_counter() - t0)


MODEL_TOML = """
[[models]]
name = "nudenet"
uri = "file://{model}"
task = "detect"
input_size = [320, 320]
letterbox = true
pad_align = "top_left"
pad_color = [0, 0, 0]
scale = 255.0
score_threshold = 0.25
nms_iou = 0.45
max_batch = {max_batch}
max_delay_ms = 5
warm = true
{extra}
"""

CONFIGS = {
    "default": ("", dict(max_batch=16, extra="")),
    "tuned": ("[scheduler]\ncpu_slots = 16\n", dict(max_batch=4, extra="instances = 2")),
}


def kiln_run(kiln, config, paths, n, tmp, tag):
    head, model = CONFIGS[config]
    cfg = os.path.join(tmp, f"{config}.toml")
    with open(cfg, "w") as f:
        f.write(head)
        f.write(f'[infer]\nort_dylib = "{ib.LIB}"\n' + ("intra_threads = 1\n" if config == "tuned" else ""))
        f.write(MODEL_TOML.format(model=ib.MODEL, **model))
    jobs = os.path.join(tmp, f"jobs-{tag}.jsonl")
    with open(jobs, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{tag}-{i}", "kind": "infer",
                                "input": {"model": "nudenet", "images": [f"file://{paths[i % len(paths)]}"]}}) + "\n")
    env = dict(os.environ, KILN_CONFIG=cfg, KILN_STORE_URL=f"file://{tmp}/store-{tag}/", KILN_LOG="warn", KILN_ACCEL="cpu")
    t0 = time.perf_counter()
    out = subprocess.run([kiln, "run", jobs], env=env, capture_output=True, check=True).stdout
    wall = time.perf_counter() - t0
    results = [json.loads(line) for line in out.splitlines() if line.strip()]
    bad = [r for r in results if r["status"] != "succeeded"]
    if len(results) != n or bad:
        sys.exit(f"kiln run {config}: {len(results)} results, failures: {bad[:2]}")
    batches = [r["infer"]["batches"][0] for r in results]
    return n / wall, statistics.mean(batches), max(batches)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ib.ROOT, "target/release/kiln"))
    ap.add_argument("--jobs", type=int, default=64, help="jobs per small-photo row")
    ap.add_argument("--large-jobs", type=int, default=16, help="jobs per large-photo row")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    small, large = photo_sets()
    print(f"{os.cpu_count()} CPUs, onnxruntime {ort.__version__}, {a.rounds} rounds, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, paths, n in (("small", small, a.jobs), ("large", large, a.large_jobs)):
            rows = {}
            for r in range(a.rounds):
                # Alternate the order each round so drift on a shared host hits every row alike.
                order = ["python-full", "python-draft", "default", "tuned"]
                if r % 2:
                    order.reverse()
                for name in order:
                    if name.startswith("python"):
                        v = (python_run(paths, n, draft=name.endswith("draft")), 1.0, 1)
                    else:
                        v = kiln_run(a.kiln, name, paths, n, tmp, f"{label}-{name}-{r}")
                    rows.setdefault(name, []).append(v)
                    print(f"  {label} {name} round {r}: {v[0]:.1f} img/s, mean batch {v[1]:.1f}", flush=True)
            med = {k: statistics.median(x[0] for x in v) for k, v in rows.items()}
            for k, v in rows.items():
                table.append((label, len(paths), n, k, med[k], min(x[0] for x in v), max(x[0] for x in v),
                              statistics.mean(x[1] for x in v), max(x[2] for x in v), med[k] / med["python-full"],
                              med[k] / med["python-draft"]))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("| photos | runner | jobs | images/s (median) [min–max] | mean batch | largest batch | vs python full | vs python draft |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    names = {"python-full": "python onnxruntime, sequential (PIL full decode)",
             "python-draft": "python onnxruntime, sequential (PIL draft decode)",
             "default": "`kiln run`, default config", "tuned": "`kiln run`, tuned (cpu_slots 16, 2 instances x 1 thread, max_batch 4)"}
    for label, np_, n, k, m, lo, hi, mb, big, vf, vd in table:
        print(f"| {label} ({np_}) | {names[k]} | {n} | {m:.1f} [{lo:.1f}–{hi:.1f}] | {mb:.1f} | {big} | {vf:.2f}x | {vd:.2f}x |")


if __name__ == "__main__":
    main()
