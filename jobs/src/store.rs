//! The object store as jobs see it: objects named by URI (`file://…`, later `s3://…`).
//!
//! Backends live in kiln-worker (`worker/src/store`); jobs only hold an
//! `Arc<dyn ObjectStore>`, so a new backend never touches a job.

use crate::error::{ErrorCode, JobError};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::Path;
use std::pin::Pin;
use tokio::io::AsyncRead;
use url::Url;

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub uri: Url,
    pub size: u64,
}

/// An object's version as its store sees it: an S3 ETag, a content digest on the local
/// filesystem. Opaque; only compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("object {uri} is larger than the limit of {limit} bytes")]
    TooLarge { uri: String, limit: u64 },
    #[error("access denied: {0}")]
    Denied(String),
    /// Outside what this worker may read or write (its allowlists), or not a regular file.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("unsupported URI {0}")]
    UnsupportedUri(String),
    #[error("object already exists: {0}")]
    Exists(String),
    /// A conditional write found another version than the one it expected.
    #[error("conditional write refused, the object changed: {0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store I/O error on {uri}: {source}")]
    Io {
        uri: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn io(uri: &Url, source: std::io::Error) -> StoreError {
        match source.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(uri.to_string()),
            std::io::ErrorKind::PermissionDenied => StoreError::Denied(uri.to_string()),
            _ => StoreError::Io { uri: uri.to_string(), source },
        }
    }

    /// Transient failures that a retry may cure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type ByteStream = Pin<Box<dyn AsyncRead + Send + Unpin>>;

/// An object store. Writes are atomic: a reader sees the whole old object or the whole new
/// one, never a part.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Whole object, refused with [`StoreError::TooLarge`] before reading when it exceeds
    /// `limit` bytes.
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError>;
    /// A stream over the object, for objects too large to hold in memory.
    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError>;
    /// Size of the object, or `None` when it does not exist.
    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError>;
    async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError>;
    /// Streams a local file into the store without holding it in memory.
    async fn put_file(&self, uri: &Url, path: &Path, content_type: &str) -> Result<(), StoreError>;
    /// Creates the object only if it does not exist yet; `Ok(false)` when it did.
    async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError>;
    async fn delete(&self, uri: &Url) -> Result<(), StoreError>;
    /// The whole object (within `limit` bytes) with its current version; `NotFound` when it
    /// does not exist.
    async fn get_versioned(&self, uri: &Url, limit: u64) -> Result<(Bytes, Version), StoreError> {
        let _ = limit;
        Err(StoreError::UnsupportedUri(format!("{uri}: this store has no conditional writes")))
    }
    /// Compare-and-swap: writes the object only if its current version is `expected`
    /// (`None`: only if it does not exist), returning the new version; otherwise
    /// [`StoreError::Conflict`]. Checkpoints (`state.json`) are written only this way.
    async fn put_if_version(&self, uri: &Url, data: Bytes, content_type: &str, expected: Option<&Version>) -> Result<Version, StoreError> {
        let _ = (data, content_type, expected);
        Err(StoreError::UnsupportedUri(format!("{uri}: this store has no conditional writes")))
    }
    /// Objects whose URI starts with `prefix`, in lexicographic order.
    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError>;
}

/// Parses a URI as jobs accept it: `file://`, `s3://`, or a plain filesystem path (absolute,
/// or relative to the working directory).
pub fn parse_uri(s: &str) -> Result<Url, JobError> {
    if s.is_empty() {
        return Err(JobError::invalid_spec("empty URI"));
    }
    match Url::parse(s) {
        Ok(u) if u.scheme().len() > 1 => match u.scheme() {
            // http(s): remote sources, read-only; the worker's store decides what may be fetched.
            "file" | "s3" | "http" | "https" => Ok(u),
            other => Err(JobError::new(ErrorCode::Unsupported, format!("URI scheme {other:?} is not supported ({s})"))),
        },
        // No scheme (or a one-letter "scheme" such as a Windows drive): a path.
        _ => {
            let p = Path::new(s);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir().map_err(|e| JobError::internal(format!("no working directory: {e}")))?.join(p)
            };
            Url::from_file_path(&abs).map_err(|_| JobError::invalid_spec(format!("not a usable path: {s}")))
        }
    }
}

