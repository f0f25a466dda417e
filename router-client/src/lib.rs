//! kiln-router-client: what a kiln worker tells the latency-aware router, and the placement
//! policy routers and producers share.
//!
//! - [`report`]: the [`CapacityReport`] a worker publishes (DESIGN.md, "Capacity report").
//! - [`policy`]: the hybrid placement policy: which tier serves a request, with overflow to
//!   the other tier and a cold-start override.
//! - [`publish`]: the HTTP publisher that pushes reports to the router.

pub mod policy;
pub mod publish;
pub mod report;

pub use policy::{place, Placement, PlacementRequest, Policy};
pub use publish::{HttpPublisher, PublishError};
pub use report::{CapacityReport, GpuCapacity, KindCapacity, Tier, WarmSet, WorkerState};
