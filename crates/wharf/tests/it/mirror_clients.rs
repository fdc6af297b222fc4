//! The mirror against other kinds of upstreams (CNCF distribution with Basic auth, a Bearer-token registry)
//! and with a real containerd pulling through it via hosts.toml.

use std::sync::atomic::Ordering::SeqCst;

use reqwest::Method;

use crate::common::Server;
use crate::external::containerd::{write_hosts_toml, Containerd};
use crate::external::distribution::{Distribution, DistributionOpts, PASSWORD, USER};
use crate::external::push_image;
use crate::external::token_proxy::TokenProxy;
use crate::images::{multi_arch, Image, DOCKER_LIST, OCI_INDEX, PLATFORMS};

async fn pull_all(mirror: &Server, repo: &str, query: &str, img: &Image) {
    let c = mirror.client();
    let accept = format!("{OCI_INDEX}, {DOCKER_LIST}");
    let r = c.req(Method::GET, &format!("/v2/{repo}/manifests/v1{query}"), &[("accept", &accept)], None).await;
    assert_eq!(r.status, 200, "{repo}{query}: {:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(&r.body[..], &img.index.bytes[..]);
    for m in &img.manifests {
        let accept = m.media_type.clone();
        let r = c
            .req(Method::GET, &format!("/v2/{repo}/manifests/{}{query}", m.digest), &[("accept", &accept)], None)
            .await;
        assert_eq!(&r.body[..], &m.bytes[..]);
    }
    for b in &img.blobs {
        let r = c.get(&format!("/v2/{repo}/blobs/{}{query}", b.digest)).await;
        assert_eq!(&r.body[..], &b.bytes[..]);
    }
}

#[tokio::test]
async fn mirrors_a_distribution_registry_that_requires_basic_auth() {
    let dist = Distribution::start(DistributionOpts { basic_auth: true, ..Default::default() });
    let img = multi_arch(61, &PLATFORMS[..4], false, 20_000);
    push_image(&dist.client(), &img, "team/tool", "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let mirror = Server::start_config(&format!(
        "[[upstream]]\nname = \"quay.io\"\nurl = \"{}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
        dist.url,
        pw.display()
    ));
    pull_all(&mirror, "team/tool", "?ns=quay.io", &img).await;
    pull_all(&mirror, "quay.io/team/tool", "", &img).await;

    // Wrong credentials: a clear upstream error, not a 404.
    let wrong = Server::start_config(&format!(
        "[[upstream]]\nname = \"quay.io\"\nurl = \"{}\"\nusername = \"{USER}\"\npassword = \"nope\"\n",
        dist.url
    ));
    let r = wrong.client().get("/v2/quay.io/team/tool/manifests/v1").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (502, "UNAVAILABLE"), "{:?}", r.body);
}

#[tokio::test]
async fn mirrors_a_bearer_token_registry_with_one_token_per_scope() {
    let origin = Server::start();
    let img = multi_arch(62, &PLATFORMS[..3], true, 10_000);
    img.push(&origin.client(), "org/app", "v1").await;
    let front = TokenProxy::start(&origin.url, Some(USER), Some(PASSWORD));
    let mirror = Server::start_config(&format!(
        "[[upstream]]\nname = \"ghcr.io\"\nurl = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
        front.url
    ));
    pull_all(&mirror, "org/app", "?ns=ghcr.io", &img).await;
    assert_eq!(front.stats.tokens(), 1, "tokens are cached per scope: {:?}", front.stats.scopes());
    assert_eq!(front.stats.blob_gets.load(SeqCst), img.blobs.len());

    // Anonymous tokens (no credentials configured) work too.
    let anon_front = TokenProxy::start(&origin.url, None, None);
    let anon = Server::start_config(&format!("[[upstream]]\nname = \"ghcr.io\"\nurl = \"{}\"\n", anon_front.url));
    pull_all(&anon, "ghcr.io/org/app", "", &img).await;
    assert_eq!(anon_front.stats.tokens(), 1);
}

