//! Bearer-token authentication of the HTTP API (`kiln serve` and `kiln route`).
//!
//! - Tokens are `tenant:token` pairs from `http.tokens` (`KILN_HTTP_TOKENS`, a comma list)
//!   and `http.tokens_file` (`KILN_HTTP_TOKENS_FILE`, one pair a line, `#` comments), all
//!   valid at once so a key rotates by adding the new one, moving clients, removing the old.
//!   A token is at least [`MIN_TOKEN_LEN`] characters, without whitespace or commas.
//! - Every request but `/healthz`, `/readyz` (and `/metrics` unless `http.metrics_auth`)
//!   needs `Authorization: Bearer <token>`; missing or wrong: 401 with
//!   `WWW-Authenticate: Bearer`. The presented token is compared with every configured one
//!   in constant time (SHA-256 digests compared with `subtle`), so neither timing nor length
//!   tells how close a guess was.
//! - The token's tenant travels with the request: a task-local the runtime reads
//!   ([`current_tenant`]) to put it on the job's span, and a [`Tenant`] request extension.
//! - `http.tokens_file` is re-read when it changes ([`watch_tokens_file`]), so a rotation
//!   needs no restart.
//! - Secure by default: [`check_exposure`] refuses to serve a non-loopback address without
//!   tokens unless `http.auth = "none"` says so on purpose. On loopback without tokens the
//!   API is open (a local tool, the tests).

use crate::config::{AuthMode, ConfigError, HttpConfig};
pub use crate::tokens::{parse_pair, TokenError, Tokens, MIN_TOKEN_LEN};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

tokio::task_local! {
    static TENANT: String;
}

/// The tenant whose token authenticated the request being handled, if any.
pub fn current_tenant() -> Option<String> {
    TENANT.try_with(Clone::clone).ok()
}

/// Runs `fut` on behalf of `tenant` (what the middleware does for a bearer token; the signed
/// thumbnail handler does it for the key that verified).
pub async fn with_tenant<F: std::future::Future>(tenant: String, fut: F) -> F::Output {
    TENANT.scope(tenant, fut).await
}

/// The authenticated tenant, as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl Tokens {
    /// From `http.tokens` and `http.tokens_file`.
    pub fn from_config(http: &HttpConfig) -> Result<Tokens, ConfigError> {
        let text = crate::config::read_secrets_file("http.tokens_file", http.tokens_file.as_deref())?;
        let key = if text.is_some() { "http.tokens / http.tokens_file" } else { "http.tokens" };
        Tokens::parse(&http.tokens, text.as_deref()).map_err(|e| ConfigError::Invalid { key, message: e.to_string() })
    }
}


/// Refuses to serve `addr` without authentication unless it is a loopback address or
/// `http.auth = "none"`.
pub fn check_exposure(http: &HttpConfig, tokens: &Tokens) -> Result<(), ConfigError> {
    if http.auth == AuthMode::None || !tokens.is_empty() {
        return Ok(());
    }
    let loopback = http.addr.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
    if loopback {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: "http.tokens",
        message: format!(
            "serving on {} (not a loopback address) needs bearer tokens: set http.tokens \
             (KILN_HTTP_TOKENS=tenant:token,…) or http.tokens_file (KILN_HTTP_TOKENS_FILE), or set \
             http.auth = \"none\" (KILN_HTTP_AUTH=none) to serve without authentication on purpose",
            http.addr
        ),
    })
}

/// The middleware's state for a config: fails closed (every request refused) when the
/// tokens cannot be read, which `kiln serve` has already refused to start with. With
/// `http.tokens_file`, the file is watched ([`watch_tokens_file`]) inside a tokio runtime.
pub fn for_config(http: &HttpConfig) -> Arc<Auth> {
    let auth = match Tokens::from_config(http) {
        Ok(tokens) => Auth::new(http, tokens),
        Err(e) => {
            tracing::error!(error = %e, "tokens unreadable; refusing every authenticated request");
            Arc::new(Auth { tokens: RwLock::new(Arc::new(Tokens::default())), required: true, metrics_open: !http.metrics_auth })
        }
    };
    if http.tokens_file.is_some() && tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(watch_tokens_file(Arc::downgrade(&auth), http.clone(), TOKENS_FILE_POLL));
    }
    auth
}

