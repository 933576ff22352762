use super::*;
use crate::engine::spe::{MetricEstimate, SupportCount};

fn estimate(dice: f64, interval: [f64; 2]) -> Estimate {
    let mut metrics = BTreeMap::new();
    metrics.insert(
        Metric::Dice,
        MetricEstimate {
            estimate: dice,
            interval,
            pseudo: dice,
            agreement: None,
        },
    );
    Estimate::Ok {
        metrics,
        support: SupportCount {
            used: 12,
            rejected: 0,
        },
        anchor: None,
        warnings: Vec::new(),
    }
}

fn rules(metric: Metric, rule: Rule) -> Thresholds {
    [(metric, rule)].into_iter().collect()
}

fn min(v: f64) -> Rule {
    Rule {
        min: Some(v),
        ..Rule::default()
    }
}

fn max(v: f64) -> Rule {
    Rule {
        max: Some(v),
        ..Rule::default()
    }
}

fn below_calibration(delta: f64) -> Rule {
    Rule {
        below_calibration: Some(delta),
        ..Rule::default()
    }
}

#[test]
fn an_estimate_below_the_minimum_is_an_alert_and_an_interval_across_it_a_warning() {
    let thresholds = rules(Metric::Dice, min(0.85));
    let alerts = evaluate(&estimate(0.80, [0.75, 0.86]), &thresholds, |_| None, true);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity, Severity::Alert);
    assert_eq!(alerts[0].rule, "min");
    assert_eq!(alerts[0].threshold, Some(0.85));
    assert_eq!(alerts[0].estimate, Some(0.80));

    let alerts = evaluate(&estimate(0.87, [0.83, 0.91]), &thresholds, |_| None, true);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity, Severity::Warning);

    assert!(evaluate(&estimate(0.90, [0.86, 0.94]), &thresholds, |_| None, true).is_empty());
}

#[test]
fn a_maximum_bounds_from_above() {
    let thresholds = rules(Metric::Hd95, max(12.0));
    let mut e = estimate(0.9, [0.8, 1.0]);
    if let Estimate::Ok { metrics, .. } = &mut e {
        metrics.insert(
            Metric::Hd95,
            MetricEstimate {
                estimate: 13.0,
                interval: [10.0, 16.0],
                pseudo: 13.0,
                agreement: None,
            },
        );
    }
    let alerts = evaluate(&e, &thresholds, |_| None, true);
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].metric, alerts[0].severity),
        (Metric::Hd95, Severity::Alert)
    );
}

#[test]
fn a_relative_rule_is_resolved_against_the_calibration_value_and_skipped_without_one() {
    let thresholds = rules(Metric::Dice, below_calibration(0.05));
    let alerts = evaluate(
        &estimate(0.82, [0.80, 0.84]),
        &thresholds,
        |_| Some(0.88),
        true,
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "below_calibration");
    assert!((alerts[0].threshold.unwrap() - 0.83).abs() < 1e-12);
    assert_eq!(alerts[0].severity, Severity::Alert);
    assert!(evaluate(&estimate(0.82, [0.80, 0.84]), &thresholds, |_| None, true).is_empty());
}

#[test]
fn no_estimate_is_an_alert_only_for_a_model_that_finds_something() {
    let thresholds = rules(Metric::Dice, min(0.85));
    let none = Estimate::InsufficientSupport {
        support: SupportCount {
            used: 0,
            rejected: 6,
        },
        message: "nothing found".into(),
    };
    let alerts = evaluate(&none, &thresholds, |_| None, true);
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].rule.as_str(), alerts[0].severity),
        ("insufficient_support", Severity::Alert)
    );
    assert!(evaluate(&none, &thresholds, |_| None, false).is_empty());
}

#[test]
fn rules_are_checked_with_messages_that_say_what_to_fix() {
    let known = |_| Ok(0.9);
    assert_eq!(
        validate(&rules(Metric::Dice, Rule::default()), known),
        Err(RuleError::Empty { metric: "dice" })
    );
    let err = validate(&rules(Metric::Dice, min(1.5)), known).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dice.min must be a finite number in [0, 1]"
    );
    let crossed = Rule {
        min: Some(0.9),
        max: Some(0.8),
        ..Rule::default()
    };
    assert!(matches!(
        validate(&rules(Metric::Dice, crossed), known),
        Err(RuleError::Crossed { .. })
    ));
    let relative = rules(Metric::Dice, below_calibration(0.05));
    assert_eq!(validate(&relative, known), Ok(()));
    let err = validate(&relative, |_| Err("no active calibration".into())).unwrap_err();
    assert!(err.to_string().contains("no active calibration"), "{err}");
    assert!(validate(&rules(Metric::Hd95, min(30.0)), known).is_ok());
}

#[test]
fn unknown_metrics_and_fields_are_refused_when_parsed() {
    assert!(serde_json::from_str::<Thresholds>(r#"{"dice":{"min":0.8}}"#).is_ok());
    assert!(serde_json::from_str::<Thresholds>(r#"{"dise":{"min":0.8}}"#).is_err());
    assert!(serde_json::from_str::<Thresholds>(r#"{"dice":{"minimum":0.8}}"#).is_err());
}

#[test]
fn a_rule_lists_its_bounds_with_relative_ones_resolved() {
    let rule = Rule {
        min: Some(0.7),
        below_calibration: Some(0.05),
        above_calibration: Some(0.02),
        ..Rule::default()
    };
    let seen = |value| {
        rule.bounds(value)
            .iter()
            .map(|b| (b.rule, (b.value * 1000.0).round() / 1000.0, b.lower))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seen(Some(0.9)),
        vec![
            ("min", 0.7, true),
            ("below_calibration", 0.85, true),
            ("above_calibration", 0.92, false)
        ]
    );
    assert_eq!(seen(None), vec![("min", 0.7, true)]);
}
