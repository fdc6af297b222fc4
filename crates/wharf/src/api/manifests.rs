//! `/v2/<name>/manifests/<reference>`: GET, HEAD, PUT, DELETE.

use axum::body::Body;
use axum::http::HeaderMap;
use futures_util::StreamExt;
use oci::{ErrorCode, RefSpec, RepoName};

use super::errors::ApiError;
use super::headers::{self, CONTENT_DIGEST, OCI_SUBJECT};
use super::{respond, ApiResult};
use crate::service::tags::TagWrite;
use crate::service::{Registry, MAX_MANIFEST_BYTES};

pub async fn get(
    reg: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
    reference: &RefSpec,
    head: bool,
    h: &HeaderMap,
) -> ApiResult {
    let answer = reg.manifest_get(repo, ns, reference).await?;
    let (digest, m) = (answer.digest, answer.manifest);
    if !headers::accepts(h, &m.media_type) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {reference} is a {}, which the request's Accept header does not list", m.media_type),
        ));
    }
    let digest = digest.to_string();
    let mut hdrs = vec![
        ("content-type", m.media_type.as_str().to_owned()),
        ("content-length", m.bytes.len().to_string()),
        (CONTENT_DIGEST, digest.clone()),
        ("etag", format!("\"{digest}\"")),
    ];
    if let Some(w) = answer.warning {
        // RFC 7234 warn-code 299, warn-agent "-", no date, as the distribution spec requires.
        hdrs.push(("warning", super::headers::warning(&w)));
    }
    let body = if head { Body::empty() } else { Body::from(m.bytes) };
    Ok(respond(200, &hdrs, body))
}

pub async fn put(
    reg: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
    reference: &RefSpec,
    h: &HeaderMap,
    body: Body,
    actor: Option<&str>,
) -> ApiResult {
    let content_type = headers::content_type(h);
    let write = tag_write(h, "push", actor)?;
    let bytes = read_limited(body, headers::content_length(h)).await?;
    let out = reg.manifest_put_with(repo, ns, reference, content_type.as_ref(), bytes, &write).await?;
    let mut hdrs =
        vec![("location", format!("/v2/{repo}/manifests/{}", out.digest)), (CONTENT_DIGEST, out.digest.to_string())];
    if let Some(s) = out.subject {
        hdrs.push((OCI_SUBJECT, s.to_string()));
    }
    Ok(respond(201, &hdrs, Body::empty()))
}

pub async fn delete(
    reg: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
    reference: &RefSpec,
    h: &HeaderMap,
    actor: Option<&str>,
) -> ApiResult {
    let write = tag_write(h, "delete", actor)?;
    reg.manifest_delete_with(repo, ns, reference, &write).await?;
    Ok(respond(202, &[], Body::empty()))
}

/// The conditions of a tag write (`If-Match: "<digest>"`, `If-None-Match: *`) and who makes it (`push:alice`).
fn tag_write(h: &HeaderMap, what: &str, actor: Option<&str>) -> Result<TagWrite, ApiError> {
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let if_match = match header("if-match") {
        None => None,
        Some(v) => {
            let d = v.trim_start_matches("W/").trim_matches('"');
            Some(d.parse::<oci::Digest>().map_err(|e| {
                ApiError::new(ErrorCode::DigestInvalid, format!("If-Match must be a quoted manifest digest: {e}"))
            })?)
        }
    };
    let if_none_match = match header("if-none-match") {
        None => false,
        Some("*") => true,
        Some(_) => {
            return Err(ApiError::new(ErrorCode::Unsupported, "If-None-Match supports only * (create the tag only)")
                .status(400))
        }
    };
    let source = match actor {
        Some(user) => format!("{what}:{user}"),
        None => what.to_owned(),
    };
    Ok(TagWrite { if_match, if_none_match, source })
}

/// Oversized bodies up to this size are read and discarded before the 413 goes out, so ordinary clients see
/// the error instead of a reset connection; anything larger is cut off at once.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// Collect a manifest body up to the size limit.
async fn read_limited(body: Body, content_length: Option<u64>) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::from(crate::service::Error::ManifestTooLarge);
    if content_length.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, format!("reading the manifest body failed: {e}")))?;
        seen += chunk.len() as u64;
        if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
        if seen <= MAX_MANIFEST_BYTES as u64 {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_MANIFEST_BYTES as u64 {
        return Err(too_large());
    }
    Ok(buf.freeze())
}
