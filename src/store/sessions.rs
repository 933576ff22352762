//! Dashboard sessions: a random token in an HttpOnly cookie, its SHA-256 here. A session is only as good
//! as its API key: revoking the key ends it.

use super::keys::{Principal, Role};
use super::StoreError;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Opens a session for the key's principal; returns the token for the cookie.
pub async fn open(pool: &PgPool, key: Uuid, lifetime: Duration) -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    sqlx::query(
        "INSERT INTO ui_sessions (token_sha256, api_key_id, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(digest(&token))
    .bind(key)
    .bind(lifetime.as_secs_f64())
    .execute(pool)
    .await?;
    // Expired sessions go when new ones open, so the table stays the size of the active ones.
    sqlx::query("DELETE FROM ui_sessions WHERE expires_at < now()")
        .execute(pool)
        .await?;
    Ok(token)
}

/// The principal of a live session (not expired, key not revoked).
pub async fn principal(pool: &PgPool, token: &str) -> Result<Option<Principal>, StoreError> {
    let row: Option<(Uuid, Role)> = sqlx::query_as(
        "SELECT k.id, k.role FROM ui_sessions s JOIN api_keys k ON k.id = s.api_key_id
         WHERE s.token_sha256 = $1 AND s.expires_at > now() AND k.revoked_at IS NULL",
    )
    .bind(digest(token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, role)| Principal { id, role }))
}

pub async fn close(pool: &PgPool, token: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ui_sessions WHERE token_sha256 = $1")
        .bind(digest(token))
        .execute(pool)
        .await?;
    Ok(())
}
