//! `/v2/<name>/blobs/uploads/[<id>]`: monolithic and chunked pushes, mounts, status, cancel.

use axum::body::Body;
use axum::http::HeaderMap;
use oci::{Digest, ErrorCode, RepoName};

use super::errors::{upload_range, ApiError};
use super::headers::{self, CONTENT_DIGEST, UPLOAD_UUID};
use super::{body_stream, has_body, respond, ApiResult};
use crate::service::{BlobStart, Registry, UploadProgress};
use crate::store::{BlobMeta, UploadId};

fn session_headers(repo: &RepoName, id: &UploadId, p: UploadProgress) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{repo}/blobs/uploads/{}", id.as_str())),
        ("range", upload_range(p.size)),
        (UPLOAD_UUID, id.as_str().to_owned()),
        ("content-length", "0".to_owned()),
    ]
}

fn created(repo: &RepoName, meta: &BlobMeta) -> axum::response::Response {
    let hdrs = [
        ("location", format!("/v2/{repo}/blobs/{}", meta.digest)),
        (CONTENT_DIGEST, meta.digest.to_string()),
        ("content-length", "0".to_owned()),
    ];
    respond(201, &hdrs, Body::empty())
}

pub async fn start(
    reg: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
    digest: Option<Digest>,
    mount: Option<(Digest, Option<RepoName>)>,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let size = headers::content_length(h);
    let monolithic = digest.map(|d| (d, size, body_stream(body)));
    match reg.upload_start(repo, ns, monolithic, mount).await? {
        BlobStart::Created(meta) => Ok(created(repo, &meta)),
        BlobStart::Session(id) => {
            Ok(respond(202, &session_headers(repo, &id, UploadProgress { size: 0 }), Body::empty()))
        }
    }
}

pub async fn status(reg: &Registry, repo: &RepoName, id: &UploadId) -> ApiResult {
    let p = reg.upload_status(repo, id).await?;
    Ok(respond(204, &session_headers(repo, id, p), Body::empty()))
}

/// The chunk's declared start, checked against its length when both headers are present.
fn chunk_start(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some((start, len)) = headers::content_range(h)? else { return Ok(None) };
    if let Some(cl) = headers::content_length(h) {
        if cl != len {
            return Err(ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range covers {len} bytes but Content-Length is {cl}"),
            )
            .status(416));
        }
    }
    Ok(Some(start))
}

pub async fn patch(reg: &Registry, repo: &RepoName, id: &UploadId, h: &HeaderMap, body: Body) -> ApiResult {
    let start = chunk_start(h)?;
    let p = reg.upload_patch(repo, id, start, body_stream(body)).await?;
    Ok(respond(202, &session_headers(repo, id, p), Body::empty()))
}

pub async fn finish(
    reg: &Registry,
    repo: &RepoName,
    id: &UploadId,
    digest: &Digest,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let last = if has_body(h) {
        let start = chunk_start(h)?;
        Some((start, body_stream(body)))
    } else {
        None
    };
    let meta = reg.upload_finish(repo, id, digest, last).await?;
    Ok(created(repo, &meta))
}

pub async fn cancel(reg: &Registry, repo: &RepoName, id: &UploadId) -> ApiResult {
    reg.upload_cancel(repo, id).await?;
    Ok(respond(204, &[], Body::empty()))
}
