"""A/B of the render PDF bench job with the store and output on disk (/tmp) and on tmpfs
(/dev/shm): how much of the job is the store's I/O. Usage: python3 benches/render_pdf_store_ab.py
target/release/kiln (the job: benches/render_bench.py's 100-page PDF spec)."""
import json, os, statistics, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_bench
job={"id": "bench-pdf", "kind": "render", "input": render_bench.spec(100, "pdf", "cpu")}
def run(base):
    j=dict(job); j["output"]=f"file://{base}/out/"
    env=dict(os.environ,KILN_STORE_URL=f"file://{base}/store/")
    subprocess.run(["rm","-rf",f"{base}/out",f"{base}/store"])
    a=time.perf_counter(); p=subprocess.run([sys.argv[1],"run","-"],input=json.dumps(j).encode(),stdout=subprocess.PIPE,env=env); w=time.perf_counter()-a
    r=json.loads(p.stdout.splitlines()[0]); return w*1e3, r["timings"]["run_ms"]
for rnd in range(2):
  for base in ["/tmp/disk","/dev/shm/kiln"]:
    xs=[run(base) for _ in range(7)]
    print(base, "wall", round(statistics.median(x[0] for x in xs),1), "run", round(statistics.median(x[1] for x in xs),1))
