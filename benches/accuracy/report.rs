//! Rows, per-dataset summaries and the Markdown table of the accuracy benchmark.

use serde::Serialize;

/// A drop of at least this much below the baseline is a real (or claimed) drop.
pub const DROP: f64 = 0.05;
/// Within this much of the baseline nothing changed that matters.
pub const UNCHANGED: f64 = 0.03;

/// One batch of the deployed checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct BatchRow {
    pub name: String,
    /// "clean", "small6", "small12" or "shifted".
    pub kind: String,
    pub n: usize,
    pub real_dice: f64,
    pub real_hd95: f64,
    /// 0 when the estimate is insufficient_support.
    pub estimate: f64,
    /// [0, 0] when the estimate is insufficient_support.
    pub interval: [f64; 2],
    pub estimate_hd95: Option<f64>,
    /// The Dice pseudo metric and atlas agreement the estimate read (for looking into the mapping).
    pub signals: Option<[f64; 2]>,
    pub insufficient_support: bool,
    /// The deployed checkpoint's calibration-half Dice.
    pub baseline: f64,
    pub estimate_seconds: f64,
    /// Codes of the estimate's warnings.
    pub warnings: Vec<String>,
}

impl BatchRow {
    pub fn error(&self) -> f64 {
        (self.estimate - self.real_dice).abs()
    }
    pub fn baseline_error(&self) -> f64 {
        (self.baseline - self.real_dice).abs()
    }
    pub fn covered(&self) -> bool {
        self.interval[0] <= self.real_dice && self.real_dice <= self.interval[1]
    }
    /// Nothing changed, but the estimate claims a drop (or has no number).
    pub fn false_alarm(&self) -> bool {
        self.unchanged() && self.estimate <= self.baseline - DROP
    }
    pub fn unchanged(&self) -> bool {
        (self.real_dice - self.baseline).abs() <= UNCHANGED
    }
    pub fn dropped(&self) -> bool {
        self.real_dice <= self.baseline - DROP
    }
    /// A real drop that the estimate does not report (insufficient support counts as reported).
    pub fn missed_drop(&self) -> bool {
        self.dropped() && self.estimate > self.baseline - DROP && !self.insufficient_support
    }

    pub fn print(&self) {
        let status = if self.insufficient_support {
            "  insufficient support"
        } else {
            ""
        };
        println!(
            "  {:<18} n {:>3}  real {:.4}  est {:.4}  [{:.4}, {:.4}]  |est-real| {:.4}  |base-real| {:.4}  {}{status}",
            self.name,
            self.n,
            self.real_dice,
            self.estimate,
            self.interval[0],
            self.interval[1],
            self.error(),
            self.baseline_error(),
            if self.covered() { "covered" } else { "MISSED" },
        );
        if !self.warnings.is_empty() {
            println!("    warnings: {}", self.warnings.join(", "));
        }
    }
}

/// One checkpoint estimated on the clean holdout half.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointRow {
    pub name: String,
    pub real_dice: f64,
    pub real_hd95: f64,
    /// The checkpoint's calibration-half metrics (the baseline).
    pub calibration_dice: f64,
    pub calibration_hd95: f64,
    /// None when the estimate is insufficient_support (the row is then skipped in the summary).
    pub estimate_dice: Option<f64>,
    pub estimate_hd95: Option<f64>,
}

/// Mean absolute error of the estimate and of the baseline over some batches.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Mae {
    pub n: usize,
    pub estimate: f64,
    pub baseline: f64,
}

impl Mae {
    fn of(pairs: impl Iterator<Item = (f64, f64)>) -> Self {
        let (mut n, mut e, mut b) = (0, 0.0, 0.0);
        for (est, base) in pairs {
            n += 1;
            e += est;
            b += base;
        }
        if n == 0 {
            return Self::default();
        }
        Self {
            n,
            estimate: e / n as f64,
            baseline: b / n as f64,
        }
    }

    fn cell(&self, digits: usize) -> String {
        if self.n == 0 {
            return "-".into();
        }
        format!(
            "{:.digits$} ({:.digits$}) n={}",
            self.estimate, self.baseline, self.n
        )
    }
}

/// "k of n".
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Count {
    pub k: usize,
    pub of: usize,
}

