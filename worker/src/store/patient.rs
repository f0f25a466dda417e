//! A store wrapper for long jobs: calls that fail because the store is unavailable (network
//! down, 5xx, throttling past the SDK's own retries) are retried with backoff for up to a
//! bound (`checkpoint.store_wait_ms`) instead of failing the job, so a store outage shorter
//! than that only pauses a checkpointed job. Each wait is logged with the error.

use async_trait::async_trait;
use bytes::Bytes;
use kiln_jobs::store::ByteStream;
use kiln_jobs::{ObjectMeta, ObjectStore, StoreError, Version};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;
use url::Url;

/// Exponential backoff for waiting out an unavailable store: 200 ms, doubling up to 5 s,
/// until the next wait would pass `limit` since the first try.
pub struct Backoff {
    started: Instant,
    next: Duration,
    limit: Duration,
}

impl Backoff {
    pub fn new(limit: Duration) -> Backoff {
        Backoff { started: Instant::now(), next: Duration::from_millis(200), limit }
    }

    /// How long the next wait would be.
    pub fn next_ms(&self) -> u64 {
        self.next.as_millis() as u64
    }

    /// Sleeps before another try; `false` (at once) when that would pass the limit.
    pub async fn wait(&mut self) -> bool {
        if self.started.elapsed() + self.next > self.limit {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        true
    }
}

pub struct PatientStore {
    inner: Arc<dyn ObjectStore>,
    wait: Duration,
}

impl PatientStore {
    pub fn new(inner: Arc<dyn ObjectStore>, wait: Duration) -> Self {
        PatientStore { inner, wait }
    }

    async fn retry<T, F, Fut>(&self, uri: &Url, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Backoff::new(self.wait);
        loop {
            match call().await {
                Err(e) if e.is_retryable() => {
                    warn!(uri = %uri, error = %e, retry_in_ms = backoff.next_ms(), "store unavailable; waiting for it to return");
                    if !backoff.wait().await {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl ObjectStore for PatientStore {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        self.retry(uri, || self.inner.get(uri, limit)).await
    }
    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        self.retry(uri, || self.inner.open(uri)).await
    }
    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        self.retry(uri, || self.inner.head(uri)).await
    }
    async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError> {
        self.retry(uri, || self.inner.put(uri, data.clone(), content_type)).await
    }
    async fn put_file(&self, uri: &Url, path: &Path, content_type: &str) -> Result<(), StoreError> {
        self.retry(uri, || self.inner.put_file(uri, path, content_type)).await
    }
    async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError> {
        self.retry(uri, || self.inner.put_if_absent(uri, data.clone(), content_type)).await
    }
    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        self.retry(uri, || self.inner.delete(uri)).await
    }
    async fn get_versioned(&self, uri: &Url, limit: u64) -> Result<(Bytes, Version), StoreError> {
        self.retry(uri, || self.inner.get_versioned(uri, limit)).await
    }
    async fn put_if_version(&self, uri: &Url, data: Bytes, content_type: &str, expected: Option<&Version>) -> Result<Version, StoreError> {
        self.retry(uri, || self.inner.put_if_version(uri, data.clone(), content_type, expected)).await
    }
    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        self.retry(prefix, || self.inner.list(prefix)).await
    }
}
