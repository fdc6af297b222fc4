//! Isolation between upstreams and hosted repositories: no request reaches an upstream the operator did not
//! configure for that name, and no repository's content is served under another name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oci::Digest;
use reqwest::Method;

use crate::common::Server;
use crate::images::{multi_arch, noise, Content, OCI_INDEX, OCI_MANIFEST, PLATFORMS};

fn upstream(name: &str, url: &str, default: bool, extra: &str) -> String {
    format!("[[upstream]]\nname = \"{name}\"\nurl = \"{url}\"\ndefault = {default}\n{extra}\n")
}

/// Every registry request an upstream Wharf answered, whatever the endpoint.
async fn upstream_requests(up: &Server) -> u64 {
    up.metric("wharf_requests_total", &[]).await - up.metric("wharf_requests_total", &["endpoint=\"base\""]).await
}

#[tokio::test]
async fn an_unconfigured_ns_never_reaches_the_default_upstream() {
    let hub = Server::start();
    let img = multi_arch(71, &PLATFORMS[..1], false, 1_000);
    img.push(&hub.client(), "org/app", "v1").await;
    let mirror = Server::start_config(&upstream("docker.io", &hub.url, true, ""));
    let c = mirror.client();
    let before = upstream_requests(&hub).await;

    let r = c.get("/v2/org/app/manifests/v1?ns=quay.io").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{:?}", r.body);
    let r = c.get(&format!("/v2/org/app/blobs/{}?ns=quay.io", img.blobs[0].digest)).await;
    assert_eq!(r.status, 404);
    // nor through the default upstream's cache namespace
    let r = c.get("/v2/docker.io/org/app/manifests/v1?ns=quay.io").await;
    assert_eq!(r.status, 404);
    let r = c.req(Method::POST, "/v2/docker.io/org/app/blobs/uploads/?ns=quay.io", &[], None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "DENIED"));
    assert_eq!(upstream_requests(&hub).await, before, "no request may reach the upstream");

    // Hosted content of that name is what an unconfigured ns gets.
    let own = multi_arch(72, &PLATFORMS[..1], false, 100);
    own.push(&c, "org/app", "v1").await;
    let r = c.get("/v2/org/app/manifests/v1?ns=quay.io").await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &own.index.bytes[..]));
    assert!(r.header("oci-namespace").is_none());
    assert_eq!(upstream_requests(&hub).await, before);
}

#[tokio::test]
async fn a_hosted_repository_never_consults_the_default_upstream() {
    let hub = Server::start();
    let v10 = multi_arch(73, &PLATFORMS[..1], false, 1_000);
    let v11 = multi_arch(74, &PLATFORMS[..1], false, 1_000);
    v10.push(&hub.client(), "team/app", "1.0").await;
    v11.push(&hub.client(), "team/app", "1.1").await;
    let mirror = Server::start_config(&upstream("docker.io", &hub.url, true, ""));
    let c = mirror.client();
    let ours = multi_arch(75, &PLATFORMS[..1], false, 1_000);
    ours.push(&c, "team/app", "1.0").await;
    let before = upstream_requests(&hub).await;

    let r = c.get("/v2/team/app/manifests/1.1").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{:?}", r.body);
    let r = c.get(&format!("/v2/team/app/manifests/{}", v11.index.digest)).await;
    assert_eq!(r.status, 404);
    let r = c.req(Method::HEAD, &format!("/v2/team/app/blobs/{}", v11.blobs[0].digest), &[], None).await;
    assert_eq!(r.status, 404);
    let r = c.get("/v2/team/app/tags/list").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["1.0"]));
    assert_eq!(upstream_requests(&hub).await, before, "a hosted repository's misses stay local");
    // its own content is served
    let r = c.get("/v2/team/app/manifests/1.0").await;
    assert_eq!(&r.body[..], &ours.index.bytes[..]);

    // A name with no hosted content still goes to the default upstream, and lists the cache's tags.
    let r = c.req(Method::GET, "/v2/team/other/manifests/1.0", &[("accept", OCI_INDEX)], None).await;
    assert_eq!(r.status, 404);
    assert!(upstream_requests(&hub).await > before);
}

