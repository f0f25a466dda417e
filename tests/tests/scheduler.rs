//! The scheduler's accounting under every wait, end to end: `kiln serve` with one CPU slot
//! and `debug` jobs (KILN_DEBUG_KINDS=1) that wait the way real jobs do — without their CPU
//! slot as an infer job waits for its batch (`idle_until`), through the store's wait path
//! (`wait_until`), for another worker's checkpoint lease, for a GPU slot (`gpu_mb`, on GPUs
//! declared with `scheduler.gpu_devices`) — and the capacity report that shows it. Each wait
//! is also ended by a cancel and by a deadline. Gate files decide when a job moves on; every
//! wait for an outside state is bounded polling of that state.

use kiln_tests::proc::{kiln, serve, Proc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Server {
    proc: Proc,
    base: String,
    dir: PathBuf,
    http: reqwest::blocking::Client,
}

fn url_of(p: &Path) -> String {
    format!("file://{}/", p.display())
}

/// Polls `cond` (bounded: 30 s).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Server {
    /// One CPU slot; `store` shared when given (two workers), else a fresh one.
    fn start(dir: &Path, store: Option<&Path>, env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let store = store.map(Path::to_path_buf).unwrap_or_else(|| dir.join("store"));
        let mut cmd = kiln();
        cmd.env("KILN_STORE_URL", url_of(&store))
            .env("KILN_DEBUG_KINDS", "1")
            .env("KILN_LOG", "warn")
            .env("KILN_CPU_SLOTS", "1")
            .env_remove("KILN_CONFIG")
            .current_dir(dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, base) = serve(&mut cmd);
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let s = Server { proc, base, dir: dir.to_path_buf(), http };
        wait_for("ready", || s.get("/readyz").0 == 200);
        s
    }

    fn get(&self, path: &str) -> (u16, Value) {
        match self.http.get(format!("{}{path}", self.base)).send() {
            Ok(r) => {
                let code = r.status().as_u16();
                (code, r.json().unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// The `/metrics` samples whose name (with labels) starts with `prefix`, summed.
    fn metric(&self, prefix: &str) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.base)).send().and_then(|r| r.text()).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Submits without waiting (202).
    fn submit(&self, job: &Value) {
        let r = self.http.post(format!("{}/v1/jobs", self.base)).header("prefer", "respond-async").body(job.to_string()).send().unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    }

    /// Submits and waits for the result.
    fn run(&self, job: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}/v1/jobs", self.base)).body(job.to_string()).send().unwrap();
        let code = r.status().as_u16();
        (code, r.json().unwrap())
    }

    fn cancel(&self, id: &str) -> Value {
        let r = self.http.delete(format!("{}/v1/jobs/{id}", self.base)).send().unwrap();
        r.json().unwrap()
    }

    fn status(&self, id: &str) -> String {
        self.get(&format!("/v1/jobs/{id}")).1["status"].as_str().unwrap_or_default().to_owned()
    }

    /// The result once the job has finished (bounded polling).
    fn result(&self, id: &str) -> Value {
        let mut out = Value::Null;
        wait_for(&format!("{id} to finish"), || {
            let (_, v) = self.get(&format!("/v1/jobs/{id}"));
            let done = matches!(v["status"].as_str(), Some("succeeded" | "failed" | "cancelled"));
            out = v;
            done
        });
        out
    }

    /// The `debug` kind's entry of the capacity report.
    fn debug_capacity(&self) -> Value {
        self.get("/v1/capacity").1["kinds"]["debug"].clone()
    }

    fn gate(&self, name: &str) -> PathBuf {
        self.dir.join(format!("gate-{name}"))
    }

    fn open(&self, name: &str) {
        std::fs::write(self.gate(name), b"open").unwrap();
    }

    /// Waits until job `id` runs without a CPU slot: started, and nothing computing.
    fn wait_released(&self, id: &str) {
        wait_for(&format!("{id} to wait without its CPU slot"), || {
            self.status(id) == "running" && self.debug_capacity()["busy"] == 0
        });
    }
}

fn tmp(tag: &str) -> PathBuf {
    kiln_tests::scratch_dir(&format!("scheduler-{tag}"))
}

/// The two ways a job waits without its slot inside a run.
const WAITS: [&str; 2] = ["idle_until", "wait_until"];

#[test]
fn a_waiting_job_gives_its_cpu_slot_to_another_and_takes_one_back_after() {
    for wait in WAITS {
        let s = Server::start(&tmp(&format!("release-{wait}")), None, &[]);
        s.submit(&json!({"id": "a", "kind": "debug", "input": {wait: s.gate("a")}}));
        s.wait_released("a");
        let cap = s.debug_capacity();
        assert_eq!((cap["slots"].as_u64(), cap["queued"].as_u64()), (Some(1), Some(0)), "{wait}: {cap}");
        // /metrics says the same: one job started, waiting, no slot held.
        assert_eq!(
            (s.metric("kiln_jobs_started"), s.metric("kiln_jobs_waiting"), s.metric("kiln_cpu_slots_busy")),
            (1.0, 1.0, 0.0),
            "{wait}"
        );
        // One CPU slot, and a is still running: b computes on the slot a gave back.
        let (code, b) = s.run(&json!({"id": "b", "kind": "debug", "input": {}}));
        assert_eq!((code, b["status"].as_str()), (200, Some("succeeded")), "{wait}: {b}");
        assert_eq!(s.status("a"), "running", "{wait}");
        // c holds the slot; a's wait ends: a waits for the slot, then finishes after c.
        s.submit(&json!({"id": "c", "kind": "debug", "input": {"hold_until": s.gate("c")}}));
        wait_for("c to compute", || s.debug_capacity()["busy"] == 1);
        s.open("a");
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(200) {
            assert_eq!(s.status("a"), "running", "{wait}: a finished without a CPU slot");
            assert_eq!(s.debug_capacity()["busy"], 1, "{wait}: two jobs computing on one slot");
            std::thread::sleep(Duration::from_millis(20));
        }
        s.open("c");
        assert_eq!(s.result("a")["status"], "succeeded", "{wait}");
        assert_eq!(s.result("c")["status"], "succeeded", "{wait}");
        wait_for("nothing computing", || s.debug_capacity()["busy"] == 0);
    }
}

#[test]
fn cancel_and_deadline_end_every_wait_and_free_everything() {
    for wait in WAITS {
        let s = Server::start(&tmp(&format!("stop-{wait}")), None, &[("KILN_JOB_THREADS", "2")]);
        // Cancelled while waiting without the slot.
        s.submit(&json!({"id": "w1", "kind": "debug", "input": {wait: s.gate("never")}}));
        s.wait_released("w1");
        let r = s.cancel("w1");
        assert_eq!(r["error"]["code"], "cancelled", "{wait}: {r}");
        // Deadline while waiting without the slot.
        let (code, r) = s.run(&json!({"id": "w2", "kind": "debug", "input": {wait: s.gate("never")}, "deadline_ms": 400}));
        assert_eq!((code, r["error"]["code"].as_str()), (504, Some("deadline_exceeded")), "{wait}: {r}");
        // Cancelled, then deadline, while waiting to get the slot back (h holds it).
        for (id, deadline) in [("w3", None), ("w4", Some(1500))] {
            let mut job = json!({"id": id, "kind": "debug", "input": {wait: s.gate(id)}});
            if let Some(ms) = deadline {
                job["deadline_ms"] = json!(ms);
            }
            s.submit(&job);
            s.wait_released(id);
            let h = format!("h-{id}");
            s.submit(&json!({"id": h, "kind": "debug", "input": {"hold_until": s.gate(&h)}}));
            wait_for("h to compute", || s.debug_capacity()["busy"] == 1);
            s.open(id);
            // Its wait over, it queues for the slot h holds: the deadline passes there. The
            // cancel ends it whether it is still leaving its wait or already queued (the
            // scheduler's unit tests pin the queued case).
            let r = match deadline {
                None => s.cancel(id),
                Some(_) => s.result(id),
            };
            let want = if deadline.is_some() { "deadline_exceeded" } else { "cancelled" };
            assert_eq!(r["error"]["code"], want, "{wait} {id}: {r}");
            assert_eq!(s.status(&h), "running", "{wait}: h still holds the slot");
            s.open(&h);
            assert_eq!(s.result(&h)["status"], "succeeded");
            // The thread and slot of the stopped job are free: two threads, both usable.
            let (code, _) = s.run(&json!({"id": format!("after-{id}"), "kind": "debug", "input": {}}));
            assert_eq!(code, 200, "{wait} {id}");
        }
        let snap = s.debug_capacity();
        assert_eq!((snap["busy"].as_u64(), snap["queued"].as_u64()), (Some(0), Some(0)), "{wait}: {snap}");
    }
}

#[test]
fn a_job_whose_lease_another_worker_holds_waits_without_a_slot() {
    let root = tmp("lease");
    let store = root.join("store");
    let one = Server::start(&root.join("one"), Some(&store), &[("KILN_CHECKPOINT_LEASE_MS", "2000")]);
    let two = Server::start(&root.join("two"), Some(&store), &[("KILN_CHECKPOINT_LEASE_MS", "2000")]);
    // A checkpointed job (one unit); worker one holds its unit for 10 s, so its lease.
    let job = |id: &str, unit_ms: u64, deadline: Option<u64>| {
        let mut j = json!({"id": id, "kind": "debug", "input": {"units": 1, "unit_ms": unit_ms}});
        if let Some(ms) = deadline {
            j["deadline_ms"] = json!(ms);
        }
        j
    };
    for (id, stop) in [("l1", "cancel"), ("l2", "deadline")] {
        one.submit(&job(id, 10_000, None));
        wait_for("one to hold the lease", || store.join(format!("jobs/{id}/state.json")).exists());
        // Worker two gets the same job: it waits for one's result without a slot, so its one
        // CPU slot still runs other work.
        let theirs = job(id, 10_000, if stop == "deadline" { Some(700) } else { None });
        two.submit(&theirs);
        wait_for("two to take the job", || two.status(id) == "queued");
        let (code, r) = two.run(&json!({"id": format!("other-{id}"), "kind": "debug", "input": {}}));
        assert_eq!((code, r["status"].as_str()), (200, Some("succeeded")), "{r}");
        let r = match stop {
            "cancel" => two.cancel(id),
            _ => two.result(id),
        };
        let want = if stop == "cancel" { "cancelled" } else { "deadline_exceeded" };
        assert_eq!(r["error"]["code"], want, "{r}");
        let cap = two.debug_capacity();
        assert_eq!((cap["busy"].as_u64(), cap["queued"].as_u64()), (Some(0), Some(0)), "{cap}");
        one.cancel(id);
    }
}

#[test]
fn gpu_slots_and_memory_per_declared_device_in_the_capacity_report() {
    let s = Server::start(
        &tmp("gpu"),
        None,
        &[("KILN_GPU_DEVICES", "2"), ("KILN_GPU_MEMORY_MB", "1000"), ("KILN_GPU_SLOTS", "1"), ("KILN_JOB_THREADS", "8")],
    );
    let gpus = || s.get("/v1/capacity").1["gpus"].as_array().cloned().unwrap_or_default();
    let free = || gpus().iter().map(|g| (g["slots_free"].as_u64().unwrap(), g["mem_budget_free_mb"].as_u64().unwrap())).collect::<Vec<_>>();
    // This host has no NVIDIA GPU: the two devices are the declared ones.
    let g = gpus();
    assert_eq!(g.len(), 2, "{g:?}");
    assert_eq!((g[0]["slots"].as_u64(), g[0]["mem_budget_mb"].as_u64()), (Some(1), Some(1000)), "{g:?}");
    assert_eq!(free(), vec![(1, 1000), (1, 1000)]);
    // Each takes its GPU grant, then waits at its gate without the CPU slot.
    let gpu_job = |id: &str, mb: u64| json!({"id": id, "kind": "debug", "input": {"gpu_mb": mb, "idle_until": s.gate(id)}});
    s.submit(&gpu_job("g1", 600));
    wait_for("g1 on a device", || free().contains(&(0, 400)));
    s.submit(&gpu_job("g2", 700));
    wait_for("g2 on the other device", || free() == vec![(0, 400), (0, 300)] || free() == vec![(0, 300), (0, 400)]);
    let held = s.metric("kiln_gpu_memory_held_bytes{device=\"0\",holder=\"jobs\"}")
        + s.metric("kiln_gpu_memory_held_bytes{device=\"1\",holder=\"jobs\"}");
    assert_eq!((held, s.metric("kiln_gpu_slots_busy")), ((1300u64 << 20) as f64, 2.0));
    // No GPU slot left: g3 waits for one without its CPU slot (the CPU runs other work), and
    // a cancel or a deadline ends the wait.
    s.submit(&gpu_job("g3", 100));
    s.wait_released("g3");
    let (code, _) = s.run(&json!({"id": "cpu-work", "kind": "debug", "input": {}}));
    assert_eq!(code, 200);
    assert_eq!(s.cancel("g3")["error"]["code"], "cancelled");
    let mut late = gpu_job("g4", 100);
    late["deadline_ms"] = json!(400);
    let (code, r) = s.run(&late);
    assert_eq!((code, r["error"]["code"].as_str()), (504, Some("deadline_exceeded")), "{r}");
    // More than any device could hold: refused at once, not queued forever.
    let (code, r) = s.run(&gpu_job("huge", 5000));
    assert_eq!((code, r["error"]["code"].as_str()), (422, Some("unsupported")), "{r}");
    s.open("g1");
    s.open("g2");
    assert_eq!(s.result("g1")["status"], "succeeded");
    assert_eq!(s.result("g2")["status"], "succeeded");
    wait_for("every GPU slot and MiB free again", || free() == vec![(1, 1000), (1, 1000)]);
}

#[test]
fn without_a_gpu_the_report_lists_none_and_gpu_work_is_unsupported() {
    let s = Server::start(&tmp("nogpu"), None, &[]);
    // No NVIDIA driver on this host: NVML gives zero devices, cleanly.
    assert_eq!(s.get("/v1/capacity").1["gpus"], json!([]));
    let (code, r) = s.run(&json!({"id": "g", "kind": "debug", "input": {"gpu_mb": 1}}));
    assert_eq!((code, r["error"]["code"].as_str()), (422, Some("unsupported")), "{r}");
}

/// `THP_enabled` from /proc/PID/status: whether transparent huge pages may back the process.
fn thp_enabled(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).and_then(|v| v.trim().parse().ok())
}

