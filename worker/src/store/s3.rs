//! The S3 store (`s3://bucket/key`), on aws-sdk-s3: AWS itself or any S3-compatible server
//! (an endpoint override, path-style addressing).
//!
//! - Credentials come from the standard AWS chain; the region from `store.s3.region`, else
//!   the chain, else `us-east-1`.
//! - Large objects stream both ways: [`ObjectStore::open`] hands out the response body,
//!   [`ObjectStore::put_file`] reads the file in parts (a multipart upload above
//!   [`MULTIPART_THRESHOLD`], aborted on any failure), never the whole file at once.
//! - `put_if_absent` is a conditional write (`If-None-Match: *`; 412 means it existed);
//!   `put_if_version` is compare-and-swap on the ETag (`If-Match`, or `If-None-Match: *`).
//! - Errors: a missing key or bucket is `NotFound`, 403 is `Denied`; connection failures,
//!   timeouts, 5xx and throttling are `Unavailable` (retryable) once the SDK's own retries
//!   (standard mode, [`MAX_ATTEMPTS`] attempts with backoff) are spent.

use crate::config::S3Config;
use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use kiln_jobs::store::ByteStream;
use kiln_jobs::{ObjectMeta, ObjectStore, StoreError, Version};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use url::Url;

/// Files larger than this go up as a multipart upload.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// The smallest part of a multipart upload (S3's own minimum is 5 MiB).
pub const PART_SIZE: u64 = 8 << 20;
/// S3's limit on the parts of one upload.
const MAX_PARTS: u64 = 10_000;
/// Attempts per request, the first included (the SDK backs off between them).
pub const MAX_ATTEMPTS: u32 = 3;

/// An S3 bucket/key pair, parsed from `s3://bucket/key`.
struct Location {
    bucket: String,
    key: String,
}

fn location(uri: &Url) -> Result<Location, StoreError> {
    if uri.scheme() != "s3" {
        return Err(StoreError::UnsupportedUri(uri.to_string()));
    }
    let bucket = match uri.host_str() {
        Some(b) if !b.is_empty() => b.to_string(),
        _ => return Err(StoreError::UnsupportedUri(format!("{uri} (no bucket)"))),
    };
    let raw = uri.path().strip_prefix('/').unwrap_or(uri.path());
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| StoreError::UnsupportedUri(format!("{uri} (key is not UTF-8)")))?
        .into_owned();
    Ok(Location { bucket, key })
}

/// As [`location`], for calls on one object: the key may not be empty.
fn object(uri: &Url) -> Result<Location, StoreError> {
    let loc = location(uri)?;
    if loc.key.is_empty() || loc.key.ends_with('/') {
        return Err(StoreError::UnsupportedUri(format!("{uri} (no object key)")));
    }
    Ok(loc)
}

fn uri_of(bucket: &str, key: &str) -> Result<Url, StoreError> {
    let mut u = Url::parse(&format!("s3://{bucket}/"))
        .map_err(|e| StoreError::UnsupportedUri(format!("s3://{bucket}/ ({e})")))?;
    u.set_path(&format!("/{key}"));
    Ok(u)
}

/// Maps an SDK failure to a [`StoreError`]. `uri` names the object (or prefix) in messages.
fn map_err<E>(uri: &Url, bucket: &str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&e).to_string();
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            match (code, status) {
                ("NoSuchBucket", _) => StoreError::NotFound(format!("{uri}: bucket {bucket:?} does not exist")),
                ("NoSuchKey", _) | (_, 404) => StoreError::NotFound(uri.to_string()),
                ("AccessDenied", _) | (_, 401) | (_, 403) => StoreError::Denied(format!("{uri}: {detail}")),
                ("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout", _) | (_, 408 | 409 | 429) | (_, 500..) => {
                    StoreError::Unavailable(format!("{uri}: {detail}"))
                }
                _ => StoreError::Io { uri: uri.to_string(), source: std::io::Error::other(detail) },
            }
        }
        // The request body could not be produced (e.g. a local file changed under us): no
        // retry will help.
        SdkError::DispatchFailure(d) if d.is_user() => StoreError::Io { uri: uri.to_string(), source: std::io::Error::other(detail) },
        // Nothing (or nothing usable) came back: the network, a timeout, a broken response.
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("{uri}: {detail}"))
        }
        // The request could not even be built (e.g. no credentials, a bad endpoint).
        _ => StoreError::Io { uri: uri.to_string(), source: std::io::Error::other(detail) },
    }
}

/// The HTTP status of a service error, if that is what `e` is.
fn status_of<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    match e {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    }
}

/// A request body over `len` bytes of the file from `offset`, read as it is sent (and re-read
/// on a retry), never held whole in memory.
async fn file_body(uri: &Url, path: &Path, offset: u64, len: u64) -> Result<SdkByteStream, StoreError> {
    SdkByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(Length::Exact(len))
        .build()
        .await
        .map_err(|e| StoreError::Io { uri: uri.to_string(), source: std::io::Error::other(e) })
}

