//! The local-filesystem store. Writes are atomic: a temporary file in the same directory,
//! then a rename (or a hard link, for create-if-absent), so readers never see a partial
//! object and a crash leaves at worst a stray `.kiln-tmp-*` file.
//!
//! Conditional writes (`put_if_version`, used for checkpoints) take an exclusive `flock(2)`
//! on a sidecar `.kiln-lock-{name}` file, compare the object's content digest (its version)
//! and rename the new object into place while holding the lock. That is a true
//! compare-and-swap among processes whose `flock` reaches the same file: one host, or a
//! network filesystem whose locks are coherent (NFSv4, most CSI volumes); on one without
//! coherent locks two writers can both succeed. Use S3 for checkpoints shared across hosts.

use async_trait::async_trait;
use bytes::Bytes;
use kiln_jobs::store::ByteStream;
use kiln_jobs::{ObjectMeta, ObjectStore, StoreError, Version};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use url::Url;

const TMP_PREFIX: &str = ".kiln-tmp-";
const LOCK_PREFIX: &str = ".kiln-lock-";

/// The version of an object's content: a digest, so equal content is an equal version.
fn version_of(data: &[u8]) -> Version {
    Version(hex::encode(&Sha256::digest(data)[..16]))
}

/// The compare-and-swap of `put_if_version`, run on a blocking thread under the sidecar lock.
fn swap_locked(uri: &Url, dest: &Path, data: &[u8], expected: Option<&Version>) -> Result<Version, StoreError> {
    use rustix::fs::{flock, FlockOperation};
    let parent = dest.parent().ok_or_else(|| StoreError::UnsupportedUri(uri.to_string()))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    let lock_path = parent.join(format!("{LOCK_PREFIX}{name}"));
    let lock_file = in_dir(&lock_path, || std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path))
        .map_err(|e| StoreError::io(uri, e))?;
    // Released when `lock_file` is closed, on every return path.
    flock(&lock_file, FlockOperation::LockExclusive).map_err(|e| StoreError::io(uri, e.into()))?;
    let current = match std::fs::read(dest) {
        Ok(bytes) => Some(version_of(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io(uri, e)),
    };
    if current.as_ref() != expected {
        return Err(StoreError::Conflict(uri.to_string()));
    }
    place(uri, dest, |f| f.write_all(data), false)?;
    Ok(version_of(data))
}

pub struct FsStore;

fn path_of(uri: &Url) -> Result<PathBuf, StoreError> {
    if uri.scheme() != "file" {
        return Err(StoreError::UnsupportedUri(uri.to_string()));
    }
    uri.to_file_path().map_err(|_| StoreError::UnsupportedUri(uri.to_string()))
}

fn tmp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    dest.with_file_name(format!("{TMP_PREFIX}{}-{name}", ulid::Ulid::new()))
}

/// `create` (a file's creation at `path`), and once more after creating `path`'s directories
/// when they are missing: most objects go into a directory that exists, so the common case
/// costs no `mkdir` calls.
fn in_dir<T>(path: &Path, create: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            create()
        }
        other => other,
    }
}

/// Fills a fresh temporary file beside `dest` (`fill`: the bytes of a `put`, or a local file
/// copied), flushes it to disk, then moves it to `dest` (`link`: only when `dest` does not
/// exist yet; returns whether it was placed). A blocking call: the conditional write runs it
/// under its lock, the async writes on one blocking thread ([`write_and_place`], `put_file`).
fn place(uri: &Url, dest: &Path, fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>, link: bool) -> Result<bool, StoreError> {
    let tmp = tmp_path(dest);
    let written = (|| {
        let mut f = in_dir(&tmp, || std::fs::File::create(&tmp))?;
        fill(&mut f)?;
        f.sync_data()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::io(uri, e));
    }
    if link {
        // link(2) fails with EEXIST when the destination exists: an atomic create-if-absent.
        let linked = std::fs::hard_link(&tmp, dest);
        let _ = std::fs::remove_file(&tmp);
        return match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::io(uri, e)),
        };
    }
    if let Err(e) = std::fs::rename(&tmp, dest) {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::io(uri, e));
    }
    Ok(true)
}

