//! One typed Config: defaults < config file < `KILN_*` environment variables, validated at
//! start with messages that name the offending key.

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use kiln_jobs::infer::{InferConfig, ModelConfig};
use kiln_jobs::Limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Reads an optional secrets file named by config key `key` (`http.tokens_file`,
/// `thumbnail.keys_file`): `None` when unset, an `Invalid` error naming the key when unreadable.
pub fn read_secrets_file(key: &'static str, path: Option<&str>) -> Result<Option<String>, ConfigError> {
    path.map(|f| std::fs::read_to_string(f).map_err(|e| ConfigError::Invalid { key, message: format!("cannot read {f}: {e}") }))
        .transpose()
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

/// `accel` / `KILN_ACCEL`: `auto`, `cpu` or `gpu` (the one type jobs and kernels use too).
pub use kiln_jobs::Accel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Serve,
    Lambda,
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub mode: Option<Mode>,
    pub accel: Accel,
    pub worker: WorkerConfig,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub scheduler: SchedulerConfig,
    pub limits: Limits,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub router: RouterConfig,
    pub kafka: KafkaConfig,
    pub checkpoint: CheckpointConfig,
    pub lambda: LambdaConfig,
    /// Where jobs may read from besides the store (serve, lambda, Kafka; see `store/confine.rs`),
    /// and the `http(s)://` prefixes remote sources may come from (every mode, `store/http.rs`).
    pub sources: SourcesConfig,
    /// Where jobs may write besides the store.
    pub outputs: AllowConfig,
    /// The infer engine: ONNX Runtime library, cache budgets.
    pub infer: InferConfig,
    /// The model registry (`[[models]]`) the infer kind serves.
    pub models: Vec<ModelConfig>,
    /// `kiln route`, the router (and the URL a worker advertises to it).
    pub route: RouteConfig,
    /// Signed thumbnail URLs (`GET /v1/thumbnail/…`, see `signing.rs`).
    pub thumbnail: ThumbnailConfig,
    /// Per-tenant shares of the worker (`tenants.rs`).
    pub tenants: TenantsConfig,
}

/// `[tenants]`: what one tenant may hold of this worker (jobs queued or running).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantsConfig {
    /// Jobs in flight per tenant; 0: only the share caps them.
    pub max_jobs: usize,
    /// Percent of the worker's capacity (CPU slots + queue depth) one tenant may hold.
    pub max_share_pct: u32,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig { max_jobs: 0, max_share_pct: 50 }
    }
}

impl TenantsConfig {
    pub fn limits(&self) -> crate::tenants::Limits {
        crate::tenants::Limits { max_jobs: self.max_jobs, max_share_pct: self.max_share_pct }
    }
}

/// `[thumbnail]`: the signed thumbnail URLs of the CDN path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThumbnailConfig {
    /// Signing keys, `tenant:secret` each; the endpoint is off without any.
    pub keys: Vec<String>,
    /// A file of `tenant:secret` lines, read at start (added to `keys`).
    pub keys_file: Option<String>,
    /// `Cache-Control: public, max-age=…` of a served thumbnail, in seconds.
    pub max_age_s: u64,
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        ThumbnailConfig { keys: Vec::new(), keys_file: None, max_age_s: 86_400 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Defaults to `{hostname}-{pid}`.
    pub id: Option<String>,
    pub tier: String,
    pub region: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///…` or `s3://bucket/prefix`; defaults to the per-user data dir.
    pub url: Option<String>,
    pub s3: S3Config,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub region: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Bearer tokens, `tenant:token` each (see `auth.rs`).
    pub tokens: Vec<String>,
    /// A file of `tenant:token` lines, read at start (added to `tokens`).
    pub tokens_file: Option<String>,
    /// `bearer` (tokens; refuses a non-loopback address without any) or `none` (on purpose).
    pub auth: AuthMode,
    /// Whether `/metrics` needs a token too (open by default).
    pub metrics_auth: bool,
    /// Longest a client may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open); then the connection is closed.
    pub header_timeout_ms: u64,
    /// Longest a client may take to send a request's body; then it is answered 408.
    pub body_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    Bearer,
    None,
}

/// `[sources]`: the read allowlist, and the limits of remote (`http(s)://`) sources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// URI prefixes (`s3://bucket/prefix/`, `file:///dir/`, `https://host/path/`).
    pub allow: Vec<String>,
    /// Longest an `http(s)://` fetch may take, connect to last byte, redirects included.
    pub http_timeout_ms: u64,
    /// Redirects an `http(s)://` fetch follows (each checked against the allowlist).
    pub http_max_redirects: usize,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig { allow: Vec::new(), http_timeout_ms: 30_000, http_max_redirects: 5 }
    }
}

