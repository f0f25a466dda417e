//! Every constant of the hybrid simulator, in one place, each with its source: the seed paper
//! (shared/seeds/000_fd27a8f8eb8e3271.txt, "seed §x"), kiln's own measurements
//! (benches/RESULTS.md, copied into benches/sim/samples.json), kiln's manifests (k8s/), AWS
//! public list prices (us-east-1, on-demand, as published in 2025; check before quoting), or
//! "assumption" where nothing better exists. The sensitivity sweep varies the assumptions that
//! move the result most.

// ---------------------------------------------------------------- serverless tier (Lambda)

/// Platform start of an image-backed function (sandbox + image + runtime init), lognormal
/// median. Assumption: AWS documents cold starts "from under 100 ms to over 1 second"
/// (Lambda developer guide, execution environment lifecycle); kiln's image carries FFmpeg
/// and ONNX Runtime, so we take 800 ms, the same figure as router-client's
/// `Policy::default().serverless_cold_start_ms`. Seed §7.2: the naive serverless tail runs
/// "past one second", p99.9 above 2 s.
pub const LAMBDA_PLATFORM_COLD_P50_MS: f64 = 800.0;
/// Platform start, lognormal p99. Assumption (see above): 2 s.
pub const LAMBDA_PLATFORM_COLD_P99_MS: f64 = 2000.0;
/// kiln's own cold-start share, p50: RESULTS.md "Lambda: cold start" cold p50 26.4 ms minus
/// warm p50 17.0 ms (samples.json `lambda_cold_start`).
pub const KILN_COLD_P50_MS: f64 = 26.4 - 17.0;
/// kiln's own cold-start share, p99: cold p99 33.5 ms minus warm p50 17.0 ms.
pub const KILN_COLD_P99_MS: f64 = 33.5 - 17.0;
/// Account concurrency quota (AWS default: 1,000 per region).
pub const LAMBDA_CONCURRENCY_LIMIT: usize = 1000;
/// Run-time ceiling (AWS Lambda maximum timeout: 900 s).
pub const LAMBDA_MAX_RUN_MS: f64 = 900_000.0;
/// Safety margin below the ceiling when a long job is split into chained invocations (kiln
/// checkpoints units to the store; any instance resumes). Assumption.
pub const LAMBDA_CHUNK_MARGIN: f64 = 0.9;
/// Idle time after which a warm instance is reclaimed. Not documented by AWS; assumption
/// (observed values range from ~5 to ~30 min; Wang et al., ATC'18, seed ref [8]).
pub const LAMBDA_KEEP_ALIVE_S: f64 = 600.0;
/// Memory size of kiln's function: 2048 MB (about 1.16 vCPU; 1,769 MB = 1 vCPU). Assumption:
/// big enough for a 16 MB JPEG decode (RESULTS.md "Memory under sustained load": 320 MB peak
/// with 2 slots).
pub const LAMBDA_MEMORY_GB: f64 = 2.0;
/// AWS Lambda price per request (x86): $0.20 per million.
pub const LAMBDA_PRICE_PER_REQUEST: f64 = 0.20 / 1_000_000.0;
/// AWS Lambda price per GB-second of duration (x86, first pricing tier): $0.0000166667.
pub const LAMBDA_PRICE_PER_GB_S: f64 = 0.000_016_666_7;
/// Provisioned concurrency: price per GB-second while provisioned (x86): $0.0000041667.
pub const LAMBDA_PC_PRICE_PER_GB_S: f64 = 0.000_004_166_7;
/// Provisioned concurrency: duration price per GB-second on provisioned instances (x86):
/// $0.0000097222.
pub const LAMBDA_PC_DURATION_PRICE_PER_GB_S: f64 = 0.000_009_722_2;
/// Provisioned instances in the "serverless + provisioned concurrency" configurations (seed
/// Fig 5). Assumption: about the short workloads' baseline peak concurrency; swept.
pub const DEFAULT_PROVISIONED: usize = 5;

// ---------------------------------------------------------------- container tier (Kubernetes)

