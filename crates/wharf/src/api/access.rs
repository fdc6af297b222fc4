//! Access control at the HTTP edge: which action each endpoint needs (the one mapping), who the caller is, and
//! the 401/403/429 answers. Only active when `[auth]` or `[[access]]` is configured.
//!
//! With the token flow on (always, once the signing key is loaded), a 401 carries a Bearer challenge naming
//! `/auth/token` and the scope the request needs; clients fetch a token there and retry. Basic credentials
//! sent straight to `/v2/` keep working. A registry token decides by its scopes (a missing scope is a 401
//! `insufficient_scope` challenge, so the client asks for it) *and* its subject must still pass the rules for
//! the name the request really addresses (its `ns`), so a rule change takes effect at once.

use std::net::IpAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use oci::{ErrorCode, RepoName};

use super::endpoint::Endpoint;
use super::errors::ApiError;
use super::AppState;
use crate::auth::{AccessControl, AuthError, PeerAddr};
use crate::policy::access::{Action, Caller};

/// The challenge sent with every 401.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"wharf\"";

/// What an endpoint needs: `None` for the base check and the catalog (decided separately), else the repository
/// and action. GET/HEAD read (pull); upload steps and manifest PUT write (push; cancelling one's own upload is
/// part of pushing); DELETE of a manifest or blob needs delete.
pub fn required_action(endpoint: &Endpoint) -> Option<(&RepoName, Action)> {
    use Endpoint::*;
    Some(match endpoint {
        Base | Catalog { .. } => return None,
        TagsList { repo, .. } | Referrers { repo, .. } | ManifestGet { repo, .. } | BlobGet { repo, .. } => {
            (repo, Action::Pull)
        }
        ManifestPut { repo, .. }
        | UploadStart { repo, .. }
        | UploadStatus { repo, .. }
        | UploadPatch { repo, .. }
        | UploadFinish { repo, .. }
        | UploadCancel { repo, .. } => (repo, Action::Push),
        ManifestDelete { repo, .. } | BlobDelete { repo, .. } => (repo, Action::Delete),
    })
}

/// The name the rules see: the path's name, prefixed with the registry host when containerd's `ns` parameter
/// selects a mirrored namespace (so `docker.io/*` rules cover both spellings).
fn rule_name(app: &AppState, repo: &RepoName, ns: Option<&str>) -> String {
    match ns.filter(|ns| app.registry.serves_namespace(ns)) {
        Some(ns) => format!("{ns}/{repo}"),
        None => repo.to_string(),
    }
}

/// The client's address, from the plain or the TLS listener.
pub(super) fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    if let Some(ConnectInfo(p)) = parts.extensions.get::<ConnectInfo<PeerAddr>>() {
        return Some(p.0.ip());
    }
    parts.extensions.get::<ConnectInfo<crate::tls::TlsPeer>>().map(|c| c.0.addr.ip())
}

/// The verified mutual-TLS client certificate of the connection, if any (it identifies the caller when the
/// request carries no credentials).
pub(super) fn client_identity(parts: &Parts) -> Option<&crate::tls::ClientIdentity> {
    parts.extensions.get::<ConnectInfo<crate::tls::TlsPeer>>().and_then(|c| c.0.identity.as_ref())
}

/// `401 UNAUTHORIZED` with the Basic challenge.
pub fn unauthorized(message: &str) -> Response {
    ApiError::new(ErrorCode::Unauthorized, message).header(header::WWW_AUTHENTICATE, BASIC_CHALLENGE).into_response()
}

/// How to challenge a client that must (re)authenticate: Bearer with the token endpoint when the token flow is
/// on, Basic otherwise.
pub(super) struct Challenge {
    /// `realm="…",service="…"`, or `None` for Basic.
    bearer: Option<String>,
}

impl Challenge {
    /// The challenge for this request: the realm is `[auth] token_realm`, or this server's own `/auth/token`
    /// at the request's host and scheme.
    pub(super) fn new(ac: &AccessControl, parts: &Parts) -> Challenge {
        let Some(tokens) = ac.tokens() else { return Challenge { bearer: None } };
        let realm = match ac.token_realm() {
            Some(r) => r.to_owned(),
            None => {
                let tls = parts.extensions.get::<ConnectInfo<crate::tls::TlsPeer>>().is_some();
                let host = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                    .filter(|h| !h.is_empty() && !h.contains(['"', '\\', ' ', '/']))
                    .unwrap_or("localhost");
                format!("{}://{host}/auth/token", if tls { "https" } else { "http" })
            }
        };
        Challenge { bearer: Some(format!("realm=\"{realm}\",service=\"{}\"", tokens.service())) }
    }

