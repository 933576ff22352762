//! The API's error type and its RFC 9457 problem+json rendering. `ApiError::problem` is the one place that
//! maps errors to problem kinds (each with its HTTP status); it matches every variant of every layer's
//! error (no `_` arm), so a new variant cannot silently become a 500.

use crate::app::AppError;
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

/// What a request can fail with: the HTTP layer's own refusals, and a use case's [`AppError`].
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
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A request that cannot be read as the route's form or body.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{detail}")]
    TooManyUploads { detail: String, retry_after_s: u64 },
    #[error("{0}")]
    RequestTimeout(String),
    #[error(transparent)]
    App(#[from] AppError),
}

/// Errors of the layers below reach the API through the application layer's enum.
macro_rules! through_app {
    ($($from:ty),*) => {
        $(impl From<$from> for ApiError {
            fn from(e: $from) -> Self {
                ApiError::App(AppError::from(e))
            }
        })*
    };
}

through_app!(
    StoreError,
    EngineError,
    InferenceError,
    ExpandError,
    tokio::task::JoinError
);

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        ApiError::App(match e {
            PipelineError::Engine(e) => AppError::Engine(e),
            PipelineError::Inference(e) => AppError::Inference(e),
            PipelineError::Stopped => AppError::Internal(e.to_string()),
        })
    }
}

impl ApiError {
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::App(AppError::Internal(detail.into()))
    }
}

/// Declares [`ProblemType`]: each variant with its `type` URI and status, so that the URIs the code can send and the
/// enum in the OpenAPI document are one list.
macro_rules! problem_types {
    ($($variant:ident = $uri:literal => $status:ident,)*) => {
        /// The kinds of problem (`type` of a problem response); README "Problem types" says what to do
        /// about each.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
        pub enum ProblemType {
            $(#[serde(rename = $uri)] $variant,)*
        }

        impl ProblemType {
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$variant,)*];

            /// The `type` URI, `urn:spe:problem:<slug>`.
            pub fn uri(self) -> &'static str {
                match self {
                    $(ProblemType::$variant => $uri,)*
                }
            }

            /// Every problem of a kind has the same status.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ProblemType::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

problem_types! {
    BadRequest = "urn:spe:problem:bad-request" => BAD_REQUEST,
    Unauthenticated = "urn:spe:problem:unauthenticated" => UNAUTHORIZED,
    Forbidden = "urn:spe:problem:forbidden" => FORBIDDEN,
    NotFound = "urn:spe:problem:not-found" => NOT_FOUND,
    MethodNotAllowed = "urn:spe:problem:method-not-allowed" => METHOD_NOT_ALLOWED,
    RequestTimeout = "urn:spe:problem:request-timeout" => REQUEST_TIMEOUT,
    Conflict = "urn:spe:problem:conflict" => CONFLICT,
    PayloadTooLarge = "urn:spe:problem:payload-too-large" => PAYLOAD_TOO_LARGE,
    UnsupportedMediaType = "urn:spe:problem:unsupported-media-type" => UNSUPPORTED_MEDIA_TYPE,
    UnsupportedTransferSyntax = "urn:spe:problem:unsupported-transfer-syntax" => UNSUPPORTED_MEDIA_TYPE,
    InvalidInput = "urn:spe:problem:invalid-input" => UNPROCESSABLE_ENTITY,
    InvalidImage = "urn:spe:problem:invalid-image" => UNPROCESSABLE_ENTITY,
    ImageTooLarge = "urn:spe:problem:image-too-large" => UNPROCESSABLE_ENTITY,
    UnsupportedImage = "urn:spe:problem:unsupported-image" => UNPROCESSABLE_ENTITY,
    InvalidSpec = "urn:spe:problem:invalid-spec" => UNPROCESSABLE_ENTITY,
    InvalidModel = "urn:spe:problem:invalid-model" => UNPROCESSABLE_ENTITY,
    ModelSignatureMismatch = "urn:spe:problem:model-signature-mismatch" => UNPROCESSABLE_ENTITY,
    ModelFailed = "urn:spe:problem:model-failed" => UNPROCESSABLE_ENTITY,
    QueueFull = "urn:spe:problem:queue-full" => TOO_MANY_REQUESTS,
    TooManyUploads = "urn:spe:problem:too-many-uploads" => TOO_MANY_REQUESTS,
    Internal = "urn:spe:problem:internal" => INTERNAL_SERVER_ERROR,
    Unavailable = "urn:spe:problem:unavailable" => SERVICE_UNAVAILABLE,
    RuntimeUnavailable = "urn:spe:problem:runtime-unavailable" => SERVICE_UNAVAILABLE,
}

// By hand: utoipa's derive does not see a `serde(rename)` given by a macro, and would document the
// variant names instead of the URIs serde sends.
impl utoipa::PartialSchema for ProblemType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The kind of problem (`urn:spe:problem:<slug>`); README \"Problem types\" says what to do \
                 about each.",
            ))
            .enum_values(Some(Self::ALL.iter().map(|p| p.uri())))
            .into()
    }
}

impl ToSchema for ProblemType {}

impl ProblemType {
    /// The URI's last part (what the logs record).
    pub fn slug(self) -> &'static str {
        self.uri().trim_start_matches("urn:spe:problem:")
    }
}

