#!/usr/bin/env python3
"""Bulk PDF rendering, kiln vs Typst, on the same 100-page document (driven by render_pdf.sh).

The document is render_bench.py's: each page A4 at 150 dpi (595.2 x 841.92 pt), a 1080x720 px
photo (one of four mate-backgrounds JPEGs in turn, 2.2-5.3 MB each), a translucent stroked
rectangle, a title and twelve lines of body text. kiln gets it as a render job (format pdf,
so every page is written as vectors); Typst gets the same placements as a .typ file
(`place` + `image(fit: "stretch")`, `rect`, `text` in the same DejaVu fonts), compiled by the
`typst` PyPI binding in this process.

Per round, alternating which goes first: kiln = `kiln run` of the job (pages / process wall,
and pages / the result's timings.run_ms); Typst = pages / the wall time of a fresh Python
process that imports the binding and calls `typst.compile` once (a process per round, as for
kiln: in one process typst's memoisation keeps decoded images between compiles). Output: PDF bytes; "text
extractable" = pdftotext finds every page's title and every body line on its page. Median
over rounds, [min-max].
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_bench  # noqa: E402  (the same document as the compositor benchmark)

ROOT = render_bench.ROOT
START, END = "<!-- render-pdf-bench:start -->", "<!-- render-pdf-bench:end -->"
PT = 72 / 150  # points per pixel at 150 dpi
FONTS = {"sans": ("DejaVu Sans", "regular"), "serif-bold": ("DejaVu Serif", "bold")}


def die(msg):
    print(f"render pdf bench: {msg}", file=sys.stderr)
    sys.exit(1)


def typst_source(spec):
    def esc(s):
        return s.replace("\\", "\\\\").replace('"', '\\"')

    out = ['#set page(width: 595.2pt, height: 841.92pt, margin: 0pt)', '#set text(font: "DejaVu Sans")']
    for i, page in enumerate(spec["pages"]):
        if i:
            out.append("#pagebreak()")
        for l in page["layers"]:
            at = f'dx: {l["x"] * PT:.2f}pt, dy: {l["y"] * PT:.2f}pt'
            if l["type"] == "image":
                out.append(f'#place(top + left, {at}, image("{esc(l["source"][len("file://"):])}", '
                           f'width: {l["width"] * PT:.2f}pt, height: {l["height"] * PT:.2f}pt, fit: "stretch"))')
            elif l["type"] == "rect":
                out.append(f'#place(top + left, {at}, rect(width: {l["width"] * PT:.2f}pt, height: {l["height"] * PT:.2f}pt, '
                           f'fill: rgb("{l["fill"]}"), stroke: {l["stroke_width"] * PT:.2f}pt + rgb("{l["stroke"]}")))')
            else:
                family, weight = FONTS[l.get("font", "sans")]
                out.append(f'#place(top + left, {at}, text(font: "{family}", weight: "{weight}", '
                           f'size: {l["size"] * PT:.2f}pt, "{esc(l["text"])}"))')
    return "\n".join(out) + "\n"


def extractable(pdf, spec):
    """Every text layer of every page found by pdftotext on its page."""
    p = subprocess.run(["pdftotext", "-enc", "UTF-8", pdf, "-"], capture_output=True, text=True)
    if p.returncode != 0:
        return False, "pdftotext failed"
    pages = p.stdout.split("\f")
    missing = 0
    for i, page in enumerate(spec["pages"]):
        got = re.sub(r"\s+", "", pages[i]) if i < len(pages) else ""
        for l in page["layers"]:
            if l["type"] == "text" and re.sub(r"\s+", "", l["text"]) not in got:
                missing += 1
    total = sum(1 for pg in spec["pages"] for l in pg["layers"] if l["type"] == "text")
    return missing == 0, f"{total - missing}/{total} text layers"


def run_kiln(kiln, work, spec):
    store, outdir = os.path.join(work, "store"), os.path.join(work, "out")
    for d in (store, outdir):
        subprocess.run(["rm", "-rf", d], check=True)
        os.makedirs(d)
    env = dict(os.environ, KILN_STORE_URL=f"file://{store}/", KILN_LOG="warn")
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    env.pop("KILN_CONFIG", None)
    job = {"id": "bench-pdf", "kind": "render", "input": spec, "output": f"file://{outdir}/"}
    t0 = time.perf_counter()
    p = subprocess.run([kiln, "run", "-"], input=json.dumps(job), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    if not lines or lines[0].get("status") != "succeeded":
        die(f"kiln failed: {lines[:1]} {p.stderr[-2000:]}")
    return wall, lines[0]["timings"]["run_ms"] / 1e3, os.path.join(outdir, "document.pdf")


def run_typst(work, source):
    """One compile in a fresh Python process (as kiln runs in a fresh process): typst's
    memoisation would otherwise carry decoded images from one round to the next."""
    src = os.path.join(work, "doc.typ")
    with open(src, "w") as f:
        f.write(source)
    out = os.path.join(work, "typst.pdf")
    # The child prints the seconds typst.compile itself took (after the interpreter and the
    # module are up): the work alone, the counterpart of kiln's run_ms.
    code = ("import sys, time, typst; t0 = time.perf_counter(); typst.compile(sys.argv[1], output=sys.argv[2], "
            "root='/', font_paths=['/usr/share/fonts/truetype/dejavu']); print(time.perf_counter() - t0)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, src, out], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return wall, float(p.stdout.strip().splitlines()[-1]), out


def fmt_rate(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--command", default="benches/render_pdf.sh")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    try:
        import typst
    except ImportError:
        die("the typst module is missing: run scripts/fetch-tools.sh and use .tools/venv/bin/python")
    spec = render_bench.spec(a.pages, "pdf", "cpu")
    source = typst_source(spec)
    res = {"kiln": {"wall": [], "run": []}, "typst": {"wall": [], "run": []}}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        for r in range(a.rounds):
            for who in (["kiln", "typst"] if r % 2 == 0 else ["typst", "kiln"]):
                if who == "kiln":
                    wall, run_s, kiln_pdf = run_kiln(a.kiln, work, spec)
                    res["kiln"]["wall"].append(a.pages / wall)
                    res["kiln"]["run"].append(a.pages / run_s)
                    res["kiln"]["bytes"] = os.path.getsize(kiln_pdf)
                    res["kiln"]["text"] = extractable(kiln_pdf, spec)
                else:
                    wall, compile_s, typst_pdf = run_typst(work, source)
                    res["typst"]["wall"].append(a.pages / wall)
                    res["typst"]["run"].append(a.pages / compile_s)
                    res["typst"]["bytes"] = os.path.getsize(typst_pdf)
                    res["typst"]["text"] = extractable(typst_pdf, spec)
                print(f"round {r + 1} {who}: {res[who]['wall'][-1]:.2f} pages/s", file=sys.stderr)
    load1 = os.getloadavg()[0]
    version = getattr(typst, "__version__", "?")
    ratio = statistics.median(res["kiln"]["wall"]) / statistics.median(res["typst"]["wall"])
    work_ratio = statistics.median(res["kiln"]["run"]) / statistics.median(res["typst"]["run"])
    size_ratio = res["typst"]["bytes"] / res["kiln"]["bytes"]
    # The same ratios round by round (each round runs both tools back to back), which a host
    # whose speed drifts over minutes moves far less than the ratio of the two medians.
    per_round = {m: [kr / tr for kr, tr in zip(res["kiln"][m], res["typst"][m])] for m in ("wall", "run")}
    md = [START, "## Render: PDF output, kiln vs Typst", "",
          f"Command: `{a.command}`  ",
          f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
          f"Host: {os.cpu_count()} CPUs; 1-min load average {load0:.2f} before, {load1:.2f} after  ",
          f"Document: {a.pages} pages, A4 at 150 dpi, each a 1080x720 px photo (4 JPEGs of 2.2–5.3 MB in turn), "
          f"a translucent stroked rectangle and 13 text layers (benches/render_bench.py's). {a.rounds} rounds, alternating.", "",
          "| tool | pages/s (process wall) | pages/s (the work: kiln's run_ms, Typst's compile call) | PDF bytes | text extractable |",
          "|---|---:|---:|---:|---|"]
    k, t = res["kiln"], res["typst"]
    md.append(f"| kiln (format pdf: vectors) | {fmt_rate(k['wall'])} | {fmt_rate(k['run'])} | {k['bytes']:,} | "
              f"{'yes' if k['text'][0] else 'no'} ({k['text'][1]}) |")
    md.append(f"| Typst {version} (PyPI binding, fresh process) | {fmt_rate(t['wall'])} | {fmt_rate(t['run'])} | {t['bytes']:,} | "
              f"{'yes' if t['text'][0] else 'no'} ({t['text'][1]}) |")
    rr = {m: f"{statistics.median(v):.2f}× [{min(v):.2f}–{max(v):.2f}]" for m, v in per_round.items()}
    md += ["", f"kiln/Typst pages/s (wall): **{ratio:.2f}×**; the work alone (no process start-up): **{work_ratio:.2f}×**; "
           f"Typst's PDF is **{size_ratio:.1f}×** kiln's. Round by round (median [min–max] of each round's "
           f"ratio): wall {rr['wall']}, the work {rr['run']}.", END]
    text = "\n".join(md)
    print(text)
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
