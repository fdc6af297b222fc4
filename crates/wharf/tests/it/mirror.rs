//! The pull-through mirror: Wharf processes as upstream registries, one Wharf as the mirror in front.

use oci::Digest;
use reqwest::Method;

use crate::common::Server;
use crate::images::{multi_arch, noise, Image, OCI_INDEX, OCI_MANIFEST, PLATFORMS};

fn mirror_config(upstreams: &[(&str, &str, bool)], extra: &str) -> String {
    let mut t = String::new();
    for (name, url, default) in upstreams {
        t.push_str(&format!("[[upstream]]\nname = \"{name}\"\nurl = \"{url}\"\ndefault = {default}\n{extra}\n"));
    }
    t
}

async fn assert_serves_image(mirror: &Server, prefix: &str, query: &str, img: &Image) {
    let c = mirror.client();
    let accept = format!("{OCI_INDEX}, {}", crate::images::DOCKER_LIST);
    let r = c.req(Method::GET, &format!("/v2/{prefix}/manifests/v1{query}"), &[("accept", &accept)], None).await;
    assert_eq!(r.status, 200, "{prefix}: {:?}", r.body);
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    assert_eq!(r.header("docker-content-digest"), Some(img.index.digest.to_string()));
    for m in &img.manifests {
        let r = c.get(&format!("/v2/{prefix}/manifests/{}{query}", m.digest)).await;
        assert_eq!(&r.body[..], &m.bytes[..], "{prefix} manifest {}", m.digest);
        assert_eq!(r.header("content-type"), Some(m.media_type.clone()));
    }
    for b in &img.blobs {
        let r = c.get(&format!("/v2/{prefix}/blobs/{}{query}", b.digest)).await;
        assert_eq!(r.status, 200);
        assert_eq!(Digest::sha256_of(&r.body), b.digest, "{prefix} blob");
    }
}

#[tokio::test]
async fn three_routing_forms_share_one_cache_and_mirrors_are_read_only() {
    let hub = Server::start();
    let k8s = Server::start();
    let img = multi_arch(31, &PLATFORMS[..3], false, 40_000);
    img.push(&hub.client(), "library/demo", "v1").await;
    let pause = multi_arch(32, &PLATFORMS[..2], true, 10_000);
    pause.push(&k8s.client(), "pause", "v1").await;
    let mirror = Server::start_config(&mirror_config(
        &[("docker.io", &hub.url, true), ("registry.k8s.io", &k8s.url, false)],
        "",
    ));

    // containerd form, with the OCI-Namespace echo
    assert_serves_image(&mirror, "library/demo", "?ns=docker.io", &img).await;
    let r = mirror.client().get("/v2/library/demo/manifests/v1?ns=docker.io").await;
    assert_eq!(r.header("oci-namespace").as_deref(), Some("docker.io"));
    // path-prefix form, with and without library/
    assert_serves_image(&mirror, "docker.io/library/demo", "", &img).await;
    assert_serves_image(&mirror, "docker.io/demo", "", &img).await;
    // Docker daemon registry-mirrors form (default upstream, no ns)
    assert_serves_image(&mirror, "library/demo", "", &img).await;
    // a second upstream by ns and by prefix
    assert_serves_image(&mirror, "pause", "?ns=registry.k8s.io", &pause).await;
    assert_serves_image(&mirror, "registry.k8s.io/pause", "", &pause).await;

    // One cache: every blob was fetched from its upstream once, whatever the form.
    assert_eq!(hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await, img.blobs.len() as u64);
    assert_eq!(k8s.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await, pause.blobs.len() as u64);
    assert_eq!(mirror.metric("wharf_mirror_blob_fills_total", &["docker.io"]).await, img.blobs.len() as u64);

    // Mirrored namespaces are read-only; other repositories are a normal registry.
    let c = mirror.client();
    for (path, q) in [("docker.io/library/demo", ""), ("library/demo", "?ns=docker.io")] {
        let r = c.req(Method::POST, &format!("/v2/{path}/blobs/uploads/{q}"), &[], None).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "DENIED"), "{path}{q}");
        let r = c.push_manifest(path, &format!("v2{q}"), OCI_INDEX, &img.index.bytes).await;
        assert_eq!(r.error_code(), "DENIED");
    }
    let own = multi_arch(33, &PLATFORMS[..1], false, 100);
    own.push(&c, "team/app", "v1").await;
    assert_eq!(&c.get("/v2/team/app/manifests/v1").await.body[..], &own.index.bytes[..]);

    // Unknown names: 404 from the upstream, remembered briefly, never a 5xx.
    let r = c.get("/v2/library/nope/manifests/v1?ns=docker.io").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let r = c.get(&format!("/v2/library/demo/blobs/{}?ns=docker.io", Digest::sha256_of(b"nope"))).await;
    assert_eq!(r.status, 404);
    let status = c.get("/_wharf/mirror").await.json();
    assert_eq!(status["upstreams"][0]["name"], "docker.io");
    assert_eq!(status["upstreams"][0]["health"]["state"], "closed");
}

