use super::*;
use crate::engine::fit::{Calibration, CheckpointPoint};
use crate::engine::metrics::MetricSet;
use crate::engine::spe::{PseudoOutcome, SpeParams, SupportCount};
use crate::monitor::{Bound, Severity};
use chrono::{DateTime, Duration, TimeZone, Utc};

/// The opening tags whose class is exactly `class`.
fn tags<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
    let needle = format!(r#"class="{class}""#);
    svg.match_indices(&needle)
        .map(|(at, _)| {
            let start = svg[..at].rfind('<').unwrap();
            let end = at + svg[at..].find('>').unwrap();
            &svg[start..=end]
        })
        .collect()
}

fn attr(tag: &str, name: &str) -> f64 {
    let needle = format!(r#" {name}=""#);
    let from = tag
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + needle.len();
    let to = from + tag[from..].find('"').unwrap();
    tag[from..to].parse().unwrap()
}

/// Every element is closed in order (a small well-formedness check: no XML parser among the deps).
fn assert_well_formed(svg: &str) {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>').expect("unclosed tag");
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            open.push(tag.split_whitespace().next().unwrap());
        }
        assert!(!tag.contains('<'), "a '<' inside a tag: {tag}");
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    assert!(svg.starts_with("<svg ") && svg.contains(r#"viewBox="0 0 720 420""#));
}

fn set(v: f64) -> MetricSet {
    MetricSet {
        dice: v,
        jaccard: v / (2.0 - v),
        precision: v,
        recall: v,
        hd95: 40.0 * (1.0 - v),
        pearson: v,
    }
}

fn point(name: &str, pseudo: Option<f64>, real: f64) -> CheckpointPoint {
    let support = SupportCount {
        used: 4,
        rejected: 0,
    };
    let outcome = match pseudo {
        Some(p) => PseudoOutcome::Ok {
            pseudo: set(p),
            per_repetition: vec![set(p)],
            support,
        },
        None => PseudoOutcome::InsufficientSupport { support },
    };
    CheckpointPoint::from_pair(name.into(), set(real), outcome)
}

/// Six checkpoints on a noisy line, one without support, one with a name that needs escaping.
fn calibration() -> Calibration {
    let points = vec![
        point("empty", None, 0.05),
        point("c1", Some(0.42), 0.50),
        point("c2", Some(0.55), 0.61),
        point("<b>&\"c3\"", Some(0.63), 0.72),
        point("c4", Some(0.71), 0.76),
        point("c5", Some(0.80), 0.87),
        point("c6", Some(0.86), 0.90),
    ];
    Calibration::fit("toy".into(), SpeParams::default(), 0, points).unwrap()
}

#[test]
fn the_calibration_plot_shows_every_checkpoint_the_curve_and_its_band() {
    let cal = calibration();
    let svg = calibration_svg(&cal, Metric::Dice, "model <x>").unwrap();
    assert_well_formed(&svg);
    let fitted = tags(&svg, "checkpoint");
    assert_eq!(fitted.len(), 6);
    assert_eq!(tags(&svg, "checkpoint excluded").len(), 1);
    assert_eq!(tags(&svg, "fit").len(), 1);
    assert_eq!(tags(&svg, "band").len(), 1);
    // Text is escaped wherever it comes from.
    assert!(
        svg.contains("model &lt;x&gt;: calibration of Dice"),
        "{svg}"
    );
    assert!(svg.contains("&lt;b&gt;&amp;&quot;c3&quot;"));
    assert!(!svg.contains("<b>"));
    // The fit's leave-one-out figures are in the plot.
    let fit = &cal.fits[&Metric::Dice];
    assert!(svg.contains(&format!("leave-one-out MAE {}", statistic(fit.loo_mae))));
    assert!(svg.contains(&format!("Pearson r {:.3}", fit.pearson_r)));
    assert!(svg.contains("6 checkpoints fitted") && svg.contains("1 excluded"));
    assert!(svg.contains(">pseudo Dice<"), "the axis names the input");
    // Higher pseudo values sit further right, higher real values further up (SVG y grows downwards).
    let xs: Vec<f64> = fitted.iter().map(|t| attr(t, "cx")).collect();
    let ys: Vec<f64> = fitted.iter().map(|t| attr(t, "cy")).collect();
    assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
    assert!(ys.windows(2).all(|w| w[0] > w[1]), "{ys:?}");
    // The excluded checkpoint sits at the left edge, below the others (its real Dice is 0.05).
    let excluded = tags(&svg, "checkpoint excluded")[0];
    assert!(attr(excluded, "cx") < xs[0] && attr(excluded, "cy") > ys[0]);
}

#[test]
fn the_calibration_plot_names_a_mixed_input_and_refuses_a_missing_fit() {
    let mut cal = calibration();
    cal.fits.get_mut(&Metric::Dice).unwrap().agreement_weight = 0.25;
    let svg = calibration_svg(&cal, Metric::Dice, "m").unwrap();
    assert!(
        svg.contains("mapping input: 0.75 × pseudo Dice + 0.25 × atlas agreement"),
        "{svg}"
    );
    // An excluded checkpoint far above the others is named at the edge rather than squashing them.
    cal.checkpoints[0].real.hd95 = 500.0;
    let svg = calibration_svg(&cal, Metric::Hd95, "m").unwrap();
    assert_well_formed(&svg);
    assert!(svg.contains("empty 500.00 (above the plot)"), "{svg}");
    let tops: Vec<f64> = tags(&svg, "checkpoint")
        .iter()
        .map(|t| attr(t, "cy"))
        .collect();
    let excluded = attr(tags(&svg, "checkpoint excluded")[0], "cy");
    assert!(
        tops.iter().all(|&y| y > excluded + 20.0),
        "{tops:?} {excluded}"
    );
    assert!(svg.contains("real HD95 on the calibration set (px)"));
    cal.fits.remove(&Metric::Hd95);
    assert_eq!(
        calibration_svg(&cal, Metric::Hd95, "m"),
        Err(PlotError::NoFit("hd95"))
    );
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn estimate(minutes: i64, v: f64, severity: Option<Severity>) -> EstimatePoint {
    EstimatePoint {
        at: at(minutes),
        value: Some((v, [v - 0.04, v + 0.04])),
        severity,
    }
}

fn plot<'a>(points: &'a [EstimatePoint], thresholds: &'a [Bound]) -> EstimatesPlot<'a> {
    EstimatesPlot {
        subject: "liver & <co>",
        metric: Metric::Dice,
        points,
        thresholds,
        calibration_value: None,
        range: (None, None),
        capped: None,
    }
}

#[test]
fn the_estimates_plot_has_a_point_per_estimate_in_time_order_with_thresholds_and_alerts() {
    // Given out of order; one batch without an estimate raised an alert.
    let points = vec![
        estimate(30, 0.80, Some(Severity::Alert)),
        estimate(0, 0.90, None),
        EstimatePoint {
            at: at(20),
            value: None,
            severity: Some(Severity::Alert),
        },
        estimate(10, 0.86, Some(Severity::Warning)),
    ];
    let thresholds = [
        Bound {
            rule: "min",
            value: 0.84,
            lower: true,
        },
        Bound {
            rule: "below_calibration",
            value: 0.83,
            lower: true,
        },
    ];
    let mut p = plot(&points, &thresholds);
    p.calibration_value = Some(0.88);
    let svg = estimates_svg(&p);
    assert_well_formed(&svg);
    let series = tags(&svg, "point");
    assert_eq!(
        series.len(),
        3,
        "the batch without an estimate is not a point"
    );
    assert_eq!(tags(&svg, "no-estimate").len(), 1);
    assert_eq!(tags(&svg, "band").len(), 1);
    assert_eq!(tags(&svg, "line").len(), 1);
    assert_eq!(tags(&svg, "alert").len(), 1);
    assert_eq!(tags(&svg, "warning").len(), 1);
    let lines = tags(&svg, "threshold");
    assert_eq!(lines.len(), 2);
    assert!(svg.contains(">min 0.840<") && svg.contains(">below calibration 0.830<"));
    let reference = tags(&svg, "calibration-reference");
    assert_eq!(reference.len(), 1);
    // Time runs right, in order; the estimates 0.90, 0.86, 0.80 go down the plot (y grows downwards).
    let xs: Vec<f64> = series.iter().map(|t| attr(t, "cx")).collect();
    let ys: Vec<f64> = series.iter().map(|t| attr(t, "cy")).collect();
    assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
    assert!(ys.windows(2).all(|w| w[0] < w[1]), "{ys:?}");
    // Lines sit at their values: the calibration value 0.88 above the minimum 0.84, between 0.90 and 0.86.
    let (y_ref, y_min) = (attr(reference[0], "y1"), attr(lines[0], "y1"));
    assert!(
        ys[0] < y_ref && y_ref < ys[1] && y_ref < y_min,
        "{ys:?} {y_ref} {y_min}"
    );
    assert!(svg.contains("liver &amp; &lt;co&gt;: estimated Dice"));
    assert!(svg.contains("4 batches") && svg.contains("2 alerts, 1 warning"));
    assert!(svg.contains("1 without an estimate"));
}

#[test]
fn no_estimates_give_an_empty_plot_that_says_so() {
    let svg = estimates_svg(&plot(&[], &[]));
    assert_well_formed(&svg);
    assert!(svg.contains(">no estimates yet<"), "{svg}");
    assert!(tags(&svg, "point").is_empty() && tags(&svg, "band").is_empty());
    // With a range asked for, the axis covers it and the text says where nothing was found.
    let mut p = plot(&[], &[]);
    p.range = (Some(at(0)), Some(at(120)));
    let svg = estimates_svg(&p);
    assert_well_formed(&svg);
    assert!(svg.contains(">no estimates in this time range<"));
    assert!(svg.contains(">09:30<") && svg.contains("submitted on 2025-03-14 (UTC)"));
}

#[test]
fn estimates_milliseconds_apart_are_told_apart() {
    let t = at(0);
    let points: Vec<EstimatePoint> = (0..3)
        .map(|i| EstimatePoint {
            at: t + Duration::milliseconds(150 * i),
            ..estimate(0, 0.9, None)
        })
        .collect();
    let svg = estimates_svg(&plot(&points, &[]));
    let xs: Vec<f64> = tags(&svg, "point").iter().map(|t| attr(t, "cx")).collect();
    assert!(xs.windows(2).all(|w| w[1] - w[0] > 100.0), "{xs:?}");
    assert!(svg.contains(">09:00:00.100<"), "{svg}");
}

#[test]
fn one_estimate_has_a_point_and_an_interval_but_no_line() {
    let points = [estimate(0, 0.9, None)];
    let svg = estimates_svg(&plot(&points, &[]));
    assert_well_formed(&svg);
    assert_eq!(tags(&svg, "point").len(), 1);
    assert_eq!(tags(&svg, "band").len(), 1);
    assert!(tags(&svg, "line").is_empty());
    assert!(tags(&svg, "alert").is_empty());
}

#[test]
fn a_threshold_far_from_the_data_is_named_at_the_edge_and_does_not_squash_it() {
    let points = [estimate(0, 0.9, None), estimate(5, 0.92, None)];
    let far = [Bound {
        rule: "max",
        value: 1000.0,
        lower: false,
    }];
    let mut p = plot(&points, &far);
    p.metric = Metric::Hd95;
    let hd = [
        EstimatePoint {
            value: Some((4.0, [3.0, 5.0])),
            ..points[0].clone()
        },
        EstimatePoint {
            value: Some((4.5, [3.5, 5.5])),
            ..points[1].clone()
        },
    ];
    p.points = &hd;
    p.capped = Some(1000);
    let svg = estimates_svg(&p);
    assert_well_formed(&svg);
    assert!(tags(&svg, "threshold").is_empty());
    assert!(svg.contains("max 1000.00 (above the plot)"), "{svg}");
    assert!(svg.contains("the newest 1000 shown"));
    let ys: Vec<f64> = tags(&svg, "point").iter().map(|t| attr(t, "cy")).collect();
    assert!(
        (ys[0] - ys[1]).abs() > 20.0,
        "the data keeps its scale: {ys:?}"
    );
}

#[test]
fn text_is_escaped_and_control_characters_dropped() {
    assert_eq!(escape("a<b>&\"'\u{7}\tz"), "a&lt;b&gt;&amp;&quot;&#39; z");
}

#[test]
fn value_axes_have_round_ticks_covering_the_data() {
    let ((lo, hi), ticks) = value_axis(Metric::Dice, 0.62, 0.97);
    assert!(lo <= 0.62 && hi >= 0.97, "{lo} {hi}");
    let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(labels, ["0.6", "0.7", "0.8", "0.9", "1.0"]);
    // Ticks stay within the metric's bounds, exact bounds included.
    let ((lo, hi), ticks) = value_axis(Metric::Dice, 0.0, 1.0);
    assert_eq!((lo, hi, ticks.len()), (0.0, 1.0, 6), "{ticks:?}");
    assert_eq!(statistic(0.002034), "0.00203");
    assert_eq!(statistic(12.345), "12.3");
    // A single value gets a span around it, within the metric's bounds.
    let (lo, hi) = value_domain(Metric::Dice, [0.99]);
    assert!((lo - 0.965).abs() < 1e-9 && hi == 1.0, "{lo} {hi}");
    assert_eq!(value_domain(Metric::Dice, []), (0.0, 1.0));
}
