//! The web console: server-rendered HTML pages over the same data as the registry API and `/_wharf/`, with
//! one small stylesheet embedded in the binary (no script, no CDN: it works on an air-gapped site).
//!
//! Pages: `/` (repositories), `/ui/tags/<repo>` (tags with digests, platforms, sizes, age, pull commands),
//! `/ui/image/<repo>?ref=<tag|digest>` (index, platforms, config summary, layers, referrers, tag history),
//! `/ui/mirror`, `/ui/sync`, `/ui/storage` (admin). Every page reads through the access rules: repositories the
//! caller may not pull are not listed or shown, the admin pages need the admin action. The data of the
//! repository pages is also served as JSON under `/_wharf/console/`.
//!
//! Actions (delete a tag, run a sync entry, run a collection) are off unless `[console] actions = true`, and
//! then only for callers the rules allow (delete on the repository; admin for sync and collections). Each
//! form carries a CSRF token (an HMAC of the caller's name under a per-process key), and a cross-site
//! `Origin` or `Sec-Fetch-Site` is refused.

// Helpers return a finished response as their error (a 401, 403 or 400 page): it is built once per request
// and goes straight out, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod html;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use oci::{Digest, Manifest, ManifestBody, RefSpec, RepoName, Tag};
use serde::Serialize;

use super::access::{caller, client_identity, peer_ip};
use super::AppState;
use crate::policy::access::{Action, Caller};
use html::{esc, Page};

/// Tags per page of a repository.
const TAGS_PER_PAGE: usize = 100;
/// Repositories per page.
const REPOS_PER_PAGE: usize = 100;

/// How the console behaves (`[console]`).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Offer actions at all (read-only when false).
    pub actions: bool,
    /// The grace of a collection started from the console.
    pub gc_grace: Duration,
    /// Per-process key of the CSRF tokens.
    csrf_key: Arc<ring::hmac::Key>,
}

impl ConsoleSettings {
    /// Settings with a fresh CSRF key.
    pub fn new(actions: bool, gc_grace: Duration) -> ConsoleSettings {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("the OS provides random bytes");
        ConsoleSettings { actions, gc_grace, csrf_key: Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)) }
    }

    fn csrf(&self, viewer: &Viewer) -> String {
        let tag = ring::hmac::sign(&self.csrf_key, format!("csrf:{}", viewer.name()).as_bytes());
        hex::encode(tag.as_ref())
    }

    fn csrf_ok(&self, viewer: &Viewer, token: &str) -> bool {
        let Ok(raw) = hex::decode(token) else { return false };
        ring::hmac::verify(&self.csrf_key, format!("csrf:{}", viewer.name()).as_bytes(), &raw).is_ok()
    }
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings::new(false, crate::gc::DEFAULT_GRACE)
    }
}

/// Who looks at the console.
pub(super) struct Viewer {
    /// `None` without access control (everyone may read).
    caller: Option<Caller>,
}

impl Viewer {
    fn name(&self) -> String {
        self.caller.as_ref().and_then(|c| c.user.clone()).unwrap_or_else(|| "anonymous".into())
    }
}

fn can(app: &AppState, v: &Viewer, repo: &str, action: Action) -> bool {
    match (&app.access, &v.caller) {
        (Some(ac), Some(c)) => {
            let who = c.token.as_ref().map(|t| &t.caller).unwrap_or(c);
            ac.allows(who, repo, action)
        }
        _ => true,
    }
}

fn may_act(app: &AppState, v: &Viewer, repo: &str, action: Action) -> bool {
    app.console.actions && can(app, v, repo, action)
}

/// A 401 with a Basic challenge, so a browser asks for credentials.
fn challenge(msg: &str) -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"wharf\"")], msg.to_owned()).into_response()
}

async fn viewer(app: &AppState, parts: &Parts) -> Result<Viewer, Response> {
    let Some(ac) = &app.access else { return Ok(Viewer { caller: None }) };
    match caller(ac, &parts.headers, peer_ip(parts), client_identity(parts)).await {
        Ok(c) => Ok(Viewer { caller: Some(c) }),
        Err(_) => Err(challenge("invalid credentials")),
    }
}

/// Refuse a page the viewer may not see: 401 when anonymous (so the browser asks), 403 otherwise.
fn refuse(v: &Viewer, what: &str) -> Response {
    match &v.caller {
        Some(c) if c.user.is_some() || c.token.is_some() => {
            (StatusCode::FORBIDDEN, format!("not allowed to {what}")).into_response()
        }
        _ => challenge(&format!("sign in to {what}")),
    }
}

