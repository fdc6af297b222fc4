//! The client against in-process fake registries: retries, Retry-After, auth on redirects, digest checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use oci::{Digest, RefSpec, RepoName};

use super::{Upstream, UpstreamError};
use crate::config::upstream::UpstreamConfig;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("127.0.0.1:{}", addr.port())
}

fn client(url: &str, f: impl FnOnce(&mut UpstreamConfig)) -> Upstream {
    let mut cfg = UpstreamConfig { name: "test.io".into(), url: url.into(), ..Default::default() };
    f(&mut cfg);
    Upstream::from_config(&cfg).unwrap()
}

fn repo() -> RepoName {
    "a/b".parse().unwrap()
}

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

#[tokio::test]
async fn retries_5xx_and_429_honouring_retry_after() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve(Router::new().fallback(any(move || {
        let n = h.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "").into_response(),
                1 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "").into_response(),
                _ => ([("content-type", "application/vnd.oci.image.index.v1+json")], MANIFEST).into_response(),
            }
        }
    })))
    .await;
    let up = client(&format!("http://{addr}"), |_| {});
    let t = Instant::now();
    let m = up.get_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await.unwrap();
    assert_eq!(m.digest, Digest::sha256_of(MANIFEST.as_bytes()));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert!(t.elapsed() >= Duration::from_millis(950), "Retry-After: 1 was honoured");
    assert_eq!(up.health().state, "closed");
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_opens_the_breaker() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve(Router::new().fallback(any(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async { (StatusCode::BAD_GATEWAY, [("retry-after", "0")], "") }
    })))
    .await;
    let up = client(&format!("http://{addr}"), |c| {
        c.max_attempts = 2;
        c.breaker_threshold = 1;
    });
    let r = up.get_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await;
    assert!(matches!(r, Err(UpstreamError::Unavailable(_))), "{r:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let r = up.head_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await;
    assert!(matches!(r, Err(UpstreamError::CircuitOpen { .. })), "{r:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "an open breaker does not dial");
}

#[tokio::test]
async fn a_wrong_manifest_digest_is_refused() {
    let addr = serve(Router::new().fallback(any(|| async {
        let lie = Digest::sha256_of(b"something else").to_string();
        (
            [("content-type", "application/vnd.oci.image.index.v1+json".to_owned()), ("docker-content-digest", lie)],
            MANIFEST,
        )
    })))
    .await;
    let up = client(&format!("http://{addr}"), |_| {});
    let r = up.get_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await;
    assert!(matches!(r, Err(UpstreamError::DigestMismatch { .. })), "{r:?}");
    let asked = Digest::sha256_of(b"what I asked for");
    let r = up.get_manifest(&repo(), &RefSpec::Digest(asked)).await;
    assert!(matches!(r, Err(UpstreamError::DigestMismatch { .. })), "{r:?}");
}

#[tokio::test]
async fn basic_credentials_go_to_the_registry_but_not_to_a_redirected_blob_host() {
    // The "CDN": another host name (localhost vs 127.0.0.1) that records the Authorization it receives.
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let s = seen.clone();
    let cdn = serve(Router::new().fallback(any(move |h: HeaderMap| {
        s.lock().unwrap().push(h.get("authorization").map(|v| v.to_str().unwrap().to_owned()));
        async { "blob bytes" }
    })))
    .await;
    let cdn_url = format!("http://localhost:{}", cdn.split(':').nth(1).unwrap());
    let registry = serve(Router::new().fallback(any(move |h: HeaderMap| {
        let cdn_url = cdn_url.clone();
        async move {
            if h.get("authorization").is_none() {
                return (StatusCode::UNAUTHORIZED, [("www-authenticate", "Basic realm=\"test\"")], "").into_response();
            }
            Response::builder()
                .status(307)
                .header("location", format!("{cdn_url}/blob"))
                .body(axum::body::Body::empty())
                .unwrap()
        }
    })))
    .await;
    let up = client(&format!("http://{registry}"), |c| {
        c.username = Some("u".into());
        c.password = Some("p".into());
    });
    let d = Digest::sha256_of(b"blob bytes");
    let resp = up.get_blob(&repo(), &d).await.unwrap();
    assert_eq!(resp.size, Some(10));
    assert_eq!(seen.lock().unwrap().as_slice(), &[None], "Authorization must not follow a redirect to another host");
}

#[tokio::test]
async fn bearer_tokens_are_fetched_once_per_scope() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let t = tokens.clone();
    let addr_cell: Arc<Mutex<String>> = Arc::default();
    let a = addr_cell.clone();
    let router = Router::new()
        .route(
            "/token",
            any(move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                t.fetch_add(1, Ordering::SeqCst);
                assert_eq!(q.get("scope").map(String::as_str), Some("repository:a/b:pull"));
                assert_eq!(q.get("service").map(String::as_str), Some("svc"));
                async { ([("content-type", "application/json")], r#"{"token":"T","expires_in":300}"#) }
            }),
        )
        .fallback(any(move |h: HeaderMap| {
            let realm = format!("http://{}/token", a.lock().unwrap());
            async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer T") {
                    let c = format!("Bearer realm=\"{realm}\",service=\"svc\",scope=\"repository:a/b:pull\"");
                    return (StatusCode::UNAUTHORIZED, [("www-authenticate", c)], "").into_response();
                }
                ([("content-type", "application/vnd.oci.image.index.v1+json")], MANIFEST).into_response()
            }
        }));
    let addr = serve(router).await;
    *addr_cell.lock().unwrap() = addr.clone();
    let up = client(&format!("http://{addr}"), |_| {});
    for _ in 0..3 {
        up.get_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await.unwrap();
    }
    assert_eq!(tokens.load(Ordering::SeqCst), 1);
}

