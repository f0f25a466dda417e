//! Allowlist entries (`sources.allow`, `outputs.allow`): URI prefixes parsed into roots a
//! path or an `s3://` key can be checked against. Pure parsing, no I/O and no dependency on
//! the rest of the worker, so the config can validate its lists with it and the store's
//! confinement (`store/confine.rs`) can enforce them.

use std::path::{Component, Path, PathBuf};
use url::Url;

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// An absolute directory, lexically normalised.
    File(PathBuf),
    /// A bucket and a key prefix (empty, or ending with `/`).
    S3 { bucket: String, prefix: String },
    /// An `http(s)://host[:port]/path/` prefix (path ending with `/`; no user info, query
    /// or fragment): remote sources (`store/http.rs`), reads only.
    Http(Url),
}

impl Root {
    /// Parses `s3://bucket/prefix`, `file:///dir` or an absolute path.
    pub fn parse(s: &str) -> Result<Root, String> {
        let s = s.trim();
        if s.starts_with('/') {
            return Ok(Root::File(lexical(Path::new(s))));
        }
        let u = Url::parse(s).map_err(|e| format!("{s:?} is not a URI prefix ({e})"))?;
        match u.scheme() {
            "file" => {
                let p = u.to_file_path().map_err(|_| format!("{s:?} is not an absolute file:// path"))?;
                Ok(Root::File(lexical(&p)))
            }
            "s3" => {
                let (bucket, key) = s3_parts(&u).ok_or_else(|| format!("{s:?}: an s3:// prefix needs a bucket"))?;
                let mut prefix = key;
                if !prefix.is_empty() && !prefix.ends_with('/') {
                    prefix.push('/');
                }
                if bad_key(&prefix) {
                    return Err(format!("{s:?}: the key prefix may not hold . or .. segments"));
                }
                Ok(Root::S3 { bucket, prefix })
            }
            "http" | "https" => {
                if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() || u.host().is_none() {
                    return Err(format!("{s:?}: an http(s) prefix is scheme://host[:port]/path/ without user info, query or fragment"));
                }
                let mut u = u;
                if !u.path().ends_with('/') {
                    let p = format!("{}/", u.path());
                    u.set_path(&p);
                }
                if bad_http_path(&u) {
                    return Err(format!("{s:?}: the path may not hold encoded separators or dot segments"));
                }
                Ok(Root::Http(u))
            }
            other => Err(format!("{s:?}: scheme {other:?} is not supported here (file://, s3://, http(s)://)")),
        }
    }
}

/// The bucket and the percent-decoded key of an `s3://` URI; `None` without a bucket or
/// with user info or a port (which the S3 store would not read as part of the bucket).
pub fn s3_parts(u: &Url) -> Option<(String, String)> {
    let bucket = u.host_str().filter(|b| !b.is_empty())?.to_owned();
    if !u.username().is_empty() || u.password().is_some() || u.port().is_some() {
        return None;
    }
    let raw = u.path().strip_prefix('/').unwrap_or(u.path());
    let key = percent_encoding::percent_decode_str(raw).decode_utf8().ok()?.into_owned();
    Some((bucket, key))
}

/// Whether a URL's path holds a segment that decodes to `.`, `..`, or holds a `/`, `\\` or NUL
/// (which a server might read as a separator).
pub fn bad_http_path(u: &Url) -> bool {
    u.path().split('/').any(|seg| {
        let d = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
        d == "." || d == ".." || d.contains(['/', '\\', '\0'])
    })
}

/// Whether `url` lies under the `http(s)` prefix `root`: same scheme, host and port, no user
/// info, a clean path under the root's.
pub fn http_under(root: &Url, url: &Url) -> bool {
    root.scheme() == url.scheme()
        && root.host() == url.host()
        && root.port_or_known_default() == url.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path().starts_with(root.path())
        && !bad_http_path(url)
}

pub fn bad_key(key: &str) -> bool {
    key.split('/').any(|seg| seg == "." || seg == "..") || key.contains('\0')
}

/// `.` dropped, `..` pops a component (never above `/`); no I/O.
pub fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}
