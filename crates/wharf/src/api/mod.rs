//! HTTP only: parse the request into an [`Endpoint`], call the service, render the answer.
//!
//! May import: `service`, `store` types, `oci`, axum. Must not touch storage or upstreams directly.
//! Every request goes through [`dispatch`]; handlers live in one file per endpoint group.

pub mod access;
mod blobs;
pub mod console;
pub mod endpoint;
pub mod errors;
pub mod headers;
mod listings;
mod manifests;
mod token;
mod uploads;
mod verification;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::{StreamExt, TryStreamExt};

use self::endpoint::Endpoint;
use self::errors::ApiError;
use crate::service::Registry;
use crate::store::ByteStream;

/// What handlers need from the running application.
pub struct AppState {
    /// The registry service.
    pub registry: Registry,
    /// Request counters.
    pub metrics: crate::metrics::Metrics,
    /// The sync engine (for its status endpoint).
    pub syncer: Arc<crate::sync::Syncer>,
    /// Users and rules; `None` when access control is not configured (everything open, as before).
    pub access: Option<Arc<crate::auth::AccessControl>>,
    /// The node-configuration facts (upstream names) for `/_wharf/nodes/<format>`; the server URL is filled in
    /// per request.
    pub nodes: crate::nodes::Nodes,
    /// The garbage collector (for its status endpoint; scheduled by `tasks` when `[gc] every` is set).
    pub gc: Arc<crate::gc::Collector>,
    /// The scrubber (for its status endpoint; scheduled by `tasks` when `[scrub]` is set).
    pub scrub: Arc<crate::scrub::Scrubber>,
    /// The web console's settings (`[console]`).
    pub console: console::ConsoleSettings,
}

/// The registry's router: `/v2/` and everything below it go to [`dispatch`].
pub fn router(state: Arc<AppState>) -> Router {
    let status = Router::new()
        .route("/_wharf/mirror", axum::routing::get(mirror_status))
        .route("/metrics", axum::routing::get(metrics))
        .route("/_wharf/sync", axum::routing::get(sync_status))
        .route("/_wharf/history/{*path}", axum::routing::get(history))
        .route("/_wharf/gc", axum::routing::get(gc_status))
        .route("/_wharf/verify/{*rest}", axum::routing::get(verification::verify))
        .route("/_wharf/scrub", axum::routing::get(scrub_status))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::admin_only));
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route("/auth/token", axum::routing::get(token::token).post(token::token))
        // Public: nodes fetch their configuration before they have credentials; it holds no secret.
        .route("/_wharf/nodes/{format}", axum::routing::get(nodes_config))
        .merge(status)
        .merge(console::routes())
        .fallback(|| async { ApiError::new(oci::ErrorCode::Unsupported, "not a registry API path").status(404) })
        .layer(middleware::from_fn(unread_body_closes_connection))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// A handler may answer before reading the request body (a 416 for an out-of-order chunk, a denied push).
