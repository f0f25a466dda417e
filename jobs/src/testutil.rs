//! Test doubles shared by the job kinds' unit tests: an in-memory object store, an event
//! recorder, and a harness that builds a [`JobContext`] over them.

use crate::context::{CancelSignal, EventSink, JobContext, Limits};
use crate::envelope::Event;
use crate::store::{ByteStream, ObjectMeta, ObjectStore, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use url::Url;

#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, (Bytes, String)>>,
}

impl MemStore {
    pub fn insert(&self, uri: &str, data: Vec<u8>) {
        self.objects.lock().unwrap().insert(uri.to_owned(), (Bytes::from(data), "application/octet-stream".into()));
    }
    pub fn object(&self, uri: &str) -> Option<(Bytes, String)> {
        self.objects.lock().unwrap().get(uri).cloned()
    }
    /// The URIs stored under `prefix`, in order.
    pub fn uris_under(&self, prefix: &str) -> Vec<String> {
        self.objects.lock().unwrap().keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        let (data, _) = self.object(uri.as_str()).ok_or_else(|| StoreError::NotFound(uri.to_string()))?;
        if data.len() as u64 > limit {
            return Err(StoreError::TooLarge { uri: uri.to_string(), limit });
        }
        Ok(data)
    }
    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        let (data, _) = self.object(uri.as_str()).ok_or_else(|| StoreError::NotFound(uri.to_string()))?;
        Ok(Box::pin(std::io::Cursor::new(data.to_vec())))
    }
    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.object(uri.as_str()).map(|(d, _)| ObjectMeta { uri: uri.clone(), size: d.len() as u64 }))
    }
    async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError> {
        self.objects.lock().unwrap().insert(uri.to_string(), (data, content_type.to_owned()));
        Ok(())
    }
    async fn put_file(&self, uri: &Url, path: &Path, content_type: &str) -> Result<(), StoreError> {
        let data = std::fs::read(path).map_err(|e| StoreError::io(uri, e))?;
        self.put(uri, Bytes::from(data), content_type).await
    }
    async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError> {
        let mut m = self.objects.lock().unwrap();
        if m.contains_key(uri.as_str()) {
            return Ok(false);
        }
        m.insert(uri.to_string(), (data, content_type.to_owned()));
        Ok(true)
    }
    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        self.objects.lock().unwrap().remove(uri.as_str());
        Ok(())
    }
    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        let m = self.objects.lock().unwrap();
        let mut out = Vec::new();
        for (k, (d, _)) in m.iter().filter(|(k, _)| k.starts_with(prefix.as_str())) {
            let uri = Url::parse(k).map_err(|e| StoreError::UnsupportedUri(e.to_string()))?;
            out.push(ObjectMeta { uri, size: d.len() as u64 });
        }
        Ok(out)
    }
}

#[derive(Default)]
pub struct Events(pub Mutex<Vec<Event>>);
impl EventSink for Events {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

pub struct Harness {
    pub store: Arc<MemStore>,
    pub events: Arc<Events>,
    pub rt: tokio::runtime::Runtime,
    pub limits: Limits,
}

pub const OUT: &str = "file:///out/job-1/";

impl Harness {
    pub fn new() -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        Harness { store: Arc::default(), events: Arc::default(), rt, limits: Limits::default() }
    }

    pub fn ctx(&self, cancel: CancelSignal) -> JobContext {
        JobContext::new(
            "job-1".into(),
            Url::parse(OUT).unwrap(),
            self.limits.clone(),
            "cpu".into(),
            self.store.clone(),
            self.events.clone(),
            cancel,
            self.rt.handle().clone(),
        )
    }
}