/// [`place`] on one blocking thread: one hand-off per object instead of one per file
/// operation (and no copy through tokio's file buffer), which for a render job's 100 page
/// parts was a tenth of its CPU time.
async fn write_and_place(uri: &Url, dest: PathBuf, data: Bytes, link: bool) -> Result<bool, StoreError> {
    let u = uri.clone();
    tokio::task::spawn_blocking(move || place(&u, &dest, |f| f.write_all(&data), link))
        .await
        .map_err(|e| StoreError::Unavailable(format!("write task failed: {e}")))?
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        // Regular files only, never blocking on a FIFO, bounded as it reads (confine.rs).
        let (path, u) = (path_of(uri)?, uri.clone());
        tokio::task::spawn_blocking(move || super::confine::read_file(&path, &u, limit, true))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        let (path, u) = (path_of(uri)?, uri.clone());
        let f = tokio::task::spawn_blocking(move || super::confine::open_regular(&path, &u, true))
            .await
            .map_err(|e| StoreError::Unavailable(format!("open task failed: {e}")))??;
        Ok(Box::pin(tokio::fs::File::from_std(f)))
    }

    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        match tokio::fs::metadata(path_of(uri)?).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta { uri: uri.clone(), size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(uri, e)),
        }
    }

    async fn put(&self, uri: &Url, data: Bytes, _content_type: &str) -> Result<(), StoreError> {
        write_and_place(uri, path_of(uri)?, data, false).await.map(|_| ())
    }

    async fn put_file(&self, uri: &Url, path: &Path, _content_type: &str) -> Result<(), StoreError> {
        // One hand-off to a blocking thread for the whole copy, as `put` has; `std::io::copy`
        // between files uses copy_file_range(2).
        let (dest, src, u) = (path_of(uri)?, path.to_path_buf(), uri.clone());
        tokio::task::spawn_blocking(move || {
            let mut from = std::fs::File::open(&src).map_err(|e| StoreError::io(&u, e))?;
            place(&u, &dest, |f| std::io::copy(&mut from, f).map(drop), false).map(drop)
        })
            .await
            .map_err(|e| StoreError::Unavailable(format!("copy task failed: {e}")))?
    }

    async fn put_if_absent(&self, uri: &Url, data: Bytes, _content_type: &str) -> Result<bool, StoreError> {
        write_and_place(uri, path_of(uri)?, data, true).await
    }

    async fn get_versioned(&self, uri: &Url, limit: u64) -> Result<(Bytes, Version), StoreError> {
        let data = self.get(uri, limit).await?;
        let v = version_of(&data);
        Ok((data, v))
    }

    async fn put_if_version(&self, uri: &Url, data: Bytes, _content_type: &str, expected: Option<&Version>) -> Result<Version, StoreError> {
        let dest = path_of(uri)?;
        let (uri2, expected) = (uri.clone(), expected.cloned());
        tokio::task::spawn_blocking(move || swap_locked(&uri2, &dest, &data, expected.as_ref()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("conditional write task failed: {e}")))?
    }

    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        match tokio::fs::remove_file(path_of(uri)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(uri, e)),
        }
    }

    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix_path = path_of(prefix)?;
        let prefix_str = prefix_path.to_string_lossy().into_owned();
        let root = if prefix.path().ends_with('/') {
            prefix_path.clone()
        } else {
            prefix_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
        };
        let uri = prefix.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(&uri, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| StoreError::io(&uri, e))?;
                    let path = entry.path();
                    let ft = entry.file_type().map_err(|e| StoreError::io(&uri, e))?;
                    if ft.is_dir() {
                        stack.push(path);
                    } else if ft.is_file() {
                        let name_is_tmp = path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(TMP_PREFIX) || n.starts_with(LOCK_PREFIX));
                        if name_is_tmp || !path.to_string_lossy().starts_with(&prefix_str) {
                            continue;
                        }
                        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                        if let Ok(u) = Url::from_file_path(&path) {
                            out.push(ObjectMeta { uri: u, size });
                        }
                    }
                }
            }
            out.sort_by(|a, b| a.uri.as_str().cmp(b.uri.as_str()));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("list task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(dir: &Path, rel: &str) -> Url {
        Url::from_file_path(dir.join(rel)).unwrap()
    }

    #[tokio::test]
    async fn put_get_head_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore;
        let a = url(d.path(), "jobs/j1/a.bin");
        s.put(&a, Bytes::from_static(b"hello"), "x").await.unwrap();
        assert_eq!(&s.get(&a, 100).await.unwrap()[..], b"hello");
        assert_eq!(s.head(&a).await.unwrap().unwrap().size, 5);
        assert!(matches!(s.get(&a, 4).await, Err(StoreError::TooLarge { .. })));
        s.put(&url(d.path(), "jobs/j1/b/c.bin"), Bytes::from_static(b"x"), "x").await.unwrap();
        s.put(&url(d.path(), "jobs/j2/a.bin"), Bytes::from_static(b"x"), "x").await.unwrap();
        let listed = s.list(&Url::from_directory_path(d.path().join("jobs/j1")).unwrap()).await.unwrap();
        assert_eq!(listed.len(), 2);
        let listed = s.list(&url(d.path(), "jobs/j")).await.unwrap();
        assert_eq!(listed.len(), 3);
        s.delete(&a).await.unwrap();
        s.delete(&a).await.unwrap();
        assert!(s.head(&a).await.unwrap().is_none());
        assert!(matches!(s.get(&a, 100).await, Err(StoreError::NotFound(_))));
    }

    #[tokio::test]
    async fn overwrite_is_atomic_and_leaves_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore;
        let a = url(d.path(), "o.bin");
        s.put(&a, Bytes::from(vec![1u8; 1000]), "x").await.unwrap();
        s.put(&a, Bytes::from(vec![2u8; 10]), "x").await.unwrap();
        assert_eq!(&s.get(&a, u64::MAX).await.unwrap()[..], &[2u8; 10]);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[tokio::test]
    async fn put_if_absent_creates_once() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore;
        let a = url(d.path(), "r/result.json");
        assert!(s.put_if_absent(&a, Bytes::from_static(b"1"), "x").await.unwrap());
        assert!(!s.put_if_absent(&a, Bytes::from_static(b"2"), "x").await.unwrap());
        assert_eq!(&s.get(&a, 10).await.unwrap()[..], b"1");
    }

    #[tokio::test]
    async fn put_if_version_is_a_compare_and_swap() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore;
        let a = url(d.path(), "jobs/j/state.json");
        let v1 = s.put_if_version(&a, Bytes::from_static(b"one"), "x", None).await.unwrap();
        assert!(matches!(s.put_if_version(&a, Bytes::from_static(b"dup"), "x", None).await, Err(StoreError::Conflict(_))));
        let (got, v) = s.get_versioned(&a, 100).await.unwrap();
        assert_eq!((&got[..], &v), (&b"one"[..], &v1));
        let v2 = s.put_if_version(&a, Bytes::from_static(b"two"), "x", Some(&v1)).await.unwrap();
        assert_ne!(v1, v2);
        // A writer holding the old version loses.
        assert!(matches!(s.put_if_version(&a, Bytes::from_static(b"stale"), "x", Some(&v1)).await, Err(StoreError::Conflict(_))));
        assert_eq!(&s.get(&a, 100).await.unwrap()[..], b"two");
        // The lock file is not an object.
        assert_eq!(s.list(&url(d.path(), "jobs/")).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_swaps_from_one_version_let_exactly_one_win() {
        let d = tempfile::tempdir().unwrap();
        let a = url(d.path(), "s.json");
        let v0 = FsStore.put_if_version(&a, Bytes::from_static(b"0"), "x", None).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (a, v0) = (a.clone(), v0.clone());
                tokio::spawn(async move { FsStore.put_if_version(&a, Bytes::from(format!("w{i}")), "x", Some(&v0)).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(wins, 1);
    }

    #[tokio::test]
    async fn put_file_streams_a_local_file() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.bin");
        std::fs::write(&src, vec![7u8; 3 << 20]).unwrap();
        let s = FsStore;
        let dst = url(d.path(), "dst/copy.bin");
        s.put_file(&dst, &src, "x").await.unwrap();
        assert_eq!(s.head(&dst).await.unwrap().unwrap().size, 3 << 20);
        assert_eq!(std::fs::read(d.path().join("dst/copy.bin")).unwrap(), vec![7u8; 3 << 20]);
        // Into the directory that now exists, over an object: replaced, no temporary left.
        std::fs::write(&src, b"second").unwrap();
        s.put_file(&dst, &src, "x").await.unwrap();
        s.put_file(&url(d.path(), "dst/other.bin"), &src, "x").await.unwrap();
        assert_eq!(std::fs::read(d.path().join("dst/copy.bin")).unwrap(), b"second");
        let mut names: Vec<String> =
            std::fs::read_dir(d.path().join("dst")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["copy.bin", "other.bin"]);
        let missing = s.put_file(&url(d.path(), "y"), &d.path().join("nope"), "x").await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
    }
}
