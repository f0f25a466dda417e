//! kiln-worker: the runtime behind the `kiln` binary. It knows nothing of pixels.
//!
//! - [`config`]: one typed Config (defaults < file < `KILN_*`).
//! - [`scheduler`]: admission, priorities, slots.
//! - [`runtime`]: submit → queue → run → store result → report; drain.
//! - [`pool`]: the job threads, one per CPU slot.
//! - [`jobtable`]: live jobs and their event logs.
//! - [`store`]: object store backends.
//! - [`sources`]: where jobs come from: HTTP, file/stdin, Kafka, Lambda.
//! - [`signals`]: SIGTERM/SIGINT, the start of a graceful drain (`serve`, `route`).
//! - [`sinks`]: where results and events go, one per transport, with one result → status mapping.
//! - [`capacity`]: the capacity report and its publisher.
//! - [`telemetry`]: logs and metrics; [`otel`]: span export over OTLP.
//! - [`tracectx`]: W3C trace context: a job's span inside its caller's trace.
//! - [`modes`]: the composition root and the modes `run`, `serve`, `lambda`, `probe`, `route`.
//! - [`auth`]: bearer tokens on the HTTP API; tenants. [`tokens`] parses and checks them.
//! - [`signing`]: the signed thumbnail URL scheme (keys, HMAC-SHA256, options); served by
//!   `sources::signed`.
//! - [`tenants`]: a job's tenant, per-tenant shares of the worker, isolation, metrics.
//! - [`allow`]: allowlist entries (`sources.allow`, `outputs.allow`) parsed into roots.
//! - [`route`]: `kiln route`, the latency-aware router (placement, forwarding, capacity in).

pub mod allow;
pub mod auth;
pub mod capacity;
pub mod capacity_topic;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "debug-kind")]
pub mod debug_kind;
pub mod http_server;
pub mod jobtable;
pub mod modes;
pub mod otel;
pub mod pool;
pub mod route;
pub mod runtime;
pub mod scheduler;
pub mod signals;
pub mod signing;
pub mod slot_watch;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod tokens;
pub mod tracectx;
