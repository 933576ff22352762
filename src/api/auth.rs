//! Bearer API keys. Roles are ordered: admin can do what a submitter can, a submitter what a reader can.

use super::{ApiError, AppState};
use crate::store::keys::{self, Principal, Role};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};
use std::marker::PhantomData;

/// The role a handler needs, as a type (see [`Authorized`]).
pub trait NeedsRole {
    const ROLE: Role;
}

pub struct ReaderRole;
pub struct SubmitterRole;
pub struct AdminRole;

impl NeedsRole for ReaderRole {
    const ROLE: Role = Role::Reader;
}
impl NeedsRole for SubmitterRole {
    const ROLE: Role = Role::Submitter;
}
impl NeedsRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// The application state, reached by a caller whose API key has at least `R`'s role: a handler that
/// takes one cannot forget the role check. Roles are ordered: admin can do what a submitter can, a
/// submitter what a reader can.
pub struct Authorized<R> {
    state: AppState,
    pub principal: Principal,
    role: PhantomData<R>,
}

pub type Reader = Authorized<ReaderRole>;
pub type Submitter = Authorized<SubmitterRole>;
pub type Admin = Authorized<AdminRole>;

impl<R> std::ops::Deref for Authorized<R> {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.state
    }
}

impl<R: NeedsRole + Send + Sync> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(&parts.headers, state).await?;
        if principal.role < R::ROLE {
            return Err(ApiError::Forbidden(format!(
                "this API key has the {} role; this operation needs {} (or higher)",
                principal.role.as_str(),
                R::ROLE.as_str()
            )));
        }
        Ok(Self {
            state: state.clone(),
            principal,
            role: PhantomData,
        })
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
