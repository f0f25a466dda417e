//! The modes of the one binary and its composition root: [`registry`] and [`runtime`] assemble
//! the job kinds, the store and the runtime that `run` (file or stdin → JSONL on stdout),
//! `serve` (HTTP, and Kafka when brokers are set), `lambda` and `probe` share; and
//! `config check`, the start-up checks without starting.

use crate::capacity::{publish_loop, Reporter};
use crate::config::Config;
use crate::runtime::Runtime;
use crate::sinks::stdout::JsonlSink;
use crate::sources::{file, http};
use crate::store::StoreRouter;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kiln_jobs::{ObjectStore, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The job kinds of this process (the composition root: a new kind is one line here):
/// thumbnail, transcode, render, `infer` with the configured model registry, plus `debug`
/// with KILN_DEBUG_KINDS=1 in a build with the `debug-kind` feature.
pub fn registry(cfg: &Config, store: Arc<dyn ObjectStore>) -> Registry {
    let mut r = Registry::empty();
    r.register(Arc::new(kiln_jobs::thumbnail::Thumbnail));
    r.register(Arc::new(kiln_jobs::transcode::Transcode));
    r.register(Arc::new(kiln_jobs::render::Render));
    if let Some(infer) = infer_kind(cfg) {
        r.register(Arc::new(infer.with_store(store)));
    }
    #[cfg(feature = "debug-kind")]
    if std::env::var("KILN_DEBUG_KINDS").is_ok_and(|v| v == "1") {
        r.register(Arc::new(crate::debug_kind::DebugKind));
    }
    r
}

/// The infer kind built from `[infer]` and `[[models]]` (the config is validated already).
fn infer_kind(cfg: &Config) -> Option<kiln_jobs::infer::Infer> {
    match kiln_jobs::infer::Infer::new(cfg.models.clone(), cfg.infer.clone(), cfg.accel) {
        Ok(k) => Some(k),
        Err(e) => {
            warn!(error = %e, "infer kind disabled");
            None
        }
    }
}

pub fn runtime(cfg: Config) -> Arc<Runtime> {
    let http = crate::store::http::HttpStore::new(
        &cfg.sources.allow,
        cfg.limits.max_input_bytes,
        Duration::from_millis(cfg.sources.http_timeout_ms),
        cfg.sources.http_max_redirects,
    );
    let store: Arc<dyn ObjectStore> = Arc::new(StoreRouter::new(cfg.store.s3.clone()).with_http(http));
    let kinds = registry(&cfg, store.clone());
    Runtime::new(cfg, store, kinds)
}

/// `kiln run`: every job in `path` (or stdin for `-`), results as JSONL on stdout. Returns
/// whether every job succeeded.
pub async fn run(cfg: Config, path: &str) -> anyhow::Result<bool> {
    let rt = runtime(cfg);
    let mut sink = JsonlSink::stdout();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let feeder = {
        let rt = rt.clone();
        let submitted = sink.submitted();
        let path = path.to_owned();
        tokio::spawn(async move {
            let on_submit = |entry: Arc<crate::jobtable::JobEntry>| {
                submitted();
                let _ = tx.send(entry);
            };
            if path == "-" {
                file::submit_all(&rt, tokio::io::BufReader::new(tokio::io::stdin()), on_submit).await
            } else {
                let f = tokio::fs::File::open(&path).await?;
                file::submit_all(&rt, tokio::io::BufReader::new(f), on_submit).await
            }
        })
    };
    let mut waiting = FuturesUnordered::new();
    let mut input_done = false;
    loop {
        tokio::select! {
            entry = rx.recv(), if !input_done => match entry {
                Some(e) => waiting.push(async move { e.wait().await }),
                None => input_done = true,
            },
            Some(result) = waiting.next(), if !waiting.is_empty() => sink.write(&result)?,
            else => break,
        }
    }
    let all_ok = sink.finish();
    feeder.await??;
    // Every result is out; let the jobs' last steps (a checkpoint lease's release) finish.
    rt.drain(Duration::from_secs(10)).await;
    Ok(all_ok)
}

/// `kiln lambda`: the Lambda Runtime API until it goes away. `init_ms` is the time from
/// process start to here (the cold start's share that is kiln's).
pub async fn lambda(mut cfg: Config, init_started: std::time::Instant) -> anyhow::Result<()> {
    cfg.worker.tier = "serverless".into();
    let policy = crate::store::confine::Policy::from_config(&cfg);
    let rt = runtime(cfg);
    rt.confine(policy);
    let init_ms = init_started.elapsed().as_secs_f64() * 1e3;
    crate::sources::lambda::run(rt, init_ms).await
}

/// Checks the variables the Lambda runtime library needs (it panics without them), and
/// gives AWS_LAMBDA_RUNTIME_API the `http://` scheme it needs. Call before any thread starts.
pub fn prepare_lambda_env() -> anyhow::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .map_err(|_| anyhow::anyhow!("Lambda mode needs AWS_LAMBDA_RUNTIME_API (set by the Lambda service)"))?;
    if !api.contains("://") {
        // Single-threaded here: main calls this before the async runtime starts.
        std::env::set_var("AWS_LAMBDA_RUNTIME_API", format!("http://{api}"));
    }
    for var in ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION"] {
        if std::env::var_os(var).is_none() {
            anyhow::bail!("Lambda mode needs {var} (set by the Lambda service)");
        }
    }
    let mem = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    if mem.parse::<i32>().is_err() {
        anyhow::bail!("AWS_LAMBDA_FUNCTION_MEMORY_SIZE must be a number of MB, not {mem:?}");
    }
    Ok(())
}

