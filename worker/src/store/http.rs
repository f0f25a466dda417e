//! Remote sources over `http://` and `https://` (read-only), off unless `sources.allow` names
//! their prefix. In every mode, since a fetch acts with the worker's network position:
//!
//! - **Allowlist**: the URL (and every redirect target, followed by hand, at most
//!   `sources.http_max_redirects` hops) must lie under an `http(s)://host[:port]/path/` entry
//!   of `sources.allow`: same scheme, host and port, a path under the entry's (with no
//!   encoded `/`, `\` or dot segments).
//! - **Private networks**: a host name must resolve to public addresses only; the resolver
//!   ([`PublicOnly`]) drops loopback, private, link-local, CGNAT, unique-local, multicast and
//!   unspecified addresses before reqwest connects, so a name that resolves there (or is
//!   re-pointed there between two fetches) is never connected to. An IP-literal URL must be
//!   public, unless the allowlist entry it matches names that very address: private hosts are
//!   allowed only explicitly, by address. Proxies from the environment are not used.
//! - **Limits**: `limits.max_input_bytes` as the body streams (whatever `Content-Length`
//!   says), and `sources.http_timeout_ms` for the whole fetch (connect, redirects, body).
//!
//! An allowlist refusal is `forbidden`; 404/410 is `input_not_found`; a timeout, a 5xx or a
//! connection failure is retryable `Unavailable`.

use crate::allow::Root;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use kiln_jobs::store::ByteStream;
use kiln_jobs::{ObjectMeta, ObjectStore, StoreError, Version};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Whether `ip` is a public unicast address (not loopback, private, link-local, CGNAT,
/// unique-local, documentation, multicast, broadcast, reserved or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s0 = a.segments()[0];
            !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || (s0 & 0xfe00) == 0xfc00 || (s0 & 0xffc0) == 0xfe80 || (s0 == 0x2001 && a.segments()[1] == 0x0db8))
        }
    }
}

/// A host name resolved only to public addresses.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to no public address (private networks are reachable only when sources.allow names the address)")]
pub struct PrivateAddress(String);

/// reqwest's resolver: the system's, minus every non-public address.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(Box::new(PrivateAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The `http(s)://` store (see the module doc).
pub struct HttpStore {
    client: Option<reqwest::Client>,
    roots: Vec<Url>,
    max_bytes: u64,
    max_redirects: usize,
}

fn forbidden(url: &Url, why: &str) -> StoreError {
    StoreError::Forbidden(format!("{url} {why}"))
}

impl HttpStore {
    /// `allow`: `sources.allow` (its non-http entries are ignored here).
    pub fn new(allow: &[String], max_bytes: u64, timeout: Duration, max_redirects: usize) -> HttpStore {
        let roots: Vec<Url> = allow
            .iter()
            .filter_map(|s| match Root::parse(s) {
                Ok(Root::Http(u)) => Some(u),
                _ => None,
            })
            .collect();
        // No client (and no TLS set-up) unless some prefix is allowed.
        let client = (!roots.is_empty())
            .then(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .dns_resolver(Arc::new(PublicOnly))
                    .connect_timeout(timeout.min(Duration::from_secs(10)))
                    .timeout(timeout)
                    .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| tracing::error!(error = %e, "http sources disabled: no HTTP client"))
                    .ok()
            })
            .flatten();
        HttpStore { client, roots, max_bytes, max_redirects }
    }

    /// `Ok` when `url` may be fetched: under an allowed prefix, and an IP-literal host public
    /// or named by that prefix.
    pub fn check(&self, url: &Url) -> Result<(), StoreError> {
        let root = self.roots.iter().find(|r| crate::allow::http_under(r, url)).ok_or_else(|| forbidden(url, "is not under an http(s) prefix of sources.allow"))?;
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            _ => None,
        };
        if let Some(ip) = ip {
            if !is_public(ip) && root.host() != url.host() {
                return Err(forbidden(url, "is a private address"));
            }
        }
        Ok(())
    }

    /// The response to `GET url` after the redirects, each checked before it is followed.
    async fn fetch(&self, url: &Url, method: reqwest::Method) -> Result<reqwest::Response, StoreError> {
        let client = self.client.as_ref().ok_or_else(|| forbidden(url, "is not under an http(s) prefix of sources.allow"))?;
        let mut at = url.clone();
        for _ in 0..=self.max_redirects {
            self.check(&at)?;
            let resp = client.request(method.clone(), at.clone()).send().await.map_err(|e| request_error(&at, e))?;
            let status = resp.status();
            if status.is_redirection() {
                let next = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| at.join(l).ok())
                    .ok_or_else(|| StoreError::NotFound(format!("{at}: a redirect without a usable Location")))?;
                tracing::debug!(from = %at, to = %next, "following a redirect");
                at = next;
                continue;
            }
            return match status.as_u16() {
                200..=299 => Ok(resp),
                404 | 410 => Err(StoreError::NotFound(at.to_string())),
                401 | 403 => Err(StoreError::Denied(format!("{at}: HTTP {status}"))),
                429 | 500..=599 => Err(StoreError::Unavailable(format!("{at}: HTTP {status}"))),
                _ => Err(StoreError::NotFound(format!("{at}: HTTP {status}"))),
            };
        }
        Err(StoreError::NotFound(format!("{url}: more than {} redirects", self.max_redirects)))
    }

    /// The body as a stream that fails past `limit` bytes.
    fn body(resp: reqwest::Response, url: &Url, limit: u64) -> Result<ByteStream, StoreError> {
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(StoreError::TooLarge { uri: url.to_string(), limit });
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Box::pin(crate::store::confine::Bounded::new(reader, limit)))
    }
}