    /// `401 UNAUTHORIZED` asking for `scope` (and saying the presented token lacked it, when it did).
    pub(super) fn respond(&self, message: &str, scope: Option<&str>, insufficient: bool) -> Response {
        let Some(base) = &self.bearer else { return unauthorized(message) };
        let mut value = format!("Bearer {base}");
        if let Some(scope) = scope {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        if insufficient {
            value.push_str(",error=\"insufficient_scope\"");
        }
        ApiError::new(ErrorCode::Unauthorized, message).header(header::WWW_AUTHENTICATE, value).into_response()
    }
}

fn denied(challenge: &Challenge, caller: &Caller, what: &str, scope: Option<&str>) -> Response {
    if caller.user.is_none() && caller.token.is_none() {
        return challenge.respond(&format!("authentication required to {what}"), scope, false);
    }
    ApiError::new(ErrorCode::Denied, format!("not allowed to {what}")).into_response()
}

/// Who sent the request, or the error response (401 for bad credentials, 429 past the failure limit).
/// `certificate` is the connection's verified mTLS identity, used when the request brings no credentials.
pub async fn caller(
    ac: &AccessControl,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    certificate: Option<&crate::tls::ClientIdentity>,
) -> Result<Caller, Response> {
    caller_or(ac, headers, peer, certificate, &Challenge { bearer: None }).await
}

async fn caller_or(
    ac: &AccessControl,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    certificate: Option<&crate::tls::ClientIdentity>,
    challenge: &Challenge,
) -> Result<Caller, Response> {
    let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    ac.identify(auth, peer, certificate).await.map_err(|e| match e {
        AuthError::Invalid => challenge.respond("invalid credentials or expired token", None, false),
        AuthError::RateLimited { retry_after } => ApiError::new(ErrorCode::TooManyRequests, e.to_string())
            .header(header::RETRY_AFTER, retry_after.to_string())
            .into_response(),
    })
}

/// Whether `caller` may take `action` on `repo` (the path's name; `rule` is the name the rules see):
/// `Err(true)` when a token lacks the scope (the client should ask for it), `Err(false)` when denied.
fn decide(ac: &AccessControl, caller: &Caller, repo: &RepoName, rule: &str, action: Action) -> Result<(), bool> {
    match &caller.token {
        None => ac.allows(caller, rule, action).then_some(()).ok_or(false),
        Some(subject) => {
            if !ac.allows(caller, repo.as_str(), action) {
                return Err(true);
            }
            ac.allows(&subject.caller, rule, action).then_some(()).ok_or(false)
        }
    }
}

/// The scope a client needs for `action` on `repo` (a push also reads, as clients ask).
fn scope_for(repo: &RepoName, action: Action) -> String {
    let actions: &[Action] = match action {
        Action::Push => &[Action::Pull, Action::Push],
        Action::Pull => &[Action::Pull],
        Action::Delete => &[Action::Delete],
        Action::Admin => &[Action::Admin],
    };
    crate::auth::token::Scope::repository(repo.as_str(), actions)
}

/// Check a parsed `/v2/` request. May rewrite it: a cross-repository mount whose source the caller may not
/// read becomes a plain upload session (the spec allows a registry to decline a mount), and so does an
/// automatic mount without `from` (it would reveal content of repositories the caller cannot read).
pub async fn check(
    app: &AppState,
    ac: &AccessControl,
    parts: &Parts,
    endpoint: &mut Endpoint,
    ns: Option<&str>,
) -> Result<Caller, Response> {
    let challenge = Challenge::new(ac, parts);
    let caller = caller_or(ac, &parts.headers, peer_ip(parts), client_identity(parts), &challenge).await?;
    const CATALOG: &str = "registry:catalog:*";
    match endpoint {
        // The ping must challenge anonymous clients, or clients with credentials would never send them.
        Endpoint::Base if caller.user.is_none() && caller.token.is_none() => {
            return Err(challenge.respond("authentication required", None, false))
        }
        Endpoint::Base => return Ok(caller),
        // A token lists the catalog for its subject, and only if it was granted the catalog scope.
        Endpoint::Catalog { .. } if caller.token.is_some() => {
            let subject = caller.token.as_ref().expect("checked");
            if !subject.catalog {
                return Err(challenge.respond("this token does not grant the catalog", Some(CATALOG), true));
            }
            return Ok(subject.caller.clone());
        }
        // Anonymous listing only when some rule is about anonymous callers; the list itself is filtered.
        Endpoint::Catalog { .. } if caller.user.is_none() && !ac.rules().mentions_anonymous() => {
            return Err(challenge.respond("authentication required", Some(CATALOG), false))
        }
        Endpoint::Catalog { .. } => return Ok(caller),
        _ => {}
    }
    let (repo, action) = required_action(endpoint).expect("every other endpoint names a repository");
    let scope = scope_for(repo, action);
    match decide(ac, &caller, repo, &rule_name(app, repo, ns), action) {
        Ok(()) => {}
        Err(true) => {
            return Err(challenge.respond(
                &format!("this token does not grant {} on {repo}", action.as_str()),
                Some(&scope),
                true,
            ))
        }
        Err(false) => return Err(denied(&challenge, &caller, &format!("{} {repo}", action.as_str()), Some(&scope))),
    }
    if let Endpoint::UploadStart { mount, .. } = endpoint {
        let readable = match mount.as_ref().and_then(|(_, from)| from.as_ref()) {
            Some(from) => decide(ac, &caller, from, &rule_name(app, from, ns), Action::Pull).is_ok(),
            None => false,
        };
        if !readable {
            *mount = None;
        }
    }
    Ok(caller)
}

/// Middleware for `/_wharf/*` and `/metrics`: the `admin` action, unless `[auth] public_status = true`.
pub async fn admin_only(State(app): State<std::sync::Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(ac) = app.access.as_ref().filter(|ac| !ac.public_status) else { return next.run(req).await };
    let (parts, body) = req.into_parts();
    let caller = match caller(ac, &parts.headers, peer_ip(&parts), client_identity(&parts)).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    // A registry token proves who its subject is; the subject needs the admin action.
    let who = caller.token.as_ref().map(|t| &t.caller).unwrap_or(&caller);
    if !ac.allows(who, "", Action::Admin) {
        return denied(&Challenge { bearer: None }, &caller, "read the status pages (needs the admin action)", None);
    }
    next.run(Request::from_parts(parts, body)).await
}
