//! The API's error type and its RFC 9457 problem+json rendering. `ApiError::status` is the one place that
//! maps errors to HTTP statuses; it matches every variant of every layer's error (no `_` arm), so a new
//! variant cannot silently become a 500.

use crate::engine::EngineError;
use crate::inference::InferenceError;
use crate::ingest::expand::ExpandError;
use crate::ingest::IngestError;
use crate::pipeline::PipelineError;
use crate::store::StoreError;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_s: u64 },
    #[error("{detail}")]
    TooManyUploads { detail: String, retry_after_s: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// A DICOM or NIfTI file that cannot be used; `file` says which (never by a patient attribute).
    #[error("{file}: {source}")]
    Ingest { file: String, source: IngestError },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Engine(e) => ApiError::Engine(e),
            PipelineError::Inference(e) => ApiError::Inference(e),
            PipelineError::Stopped => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ExpandError> for ApiError {
    fn from(e: ExpandError) -> Self {
        match e {
            ExpandError::Ingest { file, source } => ApiError::Ingest { file, source },
            ExpandError::Image(e) => ApiError::Engine(e),
            ExpandError::TooMany(detail) => ApiError::PayloadTooLarge(detail),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:spe:problem:<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
}

impl ApiError {
    /// The HTTP status and a short problem slug.
    pub fn status(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::BadRequest(_) => (S::BAD_REQUEST, "bad-request"),
            ApiError::Unauthenticated(_) => (S::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not-found"),
            ApiError::MethodNotAllowed(_) => (S::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::Conflict(_) => (S::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload-too-large"),
            ApiError::UnsupportedMediaType(_) => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
            }
            ApiError::Unprocessable(_) => (S::UNPROCESSABLE_ENTITY, "invalid-input"),
            ApiError::TooManyRequests { .. } => (S::TOO_MANY_REQUESTS, "queue-full"),
            ApiError::TooManyUploads { .. } => (S::TOO_MANY_REQUESTS, "too-many-uploads"),
            ApiError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::RequestTimeout(_) => (S::REQUEST_TIMEOUT, "request-timeout"),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Store(e) => match e {
                StoreError::Db(_) | StoreError::Migrate(_) | StoreError::Blob(_) => {
                    (S::INTERNAL_SERVER_ERROR, "internal")
                }
                StoreError::MissingBlob(_) | StoreError::Corrupt(_) => {
                    (S::INTERNAL_SERVER_ERROR, "internal")
                }
            },
            ApiError::Engine(e) => match e {
                EngineError::Image { .. } | EngineError::ImageData { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-image")
                }
                EngineError::ImageTooLarge { .. } => (S::UNPROCESSABLE_ENTITY, "image-too-large"),
                EngineError::Invalid(_) | EngineError::Calibration(_) => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-input")
                }
                EngineError::Reverse(_) | EngineError::Io { .. } => {
                    (S::INTERNAL_SERVER_ERROR, "internal")
                }
            },
            ApiError::Inference(e) => match e {
                InferenceError::Spec(_) => (S::UNPROCESSABLE_ENTITY, "invalid-spec"),
                InferenceError::Signature { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "model-signature-mismatch")
                }
                InferenceError::Load { .. } => (S::UNPROCESSABLE_ENTITY, "invalid-model"),
                InferenceError::Run { .. } => (S::UNPROCESSABLE_ENTITY, "model-failed"),
                InferenceError::RuntimeMissing(_) | InferenceError::Provider { .. } => {
                    (S::SERVICE_UNAVAILABLE, "runtime-unavailable")
                }
                InferenceError::Io { .. } => (S::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::Ingest { source, .. } => match source {
                IngestError::UnsupportedTransferSyntax { .. } => {
                    (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-transfer-syntax")
                }
                IngestError::Unsupported(_) => (S::UNPROCESSABLE_ENTITY, "unsupported-image"),
                IngestError::Malformed(_) => (S::UNPROCESSABLE_ENTITY, "invalid-image"),
                IngestError::TooLarge(_) => (S::UNPROCESSABLE_ENTITY, "image-too-large"),
            },
        }
    }

    /// What the client sees. Server-side failures are logged in full and reported generically.
    fn detail(&self, status: StatusCode) -> String {
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            return "internal error; the service logs have the details (look for this response's x-request-id)".into();
        }
        match self {
            // Messages from ONNX Runtime can name temporary files; what matters is the model's own problem.
            ApiError::Inference(
                InferenceError::RuntimeMissing(_) | InferenceError::Provider { .. },
            ) => "ONNX Runtime is not available on this server; ask the operator to check /readyz"
                .into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            // The detail can name the client's files (PACS exports carry patient names in them): the log
            // keeps the problem type only; the request id links it to what the client was told.
            tracing::info!(status = status.as_u16(), problem = slug, "request rejected");
        }
        let problem = Problem {
            kind: format!("urn:spe:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.detail(status),
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::TooManyRequests { retry_after_s, .. }
            | ApiError::TooManyUploads { retry_after_s, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            ApiError::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// Maps an extractor's status to ours (axum says 413/415/422/400 already; we add the problem body).
fn from_status(status: StatusCode, detail: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!(
            "the request body is larger than this server accepts ({detail}); send fewer or smaller files"
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(detail),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(detail),
        _ => ApiError::BadRequest(detail),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        from_status(r.status(), r.body_text())
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(r: MultipartRejection) -> Self {
        match r {
            // What a client that sent JSON, a bare file or no content type gets.
            MultipartRejection::InvalidBoundary(_) => ApiError::UnsupportedMediaType(
                "expected a multipart/form-data body (e.g. curl -F part=@file)".into(),
            ),
            other => from_status(other.status(), other.body_text()),
        }
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        from_status(
            e.status(),
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::NotFound(format!("no such resource: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}
