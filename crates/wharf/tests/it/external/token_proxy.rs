//! A Bearer-token-protected front for any registry, in process: the Docker Hub style token dance
//! (`401` + `WWW-Authenticate: Bearer realm=…,service=…,scope=…` → `GET /token` → retry with the token) in front
//! of a backend that has no auth, with counters so tests can assert how many tokens and upstream requests a
//! client needed. It runs on its own thread and tokio runtime, so it keeps serving while a test blocks (e.g. on
//! `ctr`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::TryStreamExt;

use super::basic_auth_value;
use crate::common::Server;
use crate::images::{multi_arch, PLATFORMS};

/// The `service` this proxy names in its challenges.
pub const SERVICE: &str = "wharf-test";

/// What the proxy did so far. Forwarded requests are counted when they are sent to the backend.
#[derive(Default, Debug)]
pub struct Stats {
    /// Tokens issued (GET or POST /token).
    pub tokens: AtomicUsize,
    /// Of those, issued by the OAuth2 `POST /token` password grant (containerd's first try when it has
    /// credentials).
    pub oauth_tokens: AtomicUsize,
    /// Token requests refused (missing or wrong Basic credentials, bad form).
    pub token_refusals: AtomicUsize,
    /// `/v2/…` requests answered with a 401 Bearer challenge.
    pub challenges: AtomicUsize,
    pub manifest_gets: AtomicUsize,
    pub manifest_heads: AtomicUsize,
    pub blob_gets: AtomicUsize,
    pub blob_heads: AtomicUsize,
    /// Every other forwarded request (uploads, manifest PUT/DELETE, tags, referrers, `/v2/`, catalog).
    pub other: AtomicUsize,
    /// The scope strings of each issued token, in order (one entry per token; `""` when none was asked).
    pub scopes: Mutex<Vec<String>>,
    /// Each forwarded request as `"METHOD /path?query"`, in order.
    pub forwarded: Mutex<Vec<String>>,
}

impl Stats {
    pub fn tokens(&self) -> usize {
        self.tokens.load(SeqCst)
    }
    pub fn challenges(&self) -> usize {
        self.challenges.load(SeqCst)
    }
    /// Forwarded manifest GETs + HEADs.
    pub fn manifests(&self) -> usize {
        self.manifest_gets.load(SeqCst) + self.manifest_heads.load(SeqCst)
    }
    /// Forwarded blob GETs + HEADs.
    pub fn blobs(&self) -> usize {
        self.blob_gets.load(SeqCst) + self.blob_heads.load(SeqCst)
    }
    pub fn scopes(&self) -> Vec<String> {
        self.scopes.lock().unwrap().clone()
    }
    pub fn forwarded(&self) -> Vec<String> {
        self.forwarded.lock().unwrap().clone()
    }
}

/// A running proxy; stops (dropping open connections) when dropped.
pub struct TokenProxy {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    /// `127.0.0.1:<port>`
    pub addr: String,
    pub stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    backend: String,
    /// Expected `Authorization` value at /token, when credentials are required.
    basic: Option<HeaderValue>,
    user: Option<String>,
    password: Option<String>,
    realm: String,
    http: reqwest::Client,
    /// token → granted scopes
    tokens: Mutex<HashMap<String, Vec<Grant>>>,
    stats: Arc<Stats>,
}

#[derive(Clone, Debug)]
struct Grant {
    repo: String,
    actions: Vec<String>,
}

