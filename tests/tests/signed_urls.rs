//! Signed thumbnail URLs (`GET /v1/thumbnail/{signature}/{options}/{encoded source}`) end to
//! end against `kiln serve`: a signed URL answers the image with `Cache-Control` and a strong
//! `ETag` (304 on `If-None-Match`), a repeated URL is served from the stored result, and
//! forged, replayed, retired-key and unsigned requests are 403 with nothing run or written; a
//! signed source outside `sources.allow` is `forbidden` like any job's.

use kiln_tests::proc::{kiln, serve, wait_ready, Proc};
use kiln_tests::scratch_dir;
use kiln_worker::signing::{encode_source, sign};
use std::path::{Path, PathBuf};
use std::time::Duration;

const KEY_OLD: &str = "acme-signing-key-000001";
const KEY_NEW: &str = "acme-signing-key-000002";
const KEY_RETIRED: &str = "acme-signing-key-000000";
const TOKEN: &str = "acme-token-0000000001";

fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(8, 6, image::Rgb([20, 120, 220]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// `/{options}/{encoded source}` and its URL signed with `secret`.
fn signed(secret: &str, options: &str, source: &str) -> (String, String) {
    let path = format!("/{options}/{}", encode_source(source));
    (path.clone(), format!("/v1/thumbnail/{}{path}", sign(secret.as_bytes(), &path)))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn signed_urls_serve_cacheable_thumbnails_and_refuse_forgeries() {
    let root = scratch_dir("signed").canonicalize().unwrap();
    let (store, media) = (root.join("store"), root.join("media"));
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("a.png"), tiny_png()).unwrap();
    std::fs::write(root.join("secret.png"), tiny_png()).unwrap();
    let mut cmd = kiln();
    cmd.env("KILN_STORE_URL", format!("file://{}/", store.display()))
        .env("KILN_SOURCES_ALLOW", format!("file://{}/", media.display()))
        .env("KILN_HTTP_TOKENS", format!("acme:{TOKEN}"))
        .env("KILN_THUMBNAIL_KEYS", format!("acme:{KEY_OLD},acme:{KEY_NEW}"))
        .env("KILN_THUMBNAIL_MAX_AGE_S", "3600")
        .env("KILN_LOG", "warn")
        .env_remove("KILN_CONFIG");
    let (_proc, base): (Proc, String) = serve(&mut cmd);
    wait_ready(&base, Duration::from_secs(60));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let get = |path: &str, inm: Option<&str>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(v) = inm {
            req = req.header("if-none-match", v);
        }
        req.send().unwrap()
    };
    let source = format!("file://{}", media.join("a.png").display());

    // A signed URL: the image, cacheable, with a strong ETag; no bearer token needed.
    let (msg, url) = signed(KEY_OLD, "w:4,h:3,fit:fill,f:png", &source);
    let r = get(&url, None);
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["cache-control"], "public, max-age=3600");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "{etag}");
    let img = image::load_from_memory(&r.bytes().unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (4, 3));
    let outputs_after_first = files_under(&store.join("outputs"));
    assert_eq!(outputs_after_first.len(), 1, "{outputs_after_first:?}");

    // Revalidation: 304 with the same ETag and no body; another ETag gets the image again.
    let r = get(&url, Some(&etag));
    assert_eq!(r.status().as_u16(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().unwrap().is_empty());
    let r = get(&url, Some("\"0000\", W/\"1111\""));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag, "the same bytes, from the stored result");

    // The new key works beside the old one (rotation), and names the same tenant.
    let (_, url_new) = signed(KEY_NEW, "w:4,h:3,fit:fill,f:png", &source);
    assert_eq!(get(&url_new, None).status().as_u16(), 200);

    // Forged, replayed onto other options or another source, retired key, no signature at
    // all: 403, and nothing new is run or written.
    let sig = url.split('/').nth(3).unwrap().to_owned();
    let other_src = format!("/w:4,h:3,fit:fill,f:png/{}", encode_source(&format!("file://{}", media.join("b.png").display())));
    let forged = [
        format!("/v1/thumbnail/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA{msg}"),
        format!("/v1/thumbnail/{sig}/w:4096,h:4096,fit:fill,f:png/{}", encode_source(&source)),
        format!("/v1/thumbnail/{sig}{other_src}"),
        signed(KEY_RETIRED, "w:4,h:3,fit:fill,f:png", &source).1,
        format!("/v1/thumbnail{msg}"),
    ];
    for path in &forged {
        let r = get(path, None);
        assert_eq!(r.status().as_u16(), 403, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{path}: {body}");
    }
    // A bearer token does not stand in for a signature.
    let r = client.get(format!("{base}{}", forged[0])).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Properly signed, but outside sources.allow: forbidden by confinement, nothing written.
    let (_, outside) = signed(KEY_OLD, "w:4,f:png", &format!("file://{}", root.join("secret.png").display()));
    let r = get(&outside, None);
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    // Signed, but bad options: 400.
    let (_, bad) = signed(KEY_OLD, "w:4,zoom:9", &source);
    assert_eq!(get(&bad, None).status().as_u16(), 400);

    // Only the two good requests' outputs exist (old key's and new key's: one per tenant+path
    // is one job, and both keys are acme's but sign the same path → the same job).
    assert_eq!(files_under(&store.join("outputs")), outputs_after_first);
}
