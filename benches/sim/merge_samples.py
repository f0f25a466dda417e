#!/usr/bin/env python3
"""Merges the raw samples the benches write (`--samples FILE`) into benches/sim/samples.json,
the hybrid simulator's measurement file (issue 18). Stdlib only.

  python3 benches/sim/merge_samples.py [--thumbnail F] [--lambda F] [--render F]
      [--render-threads N] [--kiln LABEL] [--out PATH]

- --thumbnail: benches/thumbnail.sh --samples F. The 1-core rows' `kiln_run_ms` (one slot =
  one core, as the simulator's pods and functions run one job a slot) go to
  `thumbnail.jpeg.raw_ms` / `thumbnail.png.raw_ms`.
- --lambda: benches/lambda_bench.py --samples F. The cold starts (spawn -> first result) go to
  `lambda_cold_start.raw_cold_ms`, the warm invocations to `raw_warm_ms`; the simulator draws
  kiln's cold-start share as a cold sample minus the warm median.
- --render: benches/render.sh --backends cpu --samples F. Each CPU round's job run_ms becomes
  one per-slot page time, `threads * run_ms / pages`, in `render.raw_page_ms`: the simulator's
  render job holds one slot (one core) for its whole run, so a page costs the CPU time the
  measured job spent on it. `threads` (--render-threads) is how many cores the measured job
  rendered pages on. Since main's commit 8eeeacc a render job works its pages on its own
  thread and on every idle CPU slot it can borrow, so a lone `kiln run` on the bench host uses
  all of them: the default is the file's `cores`. Builds before 8eeeacc rendered on the job's
  thread only: pass --render-threads 1 for samples from those. This assumes the pages scale
  linearly over the threads; if they do not, the one-core page time is somewhat shorter than
  the sample (an upper bound).
- --kiln LABEL: which kiln binary measured the files (path and commit), recorded in every
  merged raw_source (the benches record their command line and date, not the build).

Only the files given are merged; each merged entry gets a `raw_source` (the bench's command,
date, host load) so samples.json says where its raw numbers come from. The summaries (p50/p99,
per-round rates copied from RESULTS.md) stay: the simulator falls back to them when a `raw_*`
list is empty. The simulator embeds samples.json at build time: rebuild hybrid-sim after.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def die(msg):
    print(f"merge_samples: {msg}", file=sys.stderr)
    sys.exit(1)


def positive(xs, what):
    xs = [float(x) for x in xs]
    if not xs or any(not (x >= 0.0) or x != x for x in xs):
        die(f"{what}: no samples, or a negative / NaN one")
    return [round(x, 3) for x in xs]


def merge_thumbnail(doc, path, kiln):
    src = json.load(open(path))
    got = {}
    for row in src.get("rows", []):
        if row.get("cores") == 1 and row.get("set") in ("jpeg", "png"):
            got.setdefault(row["set"], []).extend(row.get("kiln_run_ms", []))
    if not got:
        die(f"{path}: no 1-core jpeg/png rows (run benches/thumbnail.sh --cores 1 --samples F)")
    facts = src.get("facts", {})
    for name, ms in got.items():
        doc["thumbnail"][name]["raw_ms"] = positive(ms, f"thumbnail {name}")
    doc["thumbnail"]["raw_source"] = {
        "command": src.get("command", "benches/thumbnail.sh"), "date": src.get("date"),
        "rows": "cores=1, kiln_run_ms (job timings.run_ms per image)",
        "kiln": kiln or facts.get("kiln"), "kiln_reported": facts.get("kiln"), "cpu": facts.get("cpu"), "load": [facts.get("load"), facts.get("load_end")],
        "samples": {k: len(v) for k, v in got.items()},
    }
    return f"thumbnail: {', '.join(f'{k} {len(v)}' for k, v in sorted(got.items()))} samples"


def merge_lambda(doc, path, kiln):
    src = json.load(open(path))
    rows = src.get("samples_ms", {})
    cold = rows.get("lambda cold start (spawn -> first result)", [])
    warm = rows.get("lambda warm invocation", [])
    lc = doc["lambda_cold_start"]
    lc["raw_cold_ms"] = positive(cold, "lambda cold")
    lc["raw_warm_ms"] = positive(warm, "lambda warm")
    lc["raw_source"] = {"command": src.get("command", "benches/lambda_bench.py"), "date": src.get("date"),
                        "kiln": kiln, "load": src.get("load"), "samples": {"cold": len(cold), "warm": len(warm)}}
    return f"lambda: {len(cold)} cold, {len(warm)} warm samples"


def merge_render(doc, path, threads, kiln):
    src = json.load(open(path))
    cpu = src.get("rounds", {}).get("cpu")
    if not cpu or not cpu.get("run_ms"):
        die(f"{path}: no cpu rounds (run benches/render.sh --backends cpu --samples F)")
    pages, cores = src.get("pages"), src.get("cores")
    if not pages or not cores:
        die(f"{path}: no pages or cores")
    threads = cores if threads is None else threads
    if not 1 <= threads <= cores:
        die(f"--render-threads {threads}: must be between 1 and the host's {cores} cores")
    page_ms = [threads * ms / pages for ms in cpu["run_ms"]]
    r = doc["render"]
    r["raw_page_ms"] = positive(page_ms, "render")
    r["raw_source"] = {"command": src.get("command", "benches/render.sh"), "date": src.get("date"), "kiln": kiln,
                       "cpu": src.get("cpu"), "load": src.get("load"), "pages": pages, "cores": cores,
                       "threads": threads, "format": src.get("format"),
                       "rule": "one sample per round: threads * job run_ms / pages (ms of one core per page = "
                               "one slot's page time; threads = the cores the job rendered pages on)"}
    return f"render: {len(page_ms)} rounds"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thumbnail")
    ap.add_argument("--lambda", dest="lam")
    ap.add_argument("--render")
    ap.add_argument("--render-threads", type=int, help="cores the measured render job used (default: all)")
    ap.add_argument("--kiln", help="the kiln binary that measured the files (path @ commit)")
    ap.add_argument("--out", default=os.path.join(HERE, "samples.json"))
    a = ap.parse_args()
    if not (a.thumbnail or a.lam or a.render):
        die("nothing to merge: give --thumbnail, --lambda and/or --render")
    doc = json.load(open(a.out))
    done = []
    if a.thumbnail:
        done.append(merge_thumbnail(doc, a.thumbnail, a.kiln))
    if a.lam:
        done.append(merge_lambda(doc, a.lam, a.kiln))
    if a.render:
        done.append(merge_render(doc, a.render, a.render_threads, a.kiln))
    with open(a.out + ".tmp", "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(a.out + ".tmp", a.out)
    print(f"merge_samples: {a.out}: " + "; ".join(done), file=sys.stderr)


if __name__ == "__main__":
    main()
