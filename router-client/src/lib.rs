//! kiln-router-client: what a kiln worker tells the latency-aware router, and the placement
//! policy routers and producers share.
//!
//! - [`report`]: the [`CapacityReport`] a worker publishes (DESIGN.md, "Capacity report").
//! - [`publish`]: the HTTP publisher that pushes reports to the router.
//! - [`policy`]: [`place`], the simple stateless entry point (tier choice from a
//!   [`PlacementRequest`] and the live reports, overflow, a cold-start override). Kept as it
//!   is for existing callers (the simulator in benches).
//!
//! The full policy of the seed paper (sections 5 and 8; DESIGN.md, "Placement"):
//!
//! - [`features`]: [`RequestFeatures`] known at admission, and the per-kind
//!   [`DurationModel`] that predicts a run time from a job envelope's spec.
//! - [`view`]: [`CapacityView`], container reports by worker (highest seq, ttl) and the
//!   serverless warm pools learnt from invocation results.
//! - [`config`]: [`PolicyConfig`], every parameter, serde-loadable (JSON, TOML), reloadable.
//! - [`router`]: [`Router`] (config + version + closed loop + seeded draws) and [`decide`],
//!   the pure rule chain; its module docs list every rule and its reason strings.
//! - [`cost`](mod@cost): the cost rule's prices, crossing rate and per-kind [`RateMeter`].
//! - [`closed_loop`]: rolling p95 and observed/predicted ratios per tier and kind.
//! - [`decision`]: [`Decision`] (the DESIGN.md JSON) and the [`LogRecord`] JSONL line.
//! - [`replay`](mod@replay): re-decide a decision log with another policy and count the differences.
//! - [`hints`](mod@hints): warm-up hints ahead of a forecast burst.
//!
//! ```
//! use kiln_router_client::{CapacityView, PolicyConfig, Router, Tier};
//! let mut router = Router::new(PolicyConfig::default(), 42).unwrap();
//! let view = CapacityView::default();
//! let env = serde_json::json!({"id": "j1", "kind": "render", "input": {"pages": [{}]}});
//! let features = router.features(&env, None).unwrap();
//! let record = router.place_logged(&features, &view, 1_000);
//! // No container worker has reported yet: render falls back to the function.
//! assert_eq!(record.decision.target.tier, Tier::Serverless);
//! router.observe(record.decision.target.tier, "render", 70.0, record.decision.predicted_ms);
//! let line = record.to_json_line();
//! let report = kiln_router_client::replay(std::iter::once(line.as_str()), router.config(), router.version());
//! assert_eq!(report.differences(), 0);
//! ```

pub mod closed_loop;
pub mod config;
pub mod cost;
pub mod decision;
pub mod features;
pub mod hints;
pub mod policy;
pub mod publish;
pub mod replay;
pub mod report;
pub mod router;
pub mod view;

pub use closed_loop::ClosedLoop;
pub use cost::{CostRule, RateMeter};
pub use config::{ColdStartOverride, ConfigError, KindRule, LoopConfig, Overflow, PolicyConfig, ServerlessLimits, TenantPin};
pub use decision::{reason_label, Candidate, Decision, Draws, LogRecord, PoolStats, Snapshot, Target, TierPair};
pub use features::{DurationModel, FeatureError, KindCost, Priority, RequestFeatures};
pub use hints::{hints, Forecast, ForecastEntry, HintAction, WarmupHint};
pub use policy::{place, Placement, PlacementRequest, Policy};
pub use publish::{HttpPublisher, PublishError};
pub use replay::{replay, Change, ReplayReport};
pub use report::{CapacityReport, GpuCapacity, KindCapacity, Tier, WarmSet, WorkerState};
pub use router::{decide, Rng, Router};
pub use view::{CapacityView, Ingest, InvocationObservation};
