//! Alert thresholds on estimates: the rules a model's admin sets, and the alerts an estimate raises
//! against them. Pure: the rules are resolved against the calibration the estimate used, so changing
//! thresholds later never rewrites a stored estimate's alerts.

use crate::engine::fit::Calibration;
use crate::engine::metrics::Metric;
use crate::engine::spe::Estimate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The rule on one metric. Absolute bounds (`min`, `max`) and bounds relative to the deployed model's real
/// value on the calibration split (`below_calibration`: alert when the estimate is more than this below
/// it; `above_calibration`: more than this above it, for HD95). Any combination, at least one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub below_calibration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub above_calibration: Option<f64>,
}

/// One bound a rule sets, in the metric's unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    /// `min`, `max`, `below_calibration` or `above_calibration`.
    pub rule: &'static str,
    pub value: f64,
    /// An estimate below a lower bound breaks it; above, an upper one.
    pub lower: bool,
}

impl Rule {
    /// The bounds the rule sets, lower ones first; relative rules resolve against `calibration_value` (see
    /// [`Baseline::value`]) and set none without it.
    pub fn bounds(&self, calibration_value: Option<f64>) -> Vec<Bound> {
        let relative = |delta: Option<f64>, sign: f64| {
            delta.and_then(|d| calibration_value.map(|k| k + sign * d))
        };
        [
            ("min", self.min, true),
            (
                "below_calibration",
                relative(self.below_calibration, -1.0),
                true,
            ),
            ("max", self.max, false),
            (
                "above_calibration",
                relative(self.above_calibration, 1.0),
                false,
            ),
        ]
        .into_iter()
        .filter_map(|(rule, value, lower)| value.map(|value| Bound { rule, value, lower }))
        .collect()
    }
}

/// A model's thresholds, per metric (`dice`, `jaccard`, `precision`, `recall`, `hd95`, `pearson`).
pub type Thresholds = BTreeMap<Metric, Rule>;

/// How bad it is: the estimate itself breaks the threshold, or only its interval crosses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Alert,
    Warning,
}

/// One threshold an estimate broke or came near.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// The metric, e.g. `dice`.
    #[schema(value_type = String, example = "dice")]
    pub metric: Metric,
    /// `min`, `max`, `below_calibration`, `above_calibration`, or `insufficient_support` (the batch gave no
    /// estimate although the model finds something on the calibration images).
    pub rule: String,
    /// The bound in the metric's unit (relative rules resolved against the calibration value); absent for
    /// `insufficient_support`.
    pub threshold: Option<f64>,
    pub estimate: Option<f64>,
    pub interval: Option<[f64; 2]>,
    pub severity: Severity,
}