/// An output prefix: as [`parse_uri`], but only where outputs can be written (`file://`,
/// `s3://`, or a path).
pub fn parse_output_uri(s: &str) -> Result<Url, JobError> {
    let u = parse_uri(s)?;
    match u.scheme() {
        "http" | "https" => Err(JobError::new(ErrorCode::Unsupported, format!("outputs cannot be written over {}:// ({s})", u.scheme()))),
        _ => Ok(u),
    }
}

/// Joins an output name onto an output prefix (`file:///out/job/` + `256.webp`). Names may
/// not climb out of the prefix: they are plain relative names, checked as given and again
/// percent-decoded (the URL join would read `%2e%2e` as `..`, and a file path decodes `%2F`
/// to `/`), so `..`, encoded separators and absolute paths are `invalid_spec`.
pub fn join_output(prefix: &Url, name: &str) -> Result<Url, JobError> {
    let decoded = percent_decode_lossy(name);
    // An encoded separator (`%2F`) would become a directory level once a store decodes it.
    let encoded_separator = decoded.matches('/').count() != name.matches('/').count();
    let bad = bad_name(name) || bad_name(&decoded) || encoded_separator || decoded.chars().any(char::is_control);
    if bad {
        return Err(JobError::invalid_spec(format!("output name {name:?} is not a relative file name")));
    }
    let mut base = prefix.clone();
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    base.join(name).map_err(|e| JobError::invalid_spec(format!("output name {name:?}: {e}")))
}

/// `%XX` sequences decoded (invalid ones kept as they are), bytes read as UTF-8 lossily.
fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad_name(name: &str) -> bool {
    name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
        || name.contains('\\')
        || name.contains('?')
        || name.contains('#')
}

/// Joins a folder name onto a prefix, giving a prefix that ends with `/`.
pub fn join_dir(prefix: &Url, name: &str) -> Result<Url, JobError> {
    let mut u = join_output(prefix, name.trim_end_matches('/'))?;
    let p = format!("{}/", u.path());
    u.set_path(&p);
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_paths() {
        assert_eq!(parse_uri("file:///tmp/a.jpg").unwrap().path(), "/tmp/a.jpg");
        assert_eq!(parse_uri("s3://bucket/k/a.jpg").unwrap().host_str(), Some("bucket"));
        assert_eq!(parse_uri("/tmp/x y.png").unwrap().to_file_path().unwrap(), Path::new("/tmp/x y.png"));
        let rel = parse_uri("examples/a.jpg").unwrap();
        assert!(rel.path().ends_with("/examples/a.jpg"));
        assert_eq!(parse_uri("ftp://x/y").unwrap_err().code, ErrorCode::Unsupported);
        assert_eq!(parse_uri("https://x/y").unwrap().scheme(), "https");
        assert_eq!(parse_output_uri("http://x/y/").unwrap_err().code, ErrorCode::Unsupported);
        assert_eq!(parse_uri("").unwrap_err().code, ErrorCode::InvalidSpec);
    }

    #[test]
    fn output_names_stay_inside_the_prefix() {
        let p = Url::parse("file:///out/job1").unwrap();
        assert_eq!(join_output(&p, "256.webp").unwrap().as_str(), "file:///out/job1/256.webp");
        assert_eq!(join_output(&p, "a/b.png").unwrap().as_str(), "file:///out/job1/a/b.png");
        for bad in ["", "../x", "/abs", "a/../../b", "a//b", "x?y", "%2e%2e/x", "%2E%2e/%2e%2e/x.jpg", "..%2F..%2Fx.jpg", "a%2Fb", "%2Fabs", "a%5Cb", "a%00b"] {
            assert!(join_output(&p, bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(join_dir(&p, "outputs/j/").unwrap().as_str(), "file:///out/job1/outputs/j/");
        assert!(join_dir(&p, "../j").is_err());
    }
}
