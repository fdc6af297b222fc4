//! Every endpoint's success path over HTTP against the real binary.

use oci::Digest;
use reqwest::Method;
use serde_json::json;

use crate::common::Server;
use crate::images::{self, multi_arch, OCI_INDEX, OCI_MANIFEST, PLATFORMS};

#[tokio::test]
async fn base_endpoint_and_api_version_header() {
    let s = Server::start();
    let r = s.client().get("/v2/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-distribution-api-version").as_deref(), Some("registry/2.0"));
    assert_eq!(s.client().get("/v2").await.status, 200);
}

#[tokio::test]
async fn push_and_pull_multi_arch_index() {
    let s = Server::start();
    let c = s.client();
    let img = multi_arch(1, PLATFORMS, false, 3000);
    img.push(&c, "team/app", "v1").await;

    for m in &img.manifests {
        let r = c.get(&format!("/v2/team/app/manifests/{}", m.digest)).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], &m.bytes[..], "exact bytes");
    }
    let r = c.req(Method::GET, "/v2/team/app/manifests/v1", &[("accept", OCI_INDEX)], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    assert_eq!(r.header("content-type").as_deref(), Some(OCI_INDEX));
    assert_eq!(r.header("docker-content-digest"), Some(img.index.digest.to_string()));

    // HEAD carries the headers containerd needs, and no body.
    let r = c.req(Method::HEAD, "/v2/team/app/manifests/v1", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(img.index.bytes.len().to_string()));
    assert_eq!(r.header("docker-content-digest"), Some(img.index.digest.to_string()));
    assert_eq!(r.header("content-type").as_deref(), Some(OCI_INDEX));
    assert!(r.body.is_empty());

    for b in &img.blobs {
        let r = c.get(&format!("/v2/team/app/blobs/{}", b.digest)).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], &b.bytes[..]);
        assert_eq!(Digest::sha256_of(&r.body), b.digest);
    }
    // Blobs are per repository.
    assert_eq!(c.get(&format!("/v2/other/blobs/{}", img.blobs[0].digest)).await.status, 404);
}

