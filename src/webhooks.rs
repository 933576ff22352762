//! Webhooks: what an estimate's end tells the receivers an admin registered, and how a receiver can trust
//! it. Pure: the events an outcome raises, the JSON body, the signature, and which URLs may be called.
//! Delivery itself (queue, backoff, HTTP) is `jobs::deliver`; storage is `store::webhooks`.

use crate::engine::metrics::Metric;
use crate::engine::spe::{Estimate, Warning};
use crate::monitor::{Alert, Severity};
use crate::store::results::EstimateResult;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// The header that carries the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "X-Spe-Signature";
/// Shortest secret accepted: an HMAC key much shorter than its 32-byte output is guessable.
pub const MIN_SECRET_CHARS: usize = 16;
pub const MAX_SECRET_CHARS: usize = 256;

/// What a receiver subscribes to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub enum Event {
    /// An estimate broke a threshold (an alert of severity `alert`; warnings alone do not raise it).
    #[serde(rename = "estimate.alert")]
    EstimateAlert,
    /// An estimate finished with a result (insufficient support included).
    #[serde(rename = "estimate.succeeded")]
    EstimateSucceeded,
    /// An estimate failed for good.
    #[serde(rename = "estimate.failed")]
    EstimateFailed,
}

impl Event {
    pub const ALL: [Event; 3] = [
        Event::EstimateAlert,
        Event::EstimateSucceeded,
        Event::EstimateFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::EstimateAlert => "estimate.alert",
            Event::EstimateSucceeded => "estimate.succeeded",
            Event::EstimateFailed => "estimate.failed",
        }
    }

    pub fn parse(text: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// The events one finished estimate raises: failed, or succeeded and (when it breaks a threshold) alert.
pub fn events_of(outcome: Result<&EstimateResult, &str>) -> Vec<Event> {
    match outcome {
        Err(_) => vec![Event::EstimateFailed],
        Ok(result) if result.alerts.iter().any(|a| a.severity == Severity::Alert) => {
            vec![Event::EstimateSucceeded, Event::EstimateAlert]
        }
        Ok(_) => vec![Event::EstimateSucceeded],
    }
}

/// The model an event is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelRef {
    pub id: Uuid,
    pub name: String,
}

/// One metric's estimate as a receiver sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricValue {
    pub estimate: f64,
    pub interval: [f64; 2],
}

/// The estimate an event is about: enough to act on without calling back; `url` has the whole result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EstimateSummary {
    pub id: Uuid,
    /// Path of the estimate on this service (`GET` it with an API key for the full result).
    pub url: String,
    /// `succeeded` or `failed`.
    pub status: String,
    /// Per metric (`dice`, `hd95`, ...); empty when failed or without sufficient support.
    #[schema(value_type = BTreeMap<String, MetricValue>)]
    pub metrics: BTreeMap<Metric, MetricValue>,
    pub insufficient_support: bool,
    pub alerts: Vec<Alert>,
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<Warning>,
    /// Why the estimate failed.
    pub error: Option<String>,
}

/// The JSON body of a delivery (the same bytes on every attempt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Payload {
    /// The delivery's id (also in `X-Spe-Delivery`): a receiver that sees it twice can drop the second.
    pub id: Uuid,
    pub event: Event,
    pub created_at: DateTime<Utc>,
    pub model: ModelRef,
    pub estimate: EstimateSummary,
}

/// The body for one event of a finished estimate.
pub fn payload(
    id: Uuid,
    event: Event,
    model: ModelRef,
    estimate_id: Uuid,
    outcome: Result<&EstimateResult, &str>,
    now: DateTime<Utc>,
) -> Payload {
    let (metrics, insufficient_support, alerts, warnings) = match outcome {
        Err(_) => (BTreeMap::new(), false, Vec::new(), Vec::new()),
        Ok(result) => match &result.estimate {
            Estimate::Ok {
                metrics, warnings, ..
            } => (
                metrics
                    .iter()
                    .map(|(m, e)| {
                        (
                            *m,
                            MetricValue {
                                estimate: e.estimate,
                                interval: e.interval,
                            },
                        )
                    })
                    .collect(),
                false,
                result.alerts.clone(),
                warnings.clone(),
            ),
            Estimate::InsufficientSupport { .. } => {
                (BTreeMap::new(), true, result.alerts.clone(), Vec::new())
            }
        },
    };
    Payload {
        id,
        event,
        created_at: now,
        model,
        estimate: EstimateSummary {
            id: estimate_id,
            url: format!("/v1/estimates/{estimate_id}"),
            status: if outcome.is_ok() {
                "succeeded"
            } else {
                "failed"
            }
            .into(),
            metrics,
            insufficient_support,
            alerts,
            warnings,
            error: outcome.err().map(str::to_string),
        },
    }
}

/// The `X-Spe-Signature` value for `body` sent at unix time `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

fn mac(secret: &str, t: i64, body: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.{body}").as_bytes());
    mac
}

/// What a receiver does: true when `header` signs `body` with `secret` (constant-time comparison).
pub fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    match (t, v1) {
        (Some(t), Some(v1)) => mac(secret, t, body).verify_slice(&v1).is_ok(),
        _ => false,
    }
}

/// Which hosts webhooks may call (`SPE_WEBHOOK_ALLOWED_HOSTS`): empty allows any host (only admins
/// register webhooks); otherwise exact host names or IP literals, `host:port`, or `*.domain` suffixes.
#[derive(Clone, Debug, Default)]
pub struct AllowList(Vec<String>);

impl AllowList {
    pub fn parse(text: &str) -> AllowList {
        AllowList(
            text.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0.is_empty()
            || self.0.iter().any(|entry| {
                let entry = entry.as_str();
                match entry.strip_prefix("*.") {
                    Some(domain) => host.ends_with(&format!(".{domain}")),
                    None => {
                        entry == host
                            || entry == format!("{host}:{port}")
                            || entry == format!("[{host}]:{port}")
                    }
                }
            })
    }

    /// `url` if webhooks may call it: http or https, a host this list allows, no user name or password
    /// (the secret signs; credentials in URLs end up in logs).
    pub fn check(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| format!("\"url\" is not a valid URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "\"url\" must be http or https, not {:?}",
                parsed.scheme()
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("\"url\" must not carry a user name or password; receivers check the signature instead".into());
        }
        let host = parsed
            .host_str()
            .ok_or("\"url\" has no host")?
            .to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(80);
        if !self.allows(&host, port) {
            return Err(format!(
                "webhooks may not call {host}:{port}: it is not in SPE_WEBHOOK_ALLOWED_HOSTS ({})",
                self.0.join(", ")
            ));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests;