/// Why thresholds cannot be stored, in words for the person who sent them.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("{metric}: give at least one of min, max, below_calibration, above_calibration")]
    Empty { metric: &'static str },
    #[error("{metric}.{field} must be a finite number{range}")]
    OutOfRange {
        metric: &'static str,
        field: &'static str,
        range: String,
    },
    #[error("{metric}.min ({min}) is above {metric}.max ({max})")]
    Crossed {
        metric: &'static str,
        min: f64,
        max: f64,
    },
    #[error("{metric}: a rule relative to the calibration needs the deployed model's real value on the calibration split, which is known only when its ONNX is one of the active calibration's checkpoints (same digest); {why}. Use min/max instead, or calibrate with this model among the checkpoints")]
    NoCalibrationValue { metric: &'static str, why: String },
}

/// Checks every rule; `calibration_value` is the deployed model's real value of a metric on the active
/// calibration's split, when known (needed by relative rules).
pub fn validate(
    thresholds: &Thresholds,
    calibration_value: impl Fn(Metric) -> Result<f64, String>,
) -> Result<(), RuleError> {
    for (&metric, rule) in thresholds {
        let name = metric.name();
        let (lo, hi) = metric.bounds();
        let range = match hi {
            Some(hi) => format!(" in [{lo}, {hi}]"),
            None => format!(" ≥ {lo}"),
        };
        let absolute = [("min", rule.min), ("max", rule.max)];
        let relative = [
            ("below_calibration", rule.below_calibration),
            ("above_calibration", rule.above_calibration),
        ];
        if absolute.iter().chain(&relative).all(|(_, v)| v.is_none()) {
            return Err(RuleError::Empty { metric: name });
        }
        for (field, value) in absolute {
            if let Some(v) = value {
                if !v.is_finite() || v < lo || hi.is_some_and(|hi| v > hi) {
                    return Err(RuleError::OutOfRange {
                        metric: name,
                        field,
                        range: range.clone(),
                    });
                }
            }
        }
        for (field, value) in relative {
            if let Some(v) = value {
                if !v.is_finite() || v < 0.0 {
                    return Err(RuleError::OutOfRange {
                        metric: name,
                        field,
                        range: " ≥ 0".into(),
                    });
                }
            }
        }
        if let (Some(min), Some(max)) = (rule.min, rule.max) {
            if min > max {
                return Err(RuleError::Crossed {
                    metric: name,
                    min,
                    max,
                });
            }
        }
        if relative.iter().any(|(_, v)| v.is_some()) {
            calibration_value(metric)
                .map_err(|why| RuleError::NoCalibrationValue { metric: name, why })?;
        }
    }
    Ok(())
}

/// What the rules are resolved against: the calibration an estimate used, seen from the deployed model.
pub struct Baseline<'a> {
    pub calibration: &'a Calibration,
    /// The deployed model's ONNX digest.
    pub onnx_sha256: &'a str,
}

impl Baseline<'_> {
    /// The deployed model's real value of `metric` on the calibration split: its own checkpoint's (same
    /// ONNX digest), or why there is none.
    pub fn value(&self, metric: Metric) -> Result<f64, String> {
        self.calibration
            .anchor(self.onnx_sha256)
            .map(|point| point.real.get(metric))
            .ok_or_else(|| "the model's ONNX is not among the calibration's checkpoints".into())
    }

    /// Whether the model found something on most calibration images (unknown counts as yes), so that a
    /// batch on which it finds nothing is news.
    pub fn finds_something(&self) -> bool {
        self.calibration
            .anchor(self.onnx_sha256)
            .and_then(|point| point.masks.as_ref())
            .is_none_or(|masks| masks.empty_share < FINDS_SOMETHING)
    }
}

/// A batch without an estimate is an alert when the deployed model found something on most calibration
/// images (an empty share below this).
const FINDS_SOMETHING: f64 = 0.5;

/// The alerts `estimate` raises under `thresholds`. `calibration_value` resolves relative rules (see
/// [`Baseline::value`]); a rule it cannot resolve (the calibration changed since the rule was set) raises
/// nothing. `finds_something`: see [`Baseline::finds_something`].
pub fn evaluate(
    estimate: &Estimate,
    thresholds: &Thresholds,
    calibration_value: impl Fn(Metric) -> Option<f64>,
    finds_something: bool,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    match estimate {
        Estimate::InsufficientSupport { .. } => {
            if finds_something {
                alerts.extend(thresholds.keys().map(|&metric| Alert {
                    metric,
                    rule: "insufficient_support".into(),
                    threshold: None,
                    estimate: None,
                    interval: None,
                    severity: Severity::Alert,
                }));
            }
        }
        Estimate::Ok { metrics, .. } => {
            for (&metric, rule) in thresholds {
                let Some(value) = metrics.get(&metric) else {
                    continue;
                };
                let [lo, hi] = value.interval;
                for bound in rule.bounds(calibration_value(metric)) {
                    let t = bound.value;
                    let (broken, near) = if bound.lower {
                        (value.estimate < t, lo < t)
                    } else {
                        (value.estimate > t, hi > t)
                    };
                    if broken || near {
                        alerts.push(Alert {
                            metric,
                            rule: bound.rule.into(),
                            threshold: Some(t),
                            estimate: Some(value.estimate),
                            interval: Some(value.interval),
                            severity: if broken {
                                Severity::Alert
                            } else {
                                Severity::Warning
                            },
                        });
                    }
                }
            }
        }
    }
    alerts
}

#[cfg(test)]
mod tests;
