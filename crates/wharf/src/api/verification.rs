//! `GET /_wharf/verify/<repo>/<tag or digest>[?deep=true][&require=os/arch...]`: the `wharf verify --json`
//! report of one image in the local store (200 with `"ok": true|false`). Behind `admin_only` with the other
//! status routes: a deep check reads every byte of the image.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::transfer::PlatformSpec;
use crate::verify::{self, Options, Report, Source, Verifier};

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec_pretty(body).expect("JSON values serialise");
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The handler; the path tail's last segment is the tag or digest, the rest the repository.
pub async fn verify(State(app): State<Arc<AppState>>, Path(rest): Path<String>, RawQuery(query): RawQuery) -> Response {
    let bad = |msg: String| json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": msg }));
    let (repo, reference) = match verify::parse_path(&rest) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let mut options = Options::default();
    for (k, v) in pairs {
        match k.as_str() {
            "deep" => options.deep = matches!(v.as_str(), "" | "1" | "true" | "yes"),
            "require" => match PlatformSpec::parse(&v) {
                Some(p) => options.required.push(p),
                None => return bad(format!("require={v:?}: expected os/arch or os/arch/variant")),
            },
            _ => {}
        }
    }
    let verifier = Verifier::new(Source::Store(app.registry.store().clone()), options);
    match verifier.verify(&repo, &reference).await {
        Ok(r) => json(StatusCode::OK, &serde_json::to_value(Report::new(vec![r])).expect("reports serialise")),
        Err(e) => json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({ "error": e.to_string() })),
    }
}