#[tokio::test]
async fn content_negotiation() {
    let s = Server::start();
    let c = s.client();
    let img = multi_arch(2, &PLATFORMS[..1], false, 10);
    img.push(&c, "neg", "v1").await;
    let r = c.req(Method::GET, "/v2/neg/manifests/v1", &[("accept", images::DOCKER_MANIFEST)], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
    let wide = format!("{OCI_MANIFEST}, {OCI_INDEX}");
    assert_eq!(c.req(Method::GET, "/v2/neg/manifests/v1", &[("accept", &wide)], None).await.status, 200);
    assert_eq!(c.req(Method::GET, "/v2/neg/manifests/v1", &[("accept", "*/*")], None).await.status, 200);
}

#[tokio::test]
async fn chunked_upload_status_and_cancel() {
    let s = Server::start();
    let c = s.client();
    let data = images::noise(7, 300_000);
    let r = c.req(Method::POST, "/v2/up/blobs/uploads/", &[], None).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range").as_deref(), Some("0-0"));
    let loc = r.header("location").unwrap();
    let mut offset = 0;
    for chunk in data.chunks(100_000) {
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let r = c
            .req(
                Method::PATCH,
                &loc,
                &[("content-range", &range), ("content-type", "application/octet-stream")],
                Some(chunk.to_vec()),
            )
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        offset += chunk.len();
        assert_eq!(r.header("range"), Some(format!("0-{}", offset - 1)));
    }
    let r = c.get(&loc).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some(format!("0-{}", data.len() - 1)));
    let d = Digest::sha256_of(&data);
    let r = c.req(Method::PUT, &format!("{loc}?digest={d}"), &[], None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some(format!("/v2/up/blobs/{d}")));
    assert_eq!(c.get(&format!("/v2/up/blobs/{d}")).await.body.len(), data.len());

    // POST then a single PUT with the whole body.
    let r = c.req(Method::POST, "/v2/up/blobs/uploads/", &[], None).await;
    let loc = r.header("location").unwrap();
    let small = b"single put".to_vec();
    let d2 = Digest::sha256_of(&small);
    assert_eq!(c.req(Method::PUT, &format!("{loc}?digest={d2}"), &[], Some(small)).await.status, 201);

    // cancel
    let loc = c.req(Method::POST, "/v2/up/blobs/uploads/", &[], None).await.header("location").unwrap();
    assert_eq!(c.req(Method::DELETE, &loc, &[], None).await.status, 204);
    let r = c.get(&loc).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[tokio::test]
async fn cross_repository_mount() {
    let s = Server::start();
    let c = s.client();
    let d = c.push_blob("src/repo", b"shared layer").await;
    let r = c.req(Method::POST, &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"), &[], None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some(format!("/v2/dst/blobs/{d}")));
    assert_eq!(c.get(&format!("/v2/dst/blobs/{d}")).await.status, 200);
    // Not mountable: falls back to an upload session.
    let missing = Digest::sha256_of(b"nowhere");
    let r = c.req(Method::POST, &format!("/v2/dst/blobs/uploads/?mount={missing}&from=src/repo"), &[], None).await;
    assert_eq!(r.status, 202);
    assert!(r.header("location").unwrap().starts_with("/v2/dst/blobs/uploads/"));
}

#[tokio::test]
async fn blob_ranges_and_delete() {
    let s = Server::start();
    let c = s.client();
    let data = images::noise(3, 200_000);
    let d = c.push_blob("r", &data).await;
    let path = format!("/v2/r/blobs/{d}");
    let r = c.req(Method::GET, &path, &[("range", "bytes=100-199")], None).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 100-199/200000"));
    assert_eq!(&r.body[..], &data[100..200]);
    let r = c.req(Method::GET, &path, &[("range", "bytes=-10")], None).await;
    assert_eq!(&r.body[..], &data[data.len() - 10..]);
    let r = c.req(Method::GET, &path, &[("range", "bytes=199990-")], None).await;
    assert_eq!(&r.body[..], &data[199_990..]);
    let r = c.req(Method::HEAD, &path, &[], None).await;
    assert_eq!(r.header("content-length").as_deref(), Some("200000"));
    assert_eq!(c.req(Method::DELETE, &path, &[], None).await.status, 202);
    assert_eq!(c.req(Method::HEAD, &path, &[], None).await.status, 404);
}

#[tokio::test]
async fn tags_and_catalog_pagination() {
    let s = Server::start();
    let c = s.client();
    let img = multi_arch(4, &PLATFORMS[..1], false, 10);
    img.push(&c, "pag/a", "t00").await;
    for i in 1..25 {
        let r = c.push_manifest("pag/a", &format!("t{i:02}"), OCI_INDEX, &img.index.bytes).await;
        assert_eq!(r.status, 201);
    }
    let all = c.get("/v2/pag/a/tags/list").await.json();
    assert_eq!(all["name"], "pag/a");
    assert_eq!(all["tags"].as_array().unwrap().len(), 25);

    let mut seen = Vec::new();
    let mut next = Some("/v2/pag/a/tags/list?n=10".to_owned());
    while let Some(url) = next.take() {
        let r = c.get(&url).await;
        seen.extend(r.json()["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()));
        next = r.header("link").map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_owned());
    }
    let want: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    assert_eq!(seen, want);
    let r = c.get("/v2/pag/a/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], json!([]));
    assert!(r.header("link").is_none());
    assert_eq!(c.get("/v2/pag/a/tags/list?last=t22").await.json()["tags"], json!(["t23", "t24"]));

    for repo in ["pag/b", "pag/c", "zzz"] {
        img.push(&c, repo, "x").await;
    }
    let r = c.get("/v2/_catalog?n=2").await;
    assert_eq!(r.json()["repositories"], json!(["pag/a", "pag/b"]));
    assert!(r.header("link").unwrap().contains("last=pag%2Fb"));
    assert_eq!(c.get("/v2/_catalog?last=pag/b").await.json()["repositories"], json!(["pag/c", "zzz"]));
}

#[tokio::test]
async fn referrers_with_subject_and_filter() {
    let s = Server::start();
    let c = s.client();
    let img = multi_arch(5, &PLATFORMS[..1], false, 10);
    img.push(&c, "ref", "v1").await;
    let subject = &img.manifests[0];
    let empty = c.push_blob("ref", b"{}").await;
    let mk = |artifact: &str, note: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact,
            "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2 },
            "layers": [{ "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2 }],
            "subject": subject.descriptor(),
            "annotations": { "note": note },
        }))
        .unwrap()
    };
    let sig = mk("application/vnd.example.sig", "signature");
    let sbom = mk("application/vnd.example.sbom", "sbom");
    for m in [&sig, &sbom] {
        let d = Digest::sha256_of(m);
        let r = c.push_manifest("ref", &d.to_string(), OCI_MANIFEST, m).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.header("oci-subject"), Some(subject.digest.to_string()));
    }
    let r = c.get(&format!("/v2/ref/referrers/{}", subject.digest)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some(OCI_INDEX));
    let list = r.json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 2);
    let r = c.get(&format!("/v2/ref/referrers/{}?artifactType=application/vnd.example.sbom", subject.digest)).await;
    assert_eq!(r.header("oci-filters-applied").as_deref(), Some("artifactType"));
    let list = r.json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(list["manifests"][0]["annotations"]["note"], "sbom");
    assert_eq!(list["manifests"][0]["digest"], Digest::sha256_of(&sbom).to_string());
    // Unknown subject: an empty list, not a 404.
    let r = c.get(&format!("/v2/ref/referrers/{}", Digest::sha256_of(b"none"))).await;
    assert_eq!((r.status.as_u16(), r.json()["manifests"].clone()), (200, json!([])));
}

