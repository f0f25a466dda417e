//! Tenants: who a job belongs to, what each tenant may hold of the worker, and what each did.
//!
//! - **Who**: the tenant of the bearer token (`auth.rs`), of the signing key
//!   (`sources/signed.rs`), or of a Kafka message's `kiln-tenant` header when
//!   `kafka.trust_tenant_header` says the producers are trusted to set it. It travels as the
//!   task-local `auth::current_tenant()` into `Runtime::submit`, which puts it on the job's
//!   span, its [`crate::jobtable::JobEntry`] and its result (top-level `"tenant"`, see
//!   [`stamp`]). Jobs without one (`kiln run`, an open loopback API, untrusted Kafka) are
//!   nobody's and are not counted.
//! - **Share**: a tenant holds at most [`Tenants::cap`] jobs in flight (queued or running) at
//!   once: `tenants.max_jobs` when set, and never more than `tenants.max_share_pct` percent of
//!   the worker's capacity (CPU slots + queue depth). Past it, [`Tenants::try_admit`] refuses
//!   (HTTP, Lambda: `overloaded`, 503 + `Retry-After`, only for that tenant) and
//!   [`Tenants::admit`] waits (Kafka: backpressure, like a full queue). So one tenant's burst
//!   fills at most its share of the queue, and the others' jobs are still admitted and run;
//!   with `max_jobs` below the CPU slots, some slot is always left to the others.
//! - **Isolation**: a job is visible ([`visible`]) to its own tenant only, so another tenant's
//!   GET, DELETE and events of it answer 404, and a submission reusing another tenant's job id
//!   is `forbidden` instead of joining that job or returning its stored result.
//! - **Metrics**: `kiln_tenant_jobs_total{tenant,status}`, `kiln_tenant_jobs_inflight{tenant}`,
//!   `kiln_tenant_rejected_total{tenant}`.

use kiln_jobs::JobResult;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The header of a Lambda invocation event naming the tenant `kiln route` authenticated
/// (read by the function when `lambda.trust_tenant_header`).
pub const LAMBDA_HEADER: &str = "x-kiln-tenant";

/// The result field naming the job's tenant.
pub const RESULT_FIELD: &str = "tenant";

/// Puts the tenant on a result (a top-level `"tenant"` field), so a stored result keeps its
/// owner.
pub fn stamp(result: &mut JobResult, tenant: Option<&str>) {
    if let Some(t) = tenant {
        result.extra.insert(RESULT_FIELD.into(), serde_json::Value::String(t.to_owned()));
    }
}

/// The tenant a result belongs to.
pub fn owner(result: &JobResult) -> Option<&str> {
    result.extra.get(RESULT_FIELD).and_then(|v| v.as_str())
}

/// Whether a job owned by `owner` is visible to a request by `requester`: a request without a
/// tenant (no authentication configured, a trusted internal source) sees every job; a tenant
/// sees its own jobs and those of nobody.
pub fn visible(owner: Option<&str>, requester: Option<&str>) -> bool {
    match (owner, requester) {
        (Some(o), Some(r)) => o == r,
        _ => true,
    }
}

/// Per-tenant limits (`[tenants]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Jobs in flight per tenant; 0: no absolute cap.
    pub max_jobs: usize,
    /// Percent of the worker's capacity (slots + queue depth) one tenant may hold.
    pub max_share_pct: u32,
}

/// A tenant is over its share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant} has {inflight} jobs in flight, its share of this worker; retry later")]
pub struct OverShare {
    pub tenant: String,
    pub inflight: usize,
}

/// The per-tenant accounting of one runtime.
pub struct Tenants {
    cap: usize,
    inflight: Mutex<HashMap<String, usize>>,
    room: Notify,
    jobs: IntCounterVec,
    gauge: IntGaugeVec,
    rejected: IntCounterVec,
}

impl Tenants {
    /// For a worker of `capacity` (CPU slots + queue depth); its metrics go to `registry`.
    pub fn new(limits: Limits, capacity: usize, registry: &Registry) -> Arc<Tenants> {
        let share = (capacity as u64 * u64::from(limits.max_share_pct.min(100))).div_ceil(100) as usize;
        let cap = match limits.max_jobs {
            0 => share,
            n => n.min(share),
        }
        .max(1);
        let jobs = IntCounterVec::new(Opts::new("kiln_tenant_jobs_total", "Jobs finished, by tenant and status"), &["tenant", "status"])
            .expect("static metric");
        let gauge =
            IntGaugeVec::new(Opts::new("kiln_tenant_jobs_inflight", "Jobs queued or running, by tenant"), &["tenant"]).expect("static metric");
        let rejected = IntCounterVec::new(Opts::new("kiln_tenant_rejected_total", "Submissions refused: the tenant was over its share"), &["tenant"])
            .expect("static metric");
        for c in [Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>, Box::new(gauge.clone()), Box::new(rejected.clone())] {
            // A second runtime on the same registry (tests) keeps the first's collectors.
            let _ = registry.register(c);
        }
        Arc::new(Tenants { cap, inflight: Mutex::new(HashMap::new()), room: Notify::new(), jobs, gauge, rejected })
    }