/// An allowlist of URI prefixes (`s3://bucket/prefix/`, `file:///dir/` or an absolute path).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowConfig {
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Jobs computing at once; 0 means one per logical core. A job holds its CPU slot only
    /// while it computes: waiting (its infer batch, the store, a lease, a GPU) it gives the
    /// slot to another job.
    pub cpu_slots: usize,
    /// Jobs started at once, computing or waiting: the job threads. 0 means four per CPU
    /// slot. At least `cpu_slots`.
    pub job_threads: usize,
    /// GPU devices the scheduler hands out (the first N that NVML lists); unset: every
    /// device NVML finds. More than NVML finds declares devices it cannot see (a container
    /// without NVML); `gpu_memory_mb` is then required.
    pub gpu_devices: Option<usize>,
    /// Jobs running device work at once on each GPU.
    pub gpu_slots: usize,
    /// GPU memory the scheduler hands out per device (warm models and in-flight buffers),
    /// in MiB; 0 means the device's total memory as NVML reports it.
    pub gpu_memory_mb: u64,
    /// Jobs waiting for a slot; past this, submissions are refused (`overloaded`).
    pub queue_depth: usize,
    /// Per-kind caps on running jobs (kind → slots), under `cpu_slots`.
    pub per_kind: BTreeMap<String, usize>,
    /// Finished jobs kept in memory for GET /v1/jobs/{id} and their events.
    pub retain_finished: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long SIGTERM waits for accepted work before cancelling it.
    pub grace_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `kiln_worker=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    pub url: Option<String>,
    pub interval_ms: u64,
    /// Bearer token sent with capacity reports, for a `kiln route` with `http.tokens` (one
    /// of its `tenant:token` pairs' token).
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers; the Kafka source runs when set.
    pub brokers: Option<String>,
    pub group: String,
    /// Kafka static membership (`group.instance.id`): a name stable across restarts (a
    /// StatefulSet pod's name), so a restarted member gets its partitions back without a
    /// rebalance. Unset: dynamic membership.
    pub instance_id: Option<String>,
    pub topics: KafkaTopics,
    pub session_timeout_ms: u64,
    /// Tries of a job that fails with a retryable error before it goes to the DLQ.
    pub max_attempts: u32,
    /// First retry delay; doubled on each further try.
    pub retry_backoff_ms: u64,
    /// How long a revoke waits for the revoked partitions' jobs (below the session timeout).
    pub revoke_drain_ms: u64,
    /// librdkafka's prefetch buffer per partition (queued.max.messages.kbytes): the memory
    /// bound on a backlog.
    pub prefetch_kbytes: u64,
    /// librdkafka properties passed through to the consumer and producer (`[kafka.properties]`:
    /// `security.protocol`, `sasl.*`, `ssl.*`, …); kiln's own settings win on a clash.
    pub properties: BTreeMap<String, String>,
    /// Whether a message's `kiln-tenant` header names its job's tenant (only when every
    /// producer on the topic is trusted to set it; otherwise Kafka jobs are nobody's).
    pub trust_tenant_header: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTopics {
    pub jobs: String,
    pub results: String,
    pub events: String,
    pub dlq: String,
    /// Compacted, key = worker id (worker/src/capacity_topic.rs); empty: not used.
    pub capacity: String,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        KafkaTopics {
            jobs: "kiln.jobs".into(),
            results: "kiln.results".into(),
            events: "kiln.events".into(),
            dlq: "kiln.dlq".into(),
            capacity: "kiln.capacity".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    pub lease_ms: u64,
    /// How long a checkpointed job waits for an unavailable store (retrying with backoff)
    /// before it fails with a retryable error.
    pub store_wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LambdaConfig {
    /// `buffered` (the result) or `stream` (NDJSON events, then the result).
    pub response: String,
    /// Job kinds this tier takes; others are refused with `too_long_for_tier`.
    pub kinds: Vec<String>,
    /// Largest source a function accepts; larger ones go to the container tier.
    pub max_input_bytes: u64,
    /// Least time the invocation must have left to start a job.
    pub min_remaining_ms: u64,
    /// Scratch directory whose free space is checked (empty: the system temp dir, `/tmp` on
    /// Lambda, whose size is the function's ephemeral storage).
    pub scratch_dir: String,
    /// Least free scratch space to start a job; a job with a source needs at least twice the
    /// source's size (staged input and output) on top of nothing less than this.
    pub min_scratch_bytes: u64,
    /// Whether an invocation's `x-kiln-tenant` header names its job's tenant (set by `kiln
    /// route`). Only for a function that nobody but the router (and trusted callers) may
    /// invoke: the header is not authenticated here. Without it the function's jobs are
    /// nobody's.
    pub trust_tenant_header: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: None,
            accel: Accel::Auto,
            worker: WorkerConfig { id: None, tier: "container".into(), region: "local".into() },
            store: StoreConfig { url: None, s3: S3Config::default() },
            http: HttpConfig {
                addr: "0.0.0.0:8080".into(),
                max_body_bytes: 1024 * 1024,
                tokens: Vec::new(),
                tokens_file: None,
                auth: AuthMode::Bearer,
                metrics_auth: false,
                header_timeout_ms: 30_000,
                body_timeout_ms: 30_000,
            },
            scheduler: SchedulerConfig {
                cpu_slots: 0,
                job_threads: 0,
                gpu_devices: None,
                gpu_slots: 2,
                gpu_memory_mb: 0,
                queue_depth: 256,
                per_kind: BTreeMap::new(),
                retain_finished: 4096,
            },
            limits: Limits::default(),
            shutdown: ShutdownConfig { grace_ms: 30_000 },
            log: LogConfig { level: "info".into(), format: LogFormat::Auto },
            router: RouterConfig { url: None, interval_ms: 2_000, token: None },
            kafka: KafkaConfig {
                brokers: None,
                group: "kiln".into(),
                instance_id: None,
                topics: KafkaTopics::default(),
                session_timeout_ms: 10_000,
                max_attempts: 3,
                retry_backoff_ms: 500,
                revoke_drain_ms: 5_000,
                prefetch_kbytes: 1024,
                properties: BTreeMap::new(),
                trust_tenant_header: false,
            },
            checkpoint: CheckpointConfig { lease_ms: 30_000, store_wait_ms: 60_000 },
            lambda: LambdaConfig {
                response: "buffered".into(),
                kinds: vec!["thumbnail".into(), "infer".into()],
                max_input_bytes: 64 * 1024 * 1024,
                min_remaining_ms: 1000,
                scratch_dir: String::new(),
                min_scratch_bytes: 16 * 1024 * 1024,
                trust_tenant_header: false,
            },
            sources: SourcesConfig::default(),
            outputs: AllowConfig::default(),
            infer: InferConfig::default(),
            models: Vec::new(),
            route: RouteConfig::default(),
            thumbnail: ThumbnailConfig::default(),
            tenants: TenantsConfig::default(),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Config::default().worker
    }
}
impl Default for StoreConfig {
    fn default() -> Self {
        Config::default().store
    }
}
impl Default for HttpConfig {
    fn default() -> Self {
        Config::default().http
    }
}
impl Default for SchedulerConfig {
    fn default() -> Self {
        Config::default().scheduler
    }
}
impl Default for ShutdownConfig {
    fn default() -> Self {
        Config::default().shutdown
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        Config::default().log
    }
}
impl Default for RouterConfig {
    fn default() -> Self {
        Config::default().router
    }
}
impl Default for KafkaConfig {
    fn default() -> Self {
        Config::default().kafka
    }
}
impl Default for CheckpointConfig {
    fn default() -> Self {
        Config::default().checkpoint
    }
}
impl Default for LambdaConfig {
    fn default() -> Self {
        Config::default().lambda
    }
}