/// How often `http.tokens_file` is checked for a change.
pub const TOKENS_FILE_POLL: Duration = Duration::from_secs(1);

/// Re-reads `http.tokens_file` when its modification time, size or inode changes (a rewrite
/// in place or a rename over it, as a Kubernetes Secret update does), so tokens rotate
/// without a restart: a token added to the file is valid, and one removed from it refused,
/// within `every`. A file that does not parse (or disappears) keeps the tokens in force and
/// logs an error. Ends when the [`Auth`] is dropped. The file's state is taken when this is
/// called (not when the future first runs), so a change in between is not missed.
pub fn watch_tokens_file(auth: Weak<Auth>, http: HttpConfig, every: Duration) -> impl std::future::Future<Output = ()> {
    let stamp = |p: &str| {
        std::fs::metadata(p).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.modified().ok(), m.len(), m.ino())
        })
    };
    let path = http.tokens_file.clone().unwrap_or_default();
    let mut seen = stamp(&path);
    async move {
        if path.is_empty() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            let Some(auth) = auth.upgrade() else { return };
            let now = stamp(&path);
            if now == seen || now.is_none() {
                continue;
            }
            seen = now;
            match Tokens::from_config(&http) {
                Ok(tokens) => {
                    tracing::info!(file = %path, "tokens file changed; tokens reloaded");
                    *auth.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
                }
                Err(e) => tracing::error!(error = %e, "tokens file changed but does not parse; keeping the tokens in force"),
            }
        }
    }
}

/// What the middleware needs.
#[derive(Debug)]
pub struct Auth {
    /// Replaced whole when the tokens file changes.
    tokens: RwLock<Arc<Tokens>>,
    /// Whether requests need a token at all (`http.auth = "bearer"` with tokens or a tokens
    /// file configured). Fixed at start: a tokens file emptied later refuses everyone rather
    /// than opening the API.
    required: bool,
    metrics_open: bool,
}

impl Auth {
    pub fn new(http: &HttpConfig, tokens: Tokens) -> Arc<Auth> {
        let required = http.auth == AuthMode::Bearer && (!tokens.is_empty() || http.tokens_file.is_some());
        Arc::new(Auth { tokens: RwLock::new(Arc::new(tokens)), required, metrics_open: !http.metrics_auth })
    }

    /// The tenant of `token` under the tokens in force now.
    pub fn check(&self, token: &str) -> Option<String> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner()).clone();
        tokens.check(token).map(str::to_owned)
    }

    /// Paths served without a token (signed thumbnail URLs carry their own credential).
    fn is_open(&self, path: &str) -> bool {
        matches!(path, "/healthz" | "/readyz")
            || (self.metrics_open && path == "/metrics")
            || path.starts_with(crate::signing::PREFIX)
    }
}