#[tokio::test]
async fn containerd_pulls_through_the_mirror_and_keeps_pulling_when_upstreams_are_gone() {
    let hub = Server::start();
    let k8s = Server::start();
    let demo = multi_arch(63, &PLATFORMS[..4], false, 8_000);
    demo.push(&hub.client(), "library/demo", "v1").await;
    let pause = multi_arch(64, &PLATFORMS[..4], true, 8_000);
    pause.push(&k8s.client(), "pause", "3.10").await;
    let mirror = Server::start_config(&format!(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ntag_ttl_secs = 0\nbreaker_threshold = 1\n\n\
         [[upstream]]\nname = \"registry.k8s.io\"\nurl = \"{}\"\ntag_ttl_secs = 0\nbreaker_threshold = 1\n",
        hub.url, k8s.url
    ));
    let hosts = tempfile::tempdir().unwrap();
    // hosts.toml sends both names to the mirror; the origin `server` is a closed port, so any fallback past
    // the mirror fails loudly.
    write_hosts_toml(hosts.path(), "docker.io", &mirror.url);
    write_hosts_toml(hosts.path(), "registry.k8s.io", &mirror.url);
    let all = |img: &Image| {
        img.blobs.iter().chain(&img.manifests).chain([&img.index]).map(|c| c.digest.to_string()).collect::<Vec<_>>()
    };

    let ctrd = Containerd::start();
    // one platform, by tag
    ctrd.fetch(hosts.path(), "docker.io/library/demo:v1", Some("linux/arm64"), false);
    let have = ctrd.content_digests();
    assert!(have.contains(&demo.index.digest.to_string()));
    assert!(have.contains(&demo.manifests[1].digest.to_string()), "arm64 manifest");
    assert!(!have.contains(&demo.manifests[0].digest.to_string()), "only the asked platform");
    assert_eq!(ctrd.image_target("docker.io/library/demo:v1"), Some(demo.index.digest.to_string()));
    // all platforms, by digest, of the other registry name
    let by_digest = format!("registry.k8s.io/pause@{}", pause.index.digest);
    ctrd.fetch(hosts.path(), &by_digest, None, true);
    ctrd.fetch(hosts.path(), "docker.io/library/demo:v1", None, true);
    ctrd.fetch(hosts.path(), "registry.k8s.io/pause:3.10", None, true);
    let have = ctrd.content_digests();
    for d in all(&demo).into_iter().chain(all(&pause)) {
        assert!(have.contains(&d), "{d} missing");
    }
    assert_eq!(ctrd.image_target("registry.k8s.io/pause:3.10"), Some(pause.index.digest.to_string()));
    assert!(
        mirror.metric("wharf_mirror_hits_total", &[]).await + mirror.metric("wharf_mirror_misses_total", &[]).await > 0
    );
    drop(ctrd);

    // Upstreams gone: a fresh containerd still gets everything it got before, through the mirror alone.
    drop(hub);
    drop(k8s);
    let fresh = Containerd::start();
    fresh.fetch(hosts.path(), "docker.io/library/demo:v1", None, true);
    fresh.fetch(hosts.path(), "registry.k8s.io/pause:3.10", None, true);
    fresh.fetch(hosts.path(), &by_digest, None, true);
    let have = fresh.content_digests();
    for d in all(&demo).into_iter().chain(all(&pause)) {
        assert!(have.contains(&d), "{d} missing after the upstreams stopped");
    }
    assert_eq!(fresh.image_target("docker.io/library/demo:v1"), Some(demo.index.digest.to_string()));
    assert!(mirror.metric("wharf_mirror_stale_served_total", &[]).await >= 2);
    // Never cached: a clear failure.
    let out = fresh.try_fetch(hosts.path(), "docker.io/library/never:v1", None, true);
    assert!(!out.success, "a never-cached image cannot be pulled with the upstream gone");
    let r = mirror.client().get("/v2/library/never/manifests/v1?ns=docker.io").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "UNAVAILABLE"));
}

#[tokio::test]
async fn mirrors_an_https_upstream_signed_by_a_configured_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::external::distribution::test_ca(certs.path());
    let dist = Distribution::start(DistributionOpts { tls: Some((cert, key)), ..Default::default() });
    assert!(dist.url.starts_with("https://"));
    let img = multi_arch(65, &PLATFORMS[..2], false, 5_000);
    let http = crate::common::http().danger_accept_invalid_certs(true).build().unwrap();
    push_image(&crate::common::Client { base: dist.url.clone(), http }, &img, "team/secure", "v1").await;

    let trusted = Server::start_config(&format!(
        "[[upstream]]\nname = \"secure.io\"\nurl = \"{}\"\nca_file = \"{}\"\n",
        dist.url,
        ca.display()
    ));
    pull_all(&trusted, "secure.io/team/secure", "", &img).await;

    // Without the CA the certificate is refused: a clear upstream error, nothing served.
    let untrusted = Server::start_config(&format!("[[upstream]]\nname = \"secure.io\"\nurl = \"{}\"\n", dist.url));
    let r = untrusted.client().get("/v2/secure.io/team/secure/manifests/v1").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "UNAVAILABLE"), "{:?}", r.body);
    // insecure_skip_verify is the explicit escape hatch.
    let skip = Server::start_config(&format!(
        "[[upstream]]\nname = \"secure.io\"\nurl = \"{}\"\ninsecure_skip_verify = true\n",
        dist.url
    ));
    pull_all(&skip, "secure.io/team/secure", "", &img).await;
}

#[tokio::test]
async fn upstream_requests_go_through_http_proxy_unless_no_proxy() {
    let origin = Server::start();
    let img = multi_arch(66, &PLATFORMS[..2], false, 5_000);
    img.push(&origin.client(), "team/proxied", "v1").await;
    // A forward proxy that sends everything to the origin: the upstream's host name does not even resolve,
    // so a pull can only work through the proxy.
    let proxy = TokenProxy::start(&origin.url, None, None);
    let config =
        "[[upstream]]\nname = \"corp.example\"\nurl = \"http://registry.corp.invalid\"\nbreaker_threshold = 100\n";
    let via = Server::start_config_env(config, &[("HTTP_PROXY", &proxy.url), ("http_proxy", &proxy.url)]);
    pull_all(&via, "corp.example/team/proxied", "", &img).await;
    assert!(
        proxy.stats.forwarded().iter().any(|l| l.contains("/v2/team/proxied/manifests/")),
        "went through the proxy"
    );

    let bypass = Server::start_config_env(
        config,
        &[
            ("HTTP_PROXY", &proxy.url),
            ("http_proxy", &proxy.url),
            ("NO_PROXY", "registry.corp.invalid"),
            ("no_proxy", "registry.corp.invalid"),
        ],
    );
    let before = proxy.stats.forwarded().len();
    let r = bypass.client().get("/v2/corp.example/team/proxied/manifests/v1").await;
    assert_eq!(r.status, 503, "NO_PROXY sends it direct, where the name does not resolve");
    assert_eq!(proxy.stats.forwarded().len(), before);
}
