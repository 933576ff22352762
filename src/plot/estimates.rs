//! A model's estimates of one metric over time: each estimate with its 95% interval as a band, the
//! model's thresholds, markers on estimates that raised an alert or a warning, and the deployed model's
//! real value on the calibration split.

use super::{
    band_path, cross, escape, line_path, metric_label, metric_value, palette, unit, value_axis,
    value_domain, w, Frame, LegendItem, Swatch,
};
use crate::engine::metrics::Metric;
use crate::monitor::{Bound, Severity};
use chrono::{DateTime, Datelike, Utc};
use std::fmt::Write as _;

/// One stored estimate as the plot sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct EstimatePoint {
    /// When the batch was submitted (what the API's `from`/`to` select on).
    pub at: DateTime<Utc>,
    /// The estimate and its 95% interval; None for a batch without support (`insufficient_support`).
    pub value: Option<(f64, [f64; 2])>,
    /// The worst severity among the alerts its stored result raised on this metric.
    pub severity: Option<Severity>,
}

/// What the plot shows.
pub struct EstimatesPlot<'a> {
    /// What was estimated (a model's name).
    pub subject: &'a str,
    pub metric: Metric,
    /// In any order.
    pub points: &'a [EstimatePoint],
    /// The model's thresholds on this metric as they stand now (see [`crate::monitor::Rule::bounds`]).
    pub thresholds: &'a [Bound],
    /// The deployed model's real value on the active calibration's split, when known.
    pub calibration_value: Option<f64>,
    /// The time range asked for; each end defaults to the estimates' extent.
    pub range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    /// Some(cap) when more estimates matched than the newest `cap` given in `points`.
    pub capped: Option<usize>,
}

/// Tick spacings of the time axis, in seconds (a month and a year approximately); batches posted by a
/// script can be milliseconds apart.
const TIME_STEPS: [f64; 34] = [
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    10800.0,
    21600.0,
    43200.0,
    86400.0,
    172_800.0,
    604_800.0,
    1_209_600.0,
    2_592_000.0,
    7_776_000.0,
    15_552_000.0,
    31_536_000.0,
];

/// Time without a range or a second estimate to scale by: an hour around the one estimate.
const LONE_SPAN_S: f64 = 3600.0;

