//! `/v2/<name>/manifests/<reference>`: GET, HEAD, PUT, DELETE.

use axum::body::Body;
use axum::http::HeaderMap;
use http_body_util::BodyExt;
use oci::{ErrorCode, RefSpec, RepoName};

use super::errors::ApiError;
use super::headers::{self, CONTENT_DIGEST, OCI_SUBJECT};
use super::{respond, ApiResult};
use crate::service::{Registry, MAX_MANIFEST_BYTES};

pub async fn get(reg: &Registry, repo: &RepoName, reference: &RefSpec, head: bool, h: &HeaderMap) -> ApiResult {
    let (digest, m) = reg.manifest_get(repo, reference).await?;
    if !headers::accepts(h, &m.media_type) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {reference} is a {}, which the request's Accept header does not list", m.media_type),
        ));
    }
    let digest = digest.to_string();
    let hdrs = [
        ("content-type", m.media_type.as_str().to_owned()),
        ("content-length", m.bytes.len().to_string()),
        (CONTENT_DIGEST, digest.clone()),
        ("etag", format!("\"{digest}\"")),
    ];
    let body = if head { Body::empty() } else { Body::from(m.bytes) };
    Ok(respond(200, &hdrs, body))
}

pub async fn put(reg: &Registry, repo: &RepoName, reference: &RefSpec, h: &HeaderMap, body: Body) -> ApiResult {
    let content_type = headers::content_type(h);
    if headers::content_length(h).is_some_and(|n| n > MAX_MANIFEST_BYTES as u64) {
        return Err(crate::service::Error::ManifestTooLarge.into());
    }
    let limited = http_body_util::Limited::new(body, MAX_MANIFEST_BYTES);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(crate::service::Error::ManifestTooLarge.into()),
        Err(e) => return Err(ApiError::new(ErrorCode::ManifestInvalid, format!("reading the manifest body failed: {e}"))),
    };
    let out = reg.manifest_put(repo, reference, content_type.as_ref(), bytes).await?;
    let mut hdrs = vec![
        ("location", format!("/v2/{repo}/manifests/{}", out.digest)),
        (CONTENT_DIGEST, out.digest.to_string()),
    ];
    if let Some(s) = out.subject {
        hdrs.push((OCI_SUBJECT, s.to_string()));
    }
    Ok(respond(201, &hdrs, Body::empty()))
}

pub async fn delete(reg: &Registry, repo: &RepoName, reference: &RefSpec) -> ApiResult {
    reg.manifest_delete(repo, reference).await?;
    Ok(respond(202, &[], Body::empty()))
}
