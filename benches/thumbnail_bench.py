#!/usr/bin/env python3
"""kiln vs vipsthumbnail on the mate-backgrounds photos (stdlib only; driven by thumbnail.sh).

For each CPU set (1 core: taskset -c 0, KILN_CPU_SLOTS=1; 2 cores: taskset -c 0,1,
KILN_CPU_SLOTS=2) and each photo set (JPEG, PNG), ROUNDS rounds, alternating which tool goes
first:
  kiln: `kiln run jobs.jsonl`, one job per photo (256x256 fit inside, JPEG q80), a fresh
        output dir and a fresh KILN_STORE_URL each round (nothing cached, nothing skipped);
  vips: `vipsthumbnail --size 256x256 -o DIR/%s.jpg[Q=80,strip] FILES...` (one process).
Throughput = photos / wall time of the whole process (start-up included), median over rounds.
Latency: kiln per image = the results' timings.run_ms (all rounds pooled); vips per image =
the wall time of one `vipsthumbnail` process per photo, in an extra pass (process start-up
included, reported separately). Peak RSS from GNU time's %M (max over rounds).
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
START, END = "<!-- thumbnail-bench:start -->", "<!-- thumbnail-bench:end -->"


def die(msg):
    print(f"thumbnail bench: {msg}", file=sys.stderr)
    sys.exit(1)


def percentile(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def timed(cmd, env=None, stdout=subprocess.DEVNULL):
    """Runs cmd under GNU time; returns (wall seconds, max RSS KiB, completed process)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd
        t0 = time.perf_counter()
        p = subprocess.run(full, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        lines = [l for l in open(tf.name).read().splitlines() if l.strip()]
        rss = int(lines[-1]) if lines and lines[-1].strip().isdigit() else 0
    return wall, rss, p


def run_kiln(kiln, cpus, slots, photos, work):
    out, store = os.path.join(work, "out"), os.path.join(work, "store")
    for d in (out, store):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    jobs = os.path.join(work, "jobs.jsonl")
    with open(jobs, "w") as f:
        for i, p in enumerate(photos):
            f.write(json.dumps({
                "id": f"img{i:03d}",
                "kind": "thumbnail",
                "input": {"source": p, "outputs": [
                    {"name": "256.jpg", "width": 256, "height": 256, "fit": "inside", "format": "jpeg", "quality": 80}]},
                "output": f"file://{out}/img{i:03d}/",
            }) + "\n")
    env = dict(os.environ, KILN_STORE_URL=f"file://{store}/", KILN_CPU_SLOTS=str(slots), KILN_LOG="warn")
    env.pop("KILN_CONFIG", None)
    wall, rss, p = timed(["taskset", "-c", cpus, kiln, "run", jobs], env=env, stdout=subprocess.PIPE)
    results = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    bad = [r for r in results if r.get("status") != "succeeded"]
    if p.returncode != 0 or len(results) != len(photos) or bad:
        die(f"kiln run failed (exit {p.returncode}, {len(results)}/{len(photos)} results): "
            f"{json.dumps(bad[:3])}\n{p.stderr[-2000:]}")
    run_ms = [float(r["timings"]["run_ms"]) for r in results]
    return wall, rss, run_ms


def run_vips(cpus, photos, work):
    out = os.path.join(work, "vips")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    wall, rss, p = timed(["taskset", "-c", cpus, "vipsthumbnail", "--size", "256x256",
                          "-o", f"{out}/%s.jpg[Q=80,strip]"] + photos)
    if p.returncode != 0:
        die(f"vipsthumbnail failed (exit {p.returncode}): {p.stderr[-2000:]}")
    made = len(os.listdir(out))
    if made != len({os.path.splitext(os.path.basename(x))[0] for x in photos}):
        die(f"vipsthumbnail made {made} files for {len(photos)} photos")
    return wall, rss


def vips_per_image(cpus, photos, work):
    out = os.path.join(work, "vips1")
    os.makedirs(out, exist_ok=True)
    ms = []
    for p in photos:
        t0 = time.perf_counter()
        subprocess.run(["taskset", "-c", cpus, "vipsthumbnail", "--size", "256x256",
                        "-o", f"{out}/%s.jpg[Q=80,strip]", p], check=True)
        ms.append((time.perf_counter() - t0) * 1000)
    # Process start-up: the same command on a 1x1 image.
    tiny = os.path.join(work, "tiny.png")
    subprocess.run(["vips", "black", tiny, "1", "1"], check=True)
    starts = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(["taskset", "-c", cpus, "vipsthumbnail", "--size", "256x256", "-o", f"{out}/%s.jpg", tiny], check=True)
        starts.append((time.perf_counter() - t0) * 1000)
    return ms, statistics.median(starts)


def host_facts(kiln):
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vips = subprocess.run(["vips", "--version"], capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(), "vips": vips,
        "kiln": f"{os.path.relpath(kiln, ROOT)} @ {rev or '?'}{' (uncommitted changes)' if dirty else ''}",
        "load": "%.2f" % os.getloadavg()[0],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--photos", required=True, help="file with one photo path a line")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cores", default="1,2", help="comma list of core counts (1 → cpu 0, 2 → cpus 0,1)")
    ap.add_argument("--sets", default="jpeg,png")
    ap.add_argument("--repeat", type=int, default=1,
                    help="each process handles the set this many times (longer runs, less noise)")
    ap.add_argument("--command", default="benches/thumbnail.sh")
    ap.add_argument("--write", action="store_true", help="replace the section in benches/RESULTS.md")
    ap.add_argument("--samples", help="also write every kiln run_ms sample as JSON here "
                    "(raw input for the hybrid simulator, benches/sim/samples.json)")
    a = ap.parse_args()

    photos = [l.strip() for l in open(a.photos) if l.strip()]
    sets = {
        "jpeg": [p for p in photos if p.lower().endswith((".jpg", ".jpeg"))],
        "png": [p for p in photos if p.lower().endswith(".png")],
    }
    ncpu = len(os.sched_getaffinity(0))
    rows, notes = [], []
    facts = host_facts(a.kiln)
    work = tempfile.mkdtemp(prefix="kiln-bench-")
    try:
        for cores in [int(c) for c in a.cores.split(",") if c]:
            if cores > ncpu:
                notes.append(f"{cores} cores skipped: only {ncpu} available")
                continue
            cpus = ",".join(str(i) for i in range(cores))
            for name in [s for s in a.sets.split(",") if s]:
                if not sets[name]:
                    die(f"no {name} photos")
                files = sets[name] * a.repeat
                n = len(files)
                k_walls, v_walls, k_rss, v_rss, k_ms = [], [], [], [], []
                for r in range(a.rounds):
                    order = ("kiln", "vips") if r % 2 == 0 else ("vips", "kiln")
                    for tool in order:
                        if tool == "kiln":
                            w, rss, ms = run_kiln(a.kiln, cpus, cores, files, work)
                            k_walls.append(w); k_rss.append(rss); k_ms += ms
                        else:
                            w, rss = run_vips(cpus, files, work)
                            v_walls.append(w); v_rss.append(rss)
                    print(f"  {name} x{n}, {cores} core(s), round {r + 1}/{a.rounds}: "
                          f"kiln {n / k_walls[-1]:.2f} img/s, vips {n / v_walls[-1]:.2f} img/s", file=sys.stderr)
                v_ms, v_start = vips_per_image(cpus, sets[name], work)
                k_ips, v_ips = n / statistics.median(k_walls), n / statistics.median(v_walls)
                rows.append({
                    "set": name, "n": n, "cores": cores,
                    "kiln_ips": k_ips, "vips_ips": v_ips, "ratio": k_ips / v_ips,
                    "kiln_ips_range": (n / max(k_walls), n / min(k_walls)),
                    "vips_ips_range": (n / max(v_walls), n / min(v_walls)),
                    "kiln_samples": len(k_ms), "vips_samples": len(v_ms),
                    "kiln_p50": percentile(k_ms, 50), "kiln_p99": percentile(k_ms, 99),
                    "vips_p50": percentile(v_ms, 50), "vips_p99": percentile(v_ms, 99), "vips_start": v_start,
                    "kiln_rss": max(k_rss) / 1024, "vips_rss": max(v_rss) / 1024,
                    "kiln_run_ms": k_ms,
                })
    finally:
        shutil.rmtree(work, ignore_errors=True)
    facts["load_end"] = "%.2f" % os.getloadavg()[0]

    md = render(rows, notes, facts, a)
    print(md)
    if a.samples:
        with open(a.samples, "w") as f:
            json.dump({"command": a.command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "facts": facts,
                       "rows": [{"set": r["set"], "cores": r["cores"], "kiln_run_ms": r["kiln_run_ms"]} for r in rows]},
                      f, indent=1)
        print(f"thumbnail bench: wrote samples to {a.samples}", file=sys.stderr)
    if a.write:
        write_section(os.path.join(ROOT, "benches", "RESULTS.md"), md)
        print("thumbnail bench: wrote the section in benches/RESULTS.md", file=sys.stderr)


def render(rows, notes, facts, a):
    out = [START, "## Thumbnail: kiln vs vipsthumbnail", "",
           f"Command: `{a.command}`  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}  ",
           f"Host: {facts['cpu']}, {facts['nproc']} CPUs, Linux {facts['kernel']}; 1-min load average {facts['load']} before, {facts['load_end']} after (a busy host skews the numbers)  ",
           f"kiln: {facts['kiln']}; {facts['vips']}", "",
           "Each photo → one 256x256 `inside` JPEG q80. kiln: `kiln run jobs.jsonl` (one job a photo, "
           "fresh store and output dir each round). vips: `vipsthumbnail --size 256x256 -o DIR/%s.jpg[Q=80,strip] FILES...` "
           "(one process). Pinned with `taskset`; kiln with `KILN_CPU_SLOTS` = cores; vips with its default "
           f"thread pool. {a.rounds} round{'s' if a.rounds > 1 else ''}"
           f"{f', each process doing its set {a.repeat} times' if a.repeat > 1 else ''}, alternating which goes first; img/s = photos / median wall time "
           "of the process (start-up included), [min–max over rounds].", "",
           "| set | cores | photos | kiln img/s | vips img/s | kiln/vips | kiln p50 / p99 ms | vips p50 / p99 ms | kiln peak RSS | vips peak RSS |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(
            f"| {r['set'].upper()} | {r['cores']} | {r['n']} "
            f"| {r['kiln_ips']:.2f} [{r['kiln_ips_range'][0]:.2f}–{r['kiln_ips_range'][1]:.2f}] "
            f"| {r['vips_ips']:.2f} [{r['vips_ips_range'][0]:.2f}–{r['vips_ips_range'][1]:.2f}] "
            f"| **{r['ratio']:.2f}×** "
            f"| {r['kiln_p50']:.1f} / {r['kiln_p99']:.1f} "
            f"| {r['vips_p50']:.1f} / {r['vips_p99']:.1f} "
            f"| {r['kiln_rss']:.0f} MiB | {r['vips_rss']:.0f} MiB |")
    by_cores = {}
    for r in rows:
        by_cores.setdefault(r["cores"], []).append(r["vips_start"])
    starts = ", ".join(f"{c} core{'s' if c > 1 else ''} {statistics.median(v):.0f} ms" for c, v in by_cores.items())
    out += ["",
            "Latency: kiln = the results' `timings.run_ms` per image (read, decode, resize, encode, store; "
            f"all rounds pooled, nearest-rank percentiles, {', '.join(sorted({str(r['kiln_samples']) for r in rows}))} "
            "samples a row, so p99 is about the slowest image); vips = wall time of one `vipsthumbnail` process per "
            f"photo in an extra pass, so it includes process start-up (on a 1x1 image: {starts}). "
            "Peak RSS: GNU time's maximum resident set size, max over rounds."]
    out += [f"Note: {n}" for n in notes]
    out.append(END)
    return "\n".join(out)


def write_section(path, md):
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    pat = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    text = pat.sub(lambda _: md, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + md + "\n"
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
