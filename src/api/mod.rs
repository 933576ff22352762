//! The REST API: one router per resource, one `AppState`, problem+json errors, OpenAPI from the code.

pub mod auth;
pub mod calibrations;
pub mod drain;
pub mod dto;
pub mod error;
pub mod estimates;
pub mod forms;
pub mod models;
pub mod ops;
pub mod plots;
pub mod problems;
pub mod studies;
pub mod upload;
pub mod webhooks;

pub use error::ApiError;

use crate::store::{self, idempotency::ScopedKey};
use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;
use uuid::Uuid;

pub use crate::app::Limits;

#[derive(Clone)]
pub struct AppState {
    /// What the use cases need (storage, ONNX Runtime, limits); handlers reach it through `Deref`.
    pub app: crate::app::Context,
    /// Serve /healthz and /metrics without an API key.
    pub open_ops: bool,
    /// Set when shutdown begins: /readyz answers 503 from then on, so load balancers stop routing here.
    pub draining: Arc<AtomicBool>,
    /// Whether this process runs the API (false: a worker answering only the operations routes).
    pub serves_api: bool,
    /// Permits for uploads in progress (see [`upload_permit`]).
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for AppState {
    type Target = crate::app::Context;

    fn deref(&self) -> &crate::app::Context {
        &self.app
    }
}

/// A resource id in the path; a malformed one is a 404 like any unknown id.
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<Uuid>::from_request_parts(parts, state).await?;
        Ok(IdPath(id))
    }
}

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`spe keys create --role admin|submitter|reader`). admin: models and \
                         calibrations; submitter: post batches; reader: GET only.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "spe",
        description = "Estimates how well a deployed segmentation model performs on unlabeled images (SPE, MICCAI 2025). \
                       Errors are RFC 9457 problem+json.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    // Referenced by the shared problem responses (`problems`), which do not register schemas themselves.
    components(schemas(error::Problem, error::ProblemType)),
    security(("api_key" = [])),
    // The groups of README "API": models with their reference sets, reverse segmenters, the two stages
    // (estimates include DICOMweb intake), operations.
    tags(
        (name = "models", description = "Segmentation models and their reference sets"),
        (name = "reverse-segmenters", description = "UniverSeg-contract ONNX reverse segmenters"),
        (name = "calibrations", description = "Stage 1: the pseudo -> real mapping per model"),
        (name = "estimates", description = "Stage 2: estimates for unlabeled batches (multipart, zip or DICOMweb STOW-RS)"),
        (name = "webhooks", description = "Receivers of estimate events (signed, retried)"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(models::router())
        .merge(calibrations::router())
        .merge(estimates::router())
        .merge(plots::router())
        .merge(studies::router())
        .merge(webhooks::router())
        .merge(ops::router())
}

/// A `Location` header for `/v1/{collection}/{id}`, where a created resource (or job) can be polled.
pub(crate) fn location(collection: &str, id: Uuid) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(v) = format!("/v1/{collection}/{id}").parse() {
        headers.insert(axum::http::header::LOCATION, v);
    }
    headers
}

/// The OpenAPI document, generated from the handlers (committed as openapi/openapi.json).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    forms::declare_part_rules(&mut doc);
    doc
}

/// The whole HTTP application; a worker-only process (`serves_api` false) answers the operations routes
/// only (/healthz, /readyz, /metrics).
pub fn app(state: AppState) -> Router {
    let (router, api) = if state.serves_api {
        let (router, mut api) = api_router().split_for_parts();
        forms::declare_part_rules(&mut api);
        (router, api)
    } else {
        OpenApiRouter::new().merge(ops::router()).split_for_parts()
    };
    let router = if state.serves_api {
        router
            .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
            .merge(crate::ui::router())
    } else {
        router
    };
    let request_id = HeaderName::from_static("x-request-id");
    let body_limit = usize::try_from(state.limits.max_body_bytes).unwrap_or(usize::MAX);
    let request_timeout = state.limits.request_timeout;
    router
        .fallback(|| async { ApiError::NotFound("no such route; see /docs for the API".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method; see /docs".into())
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), upload_permit))
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            request_deadline(req, next, request_timeout)
        }))
        .layer(axum::middleware::from_fn_with_state(body_limit, drain::drain_unread))
        .layer(axum::middleware::from_fn(track))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// 408 for a request (its body included) that takes longer than the limit, e.g. a client trickling its
/// upload; what it had staged rolls back.
async fn request_deadline(req: Request, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(format!(
            "the request took longer than {} s (SPE_REQUEST_TIMEOUT_SECS); send the body faster or in \
             smaller requests",
            limit.as_secs()
        ))
        .into_response(),
    }
}

/// Bounds the uploads handled at once: a POST, PUT or PATCH beyond the limit gets 429 with Retry-After
/// before its body is read, so a burst of large uploads cannot take every database connection (each
/// upload holds one while it stores its files) and starve authentication and polling.
async fn upload_permit(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    use axum::http::Method;
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return next.run(req).await;
    }
    match state.uploads.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            metrics::counter!("spe_uploads_refused_total").increment(1);
            ApiError::TooManyUploads {
                detail: "the server is handling as many uploads as it allows (SPE_MAX_CONCURRENT_UPLOADS); \
                         retry after the Retry-After delay"
                    .into(),
                retry_after_s: state.limits.retry_after_s,
            }
            .into_response()
        }
    }
}

/// Request count and latency per route template and status.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("spe_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("spe_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Shared by handlers taking either JSON or multipart: the request's media type, lowercased, without
/// parameters.
pub(crate) fn media_type(req: &Request) -> String {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// The `Idempotency-Key` header, if sent (at most 200 visible ASCII characters), scoped to the caller and
/// to this route with its path parameters: the same key on another model's route is another request.
pub(crate) fn idempotency_key(
    headers: &axum::http::HeaderMap,
    caller: &store::keys::Principal,
    model_id: Uuid,
    route: &str,
) -> Result<Option<ScopedKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        // to_str() lets tabs through; they are not visible characters (nor allowed by the documented pattern).
        .filter(|k| !k.is_empty() && k.len() <= 200 && !k.contains('\t'))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1-200 visible ASCII characters".into())
        })?;
    Ok(Some(ScopedKey {
        api_key_id: caller.id,
        model_id,
        scope: format!("POST /v1/models/{model_id}/{route}"),
        key: key.to_string(),
    }))
}