/// `kiln serve`: the HTTP API until SIGTERM or SIGINT, then a graceful drain.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let addr = cfg.http.addr.clone();
    let grace = Duration::from_millis(cfg.shutdown.grace_ms);
    let router_url = cfg.router.url.clone();
    let kafka_cfg = cfg.kafka.clone();
    crate::auth::check_exposure(&cfg.http, &crate::auth::Tokens::from_config(&cfg.http)?)?;
    crate::sources::signed::keys_from_config(&cfg.thumbnail)?;
    let policy = crate::store::confine::Policy::from_config(&cfg);
    let rt = runtime(cfg);
    rt.confine(policy);
    let reporter = Arc::new(Reporter::new());
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    // The first stdout line names the bound address (useful with port 0).
    println!("kiln listening on http://{local}");
    info!(%local, worker_id = %rt.worker().id, "serving");

    let stop_http = CancellationToken::new();
    let app = http::router(http::AppState { rt: rt.clone(), reporter: reporter.clone() });
    let header_timeout = Duration::from_millis(rt.config().http.header_timeout_ms);
    let server = tokio::spawn(crate::http_server::serve(listener, app, header_timeout, stop_http.clone()));
    let stop_publish = CancellationToken::new();
    let advertise = rt.config().route.advertise_url.clone();
    let router_url = router_url.map(|url| crate::route::report_url(&url, local, advertise.as_deref()));
    let publisher = router_url.map(|url| tokio::spawn(publish_loop(rt.clone(), reporter.clone(), url, stop_publish.clone())));
    // The compacted capacity topic, when there is a broker (worker/src/capacity_topic.rs).
    let topic_publisher = (kafka_cfg.brokers.is_some() && !kafka_cfg.topics.capacity.is_empty()).then(|| {
        let own = crate::route::advertised_url(local, advertise.as_deref());
        tokio::spawn(crate::capacity_topic::publish_loop(rt.clone(), reporter.clone(), own, stop_publish.clone()))
    });
    rt.warm_up().await;
    let stop_kafka = CancellationToken::new();
    let kafka = match kafka_cfg.brokers.is_some() {
        true => {
            let source = crate::sources::kafka::KafkaSource::new(rt.clone(), kafka_cfg)?;
            let task = tokio::spawn(source.clone().run(stop_kafka.clone()));
            Some((source, task))
        }
        false => None,
    };
    info!("ready");

    crate::signals::shutdown_signal().await;
    info!(grace_ms = grace.as_millis() as u64, inflight = rt.inflight(), "draining");
    stop_kafka.cancel();
    let cancelled = rt.drain(grace).await;
    info!(cancelled, "drained");
    // Everything after the drain shares one bound, so the process ends within the grace
    // period plus [`AFTER_DRAIN`] (and the cancelled jobs' answers) whatever hangs.
    let wrap_up = tokio::time::Instant::now() + AFTER_DRAIN;
    if let Some((source, task)) = kafka {
        match tokio::time::timeout_at(wrap_up, task).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "kafka source ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "kafka source task failed"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => warn!("kafka source did not stop in time"),
        }
        let left = wrap_up.saturating_duration_since(tokio::time::Instant::now());
        source.finish(left.min(Duration::from_secs(5))).await;
    }
    stop_publish.cancel();
    for p in [publisher, topic_publisher].into_iter().flatten() {
        let _ = tokio::time::timeout_at(wrap_up, p).await;
    }
    stop_http.cancel();
    let http_wait = (tokio::time::Instant::now() + Duration::from_secs(2)).min(wrap_up + Duration::from_secs(1));
    match tokio::time::timeout_at(http_wait, server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
        Err(_) => warn!("open connections did not close in time; exiting anyway"),
    }
    Ok(())
}

