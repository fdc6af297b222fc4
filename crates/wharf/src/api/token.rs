//! `/auth/token`: the token endpoint of the distribution token flow. `GET` with Basic credentials (or none, for
//! an anonymous token) and `scope` parameters, as every registry client does after a Bearer challenge; `POST`
//! with the OAuth2 form (`grant_type=password` or `refresh_token`), as `docker login` and containerd do. The
//! granted scopes are the requested ones cut down to what the caller may do; a request for more is not an
//! error, it just gets less (the registry then answers 401/403 for what is missing).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use oci::{ErrorCode, RepoName};

use super::access::{caller, client_identity, peer_ip};
use super::errors::ApiError;
use super::AppState;
use crate::auth::token::{AccessEntry, Scope, MAX_SCOPES};
use crate::auth::AccessControl;
use crate::policy::access::{Action, Caller};

/// Largest POST form accepted (a password, a refresh token and a few scopes fit many times over).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The request's parameters, from the query (GET) or the form (POST).
#[derive(Default)]
struct Params {
    service: Option<String>,
    scopes: Vec<String>,
    offline: bool,
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

impl Params {
    fn parse(text: &str) -> Result<Params, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(text).map_err(|e| format!("malformed parameters: {e}"))?;
        let mut p = Params::default();
        for (k, v) in pairs {
            match k.as_str() {
                "service" => p.service = Some(v),
                // GET repeats `scope`; the OAuth2 form separates scopes with spaces.
                "scope" => p.scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
                "offline_token" => p.offline |= v == "true",
                "access_type" => p.offline |= v == "offline",
                "grant_type" => p.grant_type = Some(v),
                "username" => p.username = Some(v),
                "password" => p.password = Some(v),
                "refresh_token" => p.refresh_token = Some(v),
                _ => {}
            }
        }
        Ok(p)
    }
}

fn bad_request(message: &str) -> Response {
    ApiError::new(ErrorCode::Unsupported, message).status(400).into_response()
}

fn invalid_credentials(message: &str) -> Response {
    ApiError::new(ErrorCode::Unauthorized, message)
        .header(header::WWW_AUTHENTICATE, super::access::BASIC_CHALLENGE)
        .into_response()
}

/// `GET|POST /auth/token`.
pub async fn token(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let Some((ac, issuer)) = app.access.as_deref().and_then(|ac| ac.tokens().map(|t| (ac, t))) else {
        return ApiError::new(ErrorCode::Unsupported, "no token service: access control is not configured")
            .status(404)
            .into_response();
    };
    let (parts, body) = req.into_parts();
    let params = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(Body::new(body), MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => return bad_request(&format!("form larger than {MAX_FORM_BYTES} bytes")),
        };
        Params::parse(&String::from_utf8_lossy(&bytes))
    } else if parts.method == Method::GET {
        Params::parse(parts.uri.query().unwrap_or(""))
    } else {
        return ApiError::new(ErrorCode::Unsupported, "use GET or POST").status(405).into_response();
    };
    let params = match params {
        Ok(p) => p,
        Err(message) => return bad_request(&message),
    };
    if let Some(service) = params.service.as_deref().filter(|s| *s != issuer.service()) {
        return bad_request(&format!("unknown service {service:?} (this registry is {:?})", issuer.service()));
    }
    let peer = peer_ip(&parts);
    // Who is asking, and whether a refresh token may be handed out (only for htpasswd users, bound to the
    // current password hash).
    let subject = match (parts.method == Method::POST, params.grant_type.as_deref()) {
        (true, Some("password")) => {
            let (Some(user), Some(password)) = (&params.username, &params.password) else {
                return bad_request("grant_type=password needs username and password");
            };
            let header =
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
            let mut headers = axum::http::HeaderMap::new();
            match header.parse() {
                Ok(v) => headers.insert(header::AUTHORIZATION, v),
                Err(_) => return invalid_credentials("invalid username or password"),
            };
            match caller(ac, &headers, peer, None).await {
                Ok(c) if c.user.is_some() => c,
                Ok(_) => return invalid_credentials("invalid username or password"),
                Err(resp) => return resp,
            }
        }
        (true, Some("refresh_token")) => {
            let Some(refresh) = &params.refresh_token else {
                return bad_request("grant_type=refresh_token needs refresh_token");
            };
            match issuer.verify_refresh(refresh).ok().and_then(|(user, fp)| ac.refresh_subject(&user, &fp)) {
                Some(c) => c,
                None => return invalid_credentials("invalid or expired refresh token"),
            }
        }
        (true, other) => {
            return bad_request(&format!(
                "unsupported grant_type {:?} (password or refresh_token)",
                other.unwrap_or("")
            ))
        }
        (false, _) => {
            let auth = parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
            if auth.is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")) {
                return invalid_credentials("the token endpoint takes credentials, not a token");
            }
            match caller(ac, &parts.headers, peer, client_identity(&parts)).await {
                Ok(c) => c,
                Err(resp) => return resp,
            }
        }
    };
    if params.scopes.len() > MAX_SCOPES {
        return bad_request(&format!("at most {MAX_SCOPES} scopes per request"));
    }
    let access = grant(ac, &app, &subject, &params.scopes);
    let issued = match issuer.issue(&subject, access.clone()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(target: "wharf::auth", "cannot issue a token: {e}");
            return ApiError::new(ErrorCode::Unavailable, "cannot issue a token").status(500).into_response();
        }
    };
    let refresh = match (params.offline && params.grant_type.as_deref() != Some("refresh_token"), &subject.user) {
        (true, Some(user)) => {
            ac.credential_fingerprint(user).and_then(|fp| issuer.issue_refresh(&subject, fp).ok().flatten())
        }
        _ => None,
    };
    tracing::debug!(
        target: "wharf::auth",
        user = subject.user.as_deref().unwrap_or("anonymous"),
        scopes = %scope_text(&access),
        "token issued"
    );
    let mut body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
        "scope": scope_text(&access),
    });
    if let Some(r) = refresh {
        body["refresh_token"] = r.into();
    }
    (
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
        serde_json::to_vec(&body).expect("token response serialises"),
    )
        .into_response()
}

