//! The S3 object store (worker/src/store/s3.rs) against moto_server, a local S3-compatible
//! server (`bash scripts/fetch-tools.sh` installs it into `.tools/venv`): the store's calls
//! one by one, a multipart upload, conditional writes, a server that goes away, and
//! `kiln run` end to end with an `s3://` store, input and output.

use bytes::Bytes;
use kiln_jobs::{ObjectStore, StoreError};
use kiln_tests::moto::{Moto, AWS_ENV};
use kiln_tests::{image_magic, run_jobs_full, workspace_root};
use kiln_worker::config::S3Config;
use kiln_worker::store::s3::S3Store;
use kiln_worker::store::StoreRouter;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use url::Url;

fn s3_config(moto: &Moto) -> S3Config {
    S3Config { endpoint: Some(moto.endpoint()), path_style: true, region: Some("us-east-1".into()) }
}

async fn store(moto: &Moto) -> S3Store {
    S3Store::connect(&s3_config(moto)).await
}

/// The ETag of an object (a multipart upload's ends in `-{parts}`).
async fn etag(store: &S3Store, bucket: &str, key: &str) -> String {
    let out = store.client().head_object().bucket(bucket).key(key).send().await.expect("HEAD object");
    out.e_tag().unwrap_or_default().trim_matches('"').to_string()
}

fn u(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn put_get_head_list_delete_round_trip() {
    let moto = Moto::start();
    rt().block_on(async {
        moto.create_bucket("roundtrip");
        // Through the router, as jobs see it: its s3:// arm builds the client on first use.
        let s = StoreRouter::new(s3_config(&moto));
        let a = u("s3://roundtrip/jobs/j1/a.bin");
        s.put(&a, Bytes::from_static(b"hello"), "application/octet-stream").await.unwrap();
        assert_eq!(&s.get(&a, 100).await.unwrap()[..], b"hello");
        assert_eq!(&s.get(&a, 5).await.unwrap()[..], b"hello", "exactly at the limit is fine");
        assert!(matches!(s.get(&a, 4).await, Err(StoreError::TooLarge { limit: 4, .. })));
        assert_eq!(s.head(&a).await.unwrap().unwrap().size, 5);
        let mut streamed = Vec::new();
        s.open(&a).await.unwrap().read_to_end(&mut streamed).await.unwrap();
        assert_eq!(streamed, b"hello");

        s.put(&u("s3://roundtrip/jobs/j1/b/c%20d.bin"), Bytes::from_static(b"xy"), "x").await.unwrap();
        s.put(&u("s3://roundtrip/jobs/j2/a.bin"), Bytes::from_static(b"x"), "x").await.unwrap();
        let listed = s.list(&u("s3://roundtrip/jobs/j1/")).await.unwrap();
        let names: Vec<_> = listed.iter().map(|m| (m.uri.as_str(), m.size)).collect();
        assert_eq!(names, [("s3://roundtrip/jobs/j1/a.bin", 5), ("s3://roundtrip/jobs/j1/b/c%20d.bin", 2)]);
        assert_eq!(s.list(&u("s3://roundtrip/jobs/j")).await.unwrap().len(), 3);
        assert!(s.list(&u("s3://roundtrip/nothing/")).await.unwrap().is_empty());
        // A listed URI names the object it lists.
        assert_eq!(&s.get(&listed[1].uri, 10).await.unwrap()[..], b"xy");

        s.delete(&a).await.unwrap();
        s.delete(&a).await.unwrap();
        assert!(s.head(&a).await.unwrap().is_none());
        assert!(matches!(s.get(&a, 100).await, Err(StoreError::NotFound(_))));
        assert!(matches!(s.open(&a).await, Err(StoreError::NotFound(_))));

        // A missing bucket: NotFound, and the message names the bucket.
        for e in [
            s.get(&u("s3://no-such-bucket/k"), 10).await.unwrap_err(),
            s.put(&u("s3://no-such-bucket/k"), Bytes::from_static(b"x"), "x").await.unwrap_err(),
            s.list(&u("s3://no-such-bucket/")).await.unwrap_err(),
            s.delete(&u("s3://no-such-bucket/k")).await.unwrap_err(),
        ] {
            assert!(matches!(&e, StoreError::NotFound(m) if m.contains("\"no-such-bucket\"")), "{e:?}");
        }
        assert!(matches!(s.get(&u("s3://roundtrip/"), 10).await, Err(StoreError::UnsupportedUri(_))));
    });
}

#[test]
fn list_pages_past_one_thousand_keys() {
    let moto = Moto::start();
    rt().block_on(async {
        moto.create_bucket("many");
        let s = Arc::new(store(&moto).await);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1050 {
            let s = s.clone();
            tasks.spawn(async move { s.put(&u(&format!("s3://many/p/{i:05}")), Bytes::from_static(b"."), "x").await });
            if tasks.len() >= 16 {
                tasks.join_next().await.unwrap().unwrap().unwrap();
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        let listed = s.list(&u("s3://many/p/")).await.unwrap();
        assert_eq!(listed.len(), 1050);
        assert_eq!(listed[1049].uri.as_str(), "s3://many/p/01049");
    });
}

#[test]
fn put_file_of_a_large_file_goes_multipart_and_reads_back_identical() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    // 52 MiB + a bit, not a multiple of the part size; pseudo-random, so misplaced parts show.
    let size: usize = (52 << 20) + 12_345;
    let mut want = Sha256::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for b in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n]).unwrap();
            want.update(&chunk[..n]);
            left -= n;
        }
    }
    let want = want.finalize();
    rt().block_on(async {
        moto.create_bucket("big");
        let s = store(&moto).await;
        let dst = u("s3://big/objects/big.bin");
        s.put_file(&dst, &src, "application/octet-stream").await.unwrap();
        assert_eq!(s.head(&dst).await.unwrap().unwrap().size, size as u64);
        // 8 MiB parts: 7 of them.
        let big_etag = etag(&s, "big", "objects/big.bin").await;
        assert!(big_etag.ends_with("-7"), "expected a 7-part multipart ETag, got {big_etag:?}");
        // Streamed back and hashed as it comes.
        let mut r = s.open(&dst).await.unwrap();
        let mut got = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0usize;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.update(&buf[..n]);
            n_total += n;
        }
        assert_eq!(n_total, size);
        assert_eq!(got.finalize(), want, "the object differs from the file");
        // Small files go up in one PUT.
        let small = dir.path().join("small.bin");
        std::fs::write(&small, b"small").unwrap();
        s.put_file(&u("s3://big/small.bin"), &small, "x").await.unwrap();
        assert!(!etag(&s, "big", "small.bin").await.contains('-'));
        assert_eq!(&s.get(&u("s3://big/small.bin"), 10).await.unwrap()[..], b"small");
        // A missing local file is NotFound; a missing bucket fails a multipart upload too.
        let e = s.put_file(&u("s3://big/x"), &dir.path().join("nope"), "x").await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
        let e = s.put_file(&u("s3://no-bucket/x"), &src, "x").await.unwrap_err();
        assert!(matches!(&e, StoreError::NotFound(m) if m.contains("no-bucket")), "{e:?}");
    });
}

