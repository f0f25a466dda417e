//! `kiln route`: the latency-aware router of the hybrid design (DESIGN.md, "Placement").
//!
//! Stateless (any number of replicas): it serves the same `/v1/jobs` API as `kiln serve`,
//! places each job with the router-client policy ([`kiln_router_client::Router`]) from the
//! capacity workers push to it (`POST /v1/capacity`, or the `kiln.capacity` topic) and from the serverless invocations'
//! results, and sends the job to the chosen container worker over HTTP or to the Lambda
//! function through the Invoke API, retrying on another worker or the other tier when one
//! fails.
//!
//! - [`server`]: the HTTP API (axum) and the process's lifecycle ([`run`]).
//! - [`forward`]: one job's placement, attempts on both tiers, retries and answer.
//! - [`serverless`]: the Lambda Invoke API client and what an invocation's answer says.
//! - [`streamed`]: an SSE request's invocation (`InvokeWithResponseStream`), read as it comes.
//! - [`capacity`]: capacity reports in, the worker address book and the job id → worker map.
//! - [`capacity_topic`]: capacity reports in from the compacted `kiln.capacity` topic.
//! - [`queue`]: the container pool's Kafka queue, for jobs no worker can take now.
//! - [`metrics`]: the router's own Prometheus metrics.
//!
//! Without `route.lambda` no function is invoked: a serverless decision goes to a container
//! when the decision allows one, with `serverless unavailable` in the `x-kiln-route` note.
//!
//! Policy reload: the file at `route.policy` is re-read when its modification time changes
//! (checked every 2 s); an invalid file is logged and the running policy kept.

pub mod capacity;
pub mod capacity_topic;
pub mod forward;
pub mod metrics;
pub mod queue;
pub mod server;
pub mod serverless;
pub mod streamed;

pub use server::run;

use crate::config::RouteConfig;
use capacity::{AddressBook, JobMap};
use kiln_router_client::{CapacityView, PolicyConfig, Router};
use metrics::RouteMetrics;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("policy file {path}: {message}")]
    Policy { path: String, message: String },
    #[error("decision log {path}: {source}")]
    DecisionLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What every request handler shares.
pub struct RouteState {
    pub cfg: RouteConfig,
    /// The policy and its closed loop. Lock order: `view` before `policy`.
    pub policy: Mutex<Router>,
    pub view: Mutex<CapacityView>,
    pub book: Mutex<AddressBook>,
    pub jobs: Mutex<JobMap>,
    pub client: reqwest::Client,
    /// The serverless tier's Invoke API client (`route.lambda`); None: no serverless tier.
    pub invoker: Option<serverless::Invoker>,
    /// The container pool's queue on Kafka (`kafka.brokers`); None: no queue.
    pub queue: Option<queue::JobQueue>,
    pub metrics: RouteMetrics,
    decision_log: Option<Mutex<std::fs::File>>,
}