    /// Jobs one tenant may hold in flight.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Jobs `tenant` holds in flight now.
    pub fn inflight(&self, tenant: &str) -> usize {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).get(tenant).copied().unwrap_or(0)
    }

    /// A place for one more job of `tenant`, or [`OverShare`]. Nobody's jobs always pass.
    pub fn try_admit(self: &Arc<Self>, tenant: Option<&str>) -> Result<Slot, OverShare> {
        let Some(tenant) = tenant else { return Ok(Slot { tenants: self.clone(), tenant: None }) };
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(tenant.to_owned()).or_insert(0);
        if *n >= self.cap {
            let inflight = *n;
            drop(map);
            self.rejected.with_label_values(&[tenant]).inc();
            return Err(OverShare { tenant: tenant.to_owned(), inflight });
        }
        *n += 1;
        self.gauge.with_label_values(&[tenant]).set(*n as i64);
        Ok(Slot { tenants: self.clone(), tenant: Some(tenant.to_owned()) })
    }

    /// As [`Tenants::try_admit`], waiting for the tenant's room instead of refusing.
    pub async fn admit(self: &Arc<Self>, tenant: Option<&str>) -> Slot {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Ok(slot) = self.try_admit(tenant) {
                return slot;
            }
            room.await;
        }
    }

    fn release(&self, tenant: &str) {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(tenant) {
            *n = n.saturating_sub(1);
            self.gauge.with_label_values(&[tenant]).set(*n as i64);
            if *n == 0 {
                map.remove(tenant);
            }
        }
        drop(map);
        self.room.notify_waiters();
    }
}

/// One admitted job's place in its tenant's share; dropping it gives the place back.
pub struct Slot {
    tenants: Arc<Tenants>,
    tenant: Option<String>,
}

impl Slot {
    /// Counts the job's end in the tenant's metrics (then drop the slot).
    pub fn finished(&self, result: Option<&JobResult>) {
        if let (Some(t), Some(r)) = (&self.tenant, result) {
            self.tenants.jobs.with_label_values(&[t.as_str(), r.status.as_str()]).inc();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(t) = &self.tenant {
            self.tenants.release(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(max_jobs: usize, pct: u32, capacity: usize) -> Arc<Tenants> {
        Tenants::new(Limits { max_jobs, max_share_pct: pct }, capacity, &Registry::new())
    }

    #[test]
    fn the_cap_is_the_smaller_of_max_jobs_and_the_share() {
        assert_eq!(tenants(0, 50, 264).cap(), 132);
        assert_eq!(tenants(4, 50, 264).cap(), 4);
        assert_eq!(tenants(0, 100, 10).cap(), 10);
        assert_eq!(tenants(0, 1, 10).cap(), 1, "never below one job");
    }

    #[test]
    fn one_tenant_over_its_share_does_not_stop_another() {
        let t = tenants(2, 100, 10);
        let a1 = t.try_admit(Some("a")).unwrap();
        let _a2 = t.try_admit(Some("a")).unwrap();
        assert_eq!(t.try_admit(Some("a")).err().map(|e| e.inflight), Some(2));
        let _b = t.try_admit(Some("b")).unwrap();
        let _nobody: Vec<Slot> = (0..20).map(|_| t.try_admit(None).unwrap()).collect();
        drop(a1);
        assert_eq!(t.inflight("a"), 1);
        assert!(t.try_admit(Some("a")).is_ok());
    }

    #[tokio::test]
    async fn admit_waits_for_the_tenants_room() {
        let t = tenants(1, 100, 10);
        let first = t.try_admit(Some("a")).unwrap();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.admit(Some("a")).await.tenant.clone() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("a"));
    }

    #[test]
    fn jobs_are_visible_to_their_tenant_only() {
        assert!(visible(Some("a"), Some("a")));
        assert!(!visible(Some("a"), Some("b")));
        assert!(visible(None, Some("b")));
        assert!(visible(Some("a"), None));
        let w = kiln_jobs::WorkerInfo { id: "w".into(), tier: "container".into(), accel: "cpu".into() };
        let mut r = JobResult::failed("j".into(), "k".into(), &kiln_jobs::JobError::cancelled(), w);
        stamp(&mut r, Some("a"));
        let back: JobResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(owner(&back), Some("a"));
    }
}