/// CPU pod: 2 vCPU (k8s/cpu-pool.yaml requests cpu "2"), one job slot per core (kiln's
/// cpu_slots = cores).
pub const CPU_POD_SLOTS: u32 = 2;
/// Price of a 2-vCPU pod-hour: c7i.large on-demand, $0.08925/h (AWS Fargate 2 vCPU + 2 GB
/// comes to $0.0898/h, the same within 1 %).
pub const CPU_POD_PRICE_PER_H: f64 = 0.08925;
/// GPU pod: the host kiln's GPU numbers were measured on (RESULTS.md "GPU host": 16 cores, one
/// H100). Infer slots = the measured concurrency (16).
pub const GPU_POD_INFER_SLOTS: u32 = 16;
/// Transcode slots on a GPU pod: one ladder uses the whole 16-core host at the measured rate.
pub const GPU_POD_TRANSCODE_SLOTS: u32 = 1;
/// Price of a one-H100 pod-hour: p5.48xlarge (8 x H100, 192 vCPU) on-demand $55.04/h after
/// AWS's June 2024 cut, / 8. Reported apart: serverless-only cannot run GPU work.
pub const GPU_POD_PRICE_PER_H: f64 = 55.04 / 8.0;
/// CPU pod start: scheduling, image pull, kiln start, readiness. Assumption (nodes from a
/// warm node group; k8s/cpu-pool.yaml startupProbe allows up to 30 s). Swept 10-120 s.
pub const CPU_POD_START_S: f64 = 30.0;
/// GPU pod start: a GPU node, the CUDA image, model warm-up. Assumption.
pub const GPU_POD_START_S: f64 = 90.0;
/// HPA sync period (kube-controller-manager default 15 s) for the CPU pools.
pub const HPA_SYNC_S: f64 = 15.0;
/// KEDA pollingInterval of the GPU pool (k8s/keda-scaledobject.yaml: 10 s).
pub const GPU_SCALER_SYNC_S: f64 = 10.0;
/// HPA target utilisation (k8s/hpa.yaml: averageUtilization 70).
pub const HPA_TARGET_UTIL: f64 = 0.70;
/// HPA scale-down stabilisation window (k8s/hpa.yaml: 300 s; KEDA cooldownPeriod 300).
pub const HPA_SCALE_DOWN_WINDOW_S: f64 = 300.0;
/// HPA default scale-up limit per sync: the larger of +100 % and +4 pods.
pub const HPA_MAX_SCALE_UP_PODS: u32 = 4;
/// Minimum pools (k8s/hpa.yaml minReplicas 2; keda minReplicaCount 1; render pool: 1).
pub const CPU_MIN_PODS: u32 = 2;
pub const RENDER_MIN_PODS: u32 = 1;
pub const GPU_MIN_PODS: u32 = 1;
/// Maximum pools (k8s/hpa.yaml maxReplicas 40; keda maxReplicaCount 16).
pub const CPU_MAX_PODS: u32 = 40;
pub const RENDER_MAX_PODS: u32 = 40;
pub const GPU_MAX_PODS: u32 = 16;
/// Capacity report interval (worker/src/config.rs: router.interval_ms = 2000) and ttl
/// (worker/src/capacity.rs: interval * 5 / 2).
pub const REPORT_INTERVAL_MS: u64 = 2000;
pub const REPORT_TTL_MS: u64 = REPORT_INTERVAL_MS * 5 / 2;
/// A kiln serve worker also publishes at once when its slots fill or free
/// (worker/src/slot_watch.rs polls the scheduler's counts every 50 ms): a pod's report
/// follows a slot change by this much, coalesced.
pub const SLOT_REPORT_DELAY_MS: u64 = 50;
/// Per-kind latency window behind a report's p50 (service times kept per pod). Assumption.
pub const REPORT_WINDOW: usize = 64;

// ---------------------------------------------------------------- workloads and arrivals

/// Default horizon of the burst scenario and its warm-up (excluded from every statistic).
pub const SCENARIO_S: f64 = 3600.0;
pub const WARMUP_S: f64 = 600.0;
/// Baseline offered load, requests/s, all workloads. Assumption, sized so the minimum pools
/// carry the baseline and a burst overwhelms them (seed Fig 7 shows no absolute scale).
pub const BASELINE_RPS: f64 = 40.0;
/// Relative amplitude and period of the slow baseline variation (seed Fig 7: "slowly
/// varying baseline"). Assumption.
pub const BASELINE_AMPLITUDE: f64 = 0.3;
pub const BASELINE_PERIOD_S: f64 = 1800.0;
/// Three bursts (seed Fig 7): onsets, duration, ramp, and height as a multiple of the
/// baseline (short and interactive workloads only; long jobs keep the baseline rate).
/// Assumption; the height is swept.
pub const BURST_ONSETS_S: [f64; 3] = [900.0, 1800.0, 2700.0];
pub const BURST_DURATION_S: f64 = 90.0;
pub const BURST_RAMP_S: f64 = 5.0;
pub const BURST_MULTIPLIER: f64 = 10.0;
/// Share of each workload in the baseline request mix. Seed §3: the three short workloads
/// are "roughly three-quarters of request volume"; the long ones are rare by count but most
/// of the compute hours. The split inside each group is an assumption.
pub const MIX_THUMBNAIL: f64 = 0.35;
pub const MIX_METADATA: f64 = 0.22;
pub const MIX_AUTH: f64 = 0.18;
pub const MIX_INFER: f64 = 0.249;
pub const MIX_TRANSCODE: f64 = 0.0005;
pub const MIX_RENDER: f64 = 0.0005;

