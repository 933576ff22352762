//! Idempotency-Keys: what a request under a key created, so that a retry gets the same answer.

use super::StoreError;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The unique constraint a concurrent first use of a key runs into.
pub const CONSTRAINT: &str = "idempotency_keys_scope_key";

/// A key as one caller used it on one route (method and path, path parameters included).
#[derive(Clone, Debug)]
pub struct ScopedKey {
    pub api_key_id: Uuid,
    pub model_id: Uuid,
    pub scope: String,
    pub key: String,
}

/// What the first request under a key created.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Recorded {
    pub request_sha256: String,
    pub resource_id: Uuid,
    /// The first answer's body, for routes that replay it verbatim.
    pub response: Option<Value>,
}

pub async fn find(pool: &PgPool, key: &ScopedKey) -> Result<Option<Recorded>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT request_sha256, resource_id, response FROM idempotency_keys
         WHERE api_key_id = $1 AND scope = $2 AND key = $3",
    )
    .bind(key.api_key_id)
    .bind(&key.scope)
    .bind(&key.key)
    .fetch_optional(pool)
    .await?)
}

/// Records the key in the transaction that creates `resource_id`; a concurrent first use fails on
/// [`CONSTRAINT`].
pub async fn record(
    conn: &mut PgConnection,
    key: &ScopedKey,
    request_sha256: &str,
    resource_id: Uuid,
    response: Option<&Value>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency_keys (api_key_id, model_id, scope, key, request_sha256, resource_id, response)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.api_key_id)
    .bind(key.model_id)
    .bind(&key.scope)
    .bind(&key.key)
    .bind(request_sha256)
    .bind(resource_id)
    .bind(response)
    .execute(conn)
    .await?;
    Ok(())
}
