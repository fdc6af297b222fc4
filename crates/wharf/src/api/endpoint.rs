//! Every `/v2/` request is parsed into an [`Endpoint`] first, then handled by a `match`.
//!
//! Repository names may contain `/` and even components called `manifests` or `blobs`, so the path is read
//! from its right-hand end: the last one to three segments decide the endpoint, the rest is the name.

use std::collections::HashMap;

use axum::http::Method;
use oci::{Digest, ErrorCode, MediaType, RefSpec, RepoName};

use super::errors::ApiError;
use crate::store::UploadId;

/// A parsed registry request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2/`
    Base,
    /// `GET /v2/_catalog`
    Catalog {
        /// Page size.
        n: Option<usize>,
        /// Last repository of the previous page.
        last: Option<String>,
    },
    /// `GET /v2/<name>/tags/list`
    TagsList {
        /// Repository.
        repo: RepoName,
        /// Page size.
        n: Option<usize>,
        /// Last tag of the previous page.
        last: Option<String>,
    },
    /// `GET|HEAD /v2/<name>/manifests/<reference>`
    ManifestGet {
        /// Repository.
        repo: RepoName,
        /// Tag or digest.
        reference: RefSpec,
        /// HEAD: headers only.
        head: bool,
    },
    /// `PUT /v2/<name>/manifests/<reference>`
    ManifestPut {
        /// Repository.
        repo: RepoName,
        /// Tag or digest.
        reference: RefSpec,
    },
    /// `DELETE /v2/<name>/manifests/<reference>`
    ManifestDelete {
        /// Repository.
        repo: RepoName,
        /// Tag or digest.
        reference: RefSpec,
    },
    /// `GET|HEAD /v2/<name>/blobs/<digest>`
    BlobGet {
        /// Repository.
        repo: RepoName,
        /// Blob digest.
        digest: Digest,
        /// HEAD: headers only.
        head: bool,
    },
    /// `DELETE /v2/<name>/blobs/<digest>`
    BlobDelete {
        /// Repository.
        repo: RepoName,
        /// Blob digest.
        digest: Digest,
    },
    /// `POST /v2/<name>/blobs/uploads/`
    UploadStart {
        /// Repository.
        repo: RepoName,
        /// Monolithic push digest.
        digest: Option<Digest>,
        /// Cross-repository mount: digest and source repository.
        mount: Option<(Digest, Option<RepoName>)>,
    },
    /// `GET /v2/<name>/blobs/uploads/<id>`
    UploadStatus {
        /// Repository.
        repo: RepoName,
        /// Session.
        id: UploadId,
    },
    /// `PATCH /v2/<name>/blobs/uploads/<id>`
    UploadPatch {
        /// Repository.
        repo: RepoName,
        /// Session.
        id: UploadId,
    },
    /// `PUT /v2/<name>/blobs/uploads/<id>?digest=`
    UploadFinish {
        /// Repository.
        repo: RepoName,
        /// Session.
        id: UploadId,
        /// Expected digest.
        digest: Digest,
    },
    /// `DELETE /v2/<name>/blobs/uploads/<id>`
    UploadCancel {
        /// Repository.
        repo: RepoName,
        /// Session.
        id: UploadId,
    },
    /// `GET /v2/<name>/referrers/<digest>`
    Referrers {
        /// Repository.
        repo: RepoName,
        /// Subject digest.
        digest: Digest,
        /// `artifactType` filter.
        artifact_type: Option<MediaType>,
    },
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|v| v as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn name(parts: &[&str]) -> Result<RepoName, ApiError> {
    let joined = parts.join("/");
    joined.parse().map_err(|e: oci::NameError| ApiError::new(ErrorCode::NameInvalid, e.to_string()))
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse().map_err(|e: oci::DigestError| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))
}

/// A malformed digest is a 400; a malformed tag can name nothing, so reads of it are a plain 404 (what
/// clients and the conformance suite expect) and only a push of it is a 400.
fn reference(s: &str, method: &Method) -> Result<RefSpec, ApiError> {
    s.parse().map_err(|e: oci::NameError| match e {
        oci::NameError::Digest(d) => ApiError::new(ErrorCode::DigestInvalid, d.to_string()),
        other if *method == Method::PUT => ApiError::new(ErrorCode::ManifestInvalid, other.to_string()),
        other => ApiError::new(ErrorCode::ManifestUnknown, format!("no such manifest: {other}")),
    })
}