/// A poisoned lock still holds usable state (every critical section leaves it consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Loads a policy file: TOML when the name ends in `.toml`, else JSON.
pub fn load_policy(path: &str) -> Result<PolicyConfig, RouteError> {
    let err = |message: String| RouteError::Policy { path: path.to_owned(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    if path.ends_with(".toml") {
        use figment::providers::{Format, Toml};
        let c: PolicyConfig = figment::Figment::from(Toml::string(&text)).extract().map_err(|e| err(e.to_string()))?;
        c.validate().map_err(|e| err(e.to_string()))?;
        Ok(c)
    } else {
        PolicyConfig::from_json(&text).map_err(|e| err(e.to_string()))
    }
}

fn mtime(path: &str) -> Option<SystemTime> {
    std::fs::metadata(Path::new(path)).and_then(|m| m.modified()).ok()
}

impl RouteState {
    pub fn new(cfg: RouteConfig, invoker: Option<serverless::Invoker>, queue: Option<queue::JobQueue>) -> Result<Self, RouteError> {
        let policy = match &cfg.policy {
            Some(p) => load_policy(p)?,
            None => PolicyConfig::default(),
        };
        let seed = cfg.seed.unwrap_or_else(|| now_ms() ^ u64::from(std::process::id()));
        let view = CapacityView::new(policy.serverless.idle_lifetime_ms);
        let router = Router::new(policy, seed).map_err(|e| RouteError::Policy { path: "(default)".into(), message: e.to_string() })?;
        let decision_log = match &cfg.decision_log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| RouteError::DecisionLog { path: path.clone(), source })?,
            )),
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // Below the workers' default `http.header_timeout_ms` (30 s), after which they
            // close an idle connection: a pooled one is dropped here first.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()?;
        Ok(RouteState {
            jobs: Mutex::new(JobMap::new(cfg.job_map_size)),
            cfg,
            policy: Mutex::new(router),
            view: Mutex::new(view),
            book: Mutex::new(AddressBook::default()),
            client,
            invoker,
            queue,
            metrics: RouteMetrics::new(),
            decision_log,
        })
    }

    /// Appends one line to the decision log, when there is one.
    pub fn log_decision(&self, line: &str) {
        if let Some(f) = &self.decision_log {
            use std::io::Write;
            let mut f = lock(f);
            if let Err(e) = writeln!(f, "{line}") {
                tracing::warn!(error = %e, "decision log write failed");
            }
        }
    }

    /// Ready once a fresh capacity report is held, or at once with a serverless tier or a
    /// Kafka queue (both take jobs without a report).
    pub fn ready(&self) -> bool {
        let now = now_ms();
        self.invoker.is_some() || self.queue.is_some() || lock(&self.view).workers(now).next().is_some()
    }

    /// Every 2 s until dropped: drops expired reports and idle instances from the view, and
    /// re-reads the policy file when its modification time changed.
    pub async fn watch_policy(self: std::sync::Arc<Self>) {
        let path = self.cfg.policy.clone();
        let mut seen = path.as_deref().and_then(mtime);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            lock(&self.view).expire(now_ms());
            let Some(path) = path.as_deref() else { continue };
            let now = mtime(path);
            if now == seen {
                continue;
            }
            seen = now;
            match load_policy(path) {
                Ok(policy) => {
                    let idle = policy.serverless.idle_lifetime_ms;
                    let mut view = lock(&self.view);
                    let mut router = lock(&self.policy);
                    match router.reload(policy) {
                        Ok(version) => {
                            view.set_idle_lifetime_ms(idle);
                            tracing::info!(%path, version, "policy reloaded");
                        }
                        Err(e) => tracing::warn!(%path, error = %e, "policy reload refused; keeping the running one"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "policy reload failed; keeping the running one"),
            }
        }
    }
}

/// A worker's own base URL as it advertises it: `route.advertise_url`, else `http://{local}`
/// with 127.0.0.1 for an unspecified address.
pub fn advertised_url(local: SocketAddr, advertise: Option<&str>) -> String {
    match advertise {
        Some(a) => a.trim_end_matches('/').to_owned(),
        None if local.ip().is_unspecified() => format!("http://127.0.0.1:{}", local.port()),
        None => format!("http://{local}"),
    }
}

/// The URL a `kiln serve` worker posts its capacity reports to: `router.url` with the
/// worker's own address as the `worker_url` query parameter, so the router can forward jobs
/// to it. `advertise` (`route.advertise_url`) wins; else `http://{local}`, with 127.0.0.1
/// for an unspecified address.
pub fn report_url(router_url: &str, local: SocketAddr, advertise: Option<&str>) -> String {
    let own = advertised_url(local, advertise);
    match url::Url::parse(router_url) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("worker_url", &own);
            u.to_string()
        }
        Err(_) => router_url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_url_carries_the_worker_address() {
        let local: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(
            report_url("http://r:8090/v1/capacity", local, None),
            "http://r:8090/v1/capacity?worker_url=http%3A%2F%2F127.0.0.1%3A8081"
        );
        let u = report_url("http://r/v1/capacity?x=1", local, Some("http://pod-1:8080/"));
        assert!(u.ends_with("x=1&worker_url=http%3A%2F%2Fpod-1%3A8080"), "{u}");
    }

    #[test]
    fn policy_files_load_as_json_or_toml() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("p.json");
        std::fs::write(&j, r#"{"exercise_share": 0.0, "kinds": {"debug": {"primary": "container", "fallback": null}}}"#).unwrap();
        let c = load_policy(j.to_str().unwrap()).unwrap();
        assert_eq!(c.exercise_share, 0.0);
        let t = dir.path().join("p.toml");
        std::fs::write(&t, "dual_share = 0.0\n[kinds.debug]\nprimary = \"container\"\n").unwrap();
        assert_eq!(load_policy(t.to_str().unwrap()).unwrap().dual_share, 0.0);
        std::fs::write(&t, "dual_share = 3.0\n").unwrap();
        assert!(load_policy(t.to_str().unwrap()).is_err());
    }
}
