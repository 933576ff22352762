//! The dashboard's HTML: server-rendered, one inline stylesheet, no scripts and nothing fetched from
//! elsewhere (hospital networks are often offline). Every value from the database is escaped.

use crate::engine::metrics::Metric;
use crate::engine::spe::Estimate;
use crate::monitor::{Alert, Severity, Thresholds};
use crate::store::estimates::{EstimateKind, EstimateRow};
use crate::store::models::ModelRow;
use crate::store::webhooks::DeliveryRow;
use crate::store::windows::WindowState;
use crate::store::JobState;
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// Text for HTML content and attribute values (the plots' escaper: the same rules hold for HTML).
pub use crate::plot::escape as esc;

const STYLE: &str = include_str!("style.css");

/// A whole page: `signed_in` adds the navigation and the sign-out button.
pub fn layout(title: &str, signed_in: bool, body: &str) -> String {
    let nav = if signed_in {
        r#"<nav><a href="/ui">Models</a><form method="post" action="/ui/logout"><button type="submit" class="link">Sign out</button></form></nav>"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · spe</title><style>{STYLE}</style></head>
<body><header><a class="brand" href="/ui">spe</a><span class="tagline">segmentation performance, estimated without labels</span>{nav}</header>
<main>{body}</main></body></html>"#,
        title = esc(title)
    )
}

pub fn login(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p class="error" role="alert">{}</p>"#, esc(e))
    });
    layout(
        "Sign in",
        false,
        &format!(
            r#"<section class="card narrow"><h1>Sign in</h1>
<p class="muted">Use an API key of any role (<code>spe keys create --role reader</code>). The dashboard only reads.</p>
{error}<form method="post" action="/ui/login"><label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="off" placeholder="spe_…" required autofocus>
<button type="submit">Sign in</button></form></section>"#
        ),
    )
}

pub fn error_page(status: u16, detail: &str) -> String {
    layout(
        "Error",
        true,
        &format!(
            r#"<section class="card narrow"><h1>{status}</h1><p>{}</p><p><a href="/ui">Back to the models</a></p></section>"#,
            esc(detail)
        ),
    )
}

/// The alert state an estimate stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ok,
    Warning,
    Alert,
    Failed,
    Pending,
    None,
}

impl State {
    pub fn of(row: Option<&EstimateRow>) -> State {
        let Some(row) = row else { return State::None };
        match row.state {
            JobState::Queued | JobState::Running => State::Pending,
            JobState::Failed => State::Failed,
            JobState::Succeeded => match row.result.as_ref().map(|r| worst(&r.alerts)) {
                Some(Some(Severity::Alert)) => State::Alert,
                Some(Some(Severity::Warning)) => State::Warning,
                _ => State::Ok,
            },
        }
    }