/// The granted scopes, space-separated (the OAuth2 `scope` response field).
fn scope_text(access: &[AccessEntry]) -> String {
    access.iter().map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(","))).collect::<Vec<_>>().join(" ")
}

/// The requested scopes cut down to what `subject` may do. Repository names must be valid names (never
/// patterns); `*` asks for every action. A name may be pulled when the rules allow it as written or, since a
/// scope carries no `ns`, as any mirrored registry's `<host>/<name>` (mirrors are pull-only); each request is
/// checked against the rules again with its real `ns`, so this never widens access.
fn grant(ac: &AccessControl, app: &AppState, subject: &Caller, scopes: &[String]) -> Vec<AccessEntry> {
    let mut out: Vec<AccessEntry> = Vec::new();
    for s in scopes.iter().filter_map(|s| Scope::parse(s)) {
        if s.kind == "registry" {
            if s.name == "catalog" && s.actions.iter().any(|a| a == "*") && !out.iter().any(|a| a.kind == "registry") {
                out.push(AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] });
            }
            continue;
        }
        if s.name.parse::<RepoName>().is_err() {
            continue;
        }
        let wanted: Vec<Action> = if s.actions.iter().any(|a| a == "*") {
            vec![Action::Pull, Action::Push, Action::Delete]
        } else {
            s.actions.iter().filter_map(|a| Action::parse(a).ok()).filter(|a| *a != Action::Admin).collect()
        };
        let allowed: Vec<String> = wanted
            .into_iter()
            .filter(|a| {
                ac.allows(subject, &s.name, *a)
                    || (*a == Action::Pull
                        && app
                            .registry
                            .mirror_namespaces()
                            .iter()
                            .any(|ns| ac.allows(subject, &format!("{ns}/{}", s.name), *a)))
            })
            .map(|a| a.as_str().to_owned())
            .collect();
        match out.iter_mut().find(|e| e.kind == "repository" && e.name == s.name) {
            Some(e) => {
                for a in allowed {
                    if !e.actions.contains(&a) {
                        e.actions.push(a);
                    }
                }
            }
            None if !allowed.is_empty() => {
                out.push(AccessEntry { kind: "repository".into(), name: s.name.clone(), actions: allowed })
            }
            None => {}
        }
    }
    out
}