/// An upstream that answers like Docker Hub for repositories that do not exist: a Bearer challenge, an
/// anonymous token, then 401 for the repository even with that token. Counts the registry requests.
async fn refusing_upstream() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let challenge = format!("Bearer realm=\"{url}/token\",service=\"fake\"");
    let app = axum::Router::new()
        .route("/token", axum::routing::get(|| async { r#"{"token":"anonymous","expires_in":300}"# }))
        .fallback(move || {
            let (counter, challenge) = (counter.clone(), challenge.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [("content-type", "application/json".to_owned()), ("www-authenticate", challenge)],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )
            }
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test]
async fn upstream_401_is_a_cached_not_found_and_pushes_work() {
    let (url, hits) = refusing_upstream().await;
    let mirror =
        Server::start_config(&upstream("docker.io", &url, true, "negative_ttl_secs = 300\nmax_attempts = 1\n"));
    let c = mirror.client();
    let layer = noise(76, 2_000);
    let d = Digest::sha256_of(&layer);
    // The HEAD a pusher sends before uploading: 404, not 502.
    for _ in 0..3 {
        let r = c.req(Method::HEAD, &format!("/v2/newteam/app/blobs/{d}"), &[], None).await;
        assert_eq!(r.status, 404);
        let r = c.get("/v2/newteam/app/manifests/v1").await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    }
    let asked = hits.load(Ordering::SeqCst);
    // each lookup: the challenge, then the refusal with the token; remembered after that
    assert!(asked <= 4, "401s are remembered as not-found ({asked} upstream requests)");
    // The push itself works, and from then on the repository is hosted: no more upstream requests.
    let img = multi_arch(77, &PLATFORMS[..1], false, 500);
    img.push(&c, "newteam/app", "v1").await;
    let r = c.get("/v2/newteam/app/manifests/v2").await;
    assert_eq!(r.status, 404);
    let r = c.get("/v2/newteam/app/manifests/v1").await;
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    assert_eq!(hits.load(Ordering::SeqCst), asked);
}

#[tokio::test]
async fn blobs_are_not_visible_across_repositories() {
    let hub = Server::start();
    let shared = multi_arch(78, &PLATFORMS[..1], false, 3_000);
    shared.push(&hub.client(), "library/demo", "v1").await;
    shared.push(&hub.client(), "library/demo2", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(&config, upstream("docker.io", &hub.url, true, "")).unwrap();
    let data = dir.path().join("data");
    let mirror = Server::start_with(&data, &["--config", config.to_str().unwrap()]);
    let c = mirror.client();

    let secret = noise(79, 4_000);
    let d = c.push_blob("private/secret", &secret).await;
    for path in ["other/repo", "docker.io/anything/here", "library/demo"] {
        let r = c.get(&format!("/v2/{path}/blobs/{d}")).await;
        assert_eq!(r.status, 404, "{path} must not serve private/secret's blob");
        let r = c.req(Method::HEAD, &format!("/v2/{path}/blobs/{d}"), &[], None).await;
        assert_eq!(r.status, 404, "{path} HEAD");
    }
    let r = c.get(&format!("/v2/private/secret/blobs/{d}")).await;
    assert_eq!(&r.body[..], &secret[..]);
    for never in ["repos/other", "repos/docker.io/anything"] {
        assert!(!data.join(never).exists(), "a GET created {never}");
    }

    // Content the upstream confirms is shared without a second transfer: demo2 has the same layers.
    let blob = shared.blobs.iter().find(|b| b.media_type.contains("layer")).unwrap();
    let r = c.get(&format!("/v2/library/demo/blobs/{}", blob.digest)).await;
    assert_eq!(Digest::sha256_of(&r.body), blob.digest);
    let gets = hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await;
    let r = c.get(&format!("/v2/library/demo2/blobs/{}", blob.digest)).await;
    assert_eq!(Digest::sha256_of(&r.body), blob.digest);
    assert_eq!(hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await, gets, "no second fetch");
    // ... but not for a repository the upstream does not have it in.
    let r = c.get(&format!("/v2/library/elsewhere/blobs/{}", blob.digest)).await;
    assert_eq!(r.status, 404);
    assert!(!data.join("repos/docker.io/library/elsewhere").exists());
}

/// An artifact manifest whose subject is `subject`, pushed with its (empty) config.
pub(crate) async fn push_referrer(
    c: &crate::common::Client,
    repo: &str,
    subject: &Content,
    artifact_type: &str,
) -> Digest {
    let config = b"{}";
    let cd = c.push_blob(repo, config).await;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd.to_string(), "size": 2}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.bytes.len()},
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let d = Digest::sha256_of(&bytes);
    let r = c.push_manifest(repo, &d.to_string(), OCI_MANIFEST, &bytes).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    d
}

#[tokio::test]
async fn referrers_of_mirrored_images_come_from_the_upstream() {
    let hub = Server::start();
    let img = multi_arch(80, &PLATFORMS[..1], false, 1_000);
    img.push(&hub.client(), "library/signed", "v1").await;
    let sig = push_referrer(&hub.client(), "library/signed", &img.index, "application/vnd.example.sig").await;
    let unsigned = multi_arch(81, &PLATFORMS[..1], false, 1_000);
    unsigned.push(&hub.client(), "library/signed", "v2").await;
    let mirror = Server::start_config(&upstream(
        "docker.io",
        &hub.url,
        true,
        "tag_ttl_secs = 1\nmax_attempts = 1\nconnect_timeout_secs = 1\ntimeout_secs = 2\n",
    ));
    let c = mirror.client();
    let path = |d: &Digest| format!("/v2/docker.io/library/signed/referrers/{d}");

    // Nothing is cached, yet the signature is listed: the upstream was asked.
    let r = c.get(&path(&img.index.digest)).await;
    assert_eq!(r.status, 200);
    let listed: Vec<String> =
        r.json()["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, [sig.to_string()]);
    let r = c.get(&format!("{}?artifactType=application/vnd.example.sbom", path(&img.index.digest))).await;
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    let r = c.get(&path(&unsigned.index.digest)).await;
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    // Empty answers leave nothing on disk: any name and subject can be asked about.
    let r = c.get(&format!("/v2/docker.io/nobody/has-this/referrers/{}", Digest::sha256_of(b"random"))).await;
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    assert!(!mirror.data_dir.join("meta/mirror/referrers/docker.io/nobody").exists());
    assert!(!mirror.data_dir.join("repos/docker.io/nobody").exists());

    // Upstream gone: the kept answer, with a warning; a subject never asked about is an error, not "none".
    drop(hub);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = c.get(&path(&img.index.digest)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"][0]["digest"], sig.to_string());
    assert!(r.header("warning").is_some_and(|w| w.starts_with("299 ")), "stale answers carry a Warning");
    let r = c.get(&path(&Digest::sha256_of(b"never asked"))).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "UNAVAILABLE"));
}

#[tokio::test]
async fn release_tags_follow_upstream_rebuilds_by_default() {
    let hub = Server::start();
    let first = multi_arch(82, &PLATFORMS[..1], false, 500);
    let rebuilt = multi_arch(83, &PLATFORMS[..1], false, 500);
    first.push(&hub.client(), "library/base", "1.2.3").await;
    let mirror = Server::start_config(&upstream("docker.io", &hub.url, true, "tag_ttl_secs = 1\n"));
    let c = mirror.client();
    let get = || c.req(Method::GET, "/v2/library/base/manifests/1.2.3", &[("accept", OCI_INDEX)], None);
    assert_eq!(get().await.header("docker-content-digest"), Some(first.index.digest.to_string()));
    rebuilt.push(&hub.client(), "library/base", "1.2.3").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        get().await.header("docker-content-digest"),
        Some(rebuilt.index.digest.to_string()),
        "a full-semver tag is not frozen unless the operator says so"
    );
}

#[tokio::test]
async fn a_tag_deleted_upstream_is_served_stale_without_asking_again() {
    let hub = Server::start();
    let img = multi_arch(84, &PLATFORMS[..1], false, 500);
    img.push(&hub.client(), "library/gone", "v1").await;
    let mirror =
        Server::start_config(&upstream("docker.io", &hub.url, true, "tag_ttl_secs = 0\nnegative_ttl_secs = 300\n"));
    let c = mirror.client();
    let get = || c.req(Method::GET, "/v2/library/gone/manifests/v1", &[("accept", OCI_INDEX)], None);
    assert_eq!(get().await.status, 200);
    let r = hub.client().req(Method::DELETE, "/v2/library/gone/manifests/v1", &[], None).await;
    assert_eq!(r.status, 202);
    let heads = || hub.metric("wharf_requests_total", &["endpoint=\"manifest_head\""]);
    let before = heads().await;
    for _ in 0..3 {
        let r = get().await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &img.index.bytes[..]));
        assert!(r.header("warning").is_some_and(|w| w.contains("no longer exists")), "{:?}", r.header("warning"));
    }
    assert_eq!(heads().await, before + 1, "asked once, then negative-cached");
}

