//! The single mapping from internal errors to the wire: status, OCI error code, message.
//!
//! Policy: every failure leaves as `{"errors":[{code,message,detail}]}` with the spec's code. Client mistakes
//! get a 4xx with a message that names the offending value. Internal failures (I/O, corrupt store) get a 500
//! with a generic message and are logged here, with their cause, exactly once — never inside `From` impls.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oci::{ErrorBody, ErrorCode};

use crate::service::Error;
use crate::store::StoreError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Wire code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Extra headers (e.g. `Range` on a 416 for an upload, `Content-Range` for a blob).
    pub headers: Vec<(HeaderName, String)>,
}

impl ApiError {
    /// An error with the code's default status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: code.status(), code, message: message.into(), headers: Vec::new() }
    }

    /// Override the status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Add a response header.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Store(s) => s.into(),
            Error::NameUnknown(_) => ApiError::new(ErrorCode::NameUnknown, msg),
            Error::ManifestUnknown { .. } => ApiError::new(ErrorCode::ManifestUnknown, msg),
            Error::BlobUnknown { .. } => ApiError::new(ErrorCode::BlobUnknown, msg),
            Error::ManifestInvalid(_) => ApiError::new(ErrorCode::ManifestInvalid, msg),
            Error::ManifestBlobUnknown(_) => ApiError::new(ErrorCode::ManifestBlobUnknown, msg),
            Error::ManifestTooLarge => ApiError::new(ErrorCode::SizeInvalid, msg).status(413),
            Error::DigestInvalid(_) => ApiError::new(ErrorCode::DigestInvalid, msg),
            Error::NameInvalid(_) => ApiError::new(ErrorCode::NameInvalid, msg),
            Error::Denied(_) => ApiError::new(ErrorCode::Denied, msg),
            // No code in the spec fits a failed precondition; DENIED with the HTTP status that says it.
            Error::PreconditionFailed(_) => ApiError::new(ErrorCode::Denied, msg).status(412),
            Error::Upstream { error: crate::upstream::UpstreamError::Denied { .. }, .. } => {
                ApiError::new(ErrorCode::Unavailable, msg).status(502)
            }
            Error::Upstream { .. } => ApiError::new(ErrorCode::Unavailable, msg),
            Error::RangeNotSatisfiable { size } => ApiError::new(ErrorCode::SizeInvalid, msg)
                .status(416)
                .header(axum::http::header::CONTENT_RANGE, format!("bytes */{size}")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::DigestMismatch { .. } => ApiError::new(ErrorCode::DigestInvalid, msg),
            StoreError::SizeMismatch { .. } => ApiError::new(ErrorCode::SizeInvalid, msg),
            StoreError::UploadUnknown(_) | StoreError::UploadRepo { .. } => {
                ApiError::new(ErrorCode::BlobUploadUnknown, msg)
            }
            StoreError::UploadOffset { current, .. } => ApiError::new(ErrorCode::BlobUploadInvalid, msg)
                .status(416)
                .header(axum::http::header::RANGE, upload_range(current)),
            StoreError::BlobUnknown(_) => ApiError::new(ErrorCode::BlobUnknown, msg),
            StoreError::Body(_) => ApiError::new(ErrorCode::BlobUploadInvalid, msg),
            // 429 (not DENIED): clients treat it as "later", and the cap frees itself as sessions finish or expire.
            StoreError::TooManyUploads { .. } => {
                ApiError::new(ErrorCode::TooManyRequests, msg).header(axum::http::header::RETRY_AFTER, "60")
            }
            StoreError::Io { .. } | StoreError::Corrupt(..) | StoreError::ReadOnly(_) => {
                tracing::error!(error = %msg, "storage failure");
                ApiError::new(ErrorCode::Unsupported, "internal storage error; see the registry log").status(500)
            }
        }
    }
}

/// The `Range: 0-<last byte>` value the spec uses for upload progress (`0-0` before the first byte).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::to_vec(&ErrorBody::single(self.code, self.message, None)).expect("error bodies serialise");
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(k, v);
            }
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, headers, body).into_response()
    }
}
