//! Listings: `tags/list`, `_catalog` (with `n`/`last` pagination and `Link`) and `referrers`.

use axum::body::Body;
use oci::{Digest, MediaType, RepoName};
use serde_json::json;

use super::headers::OCI_FILTERS_APPLIED;
use super::{respond, ApiResult};
use crate::service::Registry;

fn link(path: &str, n: usize, last: &str, ns: Option<&str>) -> String {
    let mut params = vec![("n", n.to_string()), ("last", last.to_owned())];
    if let Some(ns) = ns {
        params.push(("ns", ns.to_owned()));
    }
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    format!("<{path}?{q}>; rel=\"next\"")
}

fn json_response(
    value: serde_json::Value,
    mut hdrs: Vec<(&'static str, String)>,
    content_type: &str,
) -> axum::response::Response {
    hdrs.push(("content-type", content_type.to_owned()));
    respond(200, &hdrs, Body::from(serde_json::to_vec(&value).expect("json serialises")))
}

pub async fn tags(
    reg: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
    n: Option<usize>,
    last: Option<String>,
) -> ApiResult {
    let limit = n.unwrap_or(usize::MAX);
    let (tags, more) = reg.tag_list(repo, ns, last.as_deref(), limit).await?;
    let mut hdrs = Vec::new();
    if let (true, Some(t)) = (more && limit > 0, tags.last()) {
        hdrs.push(("link", link(&format!("/v2/{repo}/tags/list"), limit, t.as_str(), ns)));
    }
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a RepoName,
        tags: &'a [oci::Tag],
    }
    // Serialised straight from the list (no intermediate JSON value): large tag lists are a hot path.
    hdrs.push(("content-type", "application/json".to_owned()));
    let body = serde_json::to_vec(&TagList { name: repo, tags: &tags }).expect("tag lists serialise");
    Ok(respond(200, &hdrs, Body::from(body)))
}

/// Repositories read per step while filtering the catalog for a caller.
const CATALOG_FILTER_PAGE: usize = 1000;

/// `_catalog`; with access control, only repositories `caller` may pull (pages are filled from the store
/// until `n` readable names are found, so `n` and `Link` keep their meaning).
pub async fn catalog(
    reg: &Registry,
    n: Option<usize>,
    last: Option<String>,
    caller: Option<&(&crate::auth::AccessControl, crate::policy::access::Caller)>,
) -> ApiResult {
    let limit = n.unwrap_or(usize::MAX);
    let (repos, more) = match caller {
        None => reg.catalog(last.as_deref(), limit).await?,
        Some((ac, who)) => {
            let mut out = Vec::new();
            let mut cursor = last;
            loop {
                let (page, more) = reg.catalog(cursor.as_deref(), CATALOG_FILTER_PAGE).await?;
                cursor = page.last().map(|r| r.to_string());
                out.extend(
                    page.into_iter().filter(|r| ac.allows(who, r.as_str(), crate::policy::access::Action::Pull)),
                );
                if !more || out.len() > limit {
                    break;
                }
            }
            let more = out.len() > limit;
            out.truncate(limit);
            (out, more)
        }
    };
    let mut hdrs = Vec::new();
    if let (true, Some(r)) = (more && limit > 0, repos.last()) {
        hdrs.push(("link", link("/v2/_catalog", limit, r.as_str(), None)));
    }
    Ok(json_response(json!({ "repositories": repos }), hdrs, "application/json"))
}

pub async fn referrers(
    reg: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
    digest: &Digest,
    artifact_type: Option<MediaType>,
) -> ApiResult {
    let (list, warning) = reg.referrers(repo, ns, digest, artifact_type.as_ref()).await?;
    let mut hdrs = Vec::new();
    if let Some(w) = warning {
        hdrs.push(("warning", super::headers::warning(&w)));
    }
    if artifact_type.is_some() {
        hdrs.push((OCI_FILTERS_APPLIED, "artifactType".to_owned()));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OciIndex.as_str(),
        "manifests": list,
    });
    Ok(json_response(index, hdrs, MediaType::OciIndex.as_str()))
}
