//! The calibration plot (the paper's Figure 3): per checkpoint, the score the mapping reads (x) against
//! the real metric on the calibration set (y), the fitted curve with its 95% band, and the fit's
//! leave-one-checkpoint-out figures. It shows the top level (the whole calibration set), whose points are
//! the checkpoints' own.

use super::{
    band_path, cross, escape, line_path, metric_label, metric_value, palette, statistic, unit,
    value_axis, value_domain, w, Frame, LegendItem, PlotError, Swatch,
};
use crate::engine::estimate::curve_half_width;
use crate::engine::fit::{Calibration, Fit};
use crate::engine::metrics::Metric;
use crate::engine::spe::PseudoOutcome;
use std::fmt::Write as _;

/// Samples along the curve and its band.
const CURVE_SAMPLES: usize = 120;

struct Point<'a> {
    name: &'a str,
    /// The mapping's input; None for a checkpoint without support (left out of the fit).
    score: Option<f64>,
    real: f64,
}

/// The calibration plot of `metric`; `subject` names what was calibrated (a model, a file).
pub fn calibration_svg(
    calibration: &Calibration,
    metric: Metric,
    subject: &str,
) -> Result<String, PlotError> {
    let fit = calibration
        .fits
        .get(&metric)
        .ok_or(PlotError::NoFit(metric.name()))?;
    let points: Vec<Point> = calibration
        .checkpoints
        .iter()
        .map(|cp| Point {
            name: &cp.name,
            score: match &cp.outcome {
                PseudoOutcome::Ok { pseudo, .. } => Some(fit.score(pseudo, cp.agreement.as_ref())),
                PseudoOutcome::InsufficientSupport { .. } => None,
            },
            real: cp.real.get(metric),
        })
        .filter(|p| p.real.is_finite() && p.score.is_none_or(f64::is_finite))
        .collect();
    let fitted = points.iter().filter(|p| p.score.is_some()).count();
    let excluded = points.len() - fitted;
    // Scores are metric values (or a mix of two), so the metric's bounds hold for them too.
    let (x_lo, x_hi) = value_domain(metric, points.iter().filter_map(|p| p.score));
    let ((x0, x1), x_ticks) = value_axis(metric, x_lo, x_hi);
    let half = curve_half_width(fit);
    let curve = sample_curve(fit, metric, (x0, x1));
    let band: Vec<(f64, f64, f64)> = curve
        .iter()
        .map(|&(x, y)| (x, clamp(metric, y - half), clamp(metric, y + half)))
        .collect();
    let fitted_values = points
        .iter()
        .filter(|p| p.score.is_some())
        .map(|p| p.real)
        .chain(band.iter().flat_map(|b| [b.1, b.2]));
    let (d_lo, d_hi) = value_domain(metric, fitted_values.clone());
    // An excluded checkpoint far from the others (HD95 of a model that finds nothing) would squash the
    // plot: it is drawn at the edge, with its value, instead.
    let reach = 2.0 * (d_hi - d_lo);
    let near = |v: f64| (d_lo - reach..=d_hi + reach).contains(&v);
    let excluded_near = points
        .iter()
        .filter(|p| p.score.is_none() && near(p.real))
        .map(|p| p.real);
    let (y_lo, y_hi) = value_domain(metric, fitted_values.chain(excluded_near));
    let ((y0, y1), y_ticks) = value_axis(metric, y_lo, y_hi);
    let name = metric_label(metric);
    let mut legend = vec![
        LegendItem {
            class: "checkpoint",
            label: "checkpoint".into(),
            swatch: Swatch::Point(palette::POINT),
        },
        LegendItem {
            class: "fit",
            label: format!("{} mapping", fit.mapping.name()),
            swatch: Swatch::Line(palette::DATA, None),
        },
        LegendItem {
            class: "band",
            label: "95% interval (unanchored)".into(),
            swatch: Swatch::Band(palette::DATA),
        },
    ];
    if excluded > 0 {
        legend.push(LegendItem {
            class: "excluded",
            label: "excluded: no support (at the left edge)".into(),
            swatch: Swatch::Hollow(palette::EXCLUDED),
        });
    }
    let mut subtitle = vec![
        (
            "loo-mae",
            format!("leave-one-out MAE {}", statistic(fit.loo_mae)),
        ),
        (
            "pearson-r",
            format!(
                "Pearson r {:.3} (leave-one-out {:.3})",
                fit.pearson_r, fit.loo_pearson_r
            ),
        ),
        ("checkpoints", format!("{fitted} checkpoints fitted")),
    ];
    if excluded > 0 {
        subtitle.push(("excluded", format!("{excluded} excluded")));
    }
    let frame = Frame {
        kind: "calibration-plot",
        title: format!("{subject}: calibration of {name}"),
        subtitle,
        x_label: x_label(fit, name) + unit(metric),
        y_label: format!("real {name} on the calibration set{}", unit(metric)),
        x_ticks,
        y_ticks,
        x_domain: (x0, x1),
        y_domain: (y0, y1),
        legend,
    };
    Ok(frame.render(|out, x, y, _| {
        let upper: Vec<(f64, f64)> = band.iter().map(|b| (x.at(b.0), y.at(b.2))).collect();
        let lower: Vec<(f64, f64)> = band.iter().map(|b| (x.at(b.0), y.at(b.1))).collect();
        w!(
            out,
            r#"<path class="band" d="{}" fill="{}" fill-opacity="{}" stroke="none"/>"#,
            band_path(&upper, &lower),
            palette::DATA,
            palette::BAND_OPACITY
        );
        let line: Vec<(f64, f64)> = curve.iter().map(|&(a, b)| (x.at(a), y.at(b))).collect();
        w!(
            out,
            r#"<path class="fit" d="{}" fill="none" stroke="{}" stroke-width="2.2" stroke-linejoin="round"/>"#,
            line_path(&line),
            palette::DATA
        );
        out.push_str(r#"<g class="checkpoints">"#);
        for p in &points {
            let py = y.at(p.real);
            let real = metric_value(metric, p.real);
            match p.score {
                Some(s) => w!(
                    out,
                    r##"<circle class="checkpoint" cx="{:.1}" cy="{py:.1}" r="5" fill="{}" stroke="#ffffff" stroke-width="1.2"><title>{}: score {s:.3}, real {real}</title></circle>"##,
                    x.at(s),
                    palette::POINT,
                    escape(p.name)
                ),
                // No pseudo value to place it by: at the left edge, so its real value still shows.
                None => {
                    let px = x.at(x0);
                    let py = py.clamp(y.at(y1), y.at(y0));
                    if !near(p.real) {
                        w!(
                            out,
                            r#"<text class="off-scale" x="{:.1}" y="{:.1}" font-size="11" fill="{}">{} {real}{}</text>"#,
                            px + 10.0,
                            py + 4.0,
                            palette::MUTED,
                            escape(p.name),
                            if p.real > y1 { " (above the plot)" } else { " (below the plot)" }
                        );
                    }
                    w!(
                        out,
                        r##"<circle class="checkpoint excluded" cx="{px:.1}" cy="{py:.1}" r="5" fill="#ffffff" stroke="{}" stroke-width="1.5"><title>{}: excluded (no support), real {real}</title></circle>"##,
                        palette::EXCLUDED,
                        escape(p.name)
                    );
                    cross(out, px, py, 2.5, palette::EXCLUDED);
                }
            }
        }
        out.push_str("</g>");
    }))
}

/// The x axis names the mapping's input: the pseudo metric, or its mix with the atlas agreement.
fn x_label(fit: &Fit, name: &str) -> String {
    let w = fit.agreement_weight;
    if w >= 1.0 {
        format!("atlas agreement {name} (the mapping's input)")
    } else if w > 0.0 {
        format!(
            "mapping input: {:.2} × pseudo {name} + {w:.2} × atlas agreement",
            1.0 - w
        )
    } else {
        format!("pseudo {name}")
    }
}

fn clamp(metric: Metric, v: f64) -> f64 {
    match metric.bounds() {
        (lo, Some(hi)) => v.clamp(lo, hi),
        (lo, None) => v.max(lo),
    }
}

/// The curve over the x range, clamped to the metric's bounds as estimates are.
fn sample_curve(fit: &Fit, metric: Metric, (x0, x1): (f64, f64)) -> Vec<(f64, f64)> {
    (0..=CURVE_SAMPLES)
        .map(|i| {
            let x = x0 + (x1 - x0) * i as f64 / CURVE_SAMPLES as f64;
            (x, clamp(metric, fit.mapping.apply(x)))
        })
        .filter(|(_, y)| y.is_finite())
        .collect()
}