fn upload_id(s: &str) -> Result<UploadId, ApiError> {
    UploadId::parse(s)
        .ok_or_else(|| ApiError::new(ErrorCode::BlobUploadUnknown, format!("upload session {s:?} is unknown")))
}

fn page_size(q: &HashMap<String, String>) -> Result<Option<usize>, ApiError> {
    q.get("n")
        .map(|n| {
            n.parse::<usize>().map_err(|_| {
                ApiError::new(ErrorCode::Unsupported, format!("query parameter n={n:?} is not a non-negative integer"))
                    .status(400)
            })
        })
        .transpose()
}

fn not_allowed(method: &Method, what: &str) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, format!("method {method} is not supported on {what}")).status(405)
}

impl Endpoint {
    /// Parse method, path and query. Pure, so every routing rule is table-tested.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Endpoint, ApiError> {
        let q: HashMap<String, String> = query
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let rest = path
            .strip_prefix("/v2/")
            .ok_or_else(|| ApiError::new(ErrorCode::Unsupported, "not a registry API path").status(404))?;
        if rest.is_empty() {
            return Ok(Endpoint::Base);
        }
        if rest == "_catalog" {
            return match *method {
                Method::GET => Ok(Endpoint::Catalog { n: page_size(&q)?, last: q.get("last").cloned() }),
                _ => Err(not_allowed(method, "the catalog")),
            };
        }
        // Decode each segment on its own, so an encoded `/` can never create or hide a path level.
        let owned: Vec<String> = rest.split('/').map(percent_decode).collect();
        let segs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let k = segs.len();
        let tail = |i: usize| if i <= k { segs[k - i] } else { "" };
        let head = *method == Method::HEAD;