/// `[route]`: `kiln route` (worker/src/route), and `advertise_url`, which a `kiln serve`
/// worker sends with its capacity reports so the router can reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Placement policy file (router-client `PolicyConfig`): JSON, or TOML when it ends in
    /// `.toml`. Reloaded when its modification time changes (checked every 2 s).
    pub policy: Option<String>,
    /// Append every decision as one JSONL line (router-client `LogRecord`) to this file.
    pub decision_log: Option<String>,
    /// Seed of the policy's random draws (exercise, dual, overflow); default: from the clock.
    pub seed: Option<u64>,
    /// Longest a forwarded job may take before it is retried elsewhere.
    pub forward_timeout_ms: u64,
    /// Tries of one job (first placement included) across workers and tiers.
    pub max_attempts: u32,
    /// Job ids remembered (id → worker) for GET /v1/jobs/{id}; older ones ask every worker.
    pub job_map_size: usize,
    /// The URL a `kiln serve` worker advertises to the router with its capacity reports
    /// (default: `http://{http.addr}`, with 127.0.0.1 for an unspecified address).
    pub advertise_url: Option<String>,
    /// The serverless tier: unset, nothing is invoked (serverless decisions go to a container
    /// when the decision allows one); `aws`, the Lambda Invoke API of `route.lambda_region`;
    /// an `http(s)://` URL, the Invoke API at that endpoint (cargo-lambda's emulator). The
    /// function's name comes from the policy (`serverless.function`, per-kind `function`).
    pub lambda: Option<String>,
    /// Region of the Lambda Invoke API (default: the AWS chain's, else us-east-1).
    pub lambda_region: Option<String>,
    /// How an SSE request's invocation streams: `aws`, `InvokeWithResponseStream` (the AWS
    /// API); `emulator`, the Invoke endpoint of cargo-lambda's emulator read as its body
    /// arrives (the emulator serves `InvokeWithResponseStream` under another path, in frames
    /// the SDK refuses and only once the function is done: cargo-lambda issue #898).
    pub lambda_streaming: String,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            policy: None,
            decision_log: None,
            seed: None,
            forward_timeout_ms: 300_000,
            max_attempts: 3,
            job_map_size: 10_000,
            advertise_url: None,
            lambda: None,
            lambda_region: None,
            lambda_streaming: "aws".into(),
        }
    }
}

