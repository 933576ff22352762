//! Bearer API keys. Roles are ordered: admin can do what a submitter can, a submitter what a reader can.

use super::{ApiError, AppState};
use crate::store::keys::{self, Principal, Role};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl Caller {
    pub fn require(&self, role: Role) -> Result<Principal, ApiError> {
        if self.0.role >= role {
            Ok(self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key has the {} role; this operation needs {} (or higher)",
                self.0.role.as_str(),
                role.as_str()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(&parts.headers, state).await.map(Caller)
    }
}

/// The principal behind the request's bearer token.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Principal, ApiError> {
    let missing = || {
        ApiError::Unauthenticated(
                "send an API key as `Authorization: Bearer spe_...` (create one with `spe keys create`)".into(),
            )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(missing)?;
    match keys::authenticate(&state.pool, token).await? {
        Some(principal) => Ok(principal),
        None => Err(ApiError::Unauthenticated(
            "the API key is unknown or revoked".into(),
        )),
    }
}
