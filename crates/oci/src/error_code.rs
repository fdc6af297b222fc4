//! The distribution spec's error codes and the JSON error body every failed request carries.

use serde::{Deserialize, Serialize};

/// Error codes defined by the OCI distribution spec (plus `TOOMANYREQUESTS`, which registries send on 429).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload is invalid.
    BlobUploadInvalid,
    /// Blob upload is unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content.
    DigestInvalid,
    /// Manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// Manifest is invalid.
    ManifestInvalid,
    /// Manifest unknown to registry.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// Not in the spec: a mirror could not reach its upstream and has nothing cached (HTTP 503), so clients
    /// that have other hosts configured move on to them.
    Unavailable,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status the spec pairs with the code, for callers that have no better one.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => 404,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unavailable => 503,
            _ => 400,
        }
    }

    /// Parse a wire code (as sent by an upstream registry).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

const ALL: &[ErrorCode] = &[
    ErrorCode::BlobUnknown,
    ErrorCode::BlobUploadInvalid,
    ErrorCode::BlobUploadUnknown,
    ErrorCode::DigestInvalid,
    ErrorCode::ManifestBlobUnknown,
    ErrorCode::ManifestInvalid,
    ErrorCode::ManifestUnknown,
    ErrorCode::NameInvalid,
    ErrorCode::NameUnknown,
    ErrorCode::SizeInvalid,
    ErrorCode::Unauthorized,
    ErrorCode::Denied,
    ErrorCode::Unsupported,
    ErrorCode::TooManyRequests,
    ErrorCode::Unavailable,
];

/// `{"errors": [...]}` as the spec defines it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One entry per problem.
    pub errors: Vec<ErrorInfo>,
}

/// One error in an [`ErrorBody`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Wire code, e.g. `MANIFEST_UNKNOWN`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Optional structured detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl ErrorBody {
    /// A body with a single error.
    pub fn single(code: ErrorCode, message: impl Into<String>, detail: Option<serde_json::Value>) -> Self {
        ErrorBody { errors: vec![ErrorInfo { code: code.as_str().to_owned(), message: message.into(), detail }] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
        }
        assert_eq!(ErrorCode::ManifestUnknown.status(), 404);
        assert_eq!(ErrorCode::DigestInvalid.status(), 400);
    }

    #[test]
    fn body_shape() {
        let b = ErrorBody::single(ErrorCode::NameInvalid, "bad", None);
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"errors":[{"code":"NAME_INVALID","message":"bad"}]}"#);
    }
}