#[tokio::test]
async fn head_on_uncached_content_asks_the_upstream() {
    let hub = Server::start();
    let img = multi_arch(34, &PLATFORMS[..2], false, 5_000);
    img.push(&hub.client(), "library/h", "v1").await;
    let mirror = Server::start_config(&mirror_config(&[("docker.io", &hub.url, false)], ""));
    let c = mirror.client();
    let r = c.req(Method::HEAD, "/v2/library/h/manifests/v1?ns=docker.io", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(img.index.digest.to_string()));
    assert_eq!(r.header("content-length"), Some(img.index.bytes.len().to_string()));
    let b = &img.blobs[0];
    let r = c.req(Method::HEAD, &format!("/v2/library/h/blobs/{}?ns=docker.io", b.digest), &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(b.bytes.len().to_string()));
    // ranges work once cached (and on a miss, after the fill)
    let r = c
        .req(Method::GET, &format!("/v2/library/h/blobs/{}?ns=docker.io", b.digest), &[("range", "bytes=10-19")], None)
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &b.bytes[10..20]);
}

#[tokio::test]
async fn upstream_outage_serves_cache_stale_and_trips_the_breaker() {
    let hub = Server::start();
    let img = multi_arch(35, &PLATFORMS[..2], false, 5_000);
    img.push(&hub.client(), "library/s", "v1").await;
    let extra = "tag_ttl_secs = 0\nbreaker_threshold = 2\nbreaker_open_secs = 60\nconnect_timeout_secs = 1\ntimeout_secs = 2\nmax_attempts = 1\n";
    let mirror = Server::start_config(&mirror_config(&[("docker.io", &hub.url, false)], extra));
    assert_serves_image(&mirror, "library/s", "?ns=docker.io", &img).await;
    drop(hub);

    let c = mirror.client();
    for _ in 0..4 {
        let r = c.get("/v2/library/s/manifests/v1?ns=docker.io").await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], &img.index.bytes[..]);
        let w = r.header("warning").expect("stale answers carry a Warning");
        assert!(w.starts_with("299 - \""), "{w}");
    }
    assert_serves_image(&mirror, "library/s", "?ns=docker.io", &img).await;
    // never cached: a clear error, not a 404 that would look like "does not exist"
    let r = c.get("/v2/library/other/manifests/v1?ns=docker.io").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "UNAVAILABLE"));
    let status = c.get("/_wharf/mirror").await.json();
    let up = &status["upstreams"][0];
    assert_eq!(up["health"]["state"], "open", "{status}");
    assert!(up["stale_served"].as_u64().unwrap() >= 4);
    // While open, the upstream is not dialled: errors count stays put.
    let before = mirror.metric("wharf_mirror_errors_total", &[]).await;
    let r = c.get("/v2/library/s/manifests/v1?ns=docker.io").await;
    assert_eq!(r.status, 200);
    assert!(r.header("warning").unwrap().contains("circuit breaker"));
    assert_eq!(mirror.metric("wharf_mirror_errors_total", &[]).await, before + 1);
}