/// A reqwest error as a store error: the resolver's refusal is `forbidden`.
fn request_error(url: &Url, e: reqwest::Error) -> StoreError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(p) = s.downcast_ref::<PrivateAddress>() {
            return forbidden(url, &format!("is not reachable: {p}"));
        }
        src = s.source();
    }
    StoreError::Unavailable(format!("{url}: {e}"))
}

fn read_only(uri: &Url) -> StoreError {
    StoreError::UnsupportedUri(format!("{uri} (http(s) URIs are read-only sources)"))
}

#[async_trait]
impl ObjectStore for HttpStore {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        let limit = limit.min(self.max_bytes);
        let resp = self.fetch(uri, reqwest::Method::GET).await?;
        let mut body = Self::body(resp, uri, limit)?;
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut body, &mut buf).await.map_err(|e| {
            if e.to_string().contains("larger than the limit") {
                StoreError::TooLarge { uri: uri.to_string(), limit }
            } else {
                StoreError::Unavailable(format!("{uri}: {e}"))
            }
        })?;
        Ok(Bytes::from(buf))
    }

    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        let resp = self.fetch(uri, reqwest::Method::GET).await?;
        Self::body(resp, uri, self.max_bytes)
    }

    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        match self.fetch(uri, reqwest::Method::HEAD).await {
            Ok(resp) => Ok(Some(ObjectMeta { uri: uri.clone(), size: resp.content_length().unwrap_or(0) })),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put(&self, uri: &Url, _data: Bytes, _content_type: &str) -> Result<(), StoreError> {
        Err(read_only(uri))
    }
    async fn put_file(&self, uri: &Url, _path: &Path, _content_type: &str) -> Result<(), StoreError> {
        Err(read_only(uri))
    }
    async fn put_if_absent(&self, uri: &Url, _data: Bytes, _content_type: &str) -> Result<bool, StoreError> {
        Err(read_only(uri))
    }
    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        Err(read_only(uri))
    }
    async fn get_versioned(&self, uri: &Url, _limit: u64) -> Result<(Bytes, Version), StoreError> {
        Err(read_only(uri))
    }
    async fn put_if_version(&self, uri: &Url, _data: Bytes, _ct: &str, _expected: Option<&Version>) -> Result<Version, StoreError> {
        Err(read_only(uri))
    }
    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        Err(read_only(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "255.255.255.255",
            "224.0.0.1", "::1", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "192.0.0.8",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn only_allowed_prefixes_and_explicit_private_addresses() {
        let s = HttpStore::new(
            &["https://cdn.example/media/".into(), "http://127.0.0.1:8000/ok/".into(), "file:///srv/".into()],
            100,
            Duration::from_secs(1),
            3,
        );
        let ok = |u: &str| s.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://cdn.example/media/a.jpg"));
        assert!(ok("http://127.0.0.1:8000/ok/a.png"));
        for bad in [
            "http://cdn.example/media/a.jpg",
            "https://cdn.example/media-private/a.jpg",
            "https://cdn.example/other/a.jpg",
            "https://cdn.example:444/media/a.jpg",
            "https://cdn.example/media/..%2Fsecret",
            "https://cdn.example/media/%2e%2e/secret",
            "http://127.0.0.1:8001/ok/a.png",
            "http://127.0.0.1:8000/other",
            "http://[::1]:8000/ok/a.png",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        let none = HttpStore::new(&[], 100, Duration::from_secs(1), 3);
        assert!(none.check(&Url::parse("https://cdn.example/media/a.jpg").unwrap()).is_err());
    }
}
