//! Webhook delivery: events are queued in the transaction that finishes an estimate ([`notify`]), so a
//! finished estimate always has its deliveries and a rolled-back one has none; delivery loops then send
//! them, signed, retrying with backoff. Delivery never touches the estimate: a receiver that is down only
//! delays its own deliveries.

use crate::store::results::EstimateResult;
use crate::store::{webhooks as store, StoreError};
use crate::webhooks::{self as hooks, AllowList, Event, ModelRef};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Queues the deliveries a finished job raises; nothing when the job is not an estimate.
pub async fn notify(
    conn: &mut PgConnection,
    estimate_id: Uuid,
    outcome: Result<&EstimateResult, &str>,
) -> Result<(), StoreError> {
    let Some((model_id, model_name)) = store::estimate_model(conn, estimate_id).await? else {
        return Ok(());
    };
    let now = chrono::Utc::now();
    for event in hooks::events_of(outcome) {
        for webhook in store::subscribers(conn, event).await? {
            let id = Uuid::new_v4();
            let model = ModelRef {
                id: model_id,
                name: model_name.clone(),
            };
            let body =
                serde_json::to_string(&hooks::payload(id, event, model, estimate_id, outcome, now))
                    .map_err(|e| StoreError::Serialise(e.to_string()))?;
            store::enqueue(conn, id, webhook, event, estimate_id, &body).await?;
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub allowed: AllowList,
    /// One attempt's limit, connection and response included.
    pub timeout: Duration,
    /// Longest wait between attempts (the backoff doubles from 1 s up to it).
    pub max_delay: Duration,
    /// A delivery still failing this long after its event is given up.
    pub give_up_after: Duration,
    /// How often an idle loop looks for due deliveries.
    pub poll: Duration,
    /// Delivery loops per process.
    pub concurrency: usize,
}

/// Runs the delivery loops until `shutdown`; an attempt in flight at shutdown is retried after its lease.
pub async fn run(pool: PgPool, config: DeliveryConfig, shutdown: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        // A redirect could lead past the allow-list; receivers answer where they were registered.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .user_agent(concat!("spe/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    let loops: Vec<_> = (0..config.concurrency.max(1))
        .map(|_| {
            tokio::spawn(delivery_loop(
                pool.clone(),
                client.clone(),
                config.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for l in loops {
        let _ = l.await;
    }
}

async fn delivery_loop(
    pool: PgPool,
    client: reqwest::Client,
    config: DeliveryConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    // Long enough that a live attempt always ends (by its timeout) before another process may take it.
    let lease = config.timeout + Duration::from_secs(30);
    while !*shutdown.borrow() {
        match store::claim(&pool, lease).await {
            Ok(Some(delivery)) => {
                let span = tracing::info_span!("webhook", delivery = %delivery.id, webhook = %delivery.webhook_id, event = %delivery.event, attempt = delivery.attempts);
                tracing::Instrument::instrument(attempt(&pool, &client, &config, delivery), span)
                    .await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(config.poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a webhook delivery");
                tokio::time::sleep(config.poll.max(Duration::from_secs(1))).await;
            }
        }
    }
}

/// One attempt, recorded. Logs name the receiver's id, never its URL or secret.
async fn attempt(
    pool: &PgPool,
    client: &reqwest::Client,
    config: &DeliveryConfig,
    delivery: store::Claimed,
) {
    let outcome = match config.allowed.check(&delivery.url) {
        Err(e) => Err((None, e, true)),
        Ok(url) => send(client, url, &delivery).await,
    };
    let recorded = match &outcome {
        Ok(status) => {
            tracing::info!(status, "webhook delivered");
            metrics::counter!("spe_webhook_deliveries_total", "outcome" => "delivered")
                .increment(1);
            store::delivered(pool, delivery.id, *status).await
        }
        Err((status, error, permanent)) => {
            tracing::warn!(status, error = %error, "webhook delivery failed");
            metrics::counter!("spe_webhook_deliveries_total", "outcome" => "failed_attempt")
                .increment(1);
            store::attempt_failed(
                pool,
                delivery.id,
                *status,
                error,
                *permanent,
                config.max_delay,
                config.give_up_after,
            )
            .await
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and the delivery is attempted again: at least once, never lost.
        tracing::warn!(error = %e, "cannot record a webhook attempt");
    }
}

/// Posts the body; the receiver's status when it is 2xx, else (status, reason, permanent).
async fn send(
    client: &reqwest::Client,
    url: reqwest::Url,
    delivery: &store::Claimed,
) -> Result<u16, (Option<u16>, String, bool)> {
    let t = chrono::Utc::now().timestamp();
    let event = Event::parse(&delivery.event).map_or("unknown", Event::as_str);
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            hooks::SIGNATURE_HEADER,
            hooks::signature(&delivery.secret, t, &delivery.body),
        )
        .header("X-Spe-Event", event)
        .header("X-Spe-Delivery", delivery.id.to_string())
        .body(delivery.body.clone())
        .send()
        .await
        // Without the URL: it may carry a token, and the error is stored and shown.
        .map_err(|e| (None, e.without_url().to_string(), false))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err((
            Some(status.as_u16()),
            format!("the receiver answered {status}"),
            false,
        ))
    }
}