impl TokenProxy {
    /// Front `backend_url` (e.g. a Wharf's `http://127.0.0.1:port`). With `user`/`password` Some, `/token`
    /// requires those Basic credentials (or the OAuth2 password grant); with None it hands out anonymous tokens.
    pub fn start(backend_url: &str, user: Option<&str>, password: Option<&str>) -> TokenProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind token proxy");
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let basic = match (user, password) {
            (Some(u), Some(p)) => Some(basic_auth_value(u, p)),
            (None, None) => None,
            _ => panic!("TokenProxy: give both user and password, or neither"),
        };
        let inner = Arc::new(Inner {
            backend: backend_url.trim_end_matches('/').to_owned(),
            basic,
            user: user.map(str::to_owned),
            password: password.map(str::to_owned),
            realm: format!("http://{addr}/token"),
            // Redirects (e.g. to blob storage) are the client's business: pass them through untouched.
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            tokens: Mutex::new(HashMap::new()),
            stats: stats.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("token-proxy-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let app =
                        Router::new().route("/token", get(token_get).post(token_post)).fallback(v2).with_state(inner);
                    tokio::select! {
                        r = axum::serve(listener, app) => r.expect("token proxy server"),
                        _ = stopped => {}
                    }
                });
                rt.shutdown_background();
            })
            .unwrap();
        TokenProxy {
            url: format!("http://{addr}"),
            addr: addr.to_string(),
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The challenge the proxy sends for a pull of `repo` (what a client must parse).
    pub fn challenge_for(&self, repo: &str) -> String {
        challenge(&format!("{}/token", self.url), Some(repo), false)
    }
}

impl Drop for TokenProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn challenge(realm: &str, repo: Option<&str>, push: bool) -> String {
    let mut c = format!(r#"Bearer realm="{realm}",service="{SERVICE}""#);
    if let Some(repo) = repo {
        let actions = if push { "pull,push" } else { "pull" };
        c += &format!(r#",scope="repository:{repo}:{actions}""#);
    }
    c
}

fn unauthorized(www_authenticate: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, www_authenticate.to_owned()),
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (HeaderName::from_static("docker-distribution-api-version"), "registry/2.0".to_owned()),
        ],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
        .into_response()
}

/// `repository:<name>:<actions>` scopes (space-separated and/or repeated) → grants; other scope types ignored.
fn parse_scopes(scopes: &[String]) -> Vec<Grant> {
    scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| {
            let rest = s.strip_prefix("repository:")?;
            let (repo, actions) = rest.rsplit_once(':')?;
            Some(Grant { repo: repo.to_owned(), actions: actions.split(',').map(str::to_owned).collect() })
        })
        .collect()
}

fn issue(inner: &Inner, scopes: Vec<String>) -> Response {
    let n = inner.stats.tokens.fetch_add(1, SeqCst) + 1;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let token = format!("wharf-test-{n}-{nanos:x}");
    inner.tokens.lock().unwrap().insert(token.clone(), parse_scopes(&scopes));
    inner.stats.scopes.lock().unwrap().push(scopes.join(" "));
    let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn refuse(inner: &Inner, status: StatusCode, why: &str) -> Response {
    inner.stats.token_refusals.fetch_add(1, SeqCst);
    let mut r = (status, why.to_owned()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Basic realm="wharf-test-token""#));
    }
    r
}

/// `GET /token?service=…&scope=…[&scope=…]`, Basic credentials when configured.
async fn token_get(State(inner): State<Arc<Inner>>, headers: HeaderMap, req: Request) -> Response {
    if let Some(expected) = &inner.basic {
        let ok = headers.get(header::AUTHORIZATION).is_some_and(|got| same_basic(got, expected));
        if !ok {
            return refuse(&inner, StatusCode::UNAUTHORIZED, "token: missing or wrong Basic credentials");
        }
    }
    let query = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let scopes = pairs.into_iter().filter(|(k, _)| k == "scope").map(|(_, v)| v).collect();
    issue(&inner, scopes)
}

/// OAuth2 `POST /token` (form: grant_type=password, username, password, scope, service, client_id), what
/// containerd tries first when it has credentials.
async fn token_post(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return refuse(&inner, StatusCode::BAD_REQUEST, "token: bad form");
    };
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if field("grant_type") != Some("password") {
        return refuse(&inner, StatusCode::BAD_REQUEST, "token: only grant_type=password is supported");
    }
    if inner.basic.is_some()
        && (field("username") != inner.user.as_deref() || field("password") != inner.password.as_deref())
    {
        return refuse(&inner, StatusCode::UNAUTHORIZED, "token: wrong username or password");
    }
    let scopes = pairs.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    inner.stats.oauth_tokens.fetch_add(1, SeqCst);
    issue(&inner, scopes)
}

