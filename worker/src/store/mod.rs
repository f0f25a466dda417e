//! Object store backends and the router that picks one by URI scheme.
//!
//! - [`fs::FsStore`]: the local filesystem (`file://`), the embedded default.
//!
//! Jobs see only `kiln_jobs::ObjectStore`; a new backend (S3) is one more module here and
//! one more arm in [`StoreRouter`].

pub mod fs;

use async_trait::async_trait;
use bytes::Bytes;
use kiln_jobs::store::ByteStream;
use kiln_jobs::{ObjectMeta, ObjectStore, StoreError};
use std::path::Path;
use std::sync::Arc;
use url::Url;

/// Dispatches each call to the backend for the URI's scheme.
pub struct StoreRouter {
    file: Arc<fs::FsStore>,
}

impl StoreRouter {
    pub fn new() -> Self {
        StoreRouter { file: Arc::new(fs::FsStore) }
    }

    fn backend(&self, uri: &Url) -> Result<&dyn ObjectStore, StoreError> {
        match uri.scheme() {
            "file" => Ok(self.file.as_ref()),
            _ => Err(StoreError::UnsupportedUri(format!("{uri} (this worker has stores for file:// only)"))),
        }
    }
}

impl Default for StoreRouter {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ObjectStore for StoreRouter {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        self.backend(uri)?.get(uri, limit).await
    }
    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        self.backend(uri)?.open(uri).await
    }
    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        self.backend(uri)?.head(uri).await
    }
    async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError> {
        self.backend(uri)?.put(uri, data, content_type).await
    }
    async fn put_file(&self, uri: &Url, path: &Path, content_type: &str) -> Result<(), StoreError> {
        self.backend(uri)?.put_file(uri, path, content_type).await
    }
    async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError> {
        self.backend(uri)?.put_if_absent(uri, data, content_type).await
    }
    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        self.backend(uri)?.delete(uri).await
    }
    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        self.backend(prefix)?.list(prefix).await
    }
}