#[tokio::test]
async fn mutable_tags_follow_upstream_and_immutable_ones_do_not() {
    let hub = Server::start();
    let v1 = multi_arch(36, &PLATFORMS[..1], false, 1_000);
    let v2 = multi_arch(37, &PLATFORMS[..1], false, 1_000);
    let h = hub.client();
    v1.push(&h, "library/t", "latest").await;
    v1.push(&h, "library/t", "1.2.3").await;
    let mirror = Server::start_config(&mirror_config(
        &[("docker.io", &hub.url, false)],
        "tag_ttl_secs = 3\nimmutable_tags = ['re:^v?[0-9]+\\.[0-9]+\\.[0-9]+$']\n",
    ));
    let c = mirror.client();
    let get = |tag: &'static str| {
        let c = c.clone();
        async move {
            c.get(&format!("/v2/library/t/manifests/{tag}?ns=docker.io")).await.header("docker-content-digest").unwrap()
        }
    };
    assert_eq!(get("latest").await, v1.index.digest.to_string());
    assert_eq!(get("1.2.3").await, v1.index.digest.to_string());
    v2.push(&h, "library/t", "latest").await;
    v2.push(&h, "library/t", "1.2.3").await;
    // within the TTL: no upstream request
    let heads = hub.metric("wharf_requests_total", &["manifest_head"]).await;
    assert_eq!(get("latest").await, v1.index.digest.to_string());
    assert_eq!(hub.metric("wharf_requests_total", &["manifest_head"]).await, heads);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(get("latest").await, v2.index.digest.to_string(), "mutable tag follows after the TTL");
    let history: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mirror.data_dir.join("meta/history/docker.io/library/t/latest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(history[1]["old"], v1.index.digest.to_string());
    assert_eq!(history[1]["new"], v2.index.digest.to_string());
    assert_eq!(history[1]["source"], "mirror:docker.io");
    assert_eq!(get("1.2.3").await, v1.index.digest.to_string(), "immutable tag is never revalidated");
}

#[tokio::test]
async fn concurrent_revalidations_collapse_into_one() {
    let hub = Server::start();
    let img = multi_arch(38, &PLATFORMS[..1], false, 1_000);
    img.push(&hub.client(), "library/c", "latest").await;
    let mirror = Server::start_config(&mirror_config(&[("docker.io", &hub.url, false)], "tag_ttl_secs = 60\n"));
    let c = mirror.client();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("/v2/library/c/manifests/latest?ns=docker.io").await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(hub.metric("wharf_requests_total", &["manifest_head"]).await, 1);
}

#[tokio::test]
async fn sixteen_clients_one_upstream_fetch_of_a_256_mib_blob() {
    let hub = Server::start();
    let data = noise(39, 256 * 1024 * 1024);
    let digest = hub.client().push_blob("library/big", &data).await;
    drop(data);
    let mirror = Server::start_config(&mirror_config(&[("docker.io", &hub.url, false)], ""));
    let path = format!("{}/v2/library/big/blobs/{digest}?ns=docker.io", mirror.url);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move {
                use futures_util::StreamExt;
                let r = reqwest::get(&path).await.unwrap();
                assert_eq!(r.status(), 200);
                let mut h = oci::Digester::new(oci::Algorithm::Sha256);
                let mut s = r.bytes_stream();
                while let Some(c) = s.next().await {
                    h.update(&c.unwrap());
                }
                h.finish()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), digest);
    }
    assert_eq!(
        hub.metric("wharf_requests_total", &["endpoint=\"blob_get\""]).await,
        1,
        "exactly one upstream blob GET"
    );
    assert_eq!(mirror.metric("wharf_mirror_fetched_bytes_total", &[]).await, 256 * 1024 * 1024);
    assert!(mirror.peak_rss_kib() < 64 * 1024, "mirror RSS {} KiB", mirror.peak_rss_kib());
}