/// `KILN_*` variables and the config keys they set. Explicit, because DESIGN.md's names do
/// not follow one splitting rule (`KILN_S3_ENDPOINT` is `store.s3.endpoint`).
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("MODE", "mode"),
    ("ACCEL", "accel"),
    ("WORKER_ID", "worker.id"),
    ("TIER", "worker.tier"),
    ("REGION", "worker.region"),
    ("STORE_URL", "store.url"),
    ("S3_ENDPOINT", "store.s3.endpoint"),
    ("S3_PATH_STYLE", "store.s3.path_style"),
    ("S3_REGION", "store.s3.region"),
    ("HTTP_ADDR", "http.addr"),
    ("HTTP_MAX_BODY_BYTES", "http.max_body_bytes"),
    ("HTTP_TOKENS", "http.tokens"),
    ("HTTP_TOKENS_FILE", "http.tokens_file"),
    ("HTTP_AUTH", "http.auth"),
    ("HTTP_METRICS_AUTH", "http.metrics_auth"),
    ("HTTP_HEADER_TIMEOUT_MS", "http.header_timeout_ms"),
    ("HTTP_BODY_TIMEOUT_MS", "http.body_timeout_ms"),
    ("SOURCES_ALLOW", "sources.allow"),
    ("OUTPUTS_ALLOW", "outputs.allow"),
    ("SOURCES_HTTP_TIMEOUT_MS", "sources.http_timeout_ms"),
    ("SOURCES_HTTP_MAX_REDIRECTS", "sources.http_max_redirects"),
    ("CPU_SLOTS", "scheduler.cpu_slots"),
    ("QUEUE_DEPTH", "scheduler.queue_depth"),
    ("JOB_THREADS", "scheduler.job_threads"),
    ("GPU_DEVICES", "scheduler.gpu_devices"),
    ("GPU_SLOTS", "scheduler.gpu_slots"),
    ("GPU_MEMORY_MB", "scheduler.gpu_memory_mb"),
    ("MAX_INPUT_BYTES", "limits.max_input_bytes"),
    ("MAX_PIXELS", "limits.max_pixels"),
    ("MAX_OUTPUTS", "limits.max_outputs"),
    ("MAX_VIDEO_SECONDS", "limits.max_video_seconds"),
    ("MAX_VIDEO_PIXELS", "limits.max_video_pixels"),
    ("MAX_LADDER_RUNGS", "limits.max_ladder_rungs"),
    ("MAX_RENDER_PAGES", "limits.max_render_pages"),
    ("MAX_PAGE_PIXELS", "limits.max_page_pixels"),
    ("MAX_LAYERS_PER_PAGE", "limits.max_layers_per_page"),
    ("DECODE_MEMORY_MB", "limits.decode_memory_mb"),
    ("SHUTDOWN_GRACE_MS", "shutdown.grace_ms"),
    ("LOG", "log.level"),
    ("LOG_FORMAT", "log.format"),
    ("ROUTER_URL", "router.url"),
    ("ROUTER_INTERVAL_MS", "router.interval_ms"),
    ("ROUTER_TOKEN", "router.token"),
    ("KAFKA_BROKERS", "kafka.brokers"),
    ("KAFKA_GROUP", "kafka.group"),
    ("KAFKA_INSTANCE_ID", "kafka.instance_id"),
    ("KAFKA_SESSION_TIMEOUT_MS", "kafka.session_timeout_ms"),
    ("KAFKA_MAX_ATTEMPTS", "kafka.max_attempts"),
    ("KAFKA_RETRY_BACKOFF_MS", "kafka.retry_backoff_ms"),
    ("KAFKA_REVOKE_DRAIN_MS", "kafka.revoke_drain_ms"),
    ("KAFKA_JOBS_TOPIC", "kafka.topics.jobs"),
    ("KAFKA_RESULTS_TOPIC", "kafka.topics.results"),
    ("KAFKA_EVENTS_TOPIC", "kafka.topics.events"),
    ("KAFKA_DLQ_TOPIC", "kafka.topics.dlq"),
    ("KAFKA_CAPACITY_TOPIC", "kafka.topics.capacity"),
    ("CHECKPOINT_LEASE_MS", "checkpoint.lease_ms"),
    ("CHECKPOINT_STORE_WAIT_MS", "checkpoint.store_wait_ms"),
    ("LAMBDA_RESPONSE", "lambda.response"),
    ("LAMBDA_MAX_INPUT_BYTES", "lambda.max_input_bytes"),
    ("LAMBDA_MIN_REMAINING_MS", "lambda.min_remaining_ms"),
    ("LAMBDA_KINDS", "lambda.kinds"),
    ("LAMBDA_SCRATCH_DIR", "lambda.scratch_dir"),
    ("LAMBDA_MIN_SCRATCH_BYTES", "lambda.min_scratch_bytes"),
    ("LAMBDA_TRUST_TENANT_HEADER", "lambda.trust_tenant_header"),
    ("ORT_DYLIB", "infer.ort_dylib"),
    ("INFER_HOST_MEMORY_MB", "infer.host_memory_mb"),
    ("INFER_GPU_MEMORY_MB", "infer.gpu_memory_mb"),
    ("ROUTE_POLICY", "route.policy"),
    ("ROUTE_DECISION_LOG", "route.decision_log"),
    ("ROUTE_SEED", "route.seed"),
    ("ROUTE_FORWARD_TIMEOUT_MS", "route.forward_timeout_ms"),
    ("ROUTE_MAX_ATTEMPTS", "route.max_attempts"),
    ("ROUTE_JOB_MAP_SIZE", "route.job_map_size"),
    ("ADVERTISE_URL", "route.advertise_url"),
    ("THUMBNAIL_KEYS", "thumbnail.keys"),
    ("THUMBNAIL_KEYS_FILE", "thumbnail.keys_file"),
    ("THUMBNAIL_MAX_AGE_S", "thumbnail.max_age_s"),
    ("TENANT_MAX_JOBS", "tenants.max_jobs"),
    ("TENANT_MAX_SHARE_PCT", "tenants.max_share_pct"),
    ("KAFKA_TRUST_TENANT_HEADER", "kafka.trust_tenant_header"),
    ("ROUTE_LAMBDA", "route.lambda"),
    ("ROUTE_LAMBDA_REGION", "route.lambda_region"),
    ("ROUTE_LAMBDA_STREAMING", "route.lambda_streaming"),
];

