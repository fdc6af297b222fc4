//! HTTP only: parse the request into an [`Endpoint`], call the service, render the answer.
//!
//! May import: `service`, `store` types, `oci`, axum. Must not touch storage or upstreams directly.
//! Every request goes through [`dispatch`]; handlers live in one file per endpoint group.

mod blobs;
pub mod endpoint;
pub mod errors;
pub mod headers;
mod listings;
mod manifests;
mod uploads;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures_util::TryStreamExt;

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
}

/// The registry's router: `/v2/` and everything below it go to [`dispatch`].
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route("/_wharf/mirror", axum::routing::get(mirror_status))
        .route("/metrics", axum::routing::get(metrics))
        .route("/_wharf/sync", axum::routing::get(sync_status))
        .fallback(|| async { ApiError::new(oci::ErrorCode::Unsupported, "not a registry API path").status(404) })
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// Stamp the API version header on every response and write one access-log line per request.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(headers::API_VERSION, HeaderValue::from_static("registry/2.0"));
    tracing::info!(
        target: "wharf::access",
        %method,
        path,
        status = resp.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
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
    let endpoint = match Endpoint::parse(&parts.method, path, parts.uri.query()) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let h = &parts.headers;
    let ns = parts.uri.query().and_then(query_ns);
    let ns = ns.as_deref();
    let reg = &app.registry;
    let name = endpoint.name();
    let result = match endpoint {
        Endpoint::Base => Ok(base()),
        Endpoint::Catalog { n, last } => listings::catalog(reg, n, last).await,
        Endpoint::TagsList { repo, n, last } => listings::tags(reg, &repo, ns, n, last).await,
        Endpoint::Referrers { repo, digest, artifact_type } => {
            listings::referrers(reg, &repo, ns, &digest, artifact_type).await
        }
        Endpoint::ManifestGet { repo, reference, head } => manifests::get(reg, &repo, ns, &reference, head, h).await,
        Endpoint::ManifestPut { repo, reference } => manifests::put(reg, &repo, ns, &reference, h, body).await,
        Endpoint::ManifestDelete { repo, reference } => manifests::delete(reg, &repo, ns, &reference).await,
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

/// `GET /_wharf/sync`: the last report of every sync entry.
async fn sync_status(State(app): State<Arc<AppState>>) -> Response {
    let reports = app.syncer.reports().await;
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": reports })).expect("reports serialise");
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let status = app.registry.mirror().map(|m| m.status()).unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render(&status)).into_response()
}

/// `GET /_wharf/mirror`: per-upstream health and cache counters.
async fn mirror_status(State(app): State<Arc<AppState>>) -> Response {
    let status = app.registry.mirror().map(|m| m.status()).unwrap_or_default();
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "upstreams": status })).expect("status serialises");
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
