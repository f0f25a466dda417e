//! Capacity in: `POST /v1/capacity` takes the [`CapacityReport`]s workers push (the worker's
//! publisher posts to `router.url` with its own address as `?worker_url=`, see
//! [`super::report_url`]) into the shared [`kiln_router_client::CapacityView`] ([`ingest`],
//! which the capacity topic's reader uses too). Also the
//! worker address book (worker id → base URL) and the bounded job id → worker map that
//! `GET /v1/jobs/{id}` uses.

use super::{lock, now_ms, RouteState};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_router_client::{CapacityReport, Ingest, Tier, WorkerState};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Where each container worker can be reached.
#[derive(Debug, Default)]
pub struct AddressBook {
    urls: BTreeMap<String, String>,
}

impl AddressBook {
    pub fn set(&mut self, worker_id: &str, url: &str) {
        if self.urls.get(worker_id).map(String::as_str) != Some(url) {
            tracing::info!(worker_id, url, "worker address learnt");
            self.urls.insert(worker_id.to_owned(), url.to_owned());
        }
    }

    pub fn url(&self, worker_id: &str) -> Option<String> {
        self.urls.get(worker_id).cloned()
    }

    /// Every known worker URL, by worker id.
    pub fn all(&self) -> Vec<String> {
        self.urls.values().cloned().collect()
    }
}

/// The last `cap` job ids this router placed, and the worker URL that took each.
#[derive(Debug)]
pub struct JobMap {
    cap: usize,
    map: HashMap<String, String>,
    order: VecDeque<String>,
}

impl JobMap {
    pub fn new(cap: usize) -> Self {
        JobMap { cap: cap.max(1), map: HashMap::new(), order: VecDeque::new() }
    }

    pub fn insert(&mut self, id: &str, url: &str) {
        if self.map.insert(id.to_owned(), url.to_owned()).is_none() {
            self.order.push_back(id.to_owned());
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<String> {
        self.map.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    /// The reporting worker's base URL.
    worker_url: Option<String>,
    /// For a serverless instance's report: the function it belongs to.
    function: Option<String>,
}

fn outcome_label(i: Ingest) -> &'static str {
    match i {
        Ingest::Inserted => "inserted",
        Ingest::Replaced => "replaced",
        Ingest::Stale => "stale",
        Ingest::Expired => "expired",
        Ingest::ServerlessInstance => "serverless_instance",
    }
}

/// `POST /v1/capacity`: one report. 400 for a body that is not a CapacityReport.
pub async fn post_capacity(State(st): State<Arc<RouteState>>, Query(q): Query<ReportQuery>, body: Bytes) -> Response {
    let report: CapacityReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            st.metrics.reports.with_label_values(&["invalid"]).inc();
            let msg = format!("not a capacity report: {e}");
            return (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "invalid_spec", "message": msg}}))).into_response();
        }
    };
    if let Some(url) = q.worker_url.as_deref().filter(|u| u.starts_with("http://") || u.starts_with("https://")) {
        lock(&st.book).set(&report.worker_id, url.trim_end_matches('/'));
    }
    let outcome = ingest(&st, report, q.function.as_deref(), now_ms());
    st.metrics.reports.with_label_values(&[outcome]).inc();
    Json(json!({"outcome": outcome})).into_response()
}

/// One report into the view (from `POST /v1/capacity` or the capacity topic); what the view
/// did with it, as a metrics label. A serverless instance's report is a sighting of
/// `function` (default: the policy's function).
pub fn ingest(st: &RouteState, report: CapacityReport, function: Option<&str>, now: u64) -> &'static str {
    let worker_id = report.worker_id.clone();
    let state = report.state;
    let outcome = {
        let mut view = lock(&st.view);
        if report.tier == Tier::Serverless {
            let function = function.map(str::to_owned).unwrap_or_else(|| lock(&st.policy).config().serverless.function.clone());
            view.ingest_serverless_report(&function, &report);
            Ingest::ServerlessInstance
        } else {
            view.ingest_report(report, now)
        }
    };
    tracing::debug!(%worker_id, state = ?state, outcome = outcome_label(outcome), "capacity report");
    if state == WorkerState::Draining && matches!(outcome, Ingest::Inserted | Ingest::Replaced) {
        tracing::info!(%worker_id, "worker draining");
    }
    outcome_label(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_map_is_bounded() {
        let mut m = JobMap::new(2);
        m.insert("a", "u1");
        m.insert("b", "u2");
        m.insert("a", "u3");
        assert_eq!(m.get("a").as_deref(), Some("u3"));
        m.insert("c", "u4");
        assert_eq!(m.len(), 2);
        assert!(m.get("a").is_none());
        assert_eq!(m.get("c").as_deref(), Some("u4"));
    }
}
