//! Confinement: what a job may read and write in `serve`, `lambda` and Kafka mode.
//!
//! A job reads only from the store, `sources.allow` and `outputs.allow`, and writes only under
//! the store and `outputs.allow` — never under `{store}/jobs/` (the worker's own results and
//! checkpoints, written through the unconfined store). Everything else is
//! [`StoreError::Forbidden`] (`forbidden`, HTTP 403) before the job's path is touched.
//! `kiln run` is not confined: a local command may touch what its user can.
//!
//! How a `file://` URI is checked ([`Policy::resolve_file`]):
//! 1. percent-decoded (`Url::to_file_path`: `%2F` becomes `/`; the URL parser already read
//!    `%2e%2e` as `..`) and normalised lexically (`.` dropped, `..` pops): the result must lie
//!    under an allowed root, or the answer is `forbidden` with no I/O on the path at all;
//! 2. resolved as the kernel would (`realpath` of the longest existing ancestor, the missing
//!    rest appended): the real path must lie under the real path of an allowed root, so a
//!    link inside an allowed directory that points out of it is `forbidden` — whether or not
//!    its target exists, so the answer never tells whether a file outside exists;
//! 3. reads open the resolved path with `O_NONBLOCK | O_NOFOLLOW` and take only a regular
//!    file (checked on the opened descriptor: a FIFO never blocks, `/dev/zero` is refused),
//!    and stream at most `limits.max_input_bytes`, whatever the file's size says.
//!
//! `s3://` URIs: the bucket must be allowed and the key must lie under the allowed key prefix
//! (keys with `.`/`..` segments are refused: some S3-compatible servers normalise them).
//! Every allowlist entry is a directory: `s3://media-in/photos` allows `photos/…`, not
//! `photos-private/…`. Configured model URIs (`[[models]] uri`) are readable too: the
//! operator named them.

use crate::allow::{bad_key, lexical, s3_parts};
pub use crate::allow::Root;
use crate::config::Config;
use async_trait::async_trait;
use bytes::Bytes;
use kiln_jobs::store::ByteStream;
use kiln_jobs::{ObjectMeta, ObjectStore, StoreError, Version};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use url::Url;

impl Root {
    fn from_url(u: &Url) -> Option<Root> {
        Root::parse(u.as_str()).ok()
    }
}





/// The path as the kernel would resolve it: `realpath` of the longest existing ancestor,
/// then the missing rest appended (lexically). Never fails: with no ancestor resolvable the
/// lexical path is the answer.
pub fn resolve(p: &Path) -> PathBuf {
    let comps: Vec<Component> = p.components().collect();
    for k in (1..=comps.len()).rev() {
        let head: PathBuf = comps[..k].iter().collect();
        if let Ok(real) = std::fs::canonicalize(&head) {
            let mut full = real;
            for c in &comps[k..] {
                full.push(c.as_os_str());
            }
            return lexical(&full);
        }
    }
    lexical(p)
}

/// What a confined job may read and write.
#[derive(Debug, Clone)]
pub struct Policy {
    reads: Vec<Root>,
    writes: Vec<Root>,
    /// Under these nothing is read or written by a job (`{store}/jobs/`).
    denied: Vec<Root>,
    /// URIs readable as they are (the configured models).
    exact: Vec<Url>,
    max_input_bytes: u64,
}

impl Policy {
    /// Store + `sources.allow` + `outputs.allow` to read; store + `outputs.allow` to write;
    /// `{store}/jobs/` neither. The config is validated already.
    pub fn from_config(cfg: &Config) -> Policy {
        let store = cfg.store_url();
        let store_root = Root::from_url(&store);
        let jobs = kiln_jobs::store::join_dir(&store, "jobs").ok().and_then(|u| Root::from_url(&u));
        let parse = |v: &[String]| v.iter().filter_map(|s| Root::parse(s).ok()).collect::<Vec<_>>();
        let (sources, outputs) = (parse(&cfg.sources.allow), parse(&cfg.outputs.allow));
        let mut reads: Vec<Root> = store_root.iter().cloned().collect();
        reads.extend(sources);
        reads.extend(outputs.iter().cloned());
        let mut writes: Vec<Root> = store_root.into_iter().collect();
        writes.extend(outputs);
        let exact = cfg.models.iter().filter_map(|m| kiln_jobs::store::parse_uri(&m.uri).ok()).collect();
        Policy { reads, writes, denied: jobs.into_iter().collect(), exact, max_input_bytes: cfg.limits.max_input_bytes }
    }

