//! SVG plots, written by hand so that they need nothing where they are viewed (no JavaScript, no web
//! fonts, no CDN: hospital networks are offline): a calibration's pseudo -> real mapping (the paper's
//! Figure 3) and a model's estimates over time. Pure: data in, an SVG document out; no HTTP, SQL or files
//! (the API and `spe plot` call it). Elements carry stable class names (`series`, `point`, `band`,
//! `threshold`, `alert`, `checkpoint`, ...) that tests, and pages inlining a plot, look for.

mod calibration;
mod estimates;

pub use calibration::calibration_svg;
pub use estimates::{estimates_svg, EstimatePoint, EstimatesPlot};

use crate::engine::metrics::Metric;
use std::fmt::Write as _;

/// Writes formatted text to a `String` (which cannot fail).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}
pub(crate) use w;

/// The document's size in user units; `viewBox` lets it scale to any width.
pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 420.0;
const MARGIN_LEFT: f64 = 66.0;
const MARGIN_RIGHT: f64 = 28.0;
/// Title and subtitle.
const MARGIN_TOP: f64 = 66.0;
/// Tick labels and the axis label; legend rows come below.
const MARGIN_BOTTOM: f64 = 52.0;
const LEGEND_ROW: f64 = 20.0;

const FONT: &str =
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";

/// One colour per role, the same in both plots (blue data, red thresholds and alerts, amber warnings).
pub(crate) mod palette {
    pub const INK: &str = "#1f2937";
    pub const MUTED: &str = "#6b7280";
    pub const GRID: &str = "#e5e7eb";
    pub const AXIS: &str = "#9ca3af";
    pub const DATA: &str = "#2563eb";
    pub const POINT: &str = "#0f766e";
    pub const EXCLUDED: &str = "#9ca3af";
    pub const ALERT: &str = "#dc2626";
    pub const WARNING: &str = "#d97706";
    pub const REFERENCE: &str = "#7c3aed";
    /// Opacity of interval bands.
    pub const BAND_OPACITY: f64 = 0.16;
}

/// Why a plot cannot be drawn.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlotError {
    #[error("the calibration has no fitted mapping for {0}")]
    NoFit(&'static str),
}

/// Text made safe for SVG content and attribute values; characters XML 1.0 does not allow are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// How a metric is named in plot text.
pub(crate) fn metric_label(metric: Metric) -> &'static str {
    match metric {
        Metric::Dice => "Dice",
        Metric::Jaccard => "Jaccard",
        Metric::Precision => "precision",
        Metric::Recall => "recall",
        Metric::Hd95 => "HD95",
        Metric::Pearson => "Pearson",
    }
}

/// The metric's unit after an axis label: HD95 is in pixels of the working grid.
pub(crate) fn unit(metric: Metric) -> &'static str {
    match metric {
        Metric::Hd95 => " (px)",
        _ => "",
    }
}

/// A fit statistic with three significant digits (a leave-one-out MAE of 0.00203 keeps its digits).
pub fn statistic(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2.0 - v.abs().log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// A value of the metric as plot text: three decimals for the ratio metrics, two for HD95 (pixels).
pub(crate) fn metric_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Hd95 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// A linear map from data values to SVG coordinates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Scale {
    pub fn at(&self, v: f64) -> f64 {
        if self.d1 == self.d0 {
            return (self.r0 + self.r1) / 2.0;
        }
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }
}

