//! The signed thumbnail URL scheme (`GET /v1/thumbnail/{signature}/{options}/{encoded source}`),
//! pure: keys, signing, verification and the options grammar, with no I/O and no dependency on
//! the rest of the worker, so the config validates its keys with it and the HTTP handler
//! (`sources/signed.rs`) enforces it. The README's "Signed thumbnail URLs" section is the
//! client-facing description; its test vector is checked by this module's tests.
//!
//! - **Signed message**: the request path after the signature segment, exactly as sent (still
//!   percent-encoded), starting with `/`: `/{options}/{encoded source}`. The query string is
//!   neither signed nor used.
//! - **Signature**: HMAC-SHA256 of the message's UTF-8 bytes with the secret's UTF-8 bytes as
//!   the key, base64url without padding (43 characters).
//! - **Keys**: `tenant:secret` pairs (`thumbnail.keys` / `KILN_THUMBNAIL_KEYS`, and the lines of
//!   `thumbnail.keys_file`), all valid at once so a key rotates by adding the new one, moving
//!   signers, removing the old; the key that verifies names the job's tenant. Every key is
//!   tried (no early exit) and each comparison is constant-time (`Mac::verify_slice`).
//! - **Options**: one path segment, comma-separated `name:value`: `w` width, `h` height (at
//!   least one), `fit` (`cover|contain|fill|inside`), `f` format (`jpeg|png|webp|avif`, default
//!   `webp`), `q` quality (1-100), `bg` background `rrggbb[aa]`.
//! - **Encoded source**: the source URI, base64url without padding.

use crate::tokens::{parse_pair, TokenError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Map, Value};
use sha2_hmac::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Where the signed paths start.
pub const PREFIX: &str = "/v1/thumbnail/";

/// Longest signed path accepted (options + encoded source).
pub const MAX_PATH_LEN: usize = 4096;

/// One `tenant:secret` signing key (the secret is never printed).
#[derive(Clone)]
struct Key {
    tenant: String,
    secret: Vec<u8>,
}

/// The configured signing keys.
#[derive(Clone, Default)]
pub struct SigningKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants: Vec<&str> = self.keys.iter().map(|k| k.tenant.as_str()).collect();
        write!(f, "SigningKeys({tenants:?})")
    }
}

/// Why a signed path was refused (each is a 403 or, for the options, a 400 after the signature
/// checked out).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedError {
    #[error("the path is not /v1/thumbnail/{{signature}}/{{options}}/{{encoded source}}")]
    Shape,
    #[error("the signature does not match the path under any configured key")]
    BadSignature,
    #[error("options: {0}")]
    Options(String),
    #[error("the encoded source is not base64url of a UTF-8 URI")]
    Source,
}

/// A verified request: who signed it, and the thumbnail it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    pub tenant: String,
    /// The signed message (`/{options}/{encoded source}`).
    pub message: String,
    pub source: String,
    /// The thumbnail job's `outputs[0]`, as the thumbnail spec takes it.
    pub output: Value,
}

