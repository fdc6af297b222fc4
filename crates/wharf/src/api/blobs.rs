//! `/v2/<name>/blobs/<digest>`: GET (with Range), HEAD, DELETE.

use axum::body::Body;
use axum::http::HeaderMap;
use oci::{Digest, RepoName};

use super::headers::{self, CONTENT_DIGEST};
use super::{respond, ApiResult};
use crate::service::Registry;

pub async fn get(
    reg: &Registry,
    repo: &RepoName,
    ns: Option<&str>,
    digest: &Digest,
    head: bool,
    h: &HeaderMap,
) -> ApiResult {
    let d = digest.to_string();
    if head {
        let meta = reg.blob_stat(repo, ns, digest).await?;
        let hdrs = [
            ("content-type", "application/octet-stream".to_owned()),
            ("content-length", meta.size.to_string()),
            ("accept-ranges", "bytes".to_owned()),
            (CONTENT_DIGEST, d.clone()),
            ("etag", format!("\"{d}\"")),
        ];
        return Ok(respond(200, &hdrs, Body::empty()));
    }
    let range = headers::range(h);
    if range.is_none() {
        if let Some(url) = reg.blob_redirect(repo, ns, digest).await? {
            // The object store serves the bytes; the digest header still comes from us.
            let hdrs = [("location", url), (CONTENT_DIGEST, d.clone()), ("cache-control", "no-store".to_owned())];
            return Ok(respond(307, &hdrs, Body::empty()));
        }
    }
    let reader = reg.blob_open(repo, ns, digest, range).await?;
    let size = reader.meta.size;
    let mut hdrs = vec![
        ("content-type", "application/octet-stream".to_owned()),
        ("accept-ranges", "bytes".to_owned()),
        (CONTENT_DIGEST, d.clone()),
        ("etag", format!("\"{d}\"")),
    ];
    let status = match reader.range {
        Some(r) => {
            hdrs.push(("content-length", r.len().to_string()));
            hdrs.push(("content-range", format!("bytes {}-{}/{size}", r.start, r.end)));
            206
        }
        None => {
            hdrs.push(("content-length", size.to_string()));
            200
        }
    };
    Ok(respond(status, &hdrs, Body::from_stream(reader.body)))
}

pub async fn delete(reg: &Registry, repo: &RepoName, ns: Option<&str>, digest: &Digest) -> ApiResult {
    reg.blob_delete(repo, ns, digest).await?;
    Ok(respond(202, &[], Body::empty()))
}