#[test]
fn config_debug_never_shows_the_password() {
    let cfg = UpstreamConfig { password: Some("hunter2".into()), ..Default::default() };
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[tokio::test]
async fn reads_ratelimit_remaining_and_paces_requests() {
    let addr = serve(Router::new().fallback(any(|| async {
        ([("content-type", "application/vnd.oci.image.index.v1+json"), ("ratelimit-remaining", "5;w=21600")], MANIFEST)
    })))
    .await;
    let up = client(&format!("http://{addr}"), |c| c.requests_per_second = 20.0);
    assert_eq!(up.ratelimit_remaining(), None);
    let t = Instant::now();
    for _ in 0..5 {
        up.get_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await.unwrap();
    }
    assert!(t.elapsed() >= Duration::from_millis(190), "5 requests at 20/s take at least 200 ms: {:?}", t.elapsed());
    assert_eq!(up.ratelimit_remaining(), Some(5));
}

/// A registry that demands a Bearer token from `/token`, whose answer is `token_body`; counts token fetches.
async fn token_registry(token_body: String) -> (String, Arc<AtomicUsize>) {
    let tokens = Arc::new(AtomicUsize::new(0));
    let t = tokens.clone();
    let addr_cell: Arc<Mutex<String>> = Arc::default();
    let a = addr_cell.clone();
    let router = Router::new()
        .route(
            "/token",
            any(move || {
                t.fetch_add(1, Ordering::SeqCst);
                let body = token_body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        )
        .fallback(any(move |h: HeaderMap| {
            let realm = format!("http://{}/token", a.lock().unwrap());
            async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer T") {
                    let c = format!("Bearer realm=\"{realm}\",service=\"svc\"");
                    return (StatusCode::UNAUTHORIZED, [("www-authenticate", c)], "").into_response();
                }
                ([("content-type", "application/vnd.oci.image.index.v1+json")], MANIFEST).into_response()
            }
        }));
    let addr = serve(router).await;
    *addr_cell.lock().unwrap() = addr.clone();
    (addr, tokens)
}

#[tokio::test]
async fn absurd_token_lifetimes_neither_panic_nor_break_auth() {
    for expires_in in ["18446744073709551615", "1e300", "-1", "0"] {
        let (addr, tokens) = token_registry(format!(r#"{{"token":"T","expires_in":{expires_in}}}"#)).await;
        let up = client(&format!("http://{addr}"), |_| {});
        for _ in 0..2 {
            let m = up.get_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await;
            assert!(m.is_ok(), "expires_in {expires_in}: {m:?}");
        }
        assert_eq!(tokens.load(Ordering::SeqCst), 1, "expires_in {expires_in}: the token was cached");
    }
}

#[tokio::test]
async fn an_oversize_token_answer_is_refused() {
    let pad = "x".repeat(super::MAX_TOKEN_BODY);
    let (addr, _) = token_registry(format!(r#"{{"token":"T","expires_in":300,"pad":"{pad}"}}"#)).await;
    let up = client(&format!("http://{addr}"), |_| {});
    let r = up.get_manifest(&repo(), &RefSpec::Tag("v1".parse().unwrap())).await;
    assert!(
        matches!(&r, Err(UpstreamError::TooLarge { what, limit }) if what.contains("token") && *limit == super::MAX_TOKEN_BODY),
        "{r:?}"
    );
}

/// A body of `len` bytes, sent in 64 KiB chunks without `Content-Length` (so only the running count can stop it).
fn chunked(prefix: &str, len: usize, suffix: &str) -> axum::body::Body {
    let fill = len - prefix.len() - suffix.len();
    let mut pieces = vec![Ok::<_, std::io::Error>(bytes::Bytes::from(prefix.to_owned()))];
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..fill / chunk.len() {
        pieces.push(Ok(chunk.clone()));
    }
    pieces.push(Ok(bytes::Bytes::from(format!("{}{suffix}", "x".repeat(fill % chunk.len())))));
    axum::body::Body::from_stream(futures_util::stream::iter(pieces))
}

#[tokio::test]
async fn oversize_tag_lists_and_referrers_are_refused() {
    let page = super::MAX_TAG_PAGE_BYTES + 1024;
    let refs = super::MAX_REFERRERS_BYTES + 1024;
    let addr = serve(Router::new().fallback(any(move |uri: axum::http::Uri| async move {
        if uri.path().ends_with("/tags/list") {
            // Valid JSON: a client without a cap would read and accept all of it.
            chunked(r#"{"tags":[""#, page, r#""]}"#).into_response()
        } else {
            let body =
                format!(r#"{{"schemaVersion":2,"manifests":[],"annotations":{{"pad":"{}"}}}}"#, "x".repeat(refs - 64));
            ([("content-type", "application/vnd.oci.image.index.v1+json")], body).into_response()
        }
    })))
    .await;
    let up = client(&format!("http://{addr}"), |_| {});
    let r = up.list_tags(&repo()).await;
    assert!(matches!(&r, Err(UpstreamError::TooLarge { what, .. }) if what.contains("tag list")), "{r:?}");
    let r = up.referrers(&repo(), &Digest::sha256_of(b"subject")).await;
    assert!(matches!(&r, Err(UpstreamError::TooLarge { what, .. }) if what.contains("referrers")), "{r:?}");
}

#[tokio::test]
async fn endless_link_pagination_stops_after_the_page_limit() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve(Router::new().fallback(any(move || {
        let n = h.fetch_add(1, Ordering::SeqCst);
        async move {
            let link = format!("</v2/a/b/tags/list?n=1&last=t{n}>; rel=\"next\"");
            ([("link", link)], format!(r#"{{"tags":["t{n}"]}}"#))
        }
    })))
    .await;
    let up = client(&format!("http://{addr}"), |_| {});
    // The guard only turns an endless loop (the old behaviour) into a failure instead of a hang.
    let r = tokio::time::timeout(Duration::from_secs(300), up.list_tags(&repo())).await.expect("list_tags never ended");
    assert!(matches!(&r, Err(UpstreamError::Invalid(m)) if m.contains("pages")), "{r:?}");
    assert_eq!(hits.load(Ordering::SeqCst), super::MAX_TAG_PAGES);

    // A chain that leads back to a page already read stops at once.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve(Router::new().fallback(any(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async { ([("link", "</v2/a/b/tags/list?last=x>; rel=\"next\"")], r#"{"tags":["x"]}"#) }
    })))
    .await;
    let up = client(&format!("http://{addr}"), |_| {});
    let r = up.list_tags(&repo()).await;
    assert!(matches!(&r, Err(UpstreamError::Invalid(m)) if m.contains("already read")), "{r:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_redirect_target_that_challenges_never_gets_credentials() {
    // Host C: a token endpoint, recording the Authorization each call carries.
    let token_calls: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let tc = token_calls.clone();
    let realm = serve(Router::new().fallback(any(move |h: HeaderMap| {
        tc.lock().unwrap().push(h.get("authorization").map(|v| v.to_str().unwrap().to_owned()));
        async { ([("content-type", "application/json")], r#"{"token":"STOLEN","expires_in":300}"#) }
    })))
    .await;
    // Host B (the redirect target, another host name): challenges for a token from C, records what it gets.
    let seen_by_b: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let sb = seen_by_b.clone();
    let b = serve(Router::new().fallback(any(move |h: HeaderMap| {
        sb.lock().unwrap().push(h.get("authorization").map(|v| v.to_str().unwrap().to_owned()));
        let challenge = format!("Bearer realm=\"http://{realm}/token\",service=\"cdn\"");
        async move { (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)], "") }
    })))
    .await;
    let b_url = format!("http://localhost:{}", b.split(':').nth(1).unwrap());
    // Host A, the configured upstream (with credentials configured): redirects the blob GET to B.
    let a = serve(Router::new().fallback(any(move || {
        let b_url = b_url.clone();
        async move {
            Response::builder()
                .status(307)
                .header("location", format!("{b_url}/blob"))
                .body(axum::body::Body::empty())
                .unwrap()
        }
    })))
    .await;
    let up = client(&format!("http://{a}"), |c| {
        c.username = Some("u".into());
        c.password = Some("p".into());
    });
    let r = up.get_blob(&repo(), &Digest::sha256_of(b"x")).await;
    assert!(token_calls.lock().unwrap().is_empty(), "the redirect target's realm was called: {token_calls:?}");
    assert!(
        seen_by_b.lock().unwrap().iter().all(Option::is_none),
        "the redirect target received credentials: {seen_by_b:?}"
    );
    assert!(
        matches!(&r, Err(UpstreamError::Denied { status: 401, message, .. }) if message.contains("redirected")),
        "{:?}",
        r.as_ref().err()
    );
    assert_eq!(up.health().state, "closed", "a refused challenge is not an upstream outage");
}

#[test]
fn credentials_in_the_url_are_refused_without_echoing_them() {
    let cfg = UpstreamConfig { name: "r.io".into(), url: "https://alice:s3cret@r.io".into(), ..Default::default() };
    let e = Upstream::from_config(&cfg).unwrap_err();
    assert!(e.contains("must not contain credentials") && !e.contains("s3cret") && !e.contains("alice"), "{e}");
}
