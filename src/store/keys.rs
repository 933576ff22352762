//! API keys: `spe_<key_id>.<secret>`. Only the SHA-256 of the secret is stored; the key id finds the
//! row and the digests are compared in constant time.

use super::StoreError;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// An API key's role, as the api_keys table stores it; an unknown value is a decode error.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema, sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Reader,
    Submitter,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Submitter => "submitter",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "submitter" => Ok(Role::Submitter),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {s:?}: use admin, submitter or reader"
            )),
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub key_id: String,
    pub role: Role,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The caller a valid key identifies.
#[derive(Clone, Copy, Debug)]
pub struct Principal {
    pub id: Uuid,
    pub role: Role,
}

const PREFIX: &str = "spe_";

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a key and returns the full token (shown once; only its digest is kept).
pub async fn create(pool: &PgPool, role: Role, name: &str) -> Result<(ApiKey, String), StoreError> {
    let mut raw = [0u8; 6];
    rand::rng().fill_bytes(&mut raw);
    let key_id = hex::encode(raw);
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let key = insert(pool, &key_id, &secret, role, name).await?;
    Ok((key, format!("{PREFIX}{key_id}.{secret}")))
}

async fn insert(
    pool: &PgPool,
    key_id: &str,
    secret: &str,
    role: Role,
    name: &str,
) -> Result<ApiKey, StoreError> {
    let key = sqlx::query_as::<_, ApiKey>(
        "INSERT INTO api_keys (id, key_id, secret_sha256, role, name) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, key_id, role, name, created_at, revoked_at",
    )
    .bind(Uuid::new_v4())
    .bind(key_id)
    .bind(digest(secret))
    .bind(role)
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(key)
}

/// What start-up did with SPE_BOOTSTRAP_ADMIN_KEY.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// The key is an admin key now (new, or its secret updated).
    Installed,
    /// The key was revoked (`spe keys revoke`): revocation sticks, the key stays refused.
    Revoked,
}

/// Installs the admin key given at start-up in SPE_BOOTSTRAP_ADMIN_KEY, or updates its secret. A revoked
/// bootstrap key is never re-enabled, so a leaked key stays revoked across restarts; rotating means a new
/// key id. The token must have the `spe_<key_id>.<secret>` form so it parses like any other key.
pub async fn ensure_bootstrap(pool: &PgPool, token: &str) -> Result<Bootstrap, String> {
    let (key_id, secret) = parse(token).ok_or_else(|| {
        "SPE_BOOTSTRAP_ADMIN_KEY must look like spe_<id>.<secret> (id: letters/digits, secret: 16+ characters)"
            .to_string()
    })?;
    if secret.len() < 16 {
        return Err("SPE_BOOTSTRAP_ADMIN_KEY's secret must be at least 16 characters".into());
    }
    let revoked: bool = sqlx::query_scalar(
        "INSERT INTO api_keys (id, key_id, secret_sha256, role, name) VALUES ($1, $2, $3, 'admin', 'bootstrap')
         ON CONFLICT (key_id) DO UPDATE SET secret_sha256 = EXCLUDED.secret_sha256, role = 'admin'
             WHERE api_keys.revoked_at IS NULL
         RETURNING revoked_at IS NOT NULL",
    )
    .bind(Uuid::new_v4())
    .bind(key_id)
    .bind(digest(secret))
    .fetch_optional(pool)
    .await
    .map_err(|e| format!("cannot install the bootstrap admin key: {e}"))?
    // No row back: the conflicting key is revoked, so the update's WHERE left it alone.
    .unwrap_or(true);
    Ok(if revoked {
        Bootstrap::Revoked
    } else {
        Bootstrap::Installed
    })
}

fn parse(token: &str) -> Option<(&str, &str)> {
    let (key_id, secret) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let ok_id = !key_id.is_empty()
        && key_id.len() <= 64
        && key_id.bytes().all(|b| b.is_ascii_alphanumeric());
    (ok_id && !secret.is_empty()).then_some((key_id, secret))
}

/// The principal for a bearer token, or None for an unknown, revoked or wrong key.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<Principal>, StoreError> {
    let Some((key_id, secret)) = parse(token) else {
        return Ok(None);
    };
    let row: Option<(Uuid, Vec<u8>, Role)> = sqlx::query_as(
        "SELECT id, secret_sha256, role FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    let Some((id, stored, role)) = row else {
        return Ok(None);
    };
    if !bool::from(stored.as_slice().ct_eq(&digest(secret))) {
        return Ok(None);
    }
    Ok(Some(Principal { id, role }))
}

pub async fn list(pool: &PgPool) -> Result<Vec<ApiKey>, StoreError> {
    Ok(sqlx::query_as::<_, ApiKey>(
        "SELECT id, key_id, role, name, created_at, revoked_at FROM api_keys ORDER BY created_at",
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes by key id (the part between `spe_` and the dot); returns whether a key was revoked.
pub async fn revoke(pool: &PgPool, key_id: &str) -> Result<bool, StoreError> {
    let key_id = key_id.strip_prefix(PREFIX).unwrap_or(key_id);
    let key_id = key_id.split('.').next().unwrap_or_default();
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}
