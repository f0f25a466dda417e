//! Where kiln keeps a job's objects under the store URL (DESIGN.md, "Object store and
//! checkpoints"): the one place that spells these keys.
//!
//! ```text
//! {store.url}/jobs/{id}/state.json    checkpoint: lease, spec hash, completed units
//! {store.url}/jobs/{id}/result.json   the final result (what makes a job id idempotent)
//! {store.url}/outputs/{id}/           the outputs of a job whose envelope names no `output`
//! ```

use crate::error::JobError;
use crate::store::{join_dir, join_output};
use url::Url;

/// `jobs/{id}/result.json`, relative to the store URL.
pub fn result_key(id: &str) -> String {
    format!("jobs/{id}/result.json")
}

/// `jobs/{id}/state.json`, relative to the store URL.
pub fn state_key(id: &str) -> String {
    format!("jobs/{id}/state.json")
}

/// `outputs/{id}`, relative to the store URL (a folder).
pub fn outputs_key(id: &str) -> String {
    format!("outputs/{id}")
}

/// The URI of a job's stored result.
pub fn result_uri(store_url: &Url, id: &str) -> Result<Url, JobError> {
    join_output(store_url, &result_key(id))
}

/// The URI of a job's checkpoint state.
pub fn state_uri(store_url: &Url, id: &str) -> Result<Url, JobError> {
    join_output(store_url, &state_key(id))
}

/// The output prefix of a job whose envelope names none (ends with `/`).
pub fn default_output(store_url: &Url, id: &str) -> Result<Url, JobError> {
    join_dir(store_url, &outputs_key(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_design_md() {
        let store = Url::parse("s3://bucket/prefix/").unwrap();
        assert_eq!(result_uri(&store, "j1").unwrap().as_str(), "s3://bucket/prefix/jobs/j1/result.json");
        assert_eq!(state_uri(&store, "j1").unwrap().as_str(), "s3://bucket/prefix/jobs/j1/state.json");
        assert_eq!(default_output(&store, "j1").unwrap().as_str(), "s3://bucket/prefix/outputs/j1/");
        let bare = Url::parse("file:///var/lib/kiln").unwrap();
        assert_eq!(default_output(&bare, "j1").unwrap().as_str(), "file:///var/lib/kiln/outputs/j1/");
        assert!(result_uri(&store, "../x").is_err());
    }
}
