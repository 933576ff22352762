//! The dashboard: read-only HTML pages for people, signed in with an API key of any role. The session
//! is a random token in an HttpOnly, SameSite=Strict cookie; the pages call the same application layer
//! as the API.

pub mod pages;

use crate::api::{ApiError, AppState, IdPath};
use crate::app::dashboard;
use crate::store::keys;
use crate::store::sessions;
use axum::extract::{Form, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::time::Duration;

const COOKIE: &str = "spe_session";
/// A session lasts a working day; then the key is asked for again.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(overview))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/models/{id}", get(model_page))
}

/// A failed page: the API's status and message, as a page.
pub struct UiError(ApiError);

impl<E: Into<ApiError>> From<E> for UiError {
    fn from(e: E) -> Self {
        UiError(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, detail) = self.0.status_and_detail();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "dashboard page failed");
        }
        (status, Html(pages::error_page(status.as_u16(), &detail))).into_response()
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// A signed-in browser; without a live session, pages redirect to the sign-in form.
pub struct Session {
    state: AppState,
}

impl std::ops::Deref for Session {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.state
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = session_token(&parts.headers) else {
            return Err(Redirect::to("/ui/login").into_response());
        };
        match sessions::principal(&state.pool, &token).await {
            Ok(Some(_)) => Ok(Session {
                state: state.clone(),
            }),
            Ok(None) => Err(Redirect::to("/ui/login").into_response()),
            Err(e) => Err(UiError(ApiError::from(crate::app::AppError::from(e))).into_response()),
        }
    }
}

async fn overview(session: Session) -> Result<Html<String>, UiError> {
    let models = dashboard::overview(&session).await?;
    Ok(Html(pages::overview(&models)))
}

async fn model_page(session: Session, IdPath(id): IdPath) -> Result<Html<String>, UiError> {
    let data = dashboard::model(&session, id).await?;
    Ok(Html(pages::model(&pages::ModelPage {
        model: &data.model,
        estimates: &data.estimates,
        thresholds: &data.thresholds,
        window: &data.window,
        deliveries: &data.deliveries,
        calibration_dice: data.calibration_dice,
        estimates_plot: &data.estimates_plot,
        calibration_plot: data.calibration_plot.as_deref(),
    })))
}

async fn login_form() -> Html<String> {
    Html(pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

fn cookie(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("a hex token is a valid header value")
}

async fn login(
    state: axum::extract::State<AppState>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let key = form.map(|Form(f)| f.key).unwrap_or_default();
    let refused = |message: &str| {
        (StatusCode::UNAUTHORIZED, Html(pages::login(Some(message)))).into_response()
    };
    let principal = match keys::authenticate(&state.pool, key.trim()).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return refused("That API key is unknown or revoked."),
        Err(e) => return UiError::from(crate::app::AppError::from(e)).into_response(),
    };
    match sessions::open(&state.pool, principal.id, SESSION_LIFETIME).await {
        Ok(token) => {
            let mut response = Redirect::to("/ui").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&token, SESSION_LIFETIME.as_secs()),
            );
            response
        }
        Err(e) => UiError::from(crate::app::AppError::from(e)).into_response(),
    }
}

async fn logout(state: axum::extract::State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        if let Err(e) = sessions::close(&state.pool, &token).await {
            return UiError::from(crate::app::AppError::from(e)).into_response();
        }
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0));
    response
}
