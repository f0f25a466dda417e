//! Bearer tokens (`http.tokens`, `http.tokens_file`): `tenant:token` pairs parsed and kept as
//! SHA-256 digests, checked in constant time (`subtle`), so neither timing nor length tells
//! how close a guess was, and never printed. Pure parsing and checking with no dependency on
//! the rest of the worker, so the config validates its keys with it and the HTTP middleware
//! (`auth.rs`) enforces them.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("{0:?} is not tenant:token")]
    Shape(String),
    #[error("tenant {0:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    Tenant(String),
    #[error("the token of tenant {0:?} is shorter than {MIN_TOKEN_LEN} characters or holds whitespace")]
    Weak(String),
}

/// One `tenant:token` pair.
#[derive(Clone)]
struct Entry {
    tenant: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({}:…)", self.tenant)
    }
}

/// The configured tokens (never printed).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Whether `t` is a tenant name: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (what a
/// token file may name, and what a trusted Kafka or Lambda header may carry).
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses one `tenant:token`.
pub fn parse_pair(s: &str) -> Result<(String, String), TokenError> {
    let s = s.trim();
    let (tenant, token) = s.split_once(':').ok_or_else(|| TokenError::Shape(redact(s)))?;
    if !valid_tenant(tenant) {
        return Err(TokenError::Tenant(tenant.to_owned()));
    }
    if token.chars().count() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(TokenError::Weak(tenant.to_owned()));
    }
    Ok((tenant.to_owned(), token.to_owned()))
}

/// A config value shown in an error without the secret in it.
fn redact(s: &str) -> String {
    match s.split_once(':') {
        Some((t, _)) => format!("{t}:…"),
        None if s.len() > 4 => format!("{}…", &s[..s.char_indices().nth(4).map_or(s.len(), |(i, _)| i)]),
        None => "…".into(),
    }
}

impl Tokens {
    /// From `tenant:token` items and the lines of a tokens file (blank lines and `#` comments
    /// skipped).
    pub fn parse(items: &[String], file_text: Option<&str>) -> Result<Tokens, TokenError> {
        let lines = file_text.into_iter().flat_map(str::lines).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let mut entries = Vec::new();
        for item in items.iter().map(String::as_str).chain(lines) {
            let (tenant, token) = parse_pair(item)?;
            entries.push(Entry { tenant, digest: digest(token.as_bytes()) });
        }
        Ok(Tokens { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tenant of `presented`, comparing with every token in constant time.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let d = digest(presented.as_bytes());
        let mut found: Option<&str> = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&d)) && found.is_none() {
                found = Some(e.tenant.as_str());
            }
        }
        found
    }
}
