#!/usr/bin/env python3
"""ONNX Runtime alone on the infer benchmark's model: images/s by batch size and intra-op
threads, on random input (no decoding, no HTTP). It is the ceiling any server on this host
can reach with this model, and shows how ONNX Runtime's CPU kernels scale with threads.

usage: .tools/venv/bin/python benches/ort_ceiling.py [--seconds 4] [--threads 1 2]

The last row runs one single-threaded session per core side by side (what kiln's
`instances` does), summing their images/s.
"""
import argparse
import os
import threading
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, ".tools/models/320n.onnx")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    a = ap.parse_args()
    print(f"model {os.path.basename(MODEL)}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs")
    print("| intra-op threads | batch 1 | batch 4 | batch 8 | batch 16 |")
    print("|---:|---:|---:|---:|---:|")
    def session(threads):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        return ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])

    def rate(sessions, b):
        x = np.random.rand(b, 3, 320, 320).astype(np.float32)
        counts = [0] * len(sessions)

        def loop(i, s):
            name = s.get_inputs()[0].name
            s.run(None, {name: x})
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < a.seconds:
                s.run(None, {name: x})
                counts[i] += b

        t0 = time.perf_counter()
        ts = [threading.Thread(target=loop, args=(i, s)) for i, s in enumerate(sessions)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (time.perf_counter() - t0)

    for t in a.threads:
        s = session(t)
        print(f"| {t} | " + " | ".join(f"{rate([s], b):.1f}" for b in (1, 4, 8, 16)) + " |")
    cores = os.cpu_count() or 1
    ss = [session(1) for _ in range(cores)]
    print(f"| {cores} sessions x 1 | " + " | ".join(f"{rate(ss, b):.1f}" for b in (1, 4, 8, 16)) + " |")


if __name__ == "__main__":
    main()