    /// A policy from explicit roots (tests).
    pub fn new(reads: Vec<Root>, writes: Vec<Root>, denied: Vec<Root>, max_input_bytes: u64) -> Policy {
        Policy { reads, writes, denied, exact: Vec::new(), max_input_bytes }
    }

    pub fn max_input_bytes(&self) -> u64 {
        self.max_input_bytes
    }

    /// Checks a `file://` URI against `roots`; the resolved path to use for the I/O.
    /// Blocking (resolves symlinks).
    pub fn resolve_file(&self, uri: &Url, write: bool) -> Result<PathBuf, StoreError> {
        let forbidden = || StoreError::Forbidden(format!("{uri} is outside what this worker may {}", if write { "write" } else { "read" }));
        let raw = uri.to_file_path().map_err(|_| forbidden())?;
        if raw.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(forbidden());
        }
        let roots = if write { &self.writes } else { &self.reads };
        let files = |rs: &[Root]| rs.iter().filter_map(|r| if let Root::File(p) = r { Some(p.clone()) } else { None }).collect::<Vec<_>>();
        let (allowed, denied) = (files(roots), files(&self.denied));
        // 1. Lexically, against the roots as configured or as resolved: no I/O on `raw`.
        let lex = lexical(&raw);
        let real_allowed: Vec<PathBuf> = allowed.iter().map(|r| resolve(r)).collect();
        let inside = |p: &Path, rs: &[PathBuf]| rs.iter().any(|r| p.starts_with(r));
        if !(inside(&lex, &allowed) || inside(&lex, &real_allowed)) || inside(&lex, &denied) {
            return Err(forbidden());
        }
        // 2. As the kernel resolves it.
        let real = resolve(&raw);
        let real_denied: Vec<PathBuf> = denied.iter().map(|r| resolve(r)).collect();
        if !inside(&real, &real_allowed) || inside(&real, &real_denied) || inside(&real, &denied) {
            return Err(forbidden());
        }
        Ok(real)
    }

    /// Checks an `s3://` URI against the allowed buckets and prefixes.
    pub fn check_s3(&self, uri: &Url, write: bool) -> Result<(), StoreError> {
        let forbidden = || StoreError::Forbidden(format!("{uri} is outside what this worker may {}", if write { "write" } else { "read" }));
        let (bucket, key) = s3_parts(uri).ok_or_else(forbidden)?;
        if bad_key(&key) {
            return Err(forbidden());
        }
        let under = |r: &Root| matches!(r, Root::S3 { bucket: b, prefix } if *b == bucket && (key.starts_with(prefix.as_str()) || format!("{key}/") == *prefix));
        let roots = if write { &self.writes } else { &self.reads };
        if roots.iter().any(under) && !self.denied.iter().any(under) {
            Ok(())
        } else {
            Err(forbidden())
        }
    }

    /// Checks an envelope's `output` prefix: `forbidden` unless jobs may write under it.
    pub fn check_output_prefix(&self, prefix: &Url) -> Result<(), kiln_jobs::JobError> {
        let checked = match prefix.scheme() {
            "file" => self.resolve_file(prefix, true).map(drop),
            "s3" => self.check_s3(prefix, true),
            other => Err(StoreError::Forbidden(format!("{other}:// outputs are not allowed"))),
        };
        checked.map_err(|e| kiln_jobs::JobError::forbidden(format!("output {e}")))
    }
}

/// Opens a regular file for reading without ever blocking on it: `O_NONBLOCK` (a FIFO opens
/// at once), with `follow == false` `O_NOFOLLOW` (a link swapped in after the check is
/// refused), and the opened descriptor must be a regular file. Blocking call.
pub fn open_regular(path: &Path, uri: &Url, follow: bool) -> Result<std::fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || StoreError::Forbidden(format!("{uri} is not a regular file"));
    // Not even opened unless it is a regular file now (opening a device can act on it).
    let meta = if follow { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
    match meta {
        Ok(m) if m.is_dir() => return Err(StoreError::NotFound(format!("{uri} is a directory"))),
        Ok(m) if !m.is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) => return Err(StoreError::io(uri, e)),
    }
    let mut flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    if !follow {
        flags |= rustix::fs::OFlags::NOFOLLOW;
    }
    let f = std::fs::OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path).map_err(|e| {
        // ELOOP: the last component is a symbolic link (O_NOFOLLOW).
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            not_regular()
        } else {
            StoreError::io(uri, e)
        }
    })?;
    let meta = f.metadata().map_err(|e| StoreError::io(uri, e))?;
    if meta.is_dir() {
        return Err(StoreError::NotFound(format!("{uri} is a directory")));
    }
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(f)
}