    fn badge(self) -> String {
        let (class, text) = match self {
            State::Ok => ("ok", "OK"),
            State::Warning => ("warning", "Warning"),
            State::Alert => ("alert", "Alert"),
            State::Failed => ("alert", "Failed"),
            State::Pending => ("muted", "Running"),
            State::None => ("muted", "No estimate"),
        };
        format!(r#"<span class="badge {class}">{text}</span>"#)
    }
}

fn worst(alerts: &[Alert]) -> Option<Severity> {
    if alerts.iter().any(|a| a.severity == Severity::Alert) {
        Some(Severity::Alert)
    } else if alerts.is_empty() {
        None
    } else {
        Some(Severity::Warning)
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The Dice estimate and interval of a finished estimate, if it has one.
fn dice(row: &EstimateRow) -> Option<(f64, [f64; 2])> {
    match &row.result.as_ref()?.estimate {
        Estimate::Ok { metrics, .. } => {
            metrics.get(&Metric::Dice).map(|m| (m.estimate, m.interval))
        }
        Estimate::InsufficientSupport { .. } => None,
    }
}

fn dice_cell(row: &EstimateRow) -> String {
    match (row.state, dice(row)) {
        (_, Some((value, [lo, hi]))) => format!(
            r#"<td class="num"><strong>{value:.3}</strong></td><td class="num muted">{lo:.3} – {hi:.3}</td>"#
        ),
        (JobState::Succeeded, None) => {
            r#"<td colspan="2" class="muted">insufficient support</td>"#.into()
        }
        _ => r#"<td colspan="2" class="muted">—</td>"#.into(),
    }
}

/// `/ui`: every model with its latest estimate and alert state.
pub fn overview(models: &[(ModelRow, Option<EstimateRow>)]) -> String {
    let mut rows = String::new();
    for (model, latest) in models {
        let state = State::of(latest.as_ref());
        let (value, time) = match latest {
            Some(row) => (dice_cell(row), when(row.created_at)),
            None => (
                r#"<td colspan="2" class="muted">—</td>"#.to_string(),
                "—".into(),
            ),
        };
        let _ = write!(
            rows,
            r#"<tr><td><a href="/ui/models/{id}">{name}</a></td><td>{badge}</td>{value}<td>{time}</td></tr>"#,
            id = model.id,
            name = esc(&model.name),
            badge = state.badge(),
        );
    }
    let body = if models.is_empty() {
        r#"<section class="card"><h1>Models</h1><p class="muted">No models yet. Register one with <code>POST /v1/models</code> (README, Walkthrough).</p></section>"#.to_string()
    } else {
        format!(
            r#"<section class="card"><h1>Models</h1>
<table class="models"><thead><tr><th>Model</th><th>State</th><th class="num">Latest Dice</th><th class="num">95% interval</th><th>Estimated</th></tr></thead>
<tbody>{rows}</tbody></table></section>"#
        )
    };
    layout("Models", true, &body)
}

/// What the model page shows.
pub struct ModelPage<'a> {
    pub model: &'a ModelRow,
    /// Newest first.
    pub estimates: &'a [EstimateRow],
    pub thresholds: &'a Thresholds,
    pub window: &'a WindowState,
    pub deliveries: &'a [DeliveryRow],
    /// The deployed model's real Dice on the calibration split, when known.
    pub calibration_dice: Option<f64>,
    /// Inline SVG: the estimate over time, and the active calibration (None without one).
    pub estimates_plot: &'a str,
    pub calibration_plot: Option<&'a str>,
}

pub fn model(page: &ModelPage<'_>) -> String {
    let latest = page.estimates.first();
    let state = State::of(latest);
    let mut body = format!(
        r#"<div class="title"><h1>{name}</h1>{badge}</div>"#,
        name = esc(&page.model.name),
        badge = state.badge()
    );
    body.push_str(&summary(page, latest));
    let _ = write!(
        body,
        r#"<section class="card"><h2>Estimated Dice over time</h2><div class="plot" id="estimates-plot">{}</div></section>"#,
        page.estimates_plot
    );
    let _ = write!(
        body,
        r#"<section class="card"><h2>Calibration: pseudo vs real Dice per checkpoint</h2><div class="plot" id="calibration-plot">{}</div></section>"#,
        page.calibration_plot.unwrap_or(
            r#"<p class="muted">No active calibration yet (<code>POST /v1/models/{id}/calibrations</code>).</p>"#
        )
    );
    body.push_str(&estimates_table(page.estimates));
    body.push_str(r#"<div class="columns">"#);
    body.push_str(&thresholds(page.thresholds));
    body.push_str(&alerts(page.estimates));
    body.push_str("</div>");
    body.push_str(&deliveries(page.deliveries));
    layout(&page.model.name, true, &body)
}

fn summary(page: &ModelPage<'_>, latest: Option<&EstimateRow>) -> String {
    let latest_value = latest.and_then(dice).map_or("—".into(), |(v, [lo, hi])| {
        format!(r#"{v:.3}<small>{lo:.3} – {hi:.3}</small>"#)
    });
    let latest_time = latest.map_or("no estimate yet".into(), |r| when(r.created_at));
    let calibration = page
        .calibration_dice
        .map_or("—".into(), |v| format!("{v:.3}"));
    let (window, window_note) = match page.window.images {
        Some(n) => (
            format!(
                "{} of {n}<small>new since last: {}</small>",
                page.window.held, page.window.pending
            ),
            "images held",
        ),
        None => ("off".into(), "PUT /v1/models/{id}/window turns it on"),
    };
    format!(
        r#"<div class="stats">
<div class="stat"><span class="label">Latest Dice</span><span class="value" id="latest-dice">{latest_value}</span><span class="muted">{latest_time}</span></div>
<div class="stat"><span class="label">Calibration Dice</span><span class="value">{calibration}</span><span class="muted">deployed checkpoint, calibration split</span></div>
<div class="stat"><span class="label">Rolling window</span><span class="value">{window}</span><span class="muted">{window_note}</span></div>
<div class="stat"><span class="label">Estimates shown</span><span class="value">{count}</span><span class="muted">newest first below</span></div>
</div>"#,
        count = page.estimates.len()
    )
}

fn estimates_table(estimates: &[EstimateRow]) -> String {
    if estimates.is_empty() {
        return r#"<section class="card"><h2>Latest estimates</h2><p class="muted">None yet.</p></section>"#.into();
    }
    let mut rows = String::new();
    for e in estimates.iter().take(20) {
        let warnings = match e.result.as_ref().map(|r| &r.estimate) {
            Some(Estimate::Ok { warnings, .. }) => warnings
                .iter()
                .map(|w| {
                    format!(
                        r#"<span class="tag" title="{}">{}</span>"#,
                        esc(&w.message),
                        esc(&w.code)
                    )
                })
                .collect::<String>(),
            _ => e.error.as_deref().map_or(String::new(), |m| {
                format!(r#"<span class="tag alert" title="{}">error</span>"#, esc(m))
            }),
        };
        let kind = match e.kind {
            EstimateKind::Batch => "batch",
            EstimateKind::Window => "window",
        };
        let _ = write!(
            rows,
            r#"<tr><td>{time}</td><td>{kind}</td><td class="num">{images}</td><td>{badge}</td>{dice}<td>{warnings}</td></tr>"#,
            time = when(e.created_at),
            images = e.images,
            badge = State::of(Some(e)).badge(),
            dice = dice_cell(e),
        );
    }
    format!(
        r#"<section class="card"><h2>Latest estimates</h2><table id="estimates"><thead><tr><th>Submitted</th><th>Kind</th><th class="num">Images</th><th>State</th><th class="num">Dice</th><th class="num">95% interval</th><th>Warnings</th></tr></thead><tbody>{rows}</tbody></table></section>"#
    )
}

fn thresholds(thresholds: &Thresholds) -> String {
    let mut items = String::new();
    for (metric, rule) in thresholds {
        let mut parts = Vec::new();
        if let Some(v) = rule.min {
            parts.push(format!("min {v}"));
        }
        if let Some(v) = rule.max {
            parts.push(format!("max {v}"));
        }
        if let Some(v) = rule.below_calibration {
            parts.push(format!("at most {v} below calibration"));
        }
        if let Some(v) = rule.above_calibration {
            parts.push(format!("at most {v} above calibration"));
        }
        let _ = write!(
            items,
            "<li><strong>{}</strong>: {}</li>",
            metric.name(),
            esc(&parts.join(", "))
        );
    }
    if items.is_empty() {
        items =
            r#"<li class="muted">None (<code>PUT /v1/models/{id}/thresholds</code>).</li>"#.into();
    }
    format!(
        r#"<section class="card"><h2>Thresholds</h2><ul id="thresholds">{items}</ul></section>"#
    )
}

fn alerts(estimates: &[EstimateRow]) -> String {
    let mut items = String::new();
    for e in estimates {
        for a in e.result.iter().flat_map(|r| &r.alerts) {
            let class = match a.severity {
                Severity::Alert => "alert",
                Severity::Warning => "warning",
            };
            let value = a
                .estimate
                .map_or("no estimate".into(), |v| format!("{v:.3}"));
            let bound = a
                .threshold
                .map_or(String::new(), |t| format!(" (threshold {t:.3})"));
            let _ = write!(
                items,
                r#"<li><span class="badge {class}">{class}</span> {time} · {metric} {rule}: {value}{bound}</li>"#,
                time = when(e.created_at),
                metric = a.metric.name(),
                rule = esc(&a.rule),
            );
        }
    }
    if items.is_empty() {
        items = r#"<li class="muted">No alerts in the estimates shown.</li>"#.into();
    }
    format!(r#"<section class="card"><h2>Recent alerts</h2><ul id="alerts">{items}</ul></section>"#)
}

fn deliveries(deliveries: &[DeliveryRow]) -> String {
    if deliveries.is_empty() {
        return r#"<section class="card"><h2>Webhook deliveries</h2><p class="muted">None for this model's estimates.</p></section>"#.into();
    }
    let mut rows = String::new();
    for d in deliveries {
        let class = match d.state.as_str() {
            "delivered" => "ok",
            "failed" => "alert",
            _ => "warning",
        };
        let answer = match (d.last_status, &d.last_error) {
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => esc(e),
            (None, None) => "—".into(),
        };
        let _ = write!(
            rows,
            r#"<tr><td>{time}</td><td>{event}</td><td><span class="badge {class}">{state}</span></td><td class="num">{attempts}</td><td>{answer}</td></tr>"#,
            time = when(d.created_at),
            event = esc(&d.event),
            state = esc(&d.state),
            attempts = d.attempts,
        );
    }
    format!(
        r#"<section class="card"><h2>Webhook deliveries</h2><table id="deliveries"><thead><tr><th>Event</th><th>Type</th><th>State</th><th class="num">Attempts</th><th>Last answer</th></tr></thead><tbody>{rows}</tbody></table></section>"#
    )
}

#[cfg(test)]
mod tests;
