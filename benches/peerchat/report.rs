//! Statistics (median, percentiles) and the report: the rows each group adds and the
//! table printed at the end, with the goals met or missed.
//!
//! Owns formatting figures; it must not measure anything.

use super::*;

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn p50_p99(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    (
        percentile(samples, 0.50).as_secs_f64(),
        percentile(samples, 0.99).as_secs_f64(),
    )
}

pub(crate) fn secs(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(crate) fn rate(bytes: u64, s: f64) -> String {
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / s)
}

pub(crate) fn size_label(bytes: u64) -> String {
    if bytes >= 1024 * MIB && bytes.is_multiple_of(1024 * MIB) {
        format!("{} GiB", bytes / (1024 * MIB))
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) measure: String,
    pub(crate) value: String,
    pub(crate) baseline: String,
    pub(crate) ratio: String,
    pub(crate) goal: String,
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn add(
        &mut self,
        figure: &str,
        measure: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        goal: impl Into<String>,
    ) {
        let row = Row {
            figure: figure.into(),
            measure: measure.into(),
            value: value.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            goal: goal.into(),
        };
        println!(
            "  -> {} | {} | {} | {} | {}",
            row.measure, row.value, row.baseline, row.ratio, row.goal
        );
        self.rows.push(row);
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  note: {text}");
        self.notes.push(text);
    }

    pub(crate) fn print(&self) {
        println!("\n## Results (medians)\n");
        println!("| figure | measure | peerchat | baseline | ratio | goal |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.figure, r.measure, r.value, r.baseline, r.ratio, r.goal
            );
        }
        if !self.notes.is_empty() {
            println!("\nNotes:");
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }
}
