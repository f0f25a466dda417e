//! Object store backends and the router that picks one by URI scheme.
//!
//! - [`fs::FsStore`]: the local filesystem (`file://`), the embedded default.
//! - [`patient::PatientStore`]: waits out store outages for checkpointed jobs.
//! - [`confine::ConfinedStore`]: what a job may touch in serve, lambda and Kafka mode.
//! - [`http::HttpStore`]: remote sources (`http(s)://`, read-only), only under the
//!   `sources.allow` prefixes, redirects re-checked, private networks refused.
//! - [`s3::S3Store`]: S3 or any S3-compatible server (`s3://bucket/key`), configured by
//!   `store.s3`. Its client is built on the first `s3://` call, so a worker that never
//!   touches S3 pays nothing for it at startup and needs no AWS configuration.
//!
//! Jobs see only `kiln_jobs::ObjectStore`; a new backend is one more module here and one
//! more arm in [`StoreRouter`].

pub mod confine;
pub mod fs;
pub mod http;
pub mod patient;
pub mod s3;

use crate::config::S3Config;
use async_trait::async_trait;
use bytes::Bytes;
use kiln_jobs::store::ByteStream;
use kiln_jobs::{ObjectMeta, ObjectStore, StoreError, Version};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::OnceCell;
use url::Url;

/// Dispatches each call to the backend for the URI's scheme.
pub struct StoreRouter {
    file: Arc<fs::FsStore>,
    s3_config: S3Config,
    /// Built on first use (see the module doc).
    s3: OnceCell<s3::S3Store>,
    /// `http(s)://` sources; none allowed unless [`StoreRouter::with_http`] says otherwise.
    http: Option<http::HttpStore>,
}

impl StoreRouter {
    /// A router whose `s3://` backend, when first used, is configured by `s3`.
    pub fn new(s3: S3Config) -> Self {
        StoreRouter { file: Arc::new(fs::FsStore), s3_config: s3, s3: OnceCell::new(), http: None }
    }

    /// With remote `http(s)://` sources through `http`.
    pub fn with_http(mut self, http: http::HttpStore) -> Self {
        self.http = Some(http);
        self
    }

    async fn backend(&self, uri: &Url) -> Result<&dyn ObjectStore, StoreError> {
        match uri.scheme() {
            "file" => Ok(self.file.as_ref()),
            "s3" => Ok(self.s3.get_or_init(|| s3::S3Store::connect(&self.s3_config)).await),
            "http" | "https" => match &self.http {
                Some(h) => Ok(h),
                None => Err(StoreError::Forbidden(format!("{uri} is not under an http(s) prefix of sources.allow"))),
            },
            _ => Err(StoreError::UnsupportedUri(format!("{uri} (this worker has stores for file://, s3:// and http(s):// only)"))),
        }
    }
}

impl Default for StoreRouter {
    fn default() -> Self {
        Self::new(S3Config::default())
    }
}

#[async_trait]
impl ObjectStore for StoreRouter {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        self.backend(uri).await?.get(uri, limit).await
    }
    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        self.backend(uri).await?.open(uri).await
    }
    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        self.backend(uri).await?.head(uri).await
    }
    async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError> {
        self.backend(uri).await?.put(uri, data, content_type).await
    }
    async fn put_file(&self, uri: &Url, path: &Path, content_type: &str) -> Result<(), StoreError> {
        self.backend(uri).await?.put_file(uri, path, content_type).await
    }
    async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError> {
        self.backend(uri).await?.put_if_absent(uri, data, content_type).await
    }
    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        self.backend(uri).await?.delete(uri).await
    }
    async fn get_versioned(&self, uri: &Url, limit: u64) -> Result<(Bytes, Version), StoreError> {
        self.backend(uri).await?.get_versioned(uri, limit).await
    }
    async fn put_if_version(&self, uri: &Url, data: Bytes, content_type: &str, expected: Option<&Version>) -> Result<Version, StoreError> {
        self.backend(uri).await?.put_if_version(uri, data, content_type, expected).await
    }
    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        self.backend(prefix).await?.list(prefix).await
    }
}