#[test]
fn put_if_absent_writes_once() {
    let moto = Moto::start();
    rt().block_on(async {
        moto.create_bucket("cond");
        let s = store(&moto).await;
        let r = u("s3://cond/jobs/j/result.json");
        assert!(s.put_if_absent(&r, Bytes::from_static(b"1"), "application/json").await.unwrap());
        assert!(!s.put_if_absent(&r, Bytes::from_static(b"2"), "application/json").await.unwrap());
        assert_eq!(&s.get(&r, 10).await.unwrap()[..], b"1");
    });
}

#[test]
fn put_if_version_is_a_compare_and_swap_on_the_etag() {
    let moto = Moto::start();
    rt().block_on(async {
        moto.create_bucket("cas");
        let s = store(&moto).await;
        let st = u("s3://cas/jobs/j/state.json");
        let v1 = s.put_if_version(&st, Bytes::from_static(b"one"), "application/json", None).await.unwrap();
        let again = s.put_if_version(&st, Bytes::from_static(b"dup"), "application/json", None).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let (got, v) = s.get_versioned(&st, 100).await.unwrap();
        assert_eq!((&got[..], &v), (&b"one"[..], &v1));
        let v2 = s.put_if_version(&st, Bytes::from_static(b"two"), "application/json", Some(&v1)).await.unwrap();
        assert_ne!(v1, v2);
        let stale = s.put_if_version(&st, Bytes::from_static(b"stale"), "application/json", Some(&v1)).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        assert_eq!(&s.get(&st, 100).await.unwrap()[..], b"two");
        let missing = s.get_versioned(&u("s3://cas/none"), 100).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
    });
}

