//! Publishes capacity reports to the router over HTTP (POST of the report's JSON).

use crate::report::CapacityReport;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("capacity report to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("router at {url} answered {status}")]
    Status { url: String, status: u16 },
}

/// Pushes reports to one router URL.
#[derive(Clone)]
pub struct HttpPublisher {
    client: reqwest::Client,
    url: String,
    /// Sent as `Authorization: Bearer …` when set (a router that needs tokens).
    token: Option<String>,
}

impl HttpPublisher {
    pub fn new(url: impl Into<String>) -> Result<Self, PublishError> {
        let url = url.into();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            // `kiln route` closes connections idle for its `http.header_timeout_ms` (30 s by
            // default); drop pooled ones before that rather than race the close.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .map_err(|source| PublishError::Http { url: url.clone(), source })?;
        Ok(HttpPublisher { client, url, token: None })
    }

    /// Sends `Authorization: Bearer {token}` with every report.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    pub async fn publish(&self, report: &CapacityReport) -> Result<(), PublishError> {
        let mut req = self.client.post(&self.url).json(report);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| PublishError::Http { url: self.url.clone(), source })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(PublishError::Status { url: self.url.clone(), status: resp.status().as_u16() })
        }
    }
}