/// A whole regular file within `limit` bytes (see [`open_regular`], [`read_bounded`]).
pub fn read_file(path: &Path, uri: &Url, limit: u64, follow: bool) -> Result<Bytes, StoreError> {
    let f = open_regular(path, uri, follow)?;
    let size = f.metadata().map_err(|e| StoreError::io(uri, e))?.len();
    if size > limit {
        return Err(StoreError::TooLarge { uri: uri.to_string(), limit });
    }
    read_bounded(f, uri, limit)
}

/// Reads at most `limit` bytes; more is [`StoreError::TooLarge`], whatever the size said.
pub fn read_bounded(mut f: impl Read, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
    let mut buf = Vec::new();
    (&mut f).take(limit.saturating_add(1)).read_to_end(&mut buf).map_err(|e| StoreError::io(uri, e))?;
    if buf.len() as u64 > limit {
        return Err(StoreError::TooLarge { uri: uri.to_string(), limit });
    }
    Ok(Bytes::from(buf))
}

/// An [`AsyncRead`] that fails (rather than ends) once more than `limit` bytes came through.
/// Reads go through a small buffer of its own, so a failing read hands out nothing.
pub struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
    scratch: Vec<u8>,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Bounded { inner, left: limit, limit, scratch: Vec::new() }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Bounded<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // One byte past what is left, so an input one byte too long is caught.
        let over = usize::try_from(this.left.saturating_add(1)).unwrap_or(usize::MAX);
        let want = buf.remaining().min(over).min(64 * 1024);
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        this.scratch.resize(want, 0);
        let mut tmp = ReadBuf::new(&mut this.scratch[..want]);
        match Pin::new(&mut this.inner).poll_read(cx, &mut tmp) {
            Poll::Ready(Ok(())) => {
                let n = tmp.filled().len();
                if n as u64 > this.left {
                    let limit = this.limit;
                    return Poll::Ready(Err(std::io::Error::other(format!("the input is larger than the limit of {limit} bytes"))));
                }
                buf.put_slice(tmp.filled());
                this.left -= n as u64;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// An [`ObjectStore`] that lets a job touch only what its [`Policy`] allows (see the
/// module doc). `inner` does the I/O for everything but `file://` reads, which this wrapper
/// opens itself (regular files only, bounded).
pub struct ConfinedStore {
    inner: Arc<dyn ObjectStore>,
    policy: Arc<Policy>,
}

impl ConfinedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: Arc<Policy>) -> Self {
        ConfinedStore { inner, policy }
    }

    /// The URI to hand to `inner` after the check: for `file://`, the resolved path.
    async fn checked(&self, uri: &Url, write: bool) -> Result<Url, StoreError> {
        if !write && self.policy.exact.contains(uri) {
            return Ok(uri.clone());
        }
        match uri.scheme() {
            "file" => {
                let real = self.resolved(uri, write).await?;
                Url::from_file_path(&real).map_err(|_| StoreError::Forbidden(uri.to_string()))
            }
            "s3" => self.policy.check_s3(uri, write).map(|()| uri.clone()),
            // Checked, hop by hop, by the http store itself (`store/http.rs`), in every mode.
            "http" | "https" if !write => Ok(uri.clone()),
            _ => Err(StoreError::Forbidden(format!("{uri}: only file://, s3:// and (to read) http(s):// URIs are allowed"))),
        }
    }

    async fn resolved(&self, uri: &Url, write: bool) -> Result<PathBuf, StoreError> {
        Ok(self.read_target(uri, write).await?.0)
    }

    /// The path to do the I/O on, and whether its last link may be followed (only for the
    /// operator's own model URIs; a checked path is resolved already).
    async fn read_target(&self, uri: &Url, write: bool) -> Result<(PathBuf, bool), StoreError> {
        if !write && self.policy.exact.contains(uri) {
            return Ok((uri.to_file_path().map_err(|_| StoreError::Forbidden(uri.to_string()))?, true));
        }
        let (policy, u) = (self.policy.clone(), uri.clone());
        Ok((blocking(move || policy.resolve_file(&u, write)).await?, false))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Unavailable(format!("file check task failed: {e}")))?
}