/// Issue 15: the worker turns transparent huge pages off for itself (freed job buffers came
/// back as fresh 2 MiB pages, through direct compaction, and counted whole in RSS);
/// `MIMALLOC_ALLOW_THP` set in the environment leaves them as the system has them.
#[test]
fn the_worker_runs_without_transparent_huge_pages_unless_told_otherwise() {
    let default = Server::start(&tmp("thp-off"), None, &[]);
    let allowed = Server::start(&tmp("thp-on"), None, &[("MIMALLOC_ALLOW_THP", "1")]);
    let on = thp_enabled(allowed.proc.id()).expect("THP_enabled in /proc/PID/status");
    assert_eq!(thp_enabled(default.proc.id()), Some(0), "the default worker may get transparent huge pages");
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        assert_eq!(on, 1, "MIMALLOC_ALLOW_THP=1 should leave transparent huge pages on");
    }
    // Both still serve.
    assert_eq!(default.run(&json!({"id": "t", "kind": "debug", "input": {}})).0, 200);
}

/// Issue 15 / 20: libavfilter (and the ~30 libraries it pulls in) is loaded only when a
/// filter graph is built (scale_cuda), not at every start: a serving worker has not mapped it.
#[test]
fn the_worker_does_not_load_libavfilter_until_it_needs_a_filter_graph() {
    let server = Server::start(&tmp("no-avfilter"), None, &[]);
    assert_eq!(server.run(&json!({"id": "t", "kind": "debug", "input": {}})).0, 200);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.proc.id())).expect("/proc/PID/maps");
    assert!(maps.contains("libavcodec"), "the worker should map FFmpeg's codecs (linked)");
    assert!(!maps.contains("libavfilter"), "libavfilter is mapped at start");
    assert!(!maps.contains("libplacebo") && !maps.contains("libflite"), "libavfilter's dependencies are mapped at start");
}