/// HTTP/1 cannot reuse such a connection: the unread bytes would be taken for the next request, so the
/// server closes it after the response. Say so with `Connection: close`; otherwise a client that reuses the
/// pooled connection for its next request (a POST, which it must not retry) fails with a bare EOF.
async fn unread_body_closes_connection(req: Request, next: Next) -> Response {
    if req.version() > axum::http::Version::HTTP_11 || !has_body(req.headers()) {
        return next.run(req).await;
    }
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let tracked =
        futures_util::stream::unfold((body.into_data_stream(), finished.clone()), |(mut data, finished)| async move {
            match data.next().await {
                Some(chunk) => Some((chunk, (data, finished))),
                None => {
                    finished.store(true, std::sync::atomic::Ordering::Release);
                    None
                }
            }
        });
    let mut resp = next.run(Request::from_parts(parts, Body::from_stream(tracked))).await;
    if !finished.load(std::sync::atomic::Ordering::Acquire) {
        resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Stamp the API version header on every response and write one access-log line per request.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The verified mTLS client certificate's names (not a secret); absent without mutual TLS.
    let client = req.extensions().get::<crate::tls::ClientIdentity>().map(ToString::to_string);
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(headers::API_VERSION, HeaderValue::from_static("registry/2.0"));
    tracing::info!(
        target: "wharf::access",
        %method,
        path,
        status = resp.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
        client,
    );
    resp
}

/// Parse, then route by `match`.
async fn dispatch(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = match parts.uri.path() {
        "/v2" => "/v2/",
        p => p,
    };
    let mut endpoint = match Endpoint::parse(&parts.method, path, parts.uri.query()) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let h = &parts.headers;
    let ns = parts.uri.query().and_then(query_ns);
    let ns = ns.as_deref();
    let caller = match &app.access {
        None => None,
        Some(ac) => match access::check(&app, ac, &parts, &mut endpoint, ns).await {
            Ok(c) => Some((ac.as_ref(), c)),
            Err(resp) => {
                app.metrics.record(endpoint.name(), resp.status().as_u16());
                return resp;
            }
        },
    };
    let reg = &app.registry;
    let name = endpoint.name();
    // Who writes, for the tag history (the token's subject or the logged-in user).
    let actor_name = caller.as_ref().and_then(|(_, c)| c.user.clone());
    let actor = actor_name.as_deref();
    let result = match endpoint {
        Endpoint::Base => Ok(base()),
        Endpoint::Catalog { n, last } => listings::catalog(reg, n, last, caller.as_ref()).await,
        Endpoint::TagsList { repo, n, last } => listings::tags(reg, &repo, ns, n, last).await,
        Endpoint::Referrers { repo, digest, artifact_type } => {
            listings::referrers(reg, &repo, ns, &digest, artifact_type).await
        }
        Endpoint::ManifestGet { repo, reference, head } => manifests::get(reg, &repo, ns, &reference, head, h).await,
        Endpoint::ManifestPut { repo, reference } => manifests::put(reg, &repo, ns, &reference, h, body, actor).await,
        Endpoint::ManifestDelete { repo, reference } => manifests::delete(reg, &repo, ns, &reference, h, actor).await,
        Endpoint::BlobGet { repo, digest, head } => blobs::get(reg, &repo, ns, &digest, head, h).await,
        Endpoint::BlobDelete { repo, digest } => blobs::delete(reg, &repo, ns, &digest).await,
        Endpoint::UploadStart { repo, digest, mount } => uploads::start(reg, &repo, ns, digest, mount, h, body).await,
        Endpoint::UploadStatus { repo, id } => uploads::status(reg, &repo, &id).await,
        Endpoint::UploadPatch { repo, id } => uploads::patch(reg, &repo, &id, h, body).await,
        Endpoint::UploadFinish { repo, id, digest } => uploads::finish(reg, &repo, &id, &digest, h, body).await,
        Endpoint::UploadCancel { repo, id } => uploads::cancel(reg, &repo, &id).await,
    };
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    app.metrics.record(name, resp.status().as_u16());
    if let Some(ns) = ns.filter(|ns| reg.serves_namespace(ns)) {
        if let Ok(v) = HeaderValue::from_str(ns) {
            resp.headers_mut().insert(headers::OCI_NAMESPACE, v);
        }
    }
    resp
}

/// The `ns` query parameter containerd adds when it uses a mirror (the client's registry host).
fn query_ns(query: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, v)| k == "ns" && !v.is_empty())
        .map(|(_, v)| v)
}