/// The signature of `message` under `secret`: base64url, no padding.
pub fn sign(secret: &[u8], message: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(message.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The encoded source segment for `source`.
pub fn encode_source(source: &str) -> String {
    URL_SAFE_NO_PAD.encode(source.as_bytes())
}

impl SigningKeys {
    /// From `tenant:secret` items and the lines of a keys file (blank lines and `#` comments
    /// skipped). Secrets follow the bearer tokens' rules (at least 16 characters, no
    /// whitespace or commas).
    pub fn parse(items: &[String], file_text: Option<&str>) -> Result<SigningKeys, TokenError> {
        let lines = file_text.into_iter().flat_map(str::lines).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let mut keys = Vec::new();
        for item in items.iter().map(String::as_str).chain(lines) {
            let (tenant, secret) = parse_pair(item)?;
            keys.push(Key { tenant, secret: secret.into_bytes() });
        }
        Ok(SigningKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The tenant of the key under which `signature` signs `message`. Every key is tried.
    pub fn tenant_of(&self, signature: &str, message: &str) -> Option<&str> {
        let presented = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut found = None;
        for k in &self.keys {
            let mut mac = HmacSha256::new_from_slice(&k.secret).expect("HMAC takes a key of any size");
            mac.update(message.as_bytes());
            if mac.verify_slice(&presented).is_ok() && found.is_none() {
                found = Some(k.tenant.as_str());
            }
        }
        found
    }

    /// Verifies `rest` (the raw path after `/v1/thumbnail/`) and reads what it asks for. The
    /// signature is checked before anything else in the path is looked at.
    pub fn verify(&self, rest: &str) -> Result<Signed, SignedError> {
        if rest.len() > MAX_PATH_LEN {
            return Err(SignedError::Shape);
        }
        let (signature, tail) = rest.split_once('/').ok_or(SignedError::Shape)?;
        let message = format!("/{tail}");
        let tenant = self.tenant_of(signature, &message).ok_or(SignedError::BadSignature)?.to_owned();
        let (options, encoded) = tail.split_once('/').ok_or(SignedError::Shape)?;
        if encoded.is_empty() || encoded.contains('/') {
            return Err(SignedError::Shape);
        }
        let output = parse_options(options)?;
        let source = URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
            .ok_or(SignedError::Source)?;
        Ok(Signed { tenant, message, source, output })
    }
}

/// `w:256,h:256,fit:cover,f:webp,q:80,bg:ffffff` → the thumbnail spec's output object.
pub fn parse_options(options: &str) -> Result<Value, SignedError> {
    let bad = |m: String| SignedError::Options(m);
    let mut out = Map::new();
    let mut format = "webp".to_owned();
    for item in options.split(',').filter(|s| !s.is_empty()) {
        let (name, value) = item.split_once(':').ok_or_else(|| bad(format!("{item:?} is not name:value")))?;
        let number = || value.parse::<u32>().map_err(|_| bad(format!("{name}:{value} is not a whole number")));
        let field = match name {
            "w" => ("width", json!(number()?)),
            "h" => ("height", json!(number()?)),
            "q" => ("quality", json!(number()?)),
            "fit" => ("fit", json!(value)),
            "bg" if value.len() == 6 || value.len() == 8 => ("background", json!(format!("#{value}"))),
            "f" => {
                format = value.to_owned();
                continue;
            }
            _ => return Err(bad(format!("unknown option {item:?} (w, h, fit, f, q, bg)"))),
        };
        if out.insert(field.0.to_owned(), field.1).is_some() {
            return Err(bad(format!("{name} given twice")));
        }
    }
    if !out.contains_key("width") && !out.contains_key("height") {
        return Err(bad("w or h is required".into()));
    }
    if !matches!(format.as_str(), "jpeg" | "png" | "webp" | "avif") {
        return Err(bad(format!("f:{format} is not jpeg, png, webp or avif")));
    }
    out.insert("name".into(), json!(format!("thumb.{format}")));
    out.insert("format".into(), json!(format));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's test vector (section "Signed thumbnail URLs").
    const VECTOR_KEY: &str = "acme:kiln-test-vector-secret-0001";
    const VECTOR_SOURCE: &str = "file:///srv/media/cat.jpg";
    const VECTOR_OPTIONS: &str = "w:256,h:256,fit:cover,f:webp,q:80";
    const VECTOR_ENCODED: &str = "ZmlsZTovLy9zcnYvbWVkaWEvY2F0LmpwZw";
    const VECTOR_SIGNATURE: &str = "sMd0vcIIzEXK8VvsjJgtV8ZEp5PLNCgqlnR-4hHXPbQ";

    fn keys(items: &[&str]) -> SigningKeys {
        SigningKeys::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None).unwrap()
    }

    fn vector_message() -> String {
        format!("/{VECTOR_OPTIONS}/{VECTOR_ENCODED}")
    }

    #[test]
    fn the_readme_vector_holds_here_and_in_python() {
        assert_eq!(encode_source(VECTOR_SOURCE), VECTOR_ENCODED);
        let secret = VECTOR_KEY.split_once(':').unwrap().1;
        assert_eq!(sign(secret.as_bytes(), &vector_message()), VECTOR_SIGNATURE);
        // An independent implementation: Python's hmac and base64 modules.
        let script = format!(
            "import base64,hashlib,hmac\n\
             src=base64.urlsafe_b64encode({VECTOR_SOURCE:?}.encode()).rstrip(b'=').decode()\n\
             msg='/{VECTOR_OPTIONS}/'+src\n\
             sig=base64.urlsafe_b64encode(hmac.new({secret:?}.encode(),msg.encode(),hashlib.sha256).digest()).rstrip(b'=').decode()\n\
             print(src, sig)\n"
        );
        let out = std::process::Command::new("python3").arg("-c").arg(&script).output().expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{VECTOR_ENCODED} {VECTOR_SIGNATURE}"));
        // And the README states the same vector.
        let readme = include_str!("../../README.md");
        for part in [VECTOR_KEY, VECTOR_SOURCE, VECTOR_OPTIONS, VECTOR_ENCODED, VECTOR_SIGNATURE] {
            assert!(readme.contains(part), "README.md does not state {part}");
        }
    }

    #[test]
    fn verification_names_the_tenant_and_refuses_forgeries() {
        let k = keys(&[VECTOR_KEY, "beta:another-secret-000000002"]);
        let path = format!("{VECTOR_SIGNATURE}{}", vector_message());
        let s = k.verify(&path).unwrap();
        assert_eq!(s.tenant, "acme");
        assert_eq!(s.source, VECTOR_SOURCE);
        assert_eq!(s.output, json!({"name":"thumb.webp","width":256,"height":256,"fit":"cover","format":"webp","quality":80}));
        // A key signs for its own tenant; a rotated-in key works beside the old one.
        let beta = sign(b"another-secret-000000002", &vector_message());
        assert_eq!(k.verify(&format!("{beta}{}", vector_message())).unwrap().tenant, "beta");
        // Forged, replayed onto another path, truncated, missing: refused before any parsing.
        let other = format!("/w:4096,h:4096/{VECTOR_ENCODED}");
        for bad in [
            format!("AAAA{}", vector_message()),
            format!("{VECTOR_SIGNATURE}{other}"),
            format!("{}{}", &VECTOR_SIGNATURE[..42], vector_message()),
            vector_message()[1..].to_string(),
            format!("{VECTOR_SIGNATURE}{}x", vector_message()),
            format!("{VECTOR_SIGNATURE}=/{VECTOR_OPTIONS}/{VECTOR_ENCODED}"),
        ] {
            assert_eq!(k.verify(&bad), Err(SignedError::BadSignature), "{bad}");
        }
        assert_eq!(keys(&["gone:another-secret-000000003"]).verify(&path), Err(SignedError::BadSignature));
        assert_eq!(SigningKeys::default().verify(&path), Err(SignedError::BadSignature));
        assert_eq!(k.verify("no-slash"), Err(SignedError::Shape));
    }

    #[test]
    fn options_parse_and_bad_ones_are_named() {
        assert_eq!(parse_options("h:64").unwrap(), json!({"name":"thumb.webp","height":64,"format":"webp"}));
        assert_eq!(parse_options("w:8,f:png,bg:ff000080").unwrap()["background"], "#ff000080");
        for bad in ["", "f:png", "w:x", "w:1,w:2", "zoom:2,w:1", "w:1,f:gif", "w1", "w:1,bg:red"] {
            assert!(matches!(parse_options(bad), Err(SignedError::Options(_))), "{bad}");
        }
    }
}