fn same_basic(got: &HeaderValue, expected: &HeaderValue) -> bool {
    let (Ok(got), Ok(expected)) = (got.to_str(), expected.to_str()) else { return false };
    match (got.split_once(' '), expected.split_once(' ')) {
        (Some((gs, gc)), Some((_, ec))) => gs.eq_ignore_ascii_case("basic") && gc.trim() == ec,
        _ => false,
    }
}

/// Repository name and endpoint kind of a `/v2/<name>/<kind>/…` path: the name is everything between `/v2/`
/// and the last `/manifests/`, `/blobs/`, `/tags/` or `/referrers/` component.
fn repo_and_kind(path: &str) -> (Option<&str>, Option<&'static str>) {
    let Some(rest) = path.strip_prefix("/v2/") else { return (None, None) };
    let found = ["manifests", "blobs", "tags", "referrers"]
        .into_iter()
        .filter_map(|k| rest.rfind(&format!("/{k}/")).map(|i| (i, k)))
        .max_by_key(|(i, _)| *i);
    match found {
        Some((i, kind)) if i > 0 => (Some(&rest[..i]), Some(kind)),
        _ => (None, None),
    }
}

/// Every non-/token request: check the Bearer token, then forward.
async fn v2(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/v2/") && path != "/v2" {
        return (StatusCode::NOT_FOUND, "token proxy: only /v2/ and /token").into_response();
    }
    let (repo, kind) = repo_and_kind(&path);
    let method = req.method().clone();
    let push = !(method == Method::GET || method == Method::HEAD);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let grants = bearer.and_then(|t| inner.tokens.lock().unwrap().get(&t).cloned());
    let allowed = match (&grants, repo) {
        (None, _) => false,
        // `/v2/`, catalog: any valid token will do.
        (Some(_), None) => true,
        (Some(grants), Some(repo)) => grants
            .iter()
            .any(|g| g.repo == repo && g.actions.iter().any(|a| a == "*" || a == if push { "push" } else { "pull" })),
    };
    if !allowed {
        inner.stats.challenges.fetch_add(1, SeqCst);
        return unauthorized(&challenge(&inner.realm, repo, push));
    }
    let counter = match (kind, &method) {
        (Some("manifests"), &Method::GET) => &inner.stats.manifest_gets,
        (Some("manifests"), &Method::HEAD) => &inner.stats.manifest_heads,
        (Some("blobs"), &Method::GET) => &inner.stats.blob_gets,
        (Some("blobs"), &Method::HEAD) => &inner.stats.blob_heads,
        _ => &inner.stats.other,
    };
    counter.fetch_add(1, SeqCst);
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or(path);
    inner.stats.forwarded.lock().unwrap().push(format!("{method} {path_and_query}"));
    forward(&inner, req, &path_and_query).await
}

/// Connection-level headers, and the ones the proxy owns (Authorization, Host).
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
    ]
    .contains(&name.as_str())
}

async fn forward(inner: &Inner, req: Request, path_and_query: &str) -> Response {
    let (parts, body) = req.into_parts();
    let mut rb = inner.http.request(parts.method.clone(), format!("{}{path_and_query}", inner.backend));
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) {
            rb = rb.header(k, v);
        }
    }
    // Only requests that carry a body get one, so GET/HEAD stay plain (no chunked empty body).
    if parts.headers.contains_key(header::CONTENT_LENGTH) || parts.headers.contains_key(header::TRANSFER_ENCODING) {
        rb = rb.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("token proxy: backend: {e}")).into_response(),
    };
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !hop_by_hop(k) {
            out = out.header(k, v);
        }
    }
    out.body(Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other))).unwrap()
}

