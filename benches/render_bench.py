#!/usr/bin/env python3
"""Render throughput: a 100-page document with image and text layers, CPU compositor vs the
wgpu compositor (stdlib only; driven by render.sh).

Each page is A4 at 150 dpi (1240x1754): a photo (one of four mate-backgrounds JPEGs) over the
top half, a translucent rectangle, a title and twelve lines of body text. Each round runs
`kiln run` once per backend (accel cpu, accel gpu), alternating which goes first, with a fresh
store and output dir; pages/s = pages / the result's timings.run_ms (the job itself: decode,
composite, encode, store, PDF assembly) and pages / process wall time (start-up and wgpu device
creation included). Median over rounds, [min-max].
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- render-bench:start -->", "<!-- render-bench:end -->"
PHOTOS = ["Dune.jpg", "Garden.jpg", "LadyBird.jpg", "GreenMeadow.jpg"]
BODY = ("kiln composites each page from its layers, then streams the PDF to the store; "
        "a crash on page 180 of 200 costs one page, not 180.")


def die(msg):
    print(f"render bench: {msg}", file=sys.stderr)
    sys.exit(1)


def spec(pages, fmt, accel):
    photo_dir = os.path.join(ROOT, "data/mate-backgrounds/usr/share/backgrounds/mate/nature")
    out = []
    for i in range(pages):
        layers = [
            {"type": "image", "source": "file://" + os.path.join(photo_dir, PHOTOS[i % len(PHOTOS)]),
             "x": 80, "y": 80, "width": 1080, "height": 720},
            {"type": "rect", "x": 60, "y": 860, "width": 1120, "height": 820, "fill": "#ffeecc80",
             "stroke": "#333333", "stroke_width": 2},
            {"type": "text", "x": 90, "y": 880, "text": f"Page {i + 1}: kiln render benchmark", "size": 44,
             "font": "serif-bold"},
        ]
        for line in range(12):
            layers.append({"type": "text", "x": 90, "y": 960 + 52 * line, "text": BODY[:70 + line], "size": 26})
        out.append({"width": 1240, "height": 1754, "dpi": 150, "background": "#ffffff", "layers": layers})
    return {"pages": out, "format": fmt, "accel": accel}


def run(kiln, work, pages, fmt, accel):
    store, outdir = os.path.join(work, "store"), os.path.join(work, "out")
    for d in (store, outdir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    env = dict(os.environ, KILN_STORE_URL=f"file://{store}/", KILN_LOG="warn")
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    env.pop("KILN_CONFIG", None)
    job = {"id": f"bench-{accel}", "kind": "render", "input": spec(pages, fmt, accel), "output": f"file://{outdir}/"}
    t0 = time.perf_counter()
    p = subprocess.run([kiln, "run", "-"], input=json.dumps(job), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    if not lines or lines[0].get("status") != "succeeded":
        die(f"accel {accel} failed: {lines[:1]} {p.stderr[-2000:]}")
    r = lines[0]
    size = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir) if not f.startswith("."))
    return r["timings"]["run_ms"] / 1e3, wall, r.get("compositor"), size


def fmt_rate(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    # png: every page composited (a pdf page is written as vectors, without compositing;
    # benches/render_pdf.sh measures that path).
    ap.add_argument("--format", default="png")
    ap.add_argument("--backends", default="cpu,gpu")
    ap.add_argument("--label", default="", help="where the gpu backend ran, e.g. 'lavapipe'")
    ap.add_argument("--command", default="benches/render.sh")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--samples", help="also write every round's job run_ms as JSON here "
                    "(raw input for the hybrid simulator: benches/sim/merge_samples.py)")
    a = ap.parse_args()
    backends = a.backends.split(",")
    res = {b: {"run": [], "wall": [], "run_ms": [], "compositor": None, "bytes": 0} for b in backends}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        for r in range(a.rounds):
            order = backends if r % 2 == 0 else list(reversed(backends))
            for b in order:
                run_s, wall, comp, size = run(a.kiln, work, a.pages, a.format, b)
                res[b]["run"].append(a.pages / run_s)
                res[b]["run_ms"].append(run_s * 1e3)
                res[b]["wall"].append(a.pages / wall)
                res[b]["compositor"], res[b]["bytes"] = comp, size
                print(f"round {r + 1} {b}: {a.pages / run_s:.2f} pages/s (job), {a.pages / wall:.2f} (process)", file=sys.stderr)
    load1 = os.getloadavg()[0]
    cpu = platform.processor() or platform.machine()
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    md = [START, "## Render: CPU compositor vs wgpu", "",
          f"Command: `{a.command}`  ",
          f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
          f"Host: {cpu}, {os.cpu_count()} CPUs; 1-min load average {load0:.2f} before, {load1:.2f} after  ",
          f"Document: {a.pages} pages, A4 at 150 dpi (1240x1754), each a 1080x720 photo (4 JPEGs in turn), "
          f"a translucent stroked rectangle and 13 text layers; output `{a.format}`. {a.rounds} rounds, alternating.", "",
          "| accel | compositor | pages/s (job run_ms) | pages/s (process wall) | output bytes |",
          "|---|---|---:|---:|---:|"]
    for b in backends:
        comp = (res[b]["compositor"] or "none") + (f" ({a.label})" if b == "gpu" and a.label else "")
        md.append(f"| {b} | {comp} | {fmt_rate(res[b]['run'])} | {fmt_rate(res[b]['wall'])} | {res[b]['bytes'] / 1e6:.1f} MB |")
    if "cpu" in res and "gpu" in res:
        ratio = statistics.median(res["gpu"]["run"]) / statistics.median(res["cpu"]["run"])
        md += ["", f"gpu/cpu (job pages/s): **{ratio:.2f}×**"]
    md.append(END)
    text = "\n".join(md)
    print(text)
    if a.samples:
        with open(a.samples, "w") as f:
            json.dump({"command": a.command, "date": time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                       "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "load": [load0, load1],
                       "pages": a.pages, "format": a.format,
                       "rounds": {b: {"compositor": res[b]["compositor"], "run_ms": res[b]["run_ms"]} for b in backends}},
                      f, indent=1)
        print(f"render bench: wrote samples to {a.samples}", file=sys.stderr)
    if a.write:
        path = os.path.join(ROOT, "benches/RESULTS.md")
        body = open(path).read()
        pat = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        body = pat.sub(lambda _: text, body) if pat.search(body) else body.rstrip("\n") + "\n\n" + text + "\n"
        with open(path + ".tmp", "w") as f:
            f.write(body)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