fn body_error(uri: &Url, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{uri}: reading the object body failed: {e}"))
}

/// Reads a GET response's body whole, refusing it past `limit` bytes.
async fn read_limited(uri: &Url, out: aws_sdk_s3::operation::get_object::GetObjectOutput, limit: u64) -> Result<Bytes, StoreError> {
    let too_large = || StoreError::TooLarge { uri: uri.to_string(), limit };
    // Refused on the declared length, before the body is read.
    let declared = out.content_length().and_then(|n| u64::try_from(n).ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let cap = declared.unwrap_or(limit);
    let mut buf = Vec::with_capacity(usize::try_from(cap.min(64 << 20)).unwrap_or(0));
    // One byte past the limit tells "exactly at the limit" from "over it".
    let mut body = out.body.into_async_read().take(limit.saturating_add(1));
    body.read_to_end(&mut buf).await.map_err(|e| body_error(uri, e))?;
    if buf.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

/// The S3 backend of the object store.
pub struct S3Store {
    client: Client,
}

impl S3Store {
    /// Builds a client from `store.s3` and the standard AWS chain. Sends no request.
    pub async fn connect(cfg: &S3Config) -> S3Store {
        let region = RegionProviderChain::first_try(cfg.region.clone().filter(|r| !r.is_empty()).map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build())
            .load()
            .await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.path_style);
        if let Some(ep) = cfg.endpoint.as_deref().filter(|e| !e.is_empty()) {
            b = b.endpoint_url(ep);
        }
        S3Store { client: Client::from_conf(b.build()) }
    }

    /// A store over a client built elsewhere.
    pub fn from_client(client: Client) -> S3Store {
        S3Store { client }
    }

    /// The SDK client, for what the store does not offer (tests, bucket administration).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts a GET of one object; the body is read by the caller.
    async fn get_object(&self, uri: &Url) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        let loc = object(uri)?;
        self.client.get_object().bucket(&loc.bucket).key(&loc.key).send().await.map_err(|e| map_err(uri, &loc.bucket, e))
    }

    async fn multipart(&self, uri: &Url, loc: &Location, path: &Path, size: u64, content_type: &str) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&loc.bucket)
            .key(&loc.key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| map_err(uri, &loc.bucket, e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(StoreError::Unavailable(format!("{uri}: the server returned no multipart upload id")));
        };
        let result = self.upload_parts(uri, loc, upload_id, path, size).await;
        if result.is_err() {
            // Best effort: an upload left behind costs storage until a lifecycle rule
            // removes it, but the error that matters is the one already in hand.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::warn!(%uri, error = %DisplayErrorContext(&e), "aborting a failed multipart upload failed");
            }
        }
        result
    }

    async fn upload_parts(&self, uri: &Url, loc: &Location, upload_id: &str, path: &Path, size: u64) -> Result<(), StoreError> {
        let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = part_size.min(size - offset);
            // A body over one slice of the file, read as it is sent (and re-read on a retry).
            let body = file_body(uri, path, offset, len).await?;
            let out = self
                .client
                .upload_part()
                .bucket(&loc.bucket)
                .key(&loc.key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| map_err(uri, &loc.bucket, e))?;
            parts.push(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_string)).part_number(number).build());
            offset += len;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&loc.bucket)
            .key(&loc.key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| map_err(uri, &loc.bucket, e))?;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, uri: &Url, limit: u64) -> Result<Bytes, StoreError> {
        read_limited(uri, self.get_object(uri).await?, limit).await
    }

    async fn open(&self, uri: &Url) -> Result<ByteStream, StoreError> {
        let out = self.get_object(uri).await?;
        // The inner box makes the reader `Unpin`, as `ByteStream` asks.
        Ok(Box::pin(Box::pin(out.body.into_async_read())))
    }

    async fn head(&self, uri: &Url) -> Result<Option<ObjectMeta>, StoreError> {
        let loc = object(uri)?;
        match self.client.head_object().bucket(&loc.bucket).key(&loc.key).send().await {
            Ok(out) => Ok(Some(ObjectMeta { uri: uri.clone(), size: out.content_length().unwrap_or(0).max(0) as u64 })),
            Err(e) => match map_err(uri, &loc.bucket, e) {
                // HEAD has no body, so a missing bucket is a bare 404 as well.
                StoreError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn put(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<(), StoreError> {
        let loc = object(uri)?;
        self.client
            .put_object()
            .bucket(&loc.bucket)
            .key(&loc.key)
            .content_type(content_type)
            .body(SdkByteStream::from(data))
            .send()
            .await
            .map_err(|e| map_err(uri, &loc.bucket, e))?;
        Ok(())
    }

    async fn put_file(&self, uri: &Url, path: &Path, content_type: &str) -> Result<(), StoreError> {
        let loc = object(uri)?;
        let size = tokio::fs::metadata(path).await.map_err(|e| StoreError::io(uri, e))?.len();
        if size > MULTIPART_THRESHOLD {
            return self.multipart(uri, &loc, path, size, content_type).await;
        }
        let body = file_body(uri, path, 0, size).await?;
        self.client
            .put_object()
            .bucket(&loc.bucket)
            .key(&loc.key)
            .content_type(content_type)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| map_err(uri, &loc.bucket, e))?;
        Ok(())
    }

    async fn put_if_absent(&self, uri: &Url, data: Bytes, content_type: &str) -> Result<bool, StoreError> {
        let loc = object(uri)?;
        let sent = self
            .client
            .put_object()
            .bucket(&loc.bucket)
            .key(&loc.key)
            .content_type(content_type)
            .if_none_match("*")
            .body(SdkByteStream::from(data))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(412) => Ok(false),
            Err(e) => Err(map_err(uri, &loc.bucket, e)),
        }
    }

    async fn get_versioned(&self, uri: &Url, limit: u64) -> Result<(Bytes, Version), StoreError> {
        let out = self.get_object(uri).await?;
        let etag = out.e_tag().map(str::to_owned).ok_or_else(|| StoreError::Unavailable(format!("{uri}: the server returned no ETag")))?;
        Ok((read_limited(uri, out, limit).await?, Version(etag)))
    }

    async fn put_if_version(&self, uri: &Url, data: Bytes, content_type: &str, expected: Option<&Version>) -> Result<Version, StoreError> {
        let loc = object(uri)?;
        let req = self.client.put_object().bucket(&loc.bucket).key(&loc.key).content_type(content_type);
        let req = match expected {
            None => req.if_none_match("*"),
            Some(v) => req.if_match(&v.0),
        };
        match req.body(SdkByteStream::from(data)).send().await {
            Ok(out) => match out.e_tag() {
                Some(etag) => Ok(Version(etag.to_owned())),
                None => Err(StoreError::Unavailable(format!("{uri}: the server returned no ETag"))),
            },
            // 412: the precondition failed; 409: a concurrent conditional write won the race.
            // 404: If-Match on an object that no longer exists.
            Err(e) if matches!(status_of(&e), Some(409 | 412)) || (status_of(&e) == Some(404) && e.code() != Some("NoSuchBucket")) => {
                Err(StoreError::Conflict(uri.to_string()))
            }
            Err(e) => Err(map_err(uri, &loc.bucket, e)),
        }
    }

    async fn delete(&self, uri: &Url) -> Result<(), StoreError> {
        let loc = object(uri)?;
        match self.client.delete_object().bucket(&loc.bucket).key(&loc.key).send().await {
            Ok(_) => Ok(()),
            // Deleting what is not there is done (S3 itself answers 204); a missing bucket is
            // still an error.
            Err(e) if status_of(&e) == Some(404) && e.code() != Some("NoSuchBucket") => Ok(()),
            Err(e) => Err(map_err(uri, &loc.bucket, e)),
        }
    }

    async fn list(&self, prefix: &Url) -> Result<Vec<ObjectMeta>, StoreError> {
        let loc = location(prefix)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&loc.bucket);
            if !loc.key.is_empty() {
                req = req.prefix(&loc.key);
            }
            if let Some(t) = token.take() {
                req = req.continuation_token(t);
            }
            let page = req.send().await.map_err(|e| map_err(prefix, &loc.bucket, e))?;
            for obj in page.contents() {
                if let Some(key) = obj.key() {
                    out.push(ObjectMeta { uri: uri_of(&loc.bucket, key)?, size: obj.size().unwrap_or(0).max(0) as u64 });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) && !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.uri.as_str().cmp(b.uri.as_str()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_bucket_and_key() {
        let l = object(&Url::parse("s3://b/jobs/j1/a%20b.json").unwrap()).unwrap();
        assert_eq!((l.bucket.as_str(), l.key.as_str()), ("b", "jobs/j1/a b.json"));
        let p = location(&Url::parse("s3://b/").unwrap()).unwrap();
        assert_eq!(p.key, "");
        assert!(matches!(object(&Url::parse("s3://b/").unwrap()), Err(StoreError::UnsupportedUri(_))));
        assert!(matches!(object(&Url::parse("s3://b/dir/").unwrap()), Err(StoreError::UnsupportedUri(_))));
        assert!(matches!(location(&Url::parse("file:///x").unwrap()), Err(StoreError::UnsupportedUri(_))));
        let u = uri_of("b", "a b/c.json").unwrap();
        assert_eq!(u.as_str(), "s3://b/a%20b/c.json");
        assert_eq!(object(&u).unwrap().key, "a b/c.json");
    }

    #[tokio::test]
    async fn connecting_sends_nothing() {
        // Nothing listens on the endpoint: building the client must not touch it.
        let s = S3Store::connect(&S3Config { endpoint: Some("http://127.0.0.1:9".into()), path_style: true, region: Some("us-east-1".into()) }).await;
        assert_eq!(s.client.config().region().map(|r| r.as_ref()), Some("us-east-1"));
    }
}