#[test]
fn a_server_gone_away_is_unavailable_and_retryable() {
    let mut moto = Moto::start();
    rt().block_on(async {
        moto.create_bucket("gone");
        let s = store(&moto).await;
        let a = u("s3://gone/a");
        s.put(&a, Bytes::from_static(b"a"), "x").await.unwrap();
        moto.stop();
        let t0 = Instant::now();
        for e in [
            s.get(&a, 10).await.unwrap_err(),
            s.put(&a, Bytes::from_static(b"b"), "x").await.unwrap_err(),
            s.head(&a).await.unwrap_err(),
            s.list(&u("s3://gone/")).await.unwrap_err(),
        ] {
            assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
            assert!(e.is_retryable());
            assert!(e.into_input_error().retryable);
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "retries took {:?}", t0.elapsed());
    });
}

#[test]
fn kiln_run_with_an_s3_store_input_and_output() {
    let moto = Moto::start();
    let photo = workspace_root().join("data/mate-backgrounds/usr/share/backgrounds/mate/nature/Dune.jpg");
    assert!(photo.exists(), "{} is missing: run `bash scripts/fetch-photos.sh`", photo.display());
    let runtime = rt();
    let s = runtime.block_on(async {
        moto.create_bucket("e2e");
        let s = store(&moto).await;
        s.put_file(&u("s3://e2e/in/Dune.jpg"), &photo, "image/jpeg").await.unwrap();
        s
    });
    let job = json!({
        "id": "s3-thumb",
        "kind": "thumbnail",
        "input": {"source": "s3://e2e/in/Dune.jpg",
            "outputs": [{"name": "t.jpg", "width": 256, "height": 256, "fit": "inside", "format": "jpeg", "quality": 80}]},
        "output": "s3://e2e/out/",
    });
    let endpoint = moto.endpoint();
    let mut env = vec![
        ("KILN_STORE_URL", "s3://e2e/prefix/"),
        ("KILN_S3_ENDPOINT", endpoint.as_str()),
        ("KILN_S3_PATH_STYLE", "true"),
    ];
    env.extend_from_slice(AWS_ENV);
    let out = run_jobs_full(&job.to_string(), &env);
    assert_eq!(out.code, Some(0), "kiln run failed; results {:?}\n--- stderr\n{}", out.results, out.stderr);
    let r = out.by_id("s3-thumb");
    assert_eq!(r["status"], "succeeded", "{r:#}\n--- stderr\n{}", out.stderr);
    runtime.block_on(async {
        let thumb = s.get(&u("s3://e2e/out/t.jpg"), 10 << 20).await.unwrap();
        assert_eq!(image_magic(&thumb), Some("jpeg"));
        let result = s.get(&u("s3://e2e/prefix/jobs/s3-thumb/result.json"), 1 << 20).await.unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&result).unwrap();
        assert_eq!(stored["id"], "s3-thumb");
        assert_eq!(stored["status"], "succeeded");
    });
}

#[test]
fn a_failed_multipart_upload_is_aborted() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("shrinks.bin");
    std::fs::write(&src, vec![5u8; 60 << 20]).unwrap();
    rt().block_on(async {
        moto.create_bucket("abort");
        let s = Arc::new(store(&moto).await);
        let upload = {
            let (s, src) = (s.clone(), src.clone());
            tokio::spawn(async move { s.put_file(&u("s3://abort/x.bin"), &src, "x").await })
        };
        // Once the upload has begun, cut the file short: a later part cannot be read.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let open = s.client().list_multipart_uploads().bucket("abort").send().await.unwrap();
            if !open.uploads().is_empty() {
                break;
            }
            assert!(!upload.is_finished(), "the upload finished before it could be interrupted");
            assert!(Instant::now() < deadline, "no multipart upload began");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::fs::File::options().write(true).open(&src).unwrap().set_len(1 << 20).unwrap();
        let e = upload.await.unwrap().unwrap_err();
        assert!(!e.is_retryable(), "a local file that cannot be read is no transient failure: {e:?}");
        let open = s.client().list_multipart_uploads().bucket("abort").send().await.unwrap();
        assert!(open.uploads().is_empty(), "the failed upload was not aborted: {:?}", open.uploads());
        assert!(s.head(&u("s3://abort/x.bin")).await.unwrap().is_none());
    });
}