#[tokio::test]
async fn delete_manifest_by_tag_and_digest() {
    let s = Server::start();
    let c = s.client();
    let img = multi_arch(6, &PLATFORMS[..2], false, 10);
    img.push(&c, "del", "v1").await;
    c.push_manifest("del", "v2", OCI_INDEX, &img.index.bytes).await;
    assert_eq!(c.req(Method::DELETE, "/v2/del/manifests/v1", &[], None).await.status, 202);
    assert_eq!(c.get("/v2/del/manifests/v1").await.status, 404);
    assert_eq!(c.get("/v2/del/manifests/v2").await.status, 200);
    let by_digest = format!("/v2/del/manifests/{}", img.index.digest);
    assert_eq!(c.req(Method::DELETE, &by_digest, &[], None).await.status, 202);
    assert_eq!(c.get(&by_digest).await.status, 404);
    assert_eq!(c.get("/v2/del/manifests/v2").await.status, 404, "tags of a deleted manifest go with it");
    assert_eq!(c.req(Method::DELETE, &by_digest, &[], None).await.status, 404);
}

#[tokio::test]
async fn content_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let img = multi_arch(8, &PLATFORMS[..2], true, 1000);
    {
        let s = Server::start_with(dir.path(), &[]);
        img.push(&s.client(), "keep", "v1").await;
    }
    let s = Server::start_with(dir.path(), &[]);
    let r = s.client().get("/v2/keep/manifests/v1").await;
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    assert_eq!(r.header("content-type").as_deref(), Some(images::DOCKER_LIST));
}

#[tokio::test]
async fn only_non_distributable_layers_may_be_absent() {
    let s = Server::start();
    let c = s.client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let present = c.push_blob("team/foreign", b"a layer that is here").await;
    let absent = Digest::sha256_of(b"a layer that lives elsewhere");
    let elsewhere = json!(["https://example.invalid/layer"]);
    let manifest = |config_desc: serde_json::Value, extra: serde_json::Value| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": present.to_string(), "size": 20},
                extra,
            ],
        }))
        .unwrap()
    };
    let config_desc = |urls: bool| {
        let mut d = json!({"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::sha256_of(config).to_string(), "size": config.len()});
        if urls {
            d["urls"] = elsewhere.clone();
        }
        d
    };
    let layer = |media_type: &str| json!({"mediaType": media_type, "digest": absent.to_string(), "size": 28, "urls": elsewhere});
    let nondist = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

    // A config is never skipped, even with urls.
    let r = c.push_manifest("team/foreign", "a", OCI_MANIFEST, &manifest(config_desc(true), layer(nondist))).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"), "{:?}", r.body);
    c.push_blob("team/foreign", config).await;
    // An ordinary layer that merely carries urls must be here.
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    let r = c.push_manifest("team/foreign", "b", OCI_MANIFEST, &manifest(config_desc(true), layer(gz))).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"), "{:?}", r.body);
    // Non-distributable (and Docker foreign) layers may live elsewhere.
    let r = c.push_manifest("team/foreign", "c", OCI_MANIFEST, &manifest(config_desc(false), layer(nondist))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    let r = c.push_manifest("team/foreign", "d", OCI_MANIFEST, &manifest(config_desc(false), layer(foreign))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}