#[tokio::test]
async fn token_proxy_does_the_bearer_dance_in_front_of_wharf() {
    let s = Server::start();
    let img = multi_arch(41, &PLATFORMS[..2], false, 3_000);
    img.push(&s.client(), "ext/token", "v1").await;
    let proxy = TokenProxy::start(&s.url, Some("alice"), Some("pw"));
    let http = reqwest::Client::new();
    let manifest_url = format!("{}/v2/ext/token/manifests/v1", proxy.url);
    let accept = img.index.media_type.as_str();

    // 1. Anonymous: 401 with the Bearer challenge for this repository.
    let r = http.get(&manifest_url).header("accept", accept).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        challenge,
        format!(r#"Bearer realm="http://{}/token",service="wharf-test",scope="repository:ext/token:pull""#, proxy.addr)
    );
    assert_eq!(challenge, proxy.challenge_for("ext/token"));

    // 2. Token endpoint: credentials required, then a token for the challenged scope.
    let realm = format!("{}/token", proxy.url);
    let query = [("service", SERVICE), ("scope", "repository:ext/token:pull")];
    let r = http.get(&realm).query(&query).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no credentials, no token");
    let r = http.get(&realm).query(&query).basic_auth("alice", Some("wrong")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "wrong password, no token");
    let r = http.get(&realm).query(&query).basic_auth("alice", Some("pw")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["token"], body["access_token"]);
    let token = body["token"].as_str().unwrap().to_owned();

    // 3. Retry with the token: the backend's bytes and headers come through.
    let r = http.get(&manifest_url).header("accept", accept).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), img.index.digest.to_string());
    assert_eq!(r.headers()["content-type"].to_str().unwrap(), accept);
    assert_eq!(&r.bytes().await.unwrap()[..], &img.index.bytes[..]);
    // HEAD keeps Content-Length and sends no body; a blob streams through.
    let r = http.head(&manifest_url).header("accept", accept).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), img.index.bytes.len().to_string());
    let blob = &img.blobs[0];
    let blob_url = format!("{}/v2/ext/token/blobs/{}", proxy.url, blob.digest);
    let r = http.get(&blob_url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], &blob.bytes[..]);

    // The token is scoped: another repository, or a push, is challenged again (with the matching scope).
    let r = http.get(format!("{}/v2/ext/other/manifests/v1", proxy.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.post(format!("{}/v2/ext/token/blobs/uploads/", proxy.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().ends_with(r#"scope="repository:ext/token:pull,push""#));
    // Backend errors pass through unchanged.
    let r = http.get(format!("{}/v2/ext/token/manifests/nope", proxy.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let st = &proxy.stats;
    assert_eq!(st.tokens(), 1);
    assert_eq!(st.scopes(), ["repository:ext/token:pull"]);
    assert_eq!(st.token_refusals.load(SeqCst), 2);
    assert_eq!(st.challenges(), 3);
    assert_eq!(st.manifest_gets.load(SeqCst), 2);
    assert_eq!(st.manifest_heads.load(SeqCst), 1);
    assert_eq!((st.blob_gets.load(SeqCst), st.blob_heads.load(SeqCst)), (1, 0));
    assert_eq!((st.manifests(), st.blobs(), st.other.load(SeqCst)), (3, 1, 0));
    assert_eq!(st.forwarded()[0], "GET /v2/ext/token/manifests/v1");

    // The OAuth2 password grant (POST form) is accepted too, with the same credentials.
    let form = |pw: &'static str| {
        [("grant_type", "password"), ("username", "alice"), ("password", pw), ("scope", "repository:ext/token:pull")]
    };
    let r = http.post(&realm).form(&form("wrong")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.post(&realm).form(&form("pw")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token: serde_json::Value = r.json().await.unwrap();
    let r = http.head(&manifest_url).header("accept", accept).bearer_auth(token["token"].as_str().unwrap()).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::OK);
    assert_eq!((st.tokens(), st.oauth_tokens.load(SeqCst)), (2, 1));

    // Anonymous mode: any caller gets a token.
    let anon = TokenProxy::start(&s.url, None, None);
    let r = http.get(format!("{}/token", anon.url)).query(&query).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token: serde_json::Value = r.json().await.unwrap();
    let r = http
        .get(format!("{}/v2/ext/token/manifests/v1", anon.url))
        .header("accept", accept)
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