#[async_trait]
impl ObjectStore for ConfinedStore {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        let limit = limit.min(self.policy.max_input_bytes);
        if uri.scheme() == "file" {
            let (path, follow) = self.read_target(uri, false).await?;
            let u = uri.clone();
            return blocking(move || read_file(&path, &u, limit, follow)).await;
        }
        let checked = self.checked(uri, false).await?;
        self.inner.get(&checked, limit).await
    }

    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        let limit = self.policy.max_input_bytes;
        if uri.scheme() == "file" {
            let (path, follow) = self.read_target(uri, false).await?;
            let u = uri.clone();
            let f = blocking(move || open_regular(&path, &u, follow)).await?;
            return Ok(Box::pin(Bounded::new(tokio::fs::File::from_std(f), limit)));
        }
        let checked = self.checked(uri, false).await?;
        Ok(Box::pin(Bounded::new(self.inner.open(&checked).await?, limit)))
    }

    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        if uri.scheme() == "file" {
            let path = self.resolved(uri, false).await?;
            let u = uri.clone();
            return blocking(move || match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => Ok(Some(ObjectMeta { uri: u, size: m.len() })),
                Ok(m) if m.is_dir() => Ok(None),
                Ok(_) => Err(StoreError::Forbidden(format!("{u} is not a regular file"))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError::io(&u, e)),
            })
            .await;
        }
        let checked = self.checked(uri, false).await?;
        self.inner.head(&checked).await
    }

    async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError> {
        let checked = self.checked(uri, true).await?;
        self.inner.put(&checked, data, content_type).await
    }

    async fn put_file(&self, uri: &Url, path: &Path, content_type: &str) -> Result<(), StoreError> {
        let checked = self.checked(uri, true).await?;
        self.inner.put_file(&checked, path, content_type).await
    }

    async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError> {
        let checked = self.checked(uri, true).await?;
        self.inner.put_if_absent(&checked, data, content_type).await
    }

    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        let checked = self.checked(uri, true).await?;
        self.inner.delete(&checked).await
    }

    async fn get_versioned(&self, uri: &Url, limit: u64) -> Result<(Bytes, Version), StoreError> {
        let checked = self.checked(uri, false).await?;
        self.inner.get_versioned(&checked, limit.min(self.policy.max_input_bytes)).await
    }

    async fn put_if_version(&self, uri: &Url, data: Bytes, content_type: &str, expected: Option<&Version>) -> Result<Version, StoreError> {
        let checked = self.checked(uri, true).await?;
        self.inner.put_if_version(&checked, data, content_type, expected).await
    }

    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        // Listed under the caller's prefix (not the resolved one), so the URIs it returns
        // read back through this store.
        self.checked(prefix, false).await?;
        self.inner.list(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_root(p: &Path) -> Root {
        Root::File(lexical(p))
    }

    fn url(p: &Path) -> Url {
        Url::from_file_path(p).unwrap()
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(lexical(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(lexical(Path::new("/../../etc/passwd")), Path::new("/etc/passwd"));
        assert_eq!(lexical(Path::new("/a/b/")), Path::new("/a/b"));
    }

    #[test]
    fn roots_parse() {
        assert_eq!(Root::parse("s3://media-in/").unwrap(), Root::S3 { bucket: "media-in".into(), prefix: String::new() });
        assert_eq!(Root::parse("s3://b/photos").unwrap(), Root::S3 { bucket: "b".into(), prefix: "photos/".into() });
        assert_eq!(Root::parse("file:///srv/media/").unwrap(), Root::File("/srv/media".into()));
        assert_eq!(Root::parse("/srv/media/../x").unwrap(), Root::File("/srv/x".into()));
        assert_eq!(Root::parse("https://x/media").unwrap(), Root::Http(Url::parse("https://x/media/").unwrap()));
        for bad in ["ftp://x/", "http://u:p@x/", "http://x/a?q=1", "http://x/a#f", "http://x/a%2Fb/"] {
            assert!(Root::parse(bad).is_err(), "{bad}");
        }
        assert!(Root::parse("s3:///nobucket").is_err());
        assert!(Root::parse("relative/dir").is_err());
    }

    #[test]
    fn traversal_and_symlinks_are_forbidden() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("media");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("ok.jpg"), b"x").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("out-link")).unwrap();
        std::os::unix::fs::symlink(d.path(), root.join("out-dir")).unwrap();
        std::os::unix::fs::symlink(root.join("ok.jpg"), root.join("in-link")).unwrap();
        let p = Policy::new(vec![file_root(&root)], vec![file_root(&root)], vec![file_root(&root.join("sub"))], 100);
        let ok = |s: &str| p.resolve_file(&Url::parse(s).unwrap(), false);
        let base = url(&root).to_string();
        assert!(ok(&format!("{base}/ok.jpg")).is_ok());
        assert!(ok(&format!("{base}/in-link")).is_ok());
        assert!(ok(&format!("{base}/missing.jpg")).is_ok(), "missing inside is not forbidden (input_not_found later)");
        for bad in [
            format!("{base}/../secret"),
            format!("{base}/%2e%2e/secret"),
            format!("{base}/..%2Fsecret"),
            format!("{base}/x/..%2F..%2F..%2Fsecret"),
            format!("{base}/out-link"),
            format!("{base}/out-dir/secret"),
            format!("{base}/out-dir/missing"),
            format!("{base}/sub/x"),
            "file:///etc/passwd".to_string(),
            "file:///etc/nonexistent".to_string(),
            "file:///dev/zero".to_string(),
            format!("{base}/a%00b"),
        ] {
            let e = ok(&bad).unwrap_err();
            assert!(matches!(e, StoreError::Forbidden(_)), "{bad}: {e:?}");
        }
        // A root prefix is a directory, not a string prefix.
        std::fs::create_dir_all(d.path().join("media-private")).unwrap();
        assert!(ok(url(&d.path().join("media-private/x")).as_ref()).is_err());
    }

    #[test]
    fn s3_buckets_and_prefixes() {
        let p = Policy::new(
            vec![Root::parse("s3://in/photos/").unwrap(), Root::parse("s3://store/").unwrap()],
            vec![Root::parse("s3://store/").unwrap()],
            vec![Root::parse("s3://store/jobs/").unwrap()],
            100,
        );
        let chk = |s: &str, w| p.check_s3(&Url::parse(s).unwrap(), w).is_ok();
        assert!(chk("s3://in/photos/a.jpg", false));
        assert!(!chk("s3://in/photos/a.jpg", true));
        assert!(!chk("s3://in/photos-private/a.jpg", false));
        assert!(!chk("s3://in/other.jpg", false));
        assert!(!chk("s3://other/photos/a.jpg", false));
        assert!(!chk("s3://in/photos/../secret", false));
        assert!(!chk("s3://in/photos/%2e%2e/secret", false));
        assert!(chk("s3://store/outputs/j/a.jpg", true));
        assert!(!chk("s3://store/jobs/j/result.json", true));
        assert!(!chk("s3://user@in/photos/a.jpg", false));
    }

    #[tokio::test]
    async fn reads_take_regular_files_only_and_stop_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_path_buf();
        std::fs::write(root.join("small"), b"hello").unwrap();
        std::fs::write(root.join("big"), vec![0u8; 1000]).unwrap();
        let fifo = root.join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
        let p = Arc::new(Policy::new(vec![file_root(&root), file_root(Path::new("/dev"))], vec![], vec![], 100));
        let s = ConfinedStore::new(Arc::new(super::super::fs::FsStore), p);
        assert_eq!(&s.get(&url(&root.join("small")), 1 << 20).await.unwrap()[..], b"hello");
        assert!(matches!(s.get(&url(&root.join("big")), 1 << 20).await, Err(StoreError::TooLarge { .. })));
        let started = std::time::Instant::now();
        assert!(matches!(s.get(&url(&root.join("fifo")), 100).await, Err(StoreError::Forbidden(_))));
        assert!(matches!(s.open(&url(&root.join("fifo"))).await, Err(StoreError::Forbidden(_))));
        assert!(matches!(s.head(&url(&root.join("fifo"))).await, Err(StoreError::Forbidden(_))));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(matches!(s.get(&url(&root.join("zero")), 100).await, Err(StoreError::Forbidden(_))));
        // open() streams and fails past the limit.
        let mut r = s.open(&url(&root.join("big"))).await.unwrap();
        let mut sink = Vec::new();
        assert!(tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await.is_err());
        // Writes are refused where reads are not.
        assert!(matches!(s.put(&url(&root.join("w")), Bytes::from_static(b"x"), "x").await, Err(StoreError::Forbidden(_))));
    }
}