impl Count {
    fn cell(&self) -> String {
        format!("{} of {}", self.k, self.of)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub clean_error: Option<f64>,
    pub clean_baseline_error: Option<f64>,
    pub small6: Mae,
    pub small12: Mae,
    pub shifted: Mae,
    pub coverage: Count,
    pub insufficient_support: Count,
    pub false_alarms: Count,
    pub missed_drops: Count,
    /// Batches with at least one warning: clean and small ones, and shifted ones.
    pub warned_unshifted: Count,
    pub warned_shifted: Count,
    pub checkpoint_dice: Mae,
    pub checkpoint_hd95: Mae,
    pub skipped_checkpoints: usize,
    pub calibrate_seconds: f64,
    pub clean_estimate_seconds: Option<f64>,
    pub clean_n: usize,
}

impl Summary {
    pub fn new(
        batches: &[BatchRow],
        checkpoints: &[CheckpointRow],
        calibrate_seconds: f64,
    ) -> Self {
        let clean = batches.iter().find(|b| b.kind == "clean");
        let mae = |kind: &str| {
            Mae::of(
                batches
                    .iter()
                    .filter(|b| b.kind == kind)
                    .map(|b| (b.error(), b.baseline_error())),
            )
        };
        let count = |pred: &dyn Fn(&BatchRow) -> bool, of: &dyn Fn(&BatchRow) -> bool| Count {
            k: batches.iter().filter(|b| of(b) && pred(b)).count(),
            of: batches.iter().filter(|b| of(b)).count(),
        };
        let scored: Vec<&CheckpointRow> = checkpoints
            .iter()
            .filter(|c| c.estimate_dice.is_some())
            .collect();
        Self {
            clean_error: clean.map(BatchRow::error),
            clean_baseline_error: clean.map(BatchRow::baseline_error),
            small6: mae("small6"),
            small12: mae("small12"),
            shifted: mae("shifted"),
            coverage: count(&BatchRow::covered, &|_| true),
            insufficient_support: count(&|b| b.insufficient_support, &|_| true),
            false_alarms: count(&BatchRow::false_alarm, &BatchRow::unchanged),
            missed_drops: count(&BatchRow::missed_drop, &BatchRow::dropped),
            warned_unshifted: count(&|b| !b.warnings.is_empty(), &|b| b.kind != "shifted"),
            warned_shifted: count(&|b| !b.warnings.is_empty(), &|b| b.kind == "shifted"),
            checkpoint_dice: Mae::of(scored.iter().map(|c| {
                (
                    (c.estimate_dice.unwrap_or(0.0) - c.real_dice).abs(),
                    (c.calibration_dice - c.real_dice).abs(),
                )
            })),
            checkpoint_hd95: Mae::of(scored.iter().filter_map(|c| {
                c.estimate_hd95.map(|e| {
                    (
                        (e - c.real_hd95).abs(),
                        (c.calibration_hd95 - c.real_hd95).abs(),
                    )
                })
            })),
            skipped_checkpoints: checkpoints.len() - scored.len(),
            calibrate_seconds,
            clean_estimate_seconds: clean.map(|b| b.estimate_seconds),
            clean_n: clean.map_or(0, |b| b.n),
        }
    }
}

/// One Markdown table, a column per dataset.
pub fn table(columns: &[(String, Summary)]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, cell: &dyn Fn(&Summary) -> String| {
        rows.push((
            name.to_string(),
            columns.iter().map(|(_, s)| cell(s)).collect(),
        ));
    };
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    row("clean \\|est−real\\| (baseline)", &|s| {
        format!(
            "{} ({})",
            opt(s.clean_error, 4),
            opt(s.clean_baseline_error, 4)
        )
    });
    row("6-image MAE (baseline)", &|s| s.small6.cell(4));
    row("12-image MAE (baseline)", &|s| s.small12.cell(4));
    row("shifted MAE (baseline)", &|s| s.shifted.cell(4));
    row("interval coverage of real Dice", &|s| {
        let pct = 100.0 * s.coverage.k as f64 / s.coverage.of.max(1) as f64;
        format!("{} ({pct:.0}%)", s.coverage.cell())
    });
    row("insufficient support (flagged)", &|s| {
        s.insufficient_support.cell()
    });
    row("false alarms (of unchanged batches)", &|s| {
        s.false_alarms.cell()
    });
    row("missed drops (of dropped batches)", &|s| {
        s.missed_drops.cell()
    });
    row("batches with a warning: clean and small / shifted", &|s| {
        format!(
            "{} / {}",
            s.warned_unshifted.cell(),
            s.warned_shifted.cell()
        )
    });
    row("every checkpoint Dice MAE (baseline)", &|s| {
        format!(
            "{} skipped {}",
            s.checkpoint_dice.cell(4),
            s.skipped_checkpoints
        )
    });
    row("every checkpoint HD95 MAE px (baseline)", &|s| {
        s.checkpoint_hd95.cell(2)
    });
    row("calibrate seconds", &|s| {
        format!("{:.1}", s.calibrate_seconds)
    });
    row("clean estimate seconds (n images)", &|s| {
        format!("{} ({})", opt(s.clean_estimate_seconds, 2), s.clean_n)
    });

    let mut out = String::from("| |");
    for (name, _) in columns {
        out += &format!(" {name} |");
    }
    out += "\n|---|";
    out += &"---|".repeat(columns.len());
    out += "\n";
    for (name, cells) in rows {
        out += &format!("| {name} | {} |\n", cells.join(" | "));
    }
    out
}