fn unauthorized(message: &str, presented: bool) -> Response {
    let mut resp =
        (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "unauthorized", "message": message}}))).into_response();
    let challenge = if presented { r#"Bearer realm="kiln", error="invalid_token""# } else { r#"Bearer realm="kiln""# };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

/// The axum middleware (`axum::middleware::from_fn_with_state(auth, auth::require)`).
pub async fn require(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    if !auth.required || auth.is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = presented else {
        return unauthorized("a bearer token is required (Authorization: Bearer <token>)", false);
    };
    let Some(tenant) = auth.check(&token) else {
        return unauthorized("the bearer token is not valid", true);
    };
    req.extensions_mut().insert(Tenant(tenant.clone()));
    TENANT.scope(tenant, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_parse_and_weak_ones_are_refused() {
        assert_eq!(parse_pair("acme:0123456789abcdef").unwrap(), ("acme".into(), "0123456789abcdef".into()));
        assert_eq!(parse_pair(" a.b-c_1:0123456789abcdef:x ").unwrap().1, "0123456789abcdef:x");
        assert!(matches!(parse_pair("no-colon-here-at-all"), Err(TokenError::Shape(_))));
        assert!(matches!(parse_pair(":0123456789abcdef"), Err(TokenError::Tenant(_))));
        assert!(matches!(parse_pair("a b:0123456789abcdef"), Err(TokenError::Tenant(_))));
        assert!(matches!(parse_pair("acme:short"), Err(TokenError::Weak(_))));
        assert!(matches!(parse_pair("acme:0123456789 abcdef"), Err(TokenError::Weak(_))));
        // Errors never carry the secret.
        let e = parse_pair("acme:xyzzy").unwrap_err().to_string();
        assert!(!e.contains("xyzzy"), "{e}");
        let e = Tokens::parse(&items(&["secretsecretsecret"]), None).unwrap_err().to_string();
        assert!(!e.contains("secretsecretsecret"), "{e}");
    }

    #[test]
    fn several_tokens_are_valid_at_once() {
        let file = "# rotated in\n\nbeta:bbbbbbbbbbbbbbbbbbbb\n";
        let t = Tokens::parse(&items(&["acme:aaaaaaaaaaaaaaaa", "acme:cccccccccccccccc"]), Some(file)).unwrap();
        assert_eq!(t.check("aaaaaaaaaaaaaaaa"), Some("acme"));
        assert_eq!(t.check("cccccccccccccccc"), Some("acme"));
        assert_eq!(t.check("bbbbbbbbbbbbbbbbbbbb"), Some("beta"));
        assert_eq!(t.check("aaaaaaaaaaaaaaa"), None);
        assert_eq!(t.check(""), None);
        assert!(Tokens::default().check("anything").is_none());
    }

    #[tokio::test]
    async fn a_changed_tokens_file_is_reloaded_and_a_broken_one_ignored() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tokens");
        std::fs::write(&f, "acme:aaaaaaaaaaaaaaaa\n").unwrap();
        let mut http = crate::config::Config::default().http;
        http.tokens_file = Some(f.display().to_string());
        let auth = Auth::new(&http, Tokens::from_config(&http).unwrap());
        tokio::spawn(watch_tokens_file(Arc::downgrade(&auth), http, Duration::from_millis(20)));
        assert_eq!(auth.check("aaaaaaaaaaaaaaaa").as_deref(), Some("acme"));
        let until = |want: Option<&'static str>, token: &'static str| {
            let auth = auth.clone();
            async move {
                let started = std::time::Instant::now();
                while auth.check(token).as_deref() != want {
                    assert!(started.elapsed() < Duration::from_secs(10), "{token}: never {want:?}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        // Rotated by a rename over the file (as a Kubernetes Secret update does).
        let tmp = d.path().join("tokens.new");
        std::fs::write(&tmp, "beta:bbbbbbbbbbbbbbbbbbbb\n").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        until(Some("beta"), "bbbbbbbbbbbbbbbbbbbb").await;
        assert_eq!(auth.check("aaaaaaaaaaaaaaaa"), None);
        // A broken file keeps the tokens in force.
        std::fs::write(&f, "not a token line\n").unwrap();
        std::fs::write(&tmp, "beta:cccccccccccccccccccc\n").unwrap();
        // Five polls over the broken file change nothing (the check cannot wait for an event
        // that must not happen), then a good file counts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(auth.check("bbbbbbbbbbbbbbbbbbbb").as_deref(), Some("beta"));
        std::fs::rename(&tmp, &f).unwrap();
        until(Some("beta"), "cccccccccccccccccccc").await;
        // Emptied: everyone is refused, the API does not open.
        std::fs::write(&f, "# nobody\n").unwrap();
        until(None, "cccccccccccccccccccc").await;
        assert!(auth.required);
    }

    #[test]
    fn exposure_needs_tokens_or_an_explicit_none() {
        let mut http = crate::config::Config::default().http;
        let none = Tokens::default();
        let some = Tokens::parse(&items(&["acme:aaaaaaaaaaaaaaaa"]), None).unwrap();
        http.addr = "0.0.0.0:8080".into();
        let e = check_exposure(&http, &none).unwrap_err().to_string();
        assert!(e.contains("http.tokens") && e.contains("KILN_HTTP_AUTH=none"), "{e}");
        assert!(check_exposure(&http, &some).is_ok());
        http.auth = AuthMode::None;
        assert!(check_exposure(&http, &none).is_ok());
        http.auth = AuthMode::Bearer;
        for addr in ["127.0.0.1:0", "[::1]:8080"] {
            http.addr = addr.into();
            assert!(check_exposure(&http, &none).is_ok(), "{addr}");
        }
    }
}