/// The console's routes, mounted by `api::router`.
pub fn routes() -> Router<Arc<AppState>> {
    use axum::routing::{get, post};
    Router::new()
        .route("/", get(repos))
        .route("/ui", get(repos))
        .route("/ui/", get(repos))
        .route("/ui/console.css", get(css))
        .route("/ui/tags/{*repo}", get(tags))
        .route("/ui/image/{*repo}", get(image))
        .route("/ui/mirror", get(mirror))
        .route("/ui/sync", get(sync))
        .route("/ui/storage", get(storage))
        .route("/ui/action/tag-delete", post(action_tag_delete))
        .route("/ui/action/gc", post(action_gc))
        .route("/ui/action/sync", post(action_sync))
        .route("/_wharf/console/repositories", get(repos_json))
        .route("/_wharf/console/tags/{*repo}", get(tags_json))
        .route("/_wharf/console/image/{*repo}", get(image_json))
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")],
        include_str!("console.css"),
    )
        .into_response()
}

fn json<T: Serialize>(v: &T) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_vec_pretty(v).expect("console data serialises"))
        .into_response()
}

fn fail(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("the store failed: {e}")).into_response()
}

// ---------------------------------------------------------------- repositories

#[derive(Serialize)]
struct RepoRow {
    name: String,
    tags: usize,
    manifests: usize,
    /// Unix seconds of the newest manifest write.
    last_push: Option<u64>,
    /// Bytes of the blobs the repository links.
    bytes: u64,
}

#[derive(Serialize)]
struct ReposData {
    query: String,
    repositories: Vec<RepoRow>,
    more: bool,
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn repos_data(app: &AppState, v: &Viewer, q: &str, after: Option<&str>) -> Result<ReposData, Response> {
    let store = app.registry.store();
    let mut rows = Vec::new();
    let mut cursor = after.map(str::to_owned);
    let mut more = false;
    'pages: loop {
        let page = store.repo_list(cursor.as_deref(), 500).await.map_err(fail)?;
        for repo in &page {
            if !repo.as_str().contains(q) || !can(app, v, repo.as_str(), Action::Pull) {
                continue;
            }
            if rows.len() == REPOS_PER_PAGE {
                more = true;
                break 'pages;
            }
            let manifests = store.manifest_list(repo).await.map_err(fail)?;
            let tags = store.tag_list(repo, None, usize::MAX).await.map_err(fail)?.unwrap_or_default().len();
            let mut bytes = 0;
            for l in store.blob_link_list(repo).await.map_err(fail)? {
                bytes += store.blob_stat(&l.digest).await.map_err(fail)?.map_or(0, |m| m.size);
            }
            rows.push(RepoRow {
                name: repo.to_string(),
                tags,
                manifests: manifests.len(),
                last_push: manifests.iter().map(|m| unix(m.modified)).max(),
                bytes,
            });
        }
        if page.len() < 500 {
            break;
        }
        cursor = page.last().map(|r| r.to_string());
    }
    Ok(ReposData { query: q.to_owned(), repositories: rows, more })
}

