//! Error paths: every bad input gets the spec's error code, status and a JSON body — never a 500.

use oci::Digest;
use reqwest::Method;
use serde_json::json;

use crate::common::Server;
use crate::images::{multi_arch, OCI_MANIFEST, PLATFORMS};

#[tokio::test]
async fn malformed_names_digests_and_references() {
    let s = Server::start();
    let c = s.client();
    let cases: &[(Method, &str, u16, &str)] = &[
        (Method::GET, "/v2/UPPER/manifests/latest", 400, "NAME_INVALID"),
        (Method::GET, "/v2/a//b/manifests/latest", 400, "NAME_INVALID"),
        (Method::GET, "/v2/a/manifests/sha256:totallywrong", 400, "DIGEST_INVALID"),
        (Method::GET, "/v2/a/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        (Method::GET, "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"),
        (Method::GET, "/v2/a/manifests/.INVALID", 404, "MANIFEST_UNKNOWN"),
        (Method::GET, "/v2/a/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        (Method::GET, "/v2/a/tags/list", 404, "NAME_UNKNOWN"),
        (Method::GET, "/v2/a/tags/list?n=abc", 400, "UNSUPPORTED"),
        (Method::PATCH, "/v2/a/blobs/uploads/not-a-session", 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::GET, "/v2/a/blobs/uploads/0123456789abcdef0123456789abcdef", 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::POST, "/v2/a/manifests/latest", 405, "UNSUPPORTED"),
        (Method::GET, "/v2/a/nothing/here", 404, "UNSUPPORTED"),
    ];
    for (m, path, status, code) in cases {
        let r = c.req(m.clone(), path, &[], None).await;
        assert_eq!(r.status.as_u16(), *status, "{m} {path}: {:?}", r.body);
        assert_eq!(r.error_code(), *code, "{m} {path}");
        assert!(!r.json()["errors"][0]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn wrong_digest_push_is_rejected_and_never_visible() {
    let s = Server::start();
    let c = s.client();
    let claimed = Digest::sha256_of(b"what I claim");
    let r = c
        .req(Method::POST, &format!("/v2/w/blobs/uploads/?digest={claimed}"), &[], Some(b"something else".to_vec()))
        .await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(c.req(Method::HEAD, &format!("/v2/w/blobs/{claimed}"), &[], None).await.status, 404);
    // Same through a session.
    let loc = c.req(Method::POST, "/v2/w/blobs/uploads/", &[], None).await.header("location").unwrap();
    let r = c.req(Method::PUT, &format!("{loc}?digest={claimed}"), &[], Some(b"also wrong".to_vec())).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(c.req(Method::HEAD, &format!("/v2/w/blobs/{claimed}"), &[], None).await.status, 404);
    assert!(std::fs::read_dir(s.data_dir.join("uploads")).unwrap().next().is_none(), "no leftovers");
}

#[tokio::test]
async fn out_of_order_chunks_get_416() {
    let s = Server::start();
    let c = s.client();
    let loc = c.req(Method::POST, "/v2/o/blobs/uploads/", &[], None).await.header("location").unwrap();
    let r = c.req(Method::PATCH, &loc, &[("content-range", "0-4")], Some(b"hello".to_vec())).await;
    assert_eq!(r.status, 202);
    let r = c.req(Method::PATCH, &loc, &[("content-range", "10-14")], Some(b"world".to_vec())).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.error_code(), "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range").as_deref(), Some("0-4"));
    let r = c.req(Method::PATCH, &loc, &[("content-range", "5-20")], Some(b"world".to_vec())).await;
    assert_eq!(r.status, 416, "range length must match the body");
    let r = c.req(Method::PATCH, &loc, &[("content-range", "garbage")], Some(b"world".to_vec())).await;
    assert_eq!(r.status, 416);
    // the session is still usable
    let r = c.req(Method::PATCH, &loc, &[("content-range", "5-9")], Some(b"world".to_vec())).await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn bad_ranges() {
    let s = Server::start();
    let c = s.client();
    let d = c.push_blob("rg", b"0123456789").await;
    let path = format!("/v2/rg/blobs/{d}");
    for range in ["bytes=10-", "bytes=5-2", "bytes=99-200"] {
        let r = c.req(Method::GET, &path, &[("range", range)], None).await;
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.error_code(), "SIZE_INVALID");
        assert_eq!(r.header("content-range").as_deref(), Some("bytes */10"), "{range}");
    }
    // Ranges we cannot use are ignored (RFC 9110): the whole blob.
    for range in ["bytes=abc", "lines=1-2", "bytes=0-1,3-4"] {
        let r = c.req(Method::GET, &path, &[("range", range)], None).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"0123456789"[..]), "{range}");
    }
}

#[tokio::test]
async fn bad_manifests() {
    let s = Server::start();
    let c = s.client();
    let put = |reference: &str, ct: &str, body: Vec<u8>| {
        let c = c.clone();
        let (reference, ct) = (reference.to_owned(), ct.to_owned());
        async move { c.push_manifest("m", &reference, &ct, &body).await }
    };
    let r = put("v1", OCI_MANIFEST, b"{not json".to_vec()).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "MANIFEST_INVALID"));
    let r = put("v1", OCI_MANIFEST, br#"{"schemaVersion":1}"#.to_vec()).await;
    assert_eq!(r.error_code(), "MANIFEST_INVALID");
    // references a blob that was never pushed
    let missing = Digest::sha256_of(b"missing");
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": missing.to_string(), "size": 7 },
        "layers": [],
    }))
    .unwrap();
    let r = put("v1", OCI_MANIFEST, m.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    // index whose child is missing
    let img = multi_arch(9, &PLATFORMS[..1], false, 10);
    let r = put("v1", &img.index.media_type, img.index.bytes.clone()).await;
    assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN");
    // pushed by digest, but the digest is of other bytes
    for b in &img.blobs {
        c.push_blob("m", &b.bytes).await;
    }
    let wrong = Digest::sha256_of(b"other");
    let r = put(&wrong.to_string(), OCI_MANIFEST, img.manifests[0].bytes.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "DIGEST_INVALID"));
    // Content-Type disagrees with the document
    let r = put("v1", "application/vnd.oci.image.index.v1+json", img.manifests[0].bytes.clone()).await;
    assert_eq!(r.error_code(), "MANIFEST_INVALID");
    // invalid tag on push
    let r = put("bad!tag", OCI_MANIFEST, img.manifests[0].bytes.clone()).await;
    assert_eq!(r.error_code(), "MANIFEST_INVALID");
    // oversized: 413 with an OCI body
    let mut big =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024 + 1));
    big.extend_from_slice(br#""}}"#);
    let r = put("big", OCI_MANIFEST, big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "SIZE_INVALID");
}