        if k >= 3 && tail(2) == "tags" && tail(1) == "list" {
            let repo = name(&segs[..k - 2])?;
            return match *method {
                Method::GET => Ok(Endpoint::TagsList { repo, n: page_size(&q)?, last: q.get("last").cloned() }),
                _ => Err(not_allowed(method, "tag lists")),
            };
        }
        if k >= 2 && tail(2) == "manifests" {
            let repo = name(&segs[..k - 2])?;
            let reference = reference(tail(1), method)?;
            return match *method {
                Method::GET | Method::HEAD => Ok(Endpoint::ManifestGet { repo, reference, head }),
                Method::PUT => Ok(Endpoint::ManifestPut { repo, reference }),
                Method::DELETE => Ok(Endpoint::ManifestDelete { repo, reference }),
                _ => Err(not_allowed(method, "manifests")),
            };
        }
        // `<name>/blobs/uploads` and `<name>/blobs/uploads/` start a session; `<name>/blobs/uploads/<id>` is one.
        let (upload_name_end, id) = if k >= 3 && tail(2) == "blobs" && tail(1) == "uploads" {
            (Some(k - 2), None)
        } else if k >= 4 && tail(3) == "blobs" && tail(2) == "uploads" {
            (Some(k - 3), Some(tail(1)).filter(|s| !s.is_empty()))
        } else {
            (None, None)
        };
        if let Some(end) = upload_name_end {
            let repo = name(&segs[..end])?;
            return match (method.clone(), id) {
                (Method::POST, None) => {
                    let digest = q.get("digest").map(|d| parse_digest(d)).transpose()?;
                    let mount = match q.get("mount") {
                        Some(m) => Some((parse_digest(m)?, q.get("from").map(|f| name(&[f])).transpose()?)),
                        None => None,
                    };
                    Ok(Endpoint::UploadStart { repo, digest, mount })
                }
                (Method::GET, Some(id)) => Ok(Endpoint::UploadStatus { repo, id: upload_id(id)? }),
                (Method::PATCH, Some(id)) => Ok(Endpoint::UploadPatch { repo, id: upload_id(id)? }),
                (Method::PUT, Some(id)) => {
                    let id = upload_id(id)?;
                    let d = q.get("digest").ok_or_else(|| {
                        ApiError::new(ErrorCode::DigestInvalid, "closing an upload needs the ?digest= query parameter")
                    })?;
                    Ok(Endpoint::UploadFinish { repo, id, digest: parse_digest(d)? })
                }
                (Method::DELETE, Some(id)) => Ok(Endpoint::UploadCancel { repo, id: upload_id(id)? }),
                _ => Err(not_allowed(method, "blob uploads")),
            };
        }
        if k >= 2 && tail(2) == "blobs" {
            let repo = name(&segs[..k - 2])?;
            let digest = parse_digest(tail(1))?;
            return match *method {
                Method::GET | Method::HEAD => Ok(Endpoint::BlobGet { repo, digest, head }),
                Method::DELETE => Ok(Endpoint::BlobDelete { repo, digest }),
                _ => Err(not_allowed(method, "blobs")),
            };
        }
        if k >= 2 && tail(2) == "referrers" {
            let repo = name(&segs[..k - 2])?;
            let digest = parse_digest(tail(1))?;
            let artifact_type = q.get("artifactType").map(|t| MediaType::parse(t));
            return match *method {
                Method::GET => Ok(Endpoint::Referrers { repo, digest, artifact_type }),
                _ => Err(not_allowed(method, "referrers")),
            };
        }
        Err(ApiError::new(ErrorCode::Unsupported, format!("no registry endpoint at /v2/{rest}")).status(404))
    }

    /// Stable label for logs and metrics (never the raw path: repository names are unbounded).
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog { .. } => "catalog",
            Endpoint::TagsList { .. } => "tags_list",
            Endpoint::ManifestGet { head: true, .. } => "manifest_head",
            Endpoint::ManifestGet { .. } => "manifest_get",
            Endpoint::ManifestPut { .. } => "manifest_put",
            Endpoint::ManifestDelete { .. } => "manifest_delete",
            Endpoint::BlobGet { head: true, .. } => "blob_head",
            Endpoint::BlobGet { .. } => "blob_get",
            Endpoint::BlobDelete { .. } => "blob_delete",
            Endpoint::UploadStart { .. } => "upload_start",
            Endpoint::UploadStatus { .. } => "upload_status",
            Endpoint::UploadPatch { .. } => "upload_patch",
            Endpoint::UploadFinish { .. } => "upload_finish",
            Endpoint::UploadCancel { .. } => "upload_cancel",
            Endpoint::Referrers { .. } => "referrers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn p(m: Method, path: &str, q: Option<&str>) -> Result<Endpoint, ApiError> {
        Endpoint::parse(&m, path, q)
    }

    fn ok(m: Method, path: &str, q: Option<&str>) -> Endpoint {
        p(m, path, q).unwrap_or_else(|e| panic!("{path}: {e:?}"))
    }

    #[test]
    fn routing_table() {
        let repo = |s: &str| s.parse::<RepoName>().unwrap();
        assert_eq!(ok(Method::GET, "/v2/", None), Endpoint::Base);
        assert_eq!(
            ok(Method::GET, "/v2/_catalog", Some("n=5&last=a")),
            Endpoint::Catalog { n: Some(5), last: Some("a".into()) }
        );
        assert_eq!(
            ok(Method::GET, "/v2/a/b/tags/list", None),
            Endpoint::TagsList { repo: repo("a/b"), n: None, last: None }
        );
        assert_eq!(
            ok(Method::HEAD, "/v2/a/manifests/latest", None),
            Endpoint::ManifestGet { repo: repo("a"), reference: "latest".parse().unwrap(), head: true }
        );
        // names containing endpoint words
        assert_eq!(
            ok(Method::GET, "/v2/x/manifests/blobs/manifests/v1", None),
            Endpoint::ManifestGet { repo: repo("x/manifests/blobs"), reference: "v1".parse().unwrap(), head: false }
        );
        assert_eq!(
            ok(Method::GET, &format!("/v2/tags/list/blobs/{D}"), None),
            Endpoint::BlobGet { repo: repo("tags/list"), digest: D.parse().unwrap(), head: false }
        );
        assert_eq!(
            ok(Method::GET, &format!("/v2/a/manifests/{}", D.replace(':', "%3A")), None),
            Endpoint::ManifestGet { repo: repo("a"), reference: D.parse().unwrap(), head: false }
        );
        for path in ["/v2/a/b/blobs/uploads/", "/v2/a/b/blobs/uploads"] {
            assert_eq!(
                ok(Method::POST, path, Some(&format!("digest={D}"))),
                Endpoint::UploadStart { repo: repo("a/b"), digest: Some(D.parse().unwrap()), mount: None }
            );
        }
        assert_eq!(
            ok(Method::POST, "/v2/a/blobs/uploads/", Some(&format!("mount={D}&from=o/p"))),
            Endpoint::UploadStart {
                repo: repo("a"),
                digest: None,
                mount: Some((D.parse().unwrap(), Some(repo("o/p"))))
            }
        );
        assert!(matches!(ok(Method::PATCH, &format!("/v2/a/blobs/uploads/{ID}"), None), Endpoint::UploadPatch { .. }));
        assert!(matches!(
            ok(Method::PUT, &format!("/v2/a/blobs/uploads/{ID}"), Some(&format!("digest={D}"))),
            Endpoint::UploadFinish { .. }
        ));
        assert!(matches!(
            ok(Method::DELETE, &format!("/v2/a/blobs/uploads/{ID}"), None),
            Endpoint::UploadCancel { .. }
        ));
        assert!(matches!(ok(Method::GET, &format!("/v2/a/blobs/uploads/{ID}"), None), Endpoint::UploadStatus { .. }));
        assert_eq!(
            ok(Method::GET, &format!("/v2/a/referrers/{D}"), Some("artifactType=application%2Fvnd.x")),
            Endpoint::Referrers {
                repo: repo("a"),
                digest: D.parse().unwrap(),
                artifact_type: Some(MediaType::parse("application/vnd.x"))
            }
        );
    }

    #[test]
    fn errors() {
        let code = |r: Result<Endpoint, ApiError>| r.unwrap_err().code;
        assert_eq!(code(p(Method::GET, "/v2/UPPER/manifests/x", None)), ErrorCode::NameInvalid);
        assert_eq!(
            code(p(Method::GET, "/v2/a%a\u{e9}/tags/list", None)),
            ErrorCode::NameInvalid,
            "no panic on multi-byte text"
        );
        assert_eq!(code(p(Method::GET, "/v2/a%/tags/list", None)), ErrorCode::NameInvalid);
        assert_eq!(code(p(Method::GET, "/v2/a/manifests/sha256:totallywrong", None)), ErrorCode::DigestInvalid);
        assert_eq!(code(p(Method::GET, "/v2/a/manifests/.bad", None)), ErrorCode::ManifestUnknown);
        assert_eq!(code(p(Method::PUT, "/v2/a/manifests/bad!tag", None)), ErrorCode::ManifestInvalid);
        assert_eq!(code(p(Method::GET, "/v2/a/blobs/nope", None)), ErrorCode::DigestInvalid);
        assert_eq!(code(p(Method::PUT, &format!("/v2/a/blobs/uploads/{ID}"), None)), ErrorCode::DigestInvalid);
        assert_eq!(code(p(Method::PATCH, "/v2/a/blobs/uploads/..%2Fetc", None)), ErrorCode::BlobUploadUnknown);
        assert_eq!(code(p(Method::PATCH, "/v2/a/blobs/uploads/../../etc", None)), ErrorCode::Unsupported);
        assert_eq!(code(p(Method::POST, "/v2/a/manifests/x", None)), ErrorCode::Unsupported);
        assert_eq!(code(p(Method::GET, "/v2/a/b", None)), ErrorCode::Unsupported);
        assert_eq!(code(p(Method::GET, "/v2/a/tags/list", Some("n=-1"))), ErrorCode::Unsupported);
        assert_eq!(p(Method::GET, "/v2/a/tags/list", Some("n=x")).unwrap_err().status, 400);
    }
}