impl Config {
    /// Loads defaults < file < environment. `file` is `--config`; else `KILN_CONFIG`; else
    /// `./kiln.toml` when present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &vars)
    }

    /// As [`Config::load`], with the environment given (tests).
    pub fn load_from(file: Option<&Path>, vars: &[(String, String)]) -> Result<Config, ConfigError> {
        let env_file = vars.iter().find(|(k, _)| k == "KILN_CONFIG").map(|(_, v)| PathBuf::from(v));
        let path = match file.map(Path::to_path_buf).or(env_file) {
            Some(p) if !p.exists() => return Err(ConfigError::MissingFile(p)),
            Some(p) => Some(p),
            None => Some(PathBuf::from("kiln.toml")).filter(|p| p.exists()),
        };
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = &path {
            fig = fig.merge(Toml::file_exact(p));
        }
        // Map each known variable to its key; unknown KILN_* variables are ignored (and
        // KILN_CONFIG, KILN_BIN are not config keys).
        for (suffix, key) in ENV_KEYS {
            let var = format!("KILN_{suffix}");
            if let Some((_, value)) = vars.iter().find(|(k, _)| *k == var) {
                let v = if LIST_KEYS.contains(key) { env_list(value) } else { env_value(value) };
                fig = fig.merge((key.to_string(), v));
            }
        }
        let cfg: Config = fig.extract().map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.addr.parse::<SocketAddr>().map_err(|e| invalid("http.addr", format!("{:?} is not host:port ({e})", self.http.addr)))?;
        if self.http.header_timeout_ms == 0 || self.http.body_timeout_ms == 0 {
            return Err(invalid("http", "header_timeout_ms and body_timeout_ms must be positive"));
        }
        if let Some(u) = &self.store.url {
            let url = Url::parse(u).map_err(|e| invalid("store.url", format!("{u:?} is not a URL ({e})")))?;
            match url.scheme() {
                "file" | "s3" => {}
                s => return Err(invalid("store.url", format!("scheme {s:?} is not supported (file:// or s3://)"))),
            }
        }
        if self.scheduler.queue_depth == 0 {
            return Err(invalid("scheduler.queue_depth", "must be at least 1"));
        }
        if self.scheduler.cpu_slots > 4096 {
            return Err(invalid("scheduler.cpu_slots", "at most 4096"));
        }
        if self.scheduler.job_threads > 4096 * 4 {
            return Err(invalid("scheduler.job_threads", "at most 16384"));
        }
        if self.scheduler.job_threads != 0 && self.scheduler.job_threads < self.cpu_slots() {
            return Err(invalid(
                "scheduler.job_threads",
                format!("{} is fewer than scheduler.cpu_slots ({})", self.scheduler.job_threads, self.cpu_slots()),
            ));
        }
        if self.scheduler.gpu_slots == 0 || self.scheduler.gpu_slots > 1024 {
            return Err(invalid("scheduler.gpu_slots", "must be within 1..1024"));
        }
        if self.scheduler.gpu_devices.is_some_and(|n| n > 64) {
            return Err(invalid("scheduler.gpu_devices", "at most 64"));
        }
        for (kind, n) in &self.scheduler.per_kind {
            if *n == 0 {
                return Err(invalid("scheduler.per_kind", format!("{kind} = 0 would never run a {kind} job")));
            }
        }
        if self.limits.max_pixels == 0 || self.limits.max_input_bytes == 0 || self.limits.max_outputs == 0 {
            return Err(invalid("limits", "max_pixels, max_input_bytes and max_outputs must be positive"));
        }
        if self.worker.tier != "container" && self.worker.tier != "serverless" {
            return Err(invalid("worker.tier", format!("{:?} is not container or serverless", self.worker.tier)));
        }
        if let Some(u) = &self.router.url {
            Url::parse(u).map_err(|e| invalid("router.url", format!("{u:?} is not a URL ({e})")))?;
        }
        if self.router.interval_ms < 100 {
            return Err(invalid("router.interval_ms", "at least 100"));
        }
        if self.lambda.response != "buffered" && self.lambda.response != "stream" {
            return Err(invalid("lambda.response", "buffered or stream"));
        }
        if self.kafka.brokers.is_some() {
            if self.kafka.revoke_drain_ms >= self.kafka.session_timeout_ms {
                return Err(invalid("kafka.revoke_drain_ms", "must be below kafka.session_timeout_ms"));
            }
            if self.kafka.max_attempts == 0 {
                return Err(invalid("kafka.max_attempts", "at least 1"));
            }
            if self.kafka.group.is_empty() || self.kafka.topics.jobs.is_empty() {
                return Err(invalid("kafka", "group and topics.jobs must not be empty"));
            }
            if self.kafka.instance_id.as_deref().is_some_and(str::is_empty) {
                return Err(invalid("kafka.instance_id", "must not be empty when set"));
            }
        }
        if self.route.max_attempts == 0 {
            return Err(invalid("route.max_attempts", "at least 1"));
        }
        if self.tenants.max_share_pct == 0 || self.tenants.max_share_pct > 100 {
            return Err(invalid("tenants.max_share_pct", "1 to 100"));
        }
        if let Some(l) = self.route.lambda.as_deref().filter(|l| *l != "aws") {
            let ok = Url::parse(l).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(invalid("route.lambda", format!("{l:?} is neither `aws` nor an http(s):// endpoint")));
            }
        }
        if !matches!(self.route.lambda_streaming.as_str(), "aws" | "emulator") {
            return Err(invalid("route.lambda_streaming", "aws or emulator"));
        }
        if self.route.lambda_streaming == "emulator" && self.route.lambda.as_deref().is_none_or(|l| l == "aws") {
            return Err(invalid("route.lambda_streaming", "emulator needs route.lambda to be the emulator's endpoint"));
        }
        if self.checkpoint.lease_ms < 1000 {
            return Err(invalid("checkpoint.lease_ms", "at least 1000"));
        }
        for (key, items) in [("sources.allow", &self.sources.allow), ("outputs.allow", &self.outputs.allow)] {
            for item in items {
                let root = crate::allow::Root::parse(item).map_err(|message| ConfigError::Invalid { key, message })?;
                if key == "outputs.allow" && matches!(root, crate::allow::Root::Http(_)) {
                    return Err(invalid(key, format!("{item:?}: outputs cannot be written over http(s)")));
                }
            }
        }
        crate::tokens::Tokens::parse(&self.http.tokens, None)
            .map_err(|e| ConfigError::Invalid { key: "http.tokens", message: e.to_string() })?;
        crate::signing::SigningKeys::parse(&self.thumbnail.keys, None)
            .map_err(|e| ConfigError::Invalid { key: "thumbnail.keys", message: e.to_string() })?;
        kiln_jobs::infer::config::validate_models(&self.models).map_err(|e| invalid("models", e.message))?;
        if self.infer.memory_factor.is_nan() || self.infer.memory_factor <= 0.0 {
            return Err(invalid("infer.memory_factor", "must be positive"));
        }
        Ok(())
    }

    /// Slots for running jobs, sized to the machine when not set.
    pub fn cpu_slots(&self) -> usize {
        match self.scheduler.cpu_slots {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// Job threads: the most jobs started at once (computing or waiting).
    pub fn job_threads(&self) -> usize {
        match self.scheduler.job_threads {
            0 => self.cpu_slots().saturating_mul(4),
            n => n,
        }
    }

    /// The store URL, defaulting to the per-user data dir.
    pub fn store_url(&self) -> Url {
        if let Some(u) = self.store.url.as_deref().and_then(|u| Url::parse(u).ok()) {
            return u;
        }
        let dir = dirs::data_local_dir().unwrap_or_else(std::env::temp_dir).join("kiln");
        Url::from_directory_path(&dir).unwrap_or_else(|_| Url::parse("file:///tmp/kiln/").expect("static URL"))
    }

    pub fn worker_id(&self) -> String {
        self.worker.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "kiln".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Keys whose variables hold comma-separated lists.
const LIST_KEYS: &[&str] = &["lambda.kinds", "http.tokens", "sources.allow", "outputs.allow", "thumbnail.keys"];

fn env_list(v: &str) -> figment::value::Value {
    let items: Vec<String> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    figment::value::Value::from(items)
}

/// Environment values are typed the way TOML would type them: numbers and booleans as such,
/// everything else a string.
fn env_value(v: &str) -> figment::value::Value {
    use figment::value::Value;
    if let Ok(n) = v.parse::<u64>() {
        return Value::from(n);
    }
    match v {
        "true" => Value::from(true),
        "false" => Value::from(false),
        _ => Value::from(v.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.http.addr, "0.0.0.0:8080");
        assert!(c.cpu_slots() >= 1);
        assert_eq!(c.store_url().scheme(), "file");
    }

    #[test]
    fn env_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kiln.toml");
        std::fs::write(&f, "[http]\naddr = \"127.0.0.1:9000\"\n[scheduler]\nqueue_depth = 7\ncpu_slots = 3\n[scheduler.per_kind]\nthumbnail = 2\n").unwrap();
        let c = Config::load_from(Some(&f), &vars(&[("KILN_QUEUE_DEPTH", "9"), ("KILN_S3_PATH_STYLE", "true")])).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:9000");
        assert_eq!(c.scheduler.queue_depth, 9);
        assert_eq!(c.cpu_slots(), 3);
        assert_eq!(c.job_threads(), 12, "four job threads per CPU slot by default");
        assert!(c.store.s3.path_style);
        assert_eq!(c.scheduler.per_kind["thumbnail"], 2);
        let c = Config::load_from(None, &vars(&[("KILN_CPU_SLOTS", "2"), ("KILN_JOB_THREADS", "1")]));
        assert!(matches!(c, Err(ConfigError::Invalid { key: "scheduler.job_threads", .. })), "{c:?}");
        let c = Config::load_from(None, &vars(&[("KILN_GPU_DEVICES", "2"), ("KILN_GPU_MEMORY_MB", "512")])).unwrap();
        assert_eq!((c.scheduler.gpu_devices, c.scheduler.gpu_memory_mb, c.scheduler.gpu_slots), (Some(2), 512, 2));
        let c = Config::load_from(None, &vars(&[("KILN_LAMBDA_KINDS", "thumbnail, debug")])).unwrap();
        assert_eq!(c.lambda.kinds, ["thumbnail", "debug"]);
        let c = Config::load_from(None, &vars(&[("KILN_CONFIG", f.to_str().unwrap())])).unwrap();
        assert_eq!(c.scheduler.queue_depth, 7);
    }

    #[test]
    fn the_route_lambda_key_takes_aws_or_an_endpoint() {
        for ok in ["aws", "http://127.0.0.1:9000", "https://lambda.example"] {
            let c = Config::load_from(None, &vars(&[("KILN_ROUTE_LAMBDA", ok), ("KILN_ROUTER_TOKEN", "t")])).unwrap();
            assert_eq!(c.route.lambda.as_deref(), Some(ok));
            assert_eq!(c.router.token.as_deref(), Some("t"));
        }
        let e = Config::load_from(None, &vars(&[("KILN_ROUTE_LAMBDA", "lambda.local")])).unwrap_err().to_string();
        assert!(e.contains("route.lambda"), "{e}");
        // Streaming through the emulator's Invoke answer needs the emulator's endpoint.
        assert_eq!(Config::default().route.lambda_streaming, "aws");
        let emu = [("KILN_ROUTE_LAMBDA", "http://127.0.0.1:9000"), ("KILN_ROUTE_LAMBDA_STREAMING", "emulator")];
        assert_eq!(Config::load_from(None, &vars(&emu)).unwrap().route.lambda_streaming, "emulator");
        for bad in [&[("KILN_ROUTE_LAMBDA", "aws"), ("KILN_ROUTE_LAMBDA_STREAMING", "emulator")][..], &[("KILN_ROUTE_LAMBDA_STREAMING", "live")]] {
            let e = Config::load_from(None, &vars(bad)).unwrap_err().to_string();
            assert!(e.contains("route.lambda_streaming"), "{e}");
        }
        let c = Config::load_from(None, &vars(&[("KILN_KAFKA_CAPACITY_TOPIC", "caps")])).unwrap();
        assert_eq!(c.kafka.topics.capacity, "caps");
        assert_eq!(Config::default().kafka.topics.capacity, "kiln.capacity");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::load_from(None, &vars(&[("KILN_HTTP_ADDR", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("http.addr"), "{e}");
        let e = Config::load_from(None, &vars(&[("KILN_QUEUE_DEPTH", "0")])).unwrap_err();
        assert!(e.to_string().contains("queue_depth"), "{e}");
        let e = Config::load_from(None, &vars(&[("KILN_ACCEL", "quantum")])).unwrap_err();
        assert!(e.to_string().contains("quantum"), "{e}");
        let e = Config::load_from(None, &vars(&[("KILN_STORE_URL", "ftp://x/")])).unwrap_err();
        assert!(e.to_string().contains("store.url"), "{e}");
        let e = Config::load_from(Some(Path::new("/nonexistent/kiln.toml")), &[]).unwrap_err();
        assert!(matches!(e, ConfigError::MissingFile(_)));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(&f, "[htp]\naddr = 1\n").unwrap();
        let e = Config::load_from(Some(&f), &[]).unwrap_err();
        assert!(e.to_string().contains("htp"), "{e}");
    }

    #[test]
    fn the_model_registry_parses_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kiln.toml");
        let models = "[[models]]\nname = \"det\"\nuri = \"file:///m/320n.onnx\"\ntask = \"detect\"\ninput_size = [320, 320]\nwarm = true\n\
                      [[models]]\nname = \"raw\"\nuri = \"s3://b/raw.onnx\"\n";
        std::fs::write(&f, format!("[infer]\nhost_memory_mb = 64\n{models}")).unwrap();
        let c = Config::load_from(Some(&f), &vars(&[("KILN_ORT_DYLIB", "/opt/ort/libonnxruntime.so")])).unwrap();
        assert_eq!(c.models.len(), 2);
        assert_eq!((c.models[0].name.as_str(), c.models[0].warm, c.models[0].max_batch), ("det", true, 16));
        assert_eq!(c.infer.host_memory_mb, 64);
        assert_eq!(c.infer.ort_dylib.as_deref(), Some("/opt/ort/libonnxruntime.so"));
        std::fs::write(&f, "[[models]]\nname = \"det\"\nuri = \"file:///m.onnx\"\ntask = \"detect\"\n").unwrap();
        let e = Config::load_from(Some(&f), &[]).unwrap_err();
        assert!(e.to_string().contains("models") && e.to_string().contains("input_size"), "{e}");
        std::fs::write(&f, format!("{models}{models}")).unwrap();
        let e = Config::load_from(Some(&f), &[]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }
}