#[tokio::test]
async fn a_pinned_tag_is_not_moved_to_incomplete_content() {
    let hub = Server::start();
    let v1 = multi_arch(85, &PLATFORMS[..2], false, 2_000);
    let v2 = multi_arch(86, &PLATFORMS[..2], false, 2_000);
    v1.push(&hub.client(), "library/pinned", "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    let extra = "tag_ttl_secs = 1\nmax_attempts = 1\nconnect_timeout_secs = 1\ntimeout_secs = 2\n";
    std::fs::write(
        &config,
        format!(
            "{}[[sync]]\nupstream = \"docker.io\"\nrepository = \"library/pinned\"\ntags = [\"1.0\"]\n",
            upstream("docker.io", &hub.url, true, extra)
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(crate::common::wharf_bin())
        .args(["sync", "--no-progress", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mirror = Server::start_with(&data, &["--config", config.to_str().unwrap()]);
    let c = mirror.client();
    let get = || c.req(Method::GET, "/v2/library/pinned/manifests/1.0", &[("accept", OCI_INDEX)], None);

    // The upstream moves the tag: clients are told the new digest ...
    v2.push(&hub.client(), "library/pinned", "1.0").await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(get().await.header("docker-content-digest"), Some(v2.index.digest.to_string()));
    // ... but the stored tag stays on the complete, synced image: with the upstream gone, that is served.
    drop(hub);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = get().await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &v1.index.bytes[..]));
    for m in &v1.manifests {
        assert_eq!(c.get(&format!("/v2/library/pinned/manifests/{}", m.digest)).await.status, 200);
    }
}

#[tokio::test]
async fn host_like_names_are_reserved_for_mirrors() {
    let hub = Server::start();
    let mirror = Server::start_config(&upstream("docker.io", &hub.url, true, ""));
    let c = mirror.client();
    for name in ["ghcr.io/org/app", "localhost/app", "registry.local_5000.example/app"] {
        let r = c.req(Method::POST, &format!("/v2/{name}/blobs/uploads/"), &[], None).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "DENIED"), "{name}: {:?}", r.body);
        let r = c.push_manifest(name, "v1", OCI_INDEX, br#"{"schemaVersion":2,"manifests":[]}"#).await;
        assert_eq!(r.error_code(), "DENIED", "{name}");
    }
    // a dot later in the name is fine
    let img = multi_arch(87, &PLATFORMS[..1], false, 100);
    img.push(&c, "team/app.v2", "v1").await;
}

#[tokio::test]
async fn a_layer_with_urls_in_an_upstream_manifest_does_not_unlock_a_private_blob() {
    let hub = Server::start();
    let mirror = Server::start_config(&upstream("docker.io", &hub.url, true, ""));
    let c = mirror.client();
    let secret = noise(88, 3_000);
    let d = c.push_blob("private/secret", &secret).await;
    // On the upstream, someone publishes a manifest naming that digest as a non-distributable layer (the
    // upstream accepts it without holding the blob).
    let h = hub.client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = h.push_blob("attacker/x", config).await;
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": d.to_string(), "size": secret.len(), "urls": ["https://example.invalid/l"]}],
    }))
    .unwrap();
    assert_eq!(h.push_manifest("attacker/x", "t", OCI_MANIFEST, &m).await.status, 201);
    let r = c.req(Method::GET, "/v2/attacker/x/manifests/t", &[("accept", OCI_MANIFEST)], None).await;
    assert_eq!(r.status, 200);
    let r = c.get(&format!("/v2/attacker/x/blobs/{d}")).await;
    assert_eq!(r.status, 404, "the private blob must not be served through the attacker's manifest");
}

#[tokio::test]
async fn a_new_repository_can_be_pushed_while_the_default_upstream_is_down() {
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mirror = Server::start_config(&upstream(
        "docker.io",
        &gone,
        true,
        "max_attempts = 1\nconnect_timeout_secs = 1\ntimeout_secs = 2\n",
    ));
    let c = mirror.client();
    let layer = noise(89, 1_000);
    let r = c.req(Method::HEAD, &format!("/v2/fresh/app/blobs/{}", Digest::sha256_of(&layer)), &[], None).await;
    assert_eq!(r.status, 404, "the HEAD before an upload is a not-found, not a 5xx");
    let img = multi_arch(90, &PLATFORMS[..1], false, 500);
    img.push(&c, "fresh/app", "v1").await;
    assert_eq!(&c.get("/v2/fresh/app/manifests/v1").await.body[..], &img.index.bytes[..]);
}