/// `GET /_wharf/nodes/<format>[?server=URL][&file=PATH]`: the runtime configuration `wharf nodes config`
/// writes, for this server (its URL from `server`, else the request's scheme and `Host`). One file is served
/// as itself; several (containerd, kind) as JSON `{"files": [{"path", "contents"}]}`, or one of them with `file`.
async fn nodes_config(
    State(app): State<Arc<AppState>>,
    axum::extract::Path(format): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let format = match crate::nodes::Format::parse(&format) {
        Ok(f) => f,
        Err(e) => return ApiError::new(oci::ErrorCode::Unsupported, e).status(404).into_response(),
    };
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let server = match param("server") {
        Some(s) => s.trim_end_matches('/').to_owned(),
        None => {
            let tls = req.extensions().get::<axum::extract::ConnectInfo<crate::tls::TlsPeer>>().is_some();
            let host = req.headers().get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("{}://{host}", if tls { "https" } else { "http" })
        }
    };
    let valid = reqwest::Url::parse(&server).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.path() == "/" && u.username().is_empty()
    });
    if !valid || server.contains(['"', '\\']) {
        return ApiError::new(oci::ErrorCode::Unsupported, "server must be http(s)://host[:port]")
            .status(400)
            .into_response();
    }
    let nodes = crate::nodes::Nodes { server, ..app.nodes.clone() };
    let files = nodes.generate(format);
    let one = match param("file") {
        Some(p) => match files.iter().find(|f| f.path == p) {
            Some(f) => Some(f.clone()),
            None => {
                return ApiError::new(oci::ErrorCode::Unsupported, format!("no file {p:?} in this format"))
                    .status(404)
                    .into_response()
            }
        },
        None if files.len() == 1 => files.first().cloned(),
        None => None,
    };
    match one {
        Some(f) => {
            let ct = if f.path.ends_with(".json") { "application/json" } else { "text/plain; charset=utf-8" };
            ([(axum::http::header::CONTENT_TYPE, ct)], f.contents).into_response()
        }
        None => {
            let list: Vec<serde_json::Value> =
                files.iter().map(|f| serde_json::json!({"path": f.path, "contents": f.contents})).collect();
            let body = serde_json::json!({"format": format.as_str(), "server": nodes.server, "files": list});
            ([(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
    }
}

/// `GET /_wharf/history/<repo>[/<tag>]`: a tag's moves, or every tag's of a repository (oldest first).
async fn history(State(app): State<Arc<AppState>>, axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    let json = |v: serde_json::Value| {
        ([(axum::http::header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
    };
    let reg = &app.registry;
    // `<repo>/<tag>` when the last component names a tag with history, else the whole path is the repository.
    if let Some((repo, tag)) = path.rsplit_once('/') {
        if let (Ok(repo), Ok(tag)) = (repo.parse::<oci::RepoName>(), tag.parse::<oci::Tag>()) {
            match reg.tag_history(&repo, &tag).await {
                Ok(events) if !events.is_empty() => {
                    return json(
                        serde_json::json!({"repository": repo.to_string(), "tag": tag.to_string(), "events": events}),
                    )
                }
                Ok(_) => {}
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    }
    let repo = match path.parse::<oci::RepoName>() {
        Ok(r) => r,
        Err(e) => return ApiError::new(oci::ErrorCode::NameInvalid, e.to_string()).into_response(),
    };
    match reg.repo_history(&repo).await {
        Ok(tags) => json(serde_json::json!({"repository": repo.to_string(), "tags": tags})),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /_wharf/sync`: the last report of every sync entry.
async fn sync_status(State(app): State<Arc<AppState>>) -> Response {
    let reports = app.syncer.reports().await;
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": reports })).expect("reports serialise");
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /_wharf/gc`: the last garbage collection's report (`{"last": null}` before the first).
async fn gc_status(State(app): State<Arc<AppState>>) -> Response {
    match app.gc.last_report().await {
        Ok(last) => {
            let body = serde_json::to_vec_pretty(&serde_json::json!({ "last": last })).expect("reports serialise");
            ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /_wharf/scrub`: the last scrub's report (`{"last": null}` before the first).
async fn scrub_status(State(app): State<Arc<AppState>>) -> Response {
    match app.scrub.last_report().await {
        Ok(last) => {
            let body = serde_json::to_vec_pretty(&serde_json::json!({ "last": last })).expect("reports serialise");
            ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let status = app.registry.mirror().map(|m| m.status()).unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render(&status)).into_response()
}

/// `GET /_wharf/mirror`: per-upstream health and cache counters.
async fn mirror_status(State(app): State<Arc<AppState>>) -> Response {
    let status = app.registry.mirror().map(|m| m.status()).unwrap_or_default();
    let budget = app.registry.mirror().map(|m| m.budget_status());
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "upstreams": status, "budget": budget }))
        .expect("status serialises");
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn base() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// The request body as a stream for the store, without buffering.
fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

/// Whether a request carries a body worth reading (a non-zero or chunked length).
fn has_body(h: &HeaderMap) -> bool {
    match headers::content_length(h) {
        Some(n) => n > 0,
        None => h.contains_key(axum::http::header::TRANSFER_ENCODING),
    }
}

/// Handler result.
type ApiResult = Result<Response, ApiError>;

/// Build a response with a status, headers and body.
fn respond(status: u16, hdrs: &[(&'static str, String)], body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = axum::http::StatusCode::from_u16(status).expect("valid status");
    for (k, v) in hdrs {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    resp
}