/// A step of 1, 2 or 5 times a power of ten that cuts `span` into about `target` intervals.
pub(crate) fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(1e-12);
    let magnitude = 10f64.powf(raw.log10().floor());
    let f = raw / magnitude;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A value axis of `metric` over `[lo, hi]`: the domain widened to whole steps (within the metric's
/// bounds), and its labelled ticks.
pub(crate) fn value_axis(metric: Metric, lo: f64, hi: f64) -> ((f64, f64), Vec<(f64, String)>) {
    let step = nice_step(hi - lo, 5.0);
    let decimals = (-step.log10()).ceil().max(0.0) as usize;
    // The tolerance keeps a bound that is a whole step (0, 1) from being widened by rounding noise.
    let (first, last) = ((lo / step + 1e-9).floor(), (hi / step - 1e-9).ceil());
    let (lo_bound, hi_bound) = metric.bounds();
    let d0 = (first * step).max(lo_bound);
    let d1 = hi_bound.map_or(last * step, |b| (last * step).min(b));
    let ticks = (first as i64..=last as i64)
        .map(|k| k as f64 * step)
        .filter(|v| (d0 - 1e-9..=d1 + 1e-9).contains(v))
        .map(|v| (v, format!("{v:.decimals$}")))
        .collect();
    ((d0, d1), ticks)
}

/// The range to show for `values` of `metric`: their extent with a margin, never beyond the metric's
/// bounds; a fixed span around a single value; the metric's usual range without values.
pub(crate) fn value_domain(metric: Metric, values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (lo_bound, hi_bound) = metric.bounds();
    let (mut lo, mut hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return (lo_bound, hi_bound.unwrap_or(10.0));
    }
    let least = if metric == Metric::Hd95 {
        (0.1 * hi.abs()).max(1.0)
    } else {
        0.05
    };
    let pad = ((hi - lo) * 0.06).max((least - (hi - lo)).max(0.0) / 2.0);
    lo -= pad;
    hi += pad;
    (lo.max(lo_bound), hi_bound.map_or(hi, |b| hi.min(b)))
}

/// The plot area inside the margins.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Area {
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

/// What a legend entry looks like.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Swatch {
    Point(&'static str),
    Hollow(&'static str),
    Ring(&'static str),
    Cross(&'static str),
    Line(&'static str, Option<&'static str>),
    Band(&'static str),
}

pub(crate) struct LegendItem {
    pub class: &'static str,
    pub label: String,
    pub swatch: Swatch,
}

/// Everything around the data: title, subtitle, axes with grid, ticks and labels, and the legend.
pub(crate) struct Frame {
    /// The root element's class and the prefix of its ids (two plots can share a page).
    pub kind: &'static str,
    pub title: String,
    /// Pieces of the subtitle, each `(class, text)`, joined by " · ".
    pub subtitle: Vec<(&'static str, String)>,
    pub x_label: String,
    pub y_label: String,
    pub x_ticks: Vec<(f64, String)>,
    pub y_ticks: Vec<(f64, String)>,
    pub x_domain: (f64, f64),
    pub y_domain: (f64, f64),
    pub legend: Vec<LegendItem>,
}

/// Legend rows: each item's x offset, wrapped to the plot's width (text width estimated per character).
fn legend_rows(items: &[LegendItem], width: f64) -> Vec<Vec<(f64, &LegendItem)>> {
    let mut rows: Vec<Vec<(f64, &LegendItem)>> = vec![Vec::new()];
    let mut x = 0.0;
    for item in items {
        let w = 24.0 + 6.2 * item.label.chars().count() as f64 + 18.0;
        if x > 0.0 && x + w > width {
            rows.push(Vec::new());
            x = 0.0;
        }
        if let Some(row) = rows.last_mut() {
            row.push((x, item));
        }
        x += w;
    }
    rows.retain(|r| !r.is_empty());
    rows
}

impl Frame {
    /// The document: the frame, with `draw` adding the data inside the (clipped) plot area.
    pub fn render(&self, draw: impl FnOnce(&mut String, &Scale, &Scale, &Area)) -> String {
        let rows = legend_rows(&self.legend, WIDTH - MARGIN_LEFT - MARGIN_RIGHT);
        let area = Area {
            left: MARGIN_LEFT,
            right: WIDTH - MARGIN_RIGHT,
            top: MARGIN_TOP,
            bottom: HEIGHT - MARGIN_BOTTOM - LEGEND_ROW * rows.len() as f64,
        };
        let x = Scale {
            d0: self.x_domain.0,
            d1: self.x_domain.1,
            r0: area.left,
            r1: area.right,
        };
        let y = Scale {
            d0: self.y_domain.0,
            d1: self.y_domain.1,
            r0: area.bottom,
            r1: area.top,
        };
        let kind = self.kind;
        let mut out = String::with_capacity(16 * 1024);
        w!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="spe-plot {kind}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{kind}-title {kind}-desc" font-family="{FONT}" font-size="12" fill="{ink}">"#,
            ink = palette::INK
        );
        let subtitle: Vec<&str> = self.subtitle.iter().map(|(_, t)| t.as_str()).collect();
        w!(
            out,
            r#"<title id="{kind}-title">{}</title><desc id="{kind}-desc">{}</desc>"#,
            escape(&self.title),
            escape(&subtitle.join(" · "))
        );
        w!(
            out,
            r##"<rect class="background" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
        );
        w!(
            out,
            r#"<text class="title" x="{}" y="26" font-size="16" font-weight="600">{}</text>"#,
            area.left,
            escape(&self.title)
        );
        w!(
            out,
            r#"<text class="subtitle" x="{}" y="47" font-size="12.5" fill="{}">"#,
            area.left,
            palette::MUTED
        );
        for (i, (class, text)) in self.subtitle.iter().enumerate() {
            // Between the tspans: renderers drop spaces at a tspan's edges.
            if i > 0 {
                out.push_str(" · ");
            }
            w!(out, r#"<tspan class="{class}">{}</tspan>"#, escape(text));
        }
        out.push_str("</text>");
        self.axes(&mut out, &x, &y, &area);
        w!(
            out,
            r#"<clipPath id="{kind}-clip"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/></clipPath>"#,
            area.left - 6.0,
            area.top - 6.0,
            area.right - area.left + 12.0,
            area.bottom - area.top + 12.0
        );
        w!(out, r#"<g class="data" clip-path="url(#{kind}-clip)">"#);
        draw(&mut out, &x, &y, &area);
        out.push_str("</g>");
        legend(&mut out, &rows, area.left, area.bottom + MARGIN_BOTTOM);
        out.push_str("</svg>\n");
        out
    }

    fn axes(&self, out: &mut String, x: &Scale, y: &Scale, area: &Area) {
        let Area {
            left,
            right,
            top,
            bottom,
        } = *area;
        out.push_str(r#"<g class="grid" stroke-width="1">"#);
        for (v, _) in &self.y_ticks {
            let py = y.at(*v);
            w!(
                out,
                r#"<line x1="{left:.1}" x2="{right:.1}" y1="{py:.1}" y2="{py:.1}" stroke="{}"/>"#,
                palette::GRID
            );
        }
        for (v, _) in &self.x_ticks {
            let px = x.at(*v);
            w!(
                out,
                r#"<line x1="{px:.1}" x2="{px:.1}" y1="{top:.1}" y2="{bottom:.1}" stroke="{}" stroke-dasharray="2 3"/>"#,
                palette::GRID
            );
        }
        out.push_str("</g>");
        w!(
            out,
            r#"<g class="axis x-axis" stroke="{axis}"><line x1="{left:.1}" x2="{right:.1}" y1="{bottom:.1}" y2="{bottom:.1}"/>"#,
            axis = palette::AXIS
        );
        for (v, label) in &self.x_ticks {
            let px = x.at(*v);
            w!(
                out,
                r#"<line class="tick" x1="{px:.1}" x2="{px:.1}" y1="{bottom:.1}" y2="{:.1}"/><text class="tick-label" x="{px:.1}" y="{:.1}" text-anchor="middle" stroke="none" fill="{}">{}</text>"#,
                bottom + 5.0,
                bottom + 19.0,
                palette::MUTED,
                escape(label)
            );
        }
        w!(
            out,
            r#"<text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13" stroke="none" fill="{}">{}</text></g>"#,
            (left + right) / 2.0,
            bottom + 40.0,
            palette::INK,
            escape(&self.x_label)
        );
        w!(
            out,
            r#"<g class="axis y-axis" stroke="{axis}"><line x1="{left:.1}" x2="{left:.1}" y1="{top:.1}" y2="{bottom:.1}"/>"#,
            axis = palette::AXIS
        );
        for (v, label) in &self.y_ticks {
            let py = y.at(*v);
            w!(
                out,
                r#"<line class="tick" x1="{:.1}" x2="{left:.1}" y1="{py:.1}" y2="{py:.1}"/><text class="tick-label" x="{:.1}" y="{:.1}" text-anchor="end" stroke="none" fill="{}">{}</text>"#,
                left - 5.0,
                left - 8.0,
                py + 4.0,
                palette::MUTED,
                escape(label)
            );
        }
        let cy = (top + bottom) / 2.0;
        w!(
            out,
            r#"<text class="axis-label" x="18" y="{cy:.1}" transform="rotate(-90 18 {cy:.1})" text-anchor="middle" font-size="13" stroke="none" fill="{}">{}</text></g>"#,
            palette::INK,
            escape(&self.y_label)
        );
    }
}

fn legend(out: &mut String, rows: &[Vec<(f64, &LegendItem)>], left: f64, top: f64) {
    out.push_str(r#"<g class="legend">"#);
    for (r, row) in rows.iter().enumerate() {
        let cy = top + 6.0 + LEGEND_ROW * r as f64;
        for (dx, item) in row {
            let x = left + dx;
            w!(out, r#"<g class="legend-item {}">"#, item.class);
            swatch(out, item.swatch, x + 10.0, cy);
            w!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{}</text></g>"#,
                x + 24.0,
                cy + 4.0,
                escape(&item.label)
            );
        }
    }
    out.push_str("</g>");
}

fn swatch(out: &mut String, swatch: Swatch, x: f64, y: f64) {
    match swatch {
        Swatch::Point(c) => w!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{c}"/>"#),
        Swatch::Hollow(c) => w!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="#ffffff" stroke="{c}" stroke-width="1.5"/>"##
        ),
        Swatch::Ring(c) => w!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="none" stroke="{c}" stroke-width="2"/>"#
        ),
        Swatch::Cross(c) => cross(out, x, y, 4.0, c),
        Swatch::Line(c, dash) => w!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{c}" stroke-width="2"{}/>"#,
            x - 9.0,
            x + 9.0,
            dash.map(|d| format!(r#" stroke-dasharray="{d}""#))
                .unwrap_or_default()
        ),
        Swatch::Band(c) => w!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="18" height="10" fill="{c}" fill-opacity="{}"/>"#,
            x - 9.0,
            y - 5.0,
            palette::BAND_OPACITY
        ),
    }
}

/// An × of half-size `r` centred on (x, y).
pub(crate) fn cross(out: &mut String, x: f64, y: f64, r: f64, colour: &str) {
    w!(
        out,
        r#"<path d="M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}" stroke="{colour}" stroke-width="2" fill="none"/>"#,
        x - r,
        y - r,
        x + r,
        y + r,
        x - r,
        y + r,
        x + r,
        y - r
    );
}

/// A closed band between an upper and a lower line over the same x values.
pub(crate) fn band_path(upper: &[(f64, f64)], lower: &[(f64, f64)]) -> String {
    let mut d = String::new();
    for (i, (x, y)) in upper.iter().enumerate() {
        w!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" });
    }
    for (x, y) in lower.iter().rev() {
        w!(d, "L{x:.1} {y:.1}");
    }
    d.push('Z');
    d
}

/// An open line through points.
pub(crate) fn line_path(points: &[(f64, f64)]) -> String {
    let mut d = String::new();
    for (i, (x, y)) in points.iter().enumerate() {
        w!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" });
    }
    d
}

#[cfg(test)]
mod tests;