#[derive(serde::Deserialize, Default)]
struct ListQuery {
    q: Option<String>,
    after: Option<String>,
    page: Option<usize>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

async fn repos(State(app): State<Arc<AppState>>, Query(q): Query<ListQuery>, parts: Parts) -> Response {
    let v = match viewer(&app, &parts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if app.access.is_some() && v.caller.as_ref().is_some_and(|c| c.user.is_none() && c.token.is_none()) {
        // Anonymous: show what anonymous rules allow; with nothing, ask for credentials.
        if !app.access.as_ref().is_some_and(|ac| ac.rules().mentions_anonymous()) {
            return challenge("sign in to see repositories");
        }
    }
    let query = q.q.unwrap_or_default();
    let data = match repos_data(&app, &v, &query, q.after.as_deref()).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut p = Page::new("Repositories", &v.name());
    p.push(&format!(
        "<h1>Repositories</h1><form role=\"search\" method=\"get\" action=\"/\"><label>Search \
         <input type=\"search\" name=\"q\" value=\"{}\" autofocus></label> <button>Search</button></form>",
        esc(&query)
    ));
    if data.repositories.is_empty() {
        p.push("<p class=\"mute\" id=\"empty\">No repositories to show.</p>");
    } else {
        p.push("<table id=\"repos\"><thead><tr><th>Repository</th><th>Tags</th><th class=\"wide\">Manifests</th><th>Size</th><th>Last push</th></tr></thead><tbody>");
        for r in &data.repositories {
            p.push(&format!(
                "<tr><td><a href=\"/ui/tags/{0}\">{1}</a></td><td>{2}</td><td class=\"wide\">{3}</td><td>{4}</td><td>{5}</td></tr>",
                html::path(&r.name),
                esc(&r.name),
                r.tags,
                r.manifests,
                html::bytes(r.bytes),
                r.last_push.map(html::age).unwrap_or_default()
            ));
        }
        p.push("</tbody></table>");
    }
    if data.more {
        let last = data.repositories.last().map(|r| r.name.as_str()).unwrap_or_default();
        p.push(&format!(
            "<p class=\"pager\"><a href=\"/?q={}&amp;after={}\">Next page</a></p>",
            html::query(&query),
            html::query(last)
        ));
    }
    p.finish()
}

async fn repos_json(State(app): State<Arc<AppState>>, Query(q): Query<ListQuery>, parts: Parts) -> Response {
    let v = match viewer(&app, &parts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match repos_data(&app, &v, &q.q.unwrap_or_default(), q.after.as_deref()).await {
        Ok(d) => json(&d),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------- tags

#[derive(Serialize)]
struct TagRow {
    tag: String,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    /// Config and layer bytes (all platforms of an index).
    bytes: u64,
    /// Unix seconds the tag was last pointed at its digest.
    pushed: Option<u64>,
}

#[derive(Serialize)]
struct TagsData {
    repository: String,
    total: usize,
    page: usize,
    pages: usize,
    tags: Vec<TagRow>,
    can_delete: bool,
}

fn image_bytes(m: &Manifest) -> u64 {
    match &m.body {
        ManifestBody::Image(i) => i.config.size + i.layers.iter().map(|l| l.size).sum::<u64>(),
        ManifestBody::Index(_) => 0,
    }
}

async fn load(app: &AppState, repo: &RepoName, d: &Digest) -> Option<Manifest> {
    let stored = app.registry.store().manifest_get(repo, d).await.ok()??;
    Manifest::parse(stored.bytes, Some(&stored.media_type), d.algorithm()).ok()
}

async fn tags_data(app: &AppState, v: &Viewer, repo: &RepoName, page: usize) -> Result<TagsData, Response> {
    let store = app.registry.store();
    let all = store.tag_list(repo, None, usize::MAX).await.map_err(fail)?.unwrap_or_default();
    let pages = all.len().div_ceil(TAGS_PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    let mut rows = Vec::new();
    for tag in all.iter().skip((page - 1) * TAGS_PER_PAGE).take(TAGS_PER_PAGE) {
        let Some(digest) = store.tag_get(repo, tag).await.map_err(fail)? else { continue };
        let Some(m) = load(app, repo, &digest).await else { continue };
        let (mut platforms, mut bytes) = (Vec::new(), image_bytes(&m));
        if let ManifestBody::Index(ix) = &m.body {
            for c in &ix.manifests {
                if crate::verify::platforms::is_attestation_entry(c) {
                    continue;
                }
                if let Some(p) = &c.platform {
                    platforms.push(p.to_string());
                }
                if let Some(cm) = load(app, repo, &c.digest).await {
                    bytes += image_bytes(&cm);
                }
            }
        }
        let history = crate::history::tag_history(store.as_ref(), repo, tag).await.map_err(fail)?;
        let pushed = history.iter().rev().find(|e| !e.deleted && e.new == digest).map(|e| e.time);
        rows.push(TagRow {
            tag: tag.to_string(),
            digest: digest.to_string(),
            media_type: m.media_type.to_string(),
            platforms,
            bytes,
            pushed,
        });
    }
    Ok(TagsData {
        repository: repo.to_string(),
        total: all.len(),
        page,
        pages,
        tags: rows,
        can_delete: may_act(app, v, repo.as_str(), Action::Delete),
    })
}

fn parse_repo(raw: &str) -> Result<RepoName, Response> {
    raw.trim_end_matches('/')
        .parse::<RepoName>()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{raw:?} is not a repository name: {e}")).into_response())
}

/// The viewer and the repository of a repository page, or the response refusing it.
async fn repo_page(app: &AppState, parts: &Parts, raw: &str) -> Result<(Viewer, RepoName), Response> {
    let v = viewer(app, parts).await?;
    let repo = parse_repo(raw)?;
    if !can(app, &v, repo.as_str(), Action::Pull) {
        return Err(refuse(&v, &format!("pull {repo}")));
    }
    Ok((v, repo))
}

fn host_of(headers: &HeaderMap) -> String {
    headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost:5000").to_owned()
}

async fn tags(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<ListQuery>,
    parts: Parts,
) -> Response {
    let (v, repo) = match repo_page(&app, &parts, &raw).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let data = match tags_data(&app, &v, &repo, q.page.unwrap_or(1)).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let host = host_of(&parts.headers);
    let csrf = app.console.csrf(&v);
    let mut p = Page::new(repo.as_str(), &v.name());
    p.push(&format!("<h1>{}</h1><p class=\"mute\">{} tags</p>", esc(repo.as_str()), data.total));
    if data.tags.is_empty() {
        p.push("<p class=\"mute\" id=\"empty\">No tags.</p>");
    } else {
        p.push("<table id=\"tags\"><thead><tr><th>Tag</th><th>Digest</th><th>Platforms</th><th>Size</th><th>Age</th><th class=\"wide\">Pull</th>");
        if data.can_delete {
            p.push("<th></th>");
        }
        p.push("</tr></thead><tbody>");
        for t in &data.tags {
            let short = t.digest.split_once(':').map_or(t.digest.as_str(), |(_, h)| &h[..12.min(h.len())]);
            let platforms: String =
                t.platforms.iter().map(|p| format!("<span class=\"pill\">{}</span>", esc(p))).collect();
            p.push(&format!(
                "<tr data-tag=\"{tag}\"><td><a href=\"/ui/image/{path}?ref={qtag}\">{tag}</a></td>\
                 <td><a class=\"mono\" href=\"/ui/image/{path}?ref={qd}\" title=\"{digest}\">{short}</a></td>\
                 <td>{platforms}</td><td>{size}</td><td>{age}</td>\
                 <td class=\"wide\"><code>{host}/{repo}:{tag}</code><br><code>{host}/{repo}@{digest}</code></td>",
                tag = esc(&t.tag),
                path = html::path(repo.as_str()),
                qtag = html::query(&t.tag),
                qd = html::query(&t.digest),
                digest = esc(&t.digest),
                short = esc(short),
                size = html::bytes(t.bytes),
                age = t.pushed.map(html::age).unwrap_or_default(),
                host = esc(&host),
                repo = esc(repo.as_str()),
            ));
            if data.can_delete {
                p.push(&format!(
                    "<td><form class=\"inline\" method=\"post\" action=\"/ui/action/tag-delete\">\
                     <input type=\"hidden\" name=\"repo\" value=\"{}\"><input type=\"hidden\" name=\"tag\" value=\"{}\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button class=\"danger\" aria-label=\"Delete tag {}\">Delete</button></form></td>",
                    esc(repo.as_str()),
                    esc(&t.tag),
                    esc(&t.tag)
                ));
            }
            p.push("</tr>");
        }
        p.push("</tbody></table>");
    }
    if data.pages > 1 {
        p.push("<p class=\"pager\">");
        if data.page > 1 {
            p.push(&format!("<a href=\"/ui/tags/{}?page={}\">Previous</a>", html::path(repo.as_str()), data.page - 1));
        }
        p.push(&format!("Page {} of {}", data.page, data.pages));
        if data.page < data.pages {
            p.push(&format!(
                " <a href=\"/ui/tags/{}?page={}\" id=\"next\">Next</a>",
                html::path(repo.as_str()),
                data.page + 1
            ));
        }
        p.push("</p>");
    }
    p.finish()
}

async fn tags_json(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<ListQuery>,
    parts: Parts,
) -> Response {
    let (v, repo) = match repo_page(&app, &parts, &raw).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match tags_data(&app, &v, &repo, q.page.unwrap_or(1)).await {
        Ok(d) => json(&d),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------- image

#[derive(Serialize, Default)]
struct ImageData {
    repository: String,
    reference: String,
    digest: String,
    media_type: String,
    size: usize,
    /// For an index: each entry (platform, digest, media type, bytes of its config and layers).
    platforms: Vec<serde_json::Value>,
    /// For a single image: its config summary and layers.
    config: Option<serde_json::Value>,
    layers: Vec<serde_json::Value>,
    referrers: Vec<serde_json::Value>,
    history: Vec<crate::history::TagEvent>,
}

async fn image_data(app: &AppState, repo: &RepoName, reference: &str) -> Result<Option<ImageData>, Response> {
    let store = app.registry.store();
    let spec: RefSpec = match reference.parse::<Digest>() {
        Ok(d) => RefSpec::Digest(d),
        Err(_) => match reference.parse::<Tag>() {
            Ok(t) => RefSpec::Tag(t),
            Err(e) => return Err((StatusCode::BAD_REQUEST, format!("{reference:?}: {e}")).into_response()),
        },
    };
    let digest = match &spec {
        RefSpec::Digest(d) => d.clone(),
        RefSpec::Tag(t) => match store.tag_get(repo, t).await.map_err(fail)? {
            Some(d) => d,
            None => return Ok(None),
        },
    };
    let Some(m) = load(app, repo, &digest).await else { return Ok(None) };
    let mut data = ImageData {
        repository: repo.to_string(),
        reference: reference.to_owned(),
        digest: digest.to_string(),
        media_type: m.media_type.to_string(),
        size: m.bytes.len(),
        ..ImageData::default()
    };
    match &m.body {
        ManifestBody::Index(ix) => {
            for c in &ix.manifests {
                let bytes = load(app, repo, &c.digest).await.map(|cm| image_bytes(&cm));
                data.platforms.push(serde_json::json!({
                    "platform": c.platform.as_ref().map(ToString::to_string),
                    "attestation": crate::verify::platforms::is_attestation_entry(c),
                    "digest": c.digest.to_string(),
                    "mediaType": c.media_type.to_string(),
                    "bytes": bytes,
                }));
            }
        }
        ManifestBody::Image(img) => {
            let mut summary = serde_json::json!({"digest": img.config.digest.to_string(), "size": img.config.size});
            if img.config.size <= 1024 * 1024 {
                if let Ok(Some(mut r)) = store.blob_open(&img.config.digest, None).await {
                    use futures_util::StreamExt as _;
                    let mut buf = Vec::new();
                    while let Some(Ok(chunk)) = r.body.next().await {
                        buf.extend_from_slice(&chunk);
                    }
                    if let Ok(cfg) = serde_json::from_slice::<serde_json::Value>(&buf) {
                        for k in ["os", "architecture", "variant", "created", "author"] {
                            summary[k] = cfg[k].clone();
                        }
                        for k in ["Entrypoint", "Cmd", "User", "WorkingDir", "Labels", "ExposedPorts"] {
                            summary[k] = cfg["config"][k].clone();
                        }
                    }
                }
            }
            data.config = Some(summary);
            data.layers = img
                .layers
                .iter()
                .map(|l| serde_json::json!({"digest": l.digest.to_string(), "size": l.size, "mediaType": l.media_type.to_string()}))
                .collect();
        }
    }
    for r in store.referrers(repo, &digest).await.map_err(fail)? {
        data.referrers.push(serde_json::json!({
            "digest": r.digest.to_string(),
            "artifactType": r.artifact_type.as_ref().map(ToString::to_string),
            "size": r.size,
        }));
    }
    if let RefSpec::Tag(t) = &spec {
        data.history = crate::history::tag_history(store.as_ref(), repo, t).await.map_err(fail)?;
    }
    Ok(Some(data))
}

async fn image(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<ListQuery>,
    parts: Parts,
) -> Response {
    let (v, repo) = match repo_page(&app, &parts, &raw).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let reference = q.reference.unwrap_or_else(|| "latest".into());
    let data = match image_data(&app, &repo, &reference).await {
        Ok(Some(d)) => d,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("{repo}:{reference} is not here")).into_response(),
        Err(r) => return r,
    };
    let host = host_of(&parts.headers);
    let path = html::path(repo.as_str());
    let mut p = Page::new(&format!("{repo}:{reference}"), &v.name());
    p.push(&format!(
        "<h1><a href=\"/ui/tags/{path}\">{}</a> : {}</h1>\
         <p><code id=\"digest\">{}</code> <span class=\"pill\">{}</span> {} bytes</p>\
         <p><code>{}/{}@{}</code></p>",
        esc(repo.as_str()),
        esc(&reference),
        esc(&data.digest),
        esc(&data.media_type),
        data.size,
        esc(&host),
        esc(repo.as_str()),
        esc(&data.digest)
    ));
    if !data.platforms.is_empty() {
        p.push("<h2>Platforms</h2><table id=\"platforms\"><thead><tr><th>Platform</th><th>Manifest</th><th>Size</th></tr></thead><tbody>");
        for e in &data.platforms {
            let name = match (e["platform"].as_str(), e["attestation"].as_bool()) {
                (_, Some(true)) => "attestation".to_owned(),
                (Some(p), _) => p.to_owned(),
                _ => "—".to_owned(),
            };
            let d = e["digest"].as_str().unwrap_or_default();
            p.push(&format!(
                "<tr><td>{}</td><td><a class=\"mono\" href=\"/ui/image/{path}?ref={}\">{}</a></td><td>{}</td></tr>",
                esc(&name),
                html::query(d),
                esc(d),
                e["bytes"].as_u64().map(html::bytes).unwrap_or_else(|| "not here".into())
            ));
        }
        p.push("</tbody></table>");
    }
    if let Some(cfg) = &data.config {
        p.push("<h2>Config</h2><table id=\"config\"><tbody>");
        for k in [
            "os",
            "architecture",
            "variant",
            "created",
            "author",
            "Entrypoint",
            "Cmd",
            "User",
            "WorkingDir",
            "Labels",
            "ExposedPorts",
        ] {
            if !cfg[k].is_null() {
                let value = match &cfg[k] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                p.push(&format!("<tr><th>{k}</th><td><code>{}</code></td></tr>", esc(&value)));
            }
        }
        p.push("</tbody></table>");
        p.push("<h2>Layers</h2><table id=\"layers\"><thead><tr><th>#</th><th>Digest</th><th>Size</th><th class=\"wide\">Media type</th></tr></thead><tbody>");
        for (i, l) in data.layers.iter().enumerate() {
            p.push(&format!(
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"wide mono\">{}</td></tr>",
                i + 1,
                esc(l["digest"].as_str().unwrap_or_default()),
                html::bytes(l["size"].as_u64().unwrap_or(0)),
                esc(l["mediaType"].as_str().unwrap_or_default())
            ));
        }
        p.push("</tbody></table>");
    }
    p.push("<h2>Referrers</h2>");
    if data.referrers.is_empty() {
        p.push("<p class=\"mute\">No signatures, SBOMs or attestations.</p>");
    } else {
        p.push(
            "<table id=\"referrers\"><thead><tr><th>Artifact type</th><th>Digest</th><th>Size</th></tr></thead><tbody>",
        );
        for r in &data.referrers {
            let d = r["digest"].as_str().unwrap_or_default();
            p.push(&format!(
                "<tr><td>{}</td><td><a class=\"mono\" href=\"/ui/image/{path}?ref={}\">{}</a></td><td>{}</td></tr>",
                esc(r["artifactType"].as_str().unwrap_or("—")),
                html::query(d),
                esc(d),
                r["size"]
            ));
        }
        p.push("</tbody></table>");
    }
    if !data.history.is_empty() {
        p.push("<h2>Tag history</h2><table id=\"history\"><thead><tr><th>When</th><th>Change</th><th>By</th></tr></thead><tbody>");
        for e in data.history.iter().rev() {
            let change = if e.deleted {
                format!("deleted (was {})", e.new)
            } else {
                match &e.old {
                    Some(o) => format!("{o} → {}", e.new),
                    None => format!("created → {}", e.new),
                }
            };
            p.push(&format!(
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                html::age(e.time),
                esc(&change),
                esc(&e.source)
            ));
        }
        p.push("</tbody></table>");
    }
    p.finish()
}

async fn image_json(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<ListQuery>,
    parts: Parts,
) -> Response {
    let (_, repo) = match repo_page(&app, &parts, &raw).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match image_data(&app, &repo, &q.reference.unwrap_or_else(|| "latest".into())).await {
        Ok(Some(d)) => json(&d),
        Ok(None) => (StatusCode::NOT_FOUND, "not here").into_response(),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------- admin pages

async fn admin(app: &AppState, parts: &Parts) -> Result<Viewer, Response> {
    let v = viewer(app, parts).await?;
    if app.access.as_ref().is_some_and(|ac| !ac.public_status) && !can(app, &v, "", Action::Admin) {
        return Err(refuse(&v, "see the status pages (needs the admin action)"));
    }
    Ok(v)
}

async fn mirror(State(app): State<Arc<AppState>>, parts: Parts) -> Response {
    let v = match admin(&app, &parts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut p = Page::new("Mirror", &v.name());
    p.push("<h1>Mirror upstreams</h1>");
    let Some(m) = app.registry.mirror() else {
        p.push("<p class=\"mute\" id=\"empty\">No [[upstream]] is configured.</p>");
        return p.finish();
    };
    p.push("<table id=\"upstreams\"><thead><tr><th>Upstream</th><th>Health</th><th>Hit rate</th><th>Fetched</th><th class=\"wide\">Errors</th><th>Cache</th></tr></thead><tbody>");
    for u in m.status() {
        let total = u.hits + u.misses;
        let rate = if total == 0 { "—".to_owned() } else { format!("{:.0}%", u.hits as f64 * 100.0 / total as f64) };
        let health = serde_json::to_value(&u.health).ok().map(|h| match h {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        p.push(&format!(
            "<tr><td>{}<br><span class=\"mute mono\">{}</span></td><td>{}</td><td>{rate} <span class=\"mute\">({} hits, {} misses)</span></td><td>{}</td><td class=\"wide\">{}</td><td>{}{}</td></tr>",
            esc(&u.name),
            esc(&u.url),
            esc(&health.unwrap_or_default()),
            u.hits,
            u.misses,
            html::bytes(u.bytes_fetched),
            u.errors,
            html::bytes(u.cache_bytes),
            u.max_bytes.map(|b| format!(" of {}", html::bytes(b))).unwrap_or_default()
        ));
    }
    p.push("</tbody></table>");
    p.finish()
}

async fn sync(State(app): State<Arc<AppState>>, parts: Parts) -> Response {
    let v = match admin(&app, &parts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reports = app.syncer.reports().await;
    let csrf = app.console.csrf(&v);
    let act = may_act(&app, &v, "", Action::Admin);
    let mut p = Page::new("Sync", &v.name());
    p.push("<h1>Sync entries</h1>");
    if app.syncer.entries().is_empty() {
        p.push("<p class=\"mute\" id=\"empty\">No [[sync]] entry is configured.</p>");
        return p.finish();
    }
    p.push("<table id=\"sync\"><thead><tr><th>Entry</th><th>Last run</th><th>Next run</th><th>Result</th><th>Conflicts</th>");
    if act {
        p.push("<th></th>");
    }
    p.push("</tr></thead><tbody>");
    for e in app.syncer.entries() {
        let r = reports.iter().find(|r| r.entry == e.name);
        let last = r.map(|r| html::age(r.finished_at)).unwrap_or_else(|| "never".into());
        let next = match (e.every, r) {
            (Some(every), Some(r)) => html::when(r.finished_at + every.as_secs()),
            (Some(every), None) => format!("every {}", html::duration(every)),
            (None, _) => "not scheduled".into(),
        };
        let result = match r {
            Some(r) if !r.errors.is_empty() => format!("<span class=\"bad\">{} errors</span>", r.errors.len()),
            Some(r) => {
                format!("<span class=\"ok\">{} tags, {} copied</span>", r.tags.len(), html::bytes(r.bytes_copied))
            }
            None => "—".into(),
        };
        let conflicts = r
            .map(|r| {
                r.conflicts
                    .iter()
                    .map(|c| format!("<span class=\"pill bad\">{}</span>", esc(&c.tag)))
                    .collect::<String>()
            })
            .unwrap_or_default();
        p.push(&format!(
            "<tr><td>{}</td><td>{last}</td><td>{next}</td><td>{result}</td><td>{conflicts}</td>",
            esc(&e.name)
        ));
        if act {
            p.push(&format!(
                "<td><form class=\"inline\" method=\"post\" action=\"/ui/action/sync\"><input type=\"hidden\" name=\"entry\" value=\"{}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Run now</button></form></td>",
                esc(&e.name)
            ));
        }
        p.push("</tr>");
    }
    p.push("</tbody></table>");
    p.finish()
}

async fn storage(State(app): State<Arc<AppState>>, parts: Parts) -> Response {
    let v = match admin(&app, &parts).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let gc = app.gc.last_report().await.ok().flatten();
    let scrub = app.scrub.last_report().await.ok().flatten();
    let mut p = Page::new("Storage", &v.name());
    p.push("<h1>Storage</h1>");
    if let Some(b) = app.registry.mirror().map(|m| m.budget_status()) {
        p.push(&format!(
            "<p>Mirror cache: {}{}</p>",
            html::bytes(b.cache_bytes),
            b.max_bytes.map(|m| format!(" of {} budget", html::bytes(m))).unwrap_or_default()
        ));
    }
    if let Some(r) = gc.as_ref().filter(|r| r.pool_blobs > 0) {
        p.push(&format!(
            "<p id=\"usage\">Blob pool: <b>{}</b> in {} blobs at the last collection ({} of it freed then).</p>",
            html::bytes(r.pool_bytes),
            r.pool_blobs,
            html::bytes(r.bytes_freed)
        ));
    }
    p.push("<h2>Garbage collection</h2>");
    match &gc {
        Some(r) => p.push(&format!(
            "<p id=\"gc\">Last {}{}: {} manifests, {} blob links, {} pool blobs deleted, <b>{}</b> freed, {} tags removed by retention, {} ms{}</p>",
            html::age(r.started_at),
            if r.dry_run { " (dry run)" } else { "" },
            r.manifests_deleted,
            r.links_deleted,
            r.blobs_deleted,
            html::bytes(r.bytes_freed),
            r.tags_removed_count,
            r.duration_ms,
            if r.errors.is_empty() { String::new() } else { format!(", <span class=\"bad\">{} errors</span>", r.errors.len()) }
        )),
        None => p.push("<p class=\"mute\" id=\"gc\">No collection has run yet.</p>"),
    }
    if may_act(&app, &v, "", Action::Admin) {
        p.push(&format!(
            "<form method=\"post\" action=\"/ui/action/gc\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button id=\"run-gc\">Run a collection now</button></form>",
            app.console.csrf(&v)
        ));
    }
    p.push("<h2>Scrub</h2>");
    match &scrub {
        Some(r) => p.push(&format!(
            "<p id=\"scrub\">Last {}: {} objects, {} checked, {}</p>",
            html::age(r.started_at),
            r.objects_checked,
            html::bytes(r.bytes_checked),
            if r.corrupt_found == 0 {
                "<span class=\"ok\">nothing corrupt</span>".to_owned()
            } else {
                format!("<span class=\"bad\">{} corrupt, quarantined</span>", r.corrupt_found)
            }
        )),
        None => p.push("<p class=\"mute\" id=\"scrub\">No scrub has run yet.</p>"),
    }
    p.finish()
}

// ---------------------------------------------------------------- actions

/// A form POST: the viewer, its fields, after the CSRF and same-origin checks.
async fn form(app: &AppState, req: Request) -> Result<(Viewer, Vec<(String, String)>), Response> {
    let (parts, body) = req.into_parts();
    let v = viewer(app, &parts).await?;
    if !app.console.actions {
        return Err((StatusCode::FORBIDDEN, "the console is read-only ([console] actions = false)").into_response());
    }
    let h = &parts.headers;
    if h.get("sec-fetch-site").and_then(|s| s.to_str().ok()).is_some_and(|s| s != "same-origin" && s != "none") {
        return Err((StatusCode::FORBIDDEN, "cross-site form refused").into_response());
    }
    if let Some(origin) = h.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = host_of(h);
        let same = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host.as_str());
        if !same {
            return Err((StatusCode::FORBIDDEN, "cross-origin form refused").into_response());
        }
    }
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad form: {e}")).into_response())?;
    let token = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or_default();
    if !app.console.csrf_ok(&v, token) {
        return Err((StatusCode::FORBIDDEN, "missing or stale form token; reload the page").into_response());
    }
    Ok((v, fields))
}

fn field<'a>(fields: &'a [(String, String)], k: &str) -> &'a str {
    fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or_default()
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn action_tag_delete(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let (v, fields) = match form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let repo = match parse_repo(field(&fields, "repo")) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Ok(tag) = field(&fields, "tag").parse::<Tag>() else {
        return (StatusCode::BAD_REQUEST, "bad tag").into_response();
    };
    if !can(&app, &v, repo.as_str(), Action::Delete) {
        return refuse(&v, &format!("delete in {repo}"));
    }
    let w = crate::service::tags::TagWrite::by(format!("console:{}", v.name()));
    match app.registry.tag_remove(&repo, &tag, &w).await {
        Ok(_) => see_other(&format!("/ui/tags/{}", html::path(repo.as_str()))),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

async fn action_gc(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let (v, _) = match form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !can(&app, &v, "", Action::Admin) {
        return refuse(&v, "run a collection (needs the admin action)");
    }
    match app.registry.collect(&app.gc, app.console.gc_grace, false).await {
        Ok(_) => see_other("/ui/storage"),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

async fn action_sync(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let (v, fields) = match form(&app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !can(&app, &v, "", Action::Admin) {
        return refuse(&v, "run a sync (needs the admin action)");
    }
    let name = field(&fields, "entry").to_owned();
    let Some(i) = app.syncer.entries().iter().position(|e| e.name == name) else {
        return (StatusCode::NOT_FOUND, format!("no sync entry {name:?}")).into_response();
    };
    let syncer = app.syncer.clone();
    // Runs in the background; the page shows the report when it is done.
    tokio::spawn(async move {
        let entry = &syncer.entries()[i];
        syncer.run(entry, crate::sync::Mode::Copy, &crate::sync::progress::Progress::silent()).await;
    });
    see_other("/ui/sync")
}