/// RFC 9457 problem details: the body of every error response (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// The kind of problem; see README "Problem types" for what to do about each.
    #[serde(rename = "type")]
    pub kind: ProblemType,
    /// The HTTP reason phrase of `status`.
    pub title: String,
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
}

impl ApiError {
    /// The kind of problem (which fixes the HTTP status).
    pub fn problem(&self) -> ProblemType {
        use ProblemType as P;
        match self {
            ApiError::BadRequest(_) => P::BadRequest,
            ApiError::Unauthenticated(_) => P::Unauthenticated,
            ApiError::Forbidden(_) => P::Forbidden,
            ApiError::NotFound(_) => P::NotFound,
            ApiError::MethodNotAllowed(_) => P::MethodNotAllowed,
            ApiError::PayloadTooLarge(_) => P::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => P::UnsupportedMediaType,
            ApiError::Unprocessable(_) => P::InvalidInput,
            ApiError::TooManyUploads { .. } => P::TooManyUploads,
            ApiError::RequestTimeout(_) => P::RequestTimeout,
            ApiError::App(e) => app_problem(e),
        }
    }

    /// What the client sees. Server-side failures are logged in full and reported generically.
    /// The status and the detail a client is told (the dashboard shows them as a page).
    pub fn status_and_detail(&self) -> (StatusCode, String) {
        let status = self.problem().status();
        (status, self.detail(status))
    }

    fn detail(&self, status: StatusCode) -> String {
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            return "internal error; the service logs have the details (look for this response's x-request-id)".into();
        }
        match self {
            // Messages from ONNX Runtime can name temporary files; what matters is the model's own problem.
            ApiError::App(AppError::Inference(
                InferenceError::RuntimeMissing(_) | InferenceError::Provider { .. },
            )) => "ONNX Runtime is not available on this server; ask the operator to check /readyz"
                .into(),
            ApiError::App(AppError::Store(StoreError::Db(sqlx::Error::PoolTimedOut))) => {
                "the server is busy: every database connection is in use; retry after the Retry-After delay"
                    .into()
            }
            other => other.to_string(),
        }
    }
}

/// A use case's failure as the client sees it; this match decides each one's status.
fn app_problem(e: &AppError) -> ProblemType {
    use ProblemType as P;
    match e {
        AppError::NotFound(_) => P::NotFound,
        AppError::AlreadyExists(_)
        | AppError::NotReady(_)
        | AppError::NothingStored(_)
        | AppError::KeyRaceLost => P::Conflict,
        AppError::InvalidInput(_) | AppError::KeyReused => P::InvalidInput,
        AppError::TooLarge(_) => P::PayloadTooLarge,
        AppError::QueueFull { .. } => P::QueueFull,
        AppError::RuntimeUnavailable => P::RuntimeUnavailable,
        AppError::Internal(_) => P::Internal,
        AppError::Store(e) => match e {
            // Every connection of the pool is in use: shed the request (503 with Retry-After).
            StoreError::Db(sqlx::Error::PoolTimedOut) => P::Unavailable,
            StoreError::Db(_) | StoreError::Migrate(_) | StoreError::Blob(_) => P::Internal,
            StoreError::MissingBlob(_) | StoreError::Corrupt(_) | StoreError::Serialise(_) => {
                P::Internal
            }
        },
        AppError::Engine(e) => match e {
            EngineError::Image { .. } | EngineError::ImageData { .. } => P::InvalidImage,
            EngineError::ImageTooLarge { .. } => P::ImageTooLarge,
            EngineError::Invalid(_) | EngineError::Calibration(_) => P::InvalidInput,
            EngineError::Reverse(_) | EngineError::Io { .. } => P::Internal,
        },
        AppError::Inference(e) => match e {
            InferenceError::Spec(_) => P::InvalidSpec,
            InferenceError::Signature { .. } => P::ModelSignatureMismatch,
            InferenceError::Load { .. } => P::InvalidModel,
            InferenceError::Run { .. } => P::ModelFailed,
            InferenceError::RuntimeMissing(_) | InferenceError::Provider { .. } => {
                P::RuntimeUnavailable
            }
            InferenceError::Io { .. } => P::Internal,
        },
        AppError::Ingest { source, .. } => match source {
            IngestError::UnsupportedTransferSyntax { .. } => P::UnsupportedTransferSyntax,
            IngestError::Unsupported(_) => P::UnsupportedImage,
            IngestError::Malformed(_) => P::InvalidImage,
            IngestError::TooLarge(_) => P::ImageTooLarge,
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.problem();
        let status = kind.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            // The detail can name the client's files (PACS exports carry patient names in them): the log
            // keeps the problem type only; the request id links it to what the client was told.
            tracing::info!(
                status = status.as_u16(),
                problem = kind.slug(),
                "request rejected"
            );
        }
        let problem = Problem {
            kind,
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
            ApiError::App(AppError::QueueFull { retry_after_s, .. })
            | ApiError::TooManyUploads { retry_after_s, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            ApiError::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::App(AppError::Store(StoreError::Db(sqlx::Error::PoolTimedOut))) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_S));
            }
            _ => {}
        }
        response
    }
}

/// Retry-After of a 503 for a saturated database pool: connections free up within seconds.
const BUSY_RETRY_AFTER_S: u64 = 2;

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