/// The estimates plot as an SVG document.
pub fn estimates_svg(plot: &EstimatesPlot) -> String {
    let metric = plot.metric;
    let mut points: Vec<&EstimatePoint> = plot
        .points
        .iter()
        .filter(|p| {
            p.value
                .is_none_or(|(v, [lo, hi])| v.is_finite() && lo.is_finite() && hi.is_finite())
        })
        .collect();
    points.sort_by_key(|p| p.at);
    // Batches without an estimate have no value to draw: they stay out of the series and its band and
    // are marked along the time axis instead, so that a gap in the series is explained.
    let valued: Vec<(f64, f64, [f64; 2], Option<Severity>)> = points
        .iter()
        .filter_map(|p| p.value.map(|(v, i)| (seconds(p.at), v, i, p.severity)))
        .collect();
    let missing: Vec<(f64, Option<Severity>)> = points
        .iter()
        .filter(|p| p.value.is_none())
        .map(|p| (seconds(p.at), p.severity))
        .collect();
    let times: Vec<f64> = points.iter().map(|p| seconds(p.at)).collect();
    let (t0, t1) = time_domain(&times, plot.range);
    let (x_ticks, day) = time_ticks(t0, t1);

    let data = valued
        .iter()
        .flat_map(|(_, v, [lo, hi], _)| [*v, *lo, *hi])
        .chain(plot.calibration_value);
    let (d_lo, d_hi) = value_domain(metric, data.clone());
    // A threshold far from the data would squash it: those are named at the plot's edge instead.
    let reach = 2.0 * (d_hi - d_lo);
    let (near, far): (Vec<&Bound>, Vec<&Bound>) = plot
        .thresholds
        .iter()
        .filter(|b| b.value.is_finite())
        .partition(|b| valued.is_empty() || (d_lo - reach..=d_hi + reach).contains(&b.value));
    let (y_lo, y_hi) = value_domain(metric, data.chain(near.iter().map(|b| b.value)));
    let ((y0, y1), y_ticks) = value_axis(metric, y_lo, y_hi);

    let count = |s: Severity| valued.iter().filter(|p| p.3 == Some(s)).count();
    let (alerts, warnings) = (count(Severity::Alert), count(Severity::Warning));
    let missing_alerts = missing
        .iter()
        .filter(|m| m.1 == Some(Severity::Alert))
        .count();
    let name = metric_label(metric);
    let frame = Frame {
        kind: "estimates-plot",
        title: format!("{}: estimated {name}", plot.subject),
        subtitle: subtitle(
            plot,
            &points,
            alerts + missing_alerts,
            warnings,
            missing.len(),
        ),
        x_label: match day {
            Some(day) => format!("submitted on {day} (UTC)"),
            None => "submitted (UTC)".into(),
        },
        y_label: format!("estimated {name}{}", unit(metric)),
        x_ticks,
        y_ticks,
        x_domain: (t0, t1),
        y_domain: (y0, y1),
        legend: legend(plot, &valued, alerts, warnings, &missing),
    };
    frame.render(|out, x, y, area| {
        if points.is_empty() {
            let text = match plot.range {
                (None, None) => "no estimates yet",
                _ => "no estimates in this time range",
            };
            w!(
                out,
                r#"<text class="empty" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" fill="{}">{text}</text>"#,
                (area.left + area.right) / 2.0,
                (area.top + area.bottom) / 2.0,
                palette::MUTED
            );
        }
        let xy: Vec<(f64, f64)> = valued.iter().map(|p| (x.at(p.0), y.at(p.1))).collect();
        let upper: Vec<(f64, f64)> = valued.iter().map(|p| (x.at(p.0), y.at(p.2[1]))).collect();
        let lower: Vec<(f64, f64)> = valued.iter().map(|p| (x.at(p.0), y.at(p.2[0]))).collect();
        let d = match xy.len() {
            0 => None,
            // A band needs width: one estimate's interval is a short bar.
            1 => {
                let widen = |(px, py): (f64, f64), dx: f64| [(px - dx, py), (px + dx, py)];
                Some(band_path(&widen(upper[0], 6.0), &widen(lower[0], 6.0)))
            }
            _ => Some(band_path(&upper, &lower)),
        };
        if let Some(d) = d {
            w!(
                out,
                r#"<path class="band" d="{d}" fill="{}" fill-opacity="{}" stroke="none"/>"#,
                palette::DATA,
                palette::BAND_OPACITY
            );
        }
        let (left, right) = (area.left, area.right);
        for b in &near {
            let py = y.at(b.value);
            let label = format!("{} {}", b.rule.replace('_', " "), metric_value(metric, b.value));
            w!(
                out,
                r#"<line class="threshold" data-rule="{}" x1="{left:.1}" x2="{right:.1}" y1="{py:.1}" y2="{py:.1}" stroke="{c}" stroke-width="1.5" stroke-dasharray="6 4"/><text class="threshold-label" x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="{c}">{}</text>"#,
                b.rule,
                right - 4.0,
                py - 4.0,
                escape(&label),
                c = palette::ALERT
            );
        }
        for (i, b) in far.iter().enumerate() {
            let above = b.value > y1;
            let py = if above { area.top + 12.0 } else { area.bottom - 6.0 } + 13.0 * i as f64;
            w!(
                out,
                r#"<text class="threshold-label off-scale" data-rule="{}" x="{:.1}" y="{py:.1}" text-anchor="end" font-size="11" fill="{}">{} {} ({} the plot)</text>"#,
                b.rule,
                right - 4.0,
                palette::ALERT,
                b.rule.replace('_', " "),
                metric_value(metric, b.value),
                if above { "above" } else { "below" }
            );
        }
        if let Some(v) = plot.calibration_value.filter(|v| v.is_finite()) {
            let py = y.at(v);
            w!(
                out,
                r#"<line class="calibration-reference" x1="{left:.1}" x2="{right:.1}" y1="{py:.1}" y2="{py:.1}" stroke="{c}" stroke-width="1.5" stroke-dasharray="2 3"/><text class="calibration-reference-label" x="{:.1}" y="{:.1}" font-size="11" fill="{c}">calibration value {}</text>"#,
                left + 4.0,
                py - 4.0,
                metric_value(metric, v),
                c = palette::REFERENCE
            );
        }
        if xy.len() > 1 {
            w!(
                out,
                r#"<path class="line" d="{}" fill="none" stroke="{}" stroke-width="1.5" stroke-linejoin="round"/>"#,
                line_path(&xy),
                palette::DATA
            );
        }
        let r = match xy.len() {
            0..=60 => 4.5,
            61..=300 => 3.0,
            _ => 2.0,
        };
        out.push_str(r#"<g class="alerts">"#);
        for (p, (px, py)) in valued.iter().zip(&xy) {
            let (class, colour) = match p.3 {
                Some(Severity::Alert) => ("alert", palette::ALERT),
                Some(Severity::Warning) => ("warning", palette::WARNING),
                None => continue,
            };
            w!(
                out,
                r#"<g class="{class}"><circle cx="{px:.1}" cy="{py:.1}" r="{:.1}" fill="none" stroke="{colour}" stroke-width="2"/></g>"#,
                r + 4.0
            );
        }
        out.push_str(r#"</g><g class="series">"#);
        for (p, (px, py)) in valued.iter().zip(&xy) {
            let colour = match p.3 {
                Some(Severity::Alert) => palette::ALERT,
                Some(Severity::Warning) => palette::WARNING,
                None => palette::DATA,
            };
            w!(
                out,
                r##"<circle class="point" cx="{px:.1}" cy="{py:.1}" r="{r:.1}" fill="{colour}" stroke="#ffffff" stroke-width="1"><title>{}: {} [{}, {}]</title></circle>"##,
                stamp(p.0),
                metric_value(metric, p.1),
                metric_value(metric, p.2[0]),
                metric_value(metric, p.2[1])
            );
        }
        out.push_str(r#"</g><g class="no-estimates">"#);
        for (t, severity) in &missing {
            let colour = match severity {
                Some(Severity::Alert) => palette::ALERT,
                _ => palette::MUTED,
            };
            w!(
                out,
                r#"<g class="no-estimate"><title>{}: no estimate (no image had a predicted mask to use as support)</title>"#,
                stamp(*t)
            );
            cross(out, x.at(*t), area.bottom - 8.0, 4.0, colour);
            out.push_str("</g>");
        }
        out.push_str("</g>");
    })
}

fn subtitle(
    plot: &EstimatesPlot,
    points: &[&EstimatePoint],
    alerts: usize,
    warnings: usize,
    missing: usize,
) -> Vec<(&'static str, String)> {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = vec![("count", plural(points.len(), "batch", "batches"))];
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let format = if first.at.year() == last.at.year() {
            "%b %d %H:%M"
        } else {
            "%Y-%m-%d %H:%M"
        };
        let (a, b) = (first.at.format(format), last.at.format(format));
        let span = if first.at == last.at {
            format!("{a} UTC")
        } else {
            format!("{a} – {b} UTC")
        };
        parts.push(("span", span));
    }
    if alerts + warnings > 0 {
        parts.push((
            "alert-count",
            format!(
                "{}, {}",
                plural(alerts, "alert", "alerts"),
                plural(warnings, "warning", "warnings")
            ),
        ));
    }
    if missing > 0 {
        parts.push(("missing", format!("{missing} without an estimate")));
    }
    if let Some(cap) = plot.capped {
        parts.push(("capped", format!("the newest {cap} shown")));
    }
    parts
}

fn legend(
    plot: &EstimatesPlot,
    valued: &[(f64, f64, [f64; 2], Option<Severity>)],
    alerts: usize,
    warnings: usize,
    missing: &[(f64, Option<Severity>)],
) -> Vec<LegendItem> {
    let item = |class, label: &str, swatch| LegendItem {
        class,
        label: label.into(),
        swatch,
    };
    let mut items = Vec::new();
    if !valued.is_empty() {
        items.push(item("estimate", "estimate", Swatch::Point(palette::DATA)));
        items.push(item("band", "95% interval", Swatch::Band(palette::DATA)));
    }
    if !plot.thresholds.is_empty() {
        items.push(item(
            "threshold",
            "threshold",
            Swatch::Line(palette::ALERT, Some("6 4")),
        ));
    }
    if plot.calibration_value.is_some() {
        items.push(item(
            "calibration-reference",
            "calibration value",
            Swatch::Line(palette::REFERENCE, Some("2 3")),
        ));
    }
    if alerts > 0 {
        items.push(item("alert", "alert", Swatch::Ring(palette::ALERT)));
    }
    if warnings > 0 {
        items.push(item("warning", "warning", Swatch::Ring(palette::WARNING)));
    }
    if !missing.is_empty() {
        items.push(item(
            "no-estimate",
            "no estimate",
            Swatch::Cross(palette::MUTED),
        ));
    }
    items
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

fn from_seconds(s: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros((s * 1e6).round() as i64)
}

fn stamp(s: f64) -> String {
    from_seconds(s).map_or_else(String::new, |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}

/// The time range shown: the range asked for, each open end at the estimates' extent with a margin.
fn time_domain(times: &[f64], range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>)) -> (f64, f64) {
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (from, to) = (range.0.map(seconds), range.1.map(seconds));
    let (lo, hi) = match (from, to, first <= last) {
        (Some(a), Some(b), _) => (a, b),
        (Some(a), None, true) => (a, last.max(a)),
        (None, Some(b), true) => (first.min(b), b),
        (None, None, true) => (first, last),
        (Some(a), None, false) => (a, a + LONE_SPAN_S),
        (None, Some(b), false) => (b - LONE_SPAN_S, b),
        // Nothing to place: an axis without ticks.
        (None, None, false) => return (0.0, 0.0),
    };
    if hi - lo < 0.001 {
        let mid = (lo + hi) / 2.0;
        return (mid - LONE_SPAN_S / 2.0, mid + LONE_SPAN_S / 2.0);
    }
    // Open ends get a margin so the first and last estimates stand clear of the axes.
    let pad = 0.04 * (hi - lo);
    (
        if from.is_some() { lo } else { lo - pad },
        if to.is_some() { hi } else { hi + pad },
    )
}

/// Ticks at round times (UTC), and the day when every tick falls on the same one (then the labels show
/// only the time and the axis label names the day).
fn time_ticks(t0: f64, t1: f64) -> (Vec<(f64, String)>, Option<String>) {
    let span = t1 - t0;
    if span <= 0.0 {
        return (Vec::new(), None);
    }
    let (Some(start), Some(end)) = (from_seconds(t0), from_seconds(t1)) else {
        return (Vec::new(), None);
    };
    let same_day = start.date_naive() == end.date_naive();
    let most = if same_day { 7.0 } else { 5.0 };
    let step = TIME_STEPS
        .into_iter()
        .find(|&s| span / s <= most)
        .unwrap_or(TIME_STEPS[TIME_STEPS.len() - 1]);
    let format = match step {
        s if s < 1.0 => "%H:%M:%S%.3f",
        s if s < 60.0 => "%H:%M:%S",
        s if s < 86_400.0 && same_day => "%H:%M",
        s if s < 86_400.0 => "%b %d %H:%M",
        s if s < 2_592_000.0 => "%b %d",
        s if s < 31_536_000.0 => "%b %Y",
        _ => "%Y",
    };
    let ticks = (((t0 / step).ceil() as i64)..=((t1 / step).floor() as i64))
        .filter_map(|k| {
            let t = k as f64 * step;
            from_seconds(t).map(|at| (t, at.format(format).to_string()))
        })
        .collect();
    let day = (same_day && step < 86_400.0).then(|| start.format("%Y-%m-%d").to_string());
    (ticks, day)
}