/// Steady-throughput sweep (seed Fig 6): one thumbnail endpoint at these rates, req/s.
pub const SWEEP_RPS: [f64; 10] = [1.0, 3.0, 10.0, 30.0, 60.0, 100.0, 200.0, 400.0, 800.0, 1600.0];
/// Length of each sweep run after its warm-up.
pub const SWEEP_S: f64 = 600.0;
/// Long enough for the HPA to ramp from the minimum pool to the highest rate's size.
pub const SWEEP_WARMUP_S: f64 = 900.0;

/// Closed-loop experiment: horizon and the moment the container service time doubles.
pub const CLOSED_LOOP_S: f64 = 1800.0;
pub const CLOSED_LOOP_SLOWDOWN_AT_S: f64 = 900.0;
pub const CLOSED_LOOP_SLOWDOWN: f64 = 2.0;
/// The closed loop runs with the short kinds primary on containers (fallback serverless,
/// overflow on their budget): with the default serverless primary the container tier carries
/// only the exercised 2 %, and a container slowdown has nothing to move.
pub const CLOSED_LOOP_SHORT_PRIMARY: kiln_router_client::Tier = kiln_router_client::Tier::Container;
/// Width of the closed loop's plotted windows.
pub const CLOSED_LOOP_WINDOW_S: f64 = 10.0;

/// Time-series sampling interval (seed Fig 7 worker counts).
pub const SAMPLE_EVERY_S: f64 = 1.0;
/// A burst second "meets its budgets" when at least this share of its short requests do.
pub const TIME_TO_SCALE_OK_SHARE: f64 = 0.95;

// ---------------------------------------------------------------- the hybrid's placement policy
// The PolicyConfig the hybrid's `kiln_router_client::Router` runs (sim/policy.rs builds it).
// Per-kind rules from the seed's Table 1 and §5: the short, stateless, bursty kinds are primary
// serverless with the container tier as fallback and overflow; long, stateful or GPU kinds are
// primary container.

/// Overflow share of the short kinds (thumbnail, metadata, auth) when the function is under
/// pressure (seed §5: "shifts a configurable fraction of traffic to the fallback"; no value
/// given). Assumption: router-client's default (0.3); swept.
pub const SHORT_OVERFLOW_FRACTION: f64 = 0.3;
/// Function pressure of the short kinds: invocations in flight beyond the warm pool (i.e.
/// waiting on a cold start). Assumption: router-client's default (8).
pub const SHORT_OVERFLOW_QUEUE_DEPTH: u32 = 8;
// Rolling-p95 threshold of every budgeted kind: its Table 1 budget (workload.rs SPECS).
/// Render: primary container (seed §5 "pins long-running batch work"), serverless fallback
/// (kiln chains checkpointed invocations) when the render pool's queue passes this depth, for
/// this share. Assumption: router-client's transcode defaults (0.2, 4).
pub const RENDER_OVERFLOW_FRACTION: f64 = 0.2;
pub const RENDER_OVERFLOW_QUEUE_DEPTH: u32 = 4;
/// Share of every kind's traffic sent to its fallback on purpose (seed §8: "a small,
/// randomized fraction of every endpoint's traffic"). Assumption: router-client's default.
pub const EXERCISE_SHARE: f64 = 0.02;
/// Share sent to both tiers, the second answer discarded (seed §6.2: "a small fraction").
/// Assumption: router-client's default.
pub const DUAL_SHARE: f64 = 0.01;
/// Longest predicted run the policy accepts on serverless: the chunked ceiling (kiln splits
/// longer jobs into checkpointed invocations, but the policy refuses what one cannot finish).
pub const POLICY_SERVERLESS_MAX_RUN_MS: f64 = LAMBDA_MAX_RUN_MS * LAMBDA_CHUNK_MARGIN;
/// The cost rule's window (router-client's `CostRule::default().window_ms`, 60 s): a kind's
/// rate is "sustained" over a minute; the seed gives no value. Its prices are the Lambda and
/// CPU pod prices above (the crossing for a 25 ms thumbnail: about 24 req/s, the rate whose
/// Lambda bill pays for one more pod). Assumption.
pub const COST_WINDOW_MS: u64 = 60_000;
/// The closed loop's memory: router-client's `LoopConfig::default()` (200 samples per tier
/// and kind, p95 after 5, ratio EWMA 0.1).
pub const LOOP_WINDOW: usize = 200;
pub const LOOP_MIN_SAMPLES: usize = 5;
pub const LOOP_RATIO_ALPHA: f64 = 0.1;