/// The bound on what `serve` does after the drain: the Kafka source's last commits, the last
/// capacity reports, closing open connections.
pub const AFTER_DRAIN: Duration = Duration::from_secs(8);

/// `kiln route`: the latency-aware router (worker/src/route) until SIGTERM or SIGINT.
pub async fn route(cfg: Config) -> anyhow::Result<()> {
    crate::route::run(cfg).await
}

/// `kiln probe`: CPU, GPUs and what the job kinds can do here, as JSON.
pub fn probe(cfg: &Config) -> serde_json::Value {
    let reg = registry(cfg, Arc::new(StoreRouter::new(cfg.store.s3.clone())));
    let onnxruntime = infer_kind(cfg).map(|k| k.probe());
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "cpu": kiln_kernels::probe::cpu(),
        "gpus": kiln_kernels::probe::gpus(),
        "video": kiln_kernels::video::probe::codecs(),
        "accel": cfg.accel,
        "kinds": reg.names().collect::<Vec<_>>(),
        "slots": cfg.cpu_slots(),
        "store": cfg.store_url().to_string(),
        "onnxruntime": onnxruntime,
    })
}

/// `kiln config check`: the start-up checks of `mode` that need no network (the config is
/// loaded and validated already): for serve, the bearer tokens (`http.tokens_file` is read)
/// and the exposure rule; for route, the policy file. Returns what the process would run
/// with (no secrets), for deployment checks to compare against their own settings.
pub fn check(cfg: &Config, mode: crate::config::Mode) -> anyhow::Result<serde_json::Value> {
    use crate::config::Mode;
    match mode {
        Mode::Serve => {
            let tokens = crate::auth::Tokens::from_config(&cfg.http)?;
            crate::auth::check_exposure(&cfg.http, &tokens)?;
        }
        Mode::Route => {
            if let Some(p) = &cfg.route.policy {
                crate::route::load_policy(p)?;
            }
        }
        Mode::Lambda => {}
    }
    // Only serve runs the Kafka source.
    let kafka = cfg.kafka.brokers.as_ref().filter(|_| mode == Mode::Serve).map(|brokers| {
        serde_json::json!({
            "brokers": brokers,
            "group": cfg.kafka.group,
            "jobs_topic": cfg.kafka.topics.jobs,
            "instance_id": cfg.kafka.instance_id,
        })
    });
    Ok(serde_json::json!({
        "ok": true,
        "mode": mode,
        "worker_id": cfg.worker_id(),
        "tier": cfg.worker.tier,
        "accel": cfg.accel,
        "store": cfg.store_url().to_string(),
        "kafka": kafka,
        "router_url": cfg.router.url,
        "advertise_url": cfg.route.advertise_url,
        "route_lambda": cfg.route.lambda,
        "http_addr": cfg.http.addr,
        "cpu_slots": cfg.scheduler.cpu_slots,
        "grace_ms": cfg.shutdown.grace_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_jobs::ErrorCode;

    #[test]
    fn config_check_runs_the_modes_start_up_checks() {
        use crate::config::Mode;
        let mut cfg = Config::default();
        let e = check(&cfg, Mode::Serve).unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        cfg.http.tokens = vec!["t:secret-token-1234".into()];
        let v = check(&cfg, Mode::Serve).unwrap();
        assert_eq!(v["mode"], "serve");
        assert!(!v.to_string().contains("secret-token"), "{v}");
        cfg.route.policy = Some("/nonexistent/policy.toml".into());
        assert!(check(&cfg, Mode::Route).is_err());
        assert!(check(&cfg, Mode::Lambda).is_ok());
    }

    #[test]
    fn the_registry_holds_every_kind_and_refuses_unknown_ones() {
        let cfg = Config::default();
        let reg = registry(&cfg, Arc::new(StoreRouter::new(cfg.store.s3.clone())));
        for kind in ["thumbnail", "transcode", "render", "infer"] {
            assert!(reg.get(kind).is_ok(), "{kind} is registered");
        }
        let e = reg.get("teleport").err().unwrap();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert!(e.message.contains("render, thumbnail, transcode"), "{}", e.message);
    }
}