#[tokio::test]
async fn corrupt_upstream_bytes_never_enter_the_cache() {
    let hub = Server::start();
    let good = noise(40, 300_000);
    let digest = hub.client().push_blob("library/bad", &good).await;
    // Corrupt the upstream's copy behind its back (same length, different bytes).
    let file = hub.data_dir.join("blobs/sha256").join(&digest.hex()[..2]).join(digest.hex());
    let mut evil = good.clone();
    evil[1000] ^= 0xff;
    std::fs::write(&file, &evil).unwrap();

    let mirror = Server::start_config(&mirror_config(&[("docker.io", &hub.url, false)], ""));
    let url = format!("{}/v2/library/bad/blobs/{digest}?ns=docker.io", mirror.url);
    for _ in 0..2 {
        // The client must not receive a complete, successful body.
        let outcome = match reqwest::get(&url).await {
            Ok(r) if r.status() == 200 => r.bytes().await.map(|b| b.len()),
            Ok(r) => {
                assert!(r.status().is_server_error(), "{}", r.status());
                Ok(0)
            }
            Err(e) => Err(e),
        };
        assert!(!matches!(outcome, Ok(n) if n == good.len()), "corrupt bytes served as a complete blob");
    }
    let cached = mirror.data_dir.join("blobs/sha256").join(&digest.hex()[..2]).join(digest.hex());
    assert!(!cached.exists(), "corrupt blob was stored");
    assert!(mirror.metric("wharf_mirror_corrupt_total", &[]).await >= 1);
    // and a corrupt manifest is refused too
    let m = multi_arch(41, &PLATFORMS[..1], false, 100);
    m.push(&hub.client(), "library/bad", "v1").await;
    let mpath = hub.data_dir.join("repos/library/bad/_manifests/sha256").join(m.index.digest.hex());
    let mut raw = std::fs::read(&mpath).unwrap();
    let n = raw.len();
    raw[n - 2] = b' ';
    std::fs::write(&mpath, raw).unwrap();
    let r = mirror.client().get(&format!("/v2/library/bad/manifests/{}?ns=docker.io", m.index.digest)).await;
    assert!(r.status.is_server_error(), "{}", r.status);
    let _ = OCI_MANIFEST;
}

#[tokio::test]
async fn starts_and_reports_health_with_an_unreachable_upstream() {
    let mirror = Server::start_config(&mirror_config(
        &[("docker.io", "http://127.0.0.1:1", false)],
        "breaker_threshold = 1\nconnect_timeout_secs = 1\n",
    ));
    let c = mirror.client();
    assert_eq!(c.get("/v2/").await.status, 200, "serves although the upstream is down");
    let r = c.get("/v2/library/x/manifests/v1?ns=docker.io").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "UNAVAILABLE"));
    let url = mirror.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::common::wharf_bin())
            .args(["mirror", "status", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "unhealthy upstreams give exit code 1:\n{text}");
    assert!(text.contains("docker.io") && text.contains("open") && text.contains("last error"), "{text}");
}

#[tokio::test]
async fn the_fill_continues_when_the_client_goes_away() {
    let hub = Server::start();
    let data = noise(42, 64 * 1024 * 1024);
    let digest = hub.client().push_blob("library/gone", &data).await;
    let mirror = Server::start_config(&mirror_config(&[("docker.io", &hub.url, false)], ""));
    {
        use futures_util::StreamExt;
        let r = reqwest::get(format!("{}/v2/library/gone/blobs/{digest}?ns=docker.io", mirror.url)).await.unwrap();
        let mut s = r.bytes_stream();
        let first = s.next().await.unwrap().unwrap();
        assert!(!first.is_empty(), "the first bytes arrive before the blob is complete");
    } // dropped: the client hangs up mid-blob
    let cached = mirror.data_dir.join("blobs/sha256").join(&digest.hex()[..2]).join(digest.hex());
    let t0 = std::time::Instant::now();
    while !cached.exists() {
        assert!(t0.elapsed().as_secs() < 30, "the fill did not finish after the client left");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(hub);
    let r = mirror.client().get(&format!("/v2/library/gone/blobs/{digest}?ns=docker.io")).await;
    assert_eq!(r.status, 200);
    assert_eq!(Digest::sha256_of(&r.body), digest);
}
