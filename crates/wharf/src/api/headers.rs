//! Request header parsing shared by the handlers: `Range`, `Content-Range`, `Content-Type`, `Accept`.

use axum::http::{header, HeaderMap};
use oci::{ErrorCode, MediaType};

use super::errors::ApiError;
use crate::service::RangeRequest;

/// The Docker header every registry response carries.
pub const API_VERSION: &str = "docker-distribution-api-version";
/// Digest of the content in the response (or just stored).
pub const CONTENT_DIGEST: &str = "docker-content-digest";
/// Upload session id (Docker clients read it).
pub const UPLOAD_UUID: &str = "docker-upload-uuid";
/// Echo of a pushed manifest's subject (OCI 1.1).
pub const OCI_SUBJECT: &str = "oci-subject";
/// The `ns` a mirrored request was scoped to (distribution spec, "Registry Proxying").
pub const OCI_NAMESPACE: &str = "oci-namespace";
/// Which filters a referrers response applied.
pub const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

fn text<'a>(h: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

/// `Range: bytes=a-b | bytes=a- | bytes=-n` for blob GETs. As RFC 9110 says, a header we cannot use (another
/// unit, several ranges, bad syntax) is ignored and the whole blob is sent; a parsable range outside the blob
/// is answered with 416 by the service.
pub fn range(h: &HeaderMap) -> Option<RangeRequest> {
    let v = text(h, &header::RANGE)?;
    let spec = v.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Some(RangeRequest::Suffix(num(b)?)),
        (false, true) => Some(RangeRequest::From { start: num(a)?, end: None }),
        (false, false) => Some(RangeRequest::From { start: num(a)?, end: Some(num(b)?) }),
        (true, true) => None,
    }
}

/// `Content-Range: <start>-<end>` of an upload chunk (a `bytes ` prefix and `/total` suffix are tolerated).
/// Returns the chunk's start and its length.
pub fn content_range(h: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = text(h, &header::CONTENT_RANGE) else { return Ok(None) };
    let bad = || {
        ApiError::new(ErrorCode::BlobUploadInvalid, format!("malformed Content-Range {v:?} (expected <start>-<end>)"))
            .status(416)
    };
    let s = v.strip_prefix("bytes ").unwrap_or(v);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (a.trim().parse::<u64>().map_err(|_| bad())?, b.trim().parse::<u64>().map_err(|_| bad())?);
    let len = b.checked_sub(a).and_then(|x| x.checked_add(1)).ok_or_else(bad)?;
    Ok(Some((a, len)))
}

/// `Content-Length`, when present and numeric.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    text(h, &header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// `Content-Type` as a media type.
pub fn content_type(h: &HeaderMap) -> Option<MediaType> {
    text(h, &header::CONTENT_TYPE).map(MediaType::parse)
}

/// Whether a client's `Accept` list allows a manifest of `mt`. No header, a wildcard or a list that names
/// no manifest type at all means "anything".
pub fn accepts(h: &HeaderMap, mt: &MediaType) -> bool {
    let mut named_manifest = false;
    for v in h.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()) {
        for item in v.split(',') {
            let t = MediaType::parse(item);
            let s = t.as_str();
            if s == "*/*" || s == "application/*" || &t == mt {
                return true;
            }
            named_manifest |= t.is_manifest();
        }
    }
    !named_manifest
}

/// A `Warning: 299` value (RFC 7234 §5.5) for an answer served from the cache because the upstream could not
/// confirm it; quotes and backslashes in the text are replaced so the header stays well-formed.
pub fn warning(text: &str) -> String {
    format!("299 - \"{}\"", text.replace(['"', '\\'], "'"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn h(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn ranges() {
        assert_eq!(range(&h(header::RANGE, "bytes=0-9")), Some(RangeRequest::From { start: 0, end: Some(9) }));
        assert_eq!(range(&h(header::RANGE, "bytes=5-")), Some(RangeRequest::From { start: 5, end: None }));
        assert_eq!(range(&h(header::RANGE, "bytes=-5")), Some(RangeRequest::Suffix(5)));
        assert_eq!(range(&h(header::RANGE, "bytes=9-5")), Some(RangeRequest::From { start: 9, end: Some(5) }));
        for ignored in ["bytes=a-b", "items=0-1", "bytes=-", "bytes=0-1,3-4"] {
            assert_eq!(range(&h(header::RANGE, ignored)), None, "{ignored}");
        }
        assert_eq!(range(&HeaderMap::new()), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(&h(header::CONTENT_RANGE, "0-9")).unwrap(), Some((0, 10)));
        assert_eq!(content_range(&h(header::CONTENT_RANGE, "bytes 10-19/*")).unwrap(), Some((10, 10)));
        assert!(content_range(&h(header::CONTENT_RANGE, "9-0")).is_err());
        assert!(content_range(&h(header::CONTENT_RANGE, "x")).is_err());
        assert!(content_range(&h(header::CONTENT_RANGE, "0-18446744073709551615")).is_err(), "no overflow");
    }

    #[test]
    fn accept() {
        let idx = MediaType::OciIndex;
        assert!(accepts(&HeaderMap::new(), &idx));
        assert!(accepts(
            &h(header::ACCEPT, "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"),
            &idx
        ));
        assert!(accepts(&h(header::ACCEPT, "*/*"), &idx));
        assert!(!accepts(&h(header::ACCEPT, "application/vnd.docker.distribution.manifest.v2+json"), &idx));
        assert!(accepts(&h(header::ACCEPT, "text/html"), &idx));
    }
}
