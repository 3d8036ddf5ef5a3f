//! The table the benchmark prints: a row per figure, printed as it is measured and again, all
//! together, at the end.

use std::time::Duration;

use crate::common::{ms, percentile};

/// One line of the table.
pub struct Row {
    pub what: String,
    pub measured: String,
    pub raw: String,
    pub ratio: String,
    pub target: String,
    /// `None`: a figure for information, with no target of its own.
    pub pass: Option<bool>,
}

impl Row {
    /// A throughput compared with its raw limit.
    pub fn ratio(what: &str, unit: &str, measured: f64, raw: f64, target_percent: f64) -> Row {
        let ratio = 100.0 * measured / raw;
        let row = Row {
            what: what.into(),
            measured: format!("{measured:.0} {unit}"),
            raw: format!("{raw:.0} {unit}"),
            ratio: format!("{ratio:.1} %"),
            target: format!("≥ {target_percent:.0} %"),
            pass: Some(ratio >= target_percent),
        };
        row.print_now();
        row
    }

    /// The least the row above could reach (see the function that measures it), against the same
    /// raw limit: for information.
    pub fn floor(what: &str, measured: f64, raw: f64, unit: &str) -> Row {
        let row = Row {
            what: what.into(),
            measured: format!("{measured:.0} {unit}"),
            raw: format!("{raw:.0} {unit}"),
            ratio: format!("{:.1} %", 100.0 * measured / raw),
            target: "—".into(),
            pass: None,
        };
        row.print_now();
        row
    }

    /// The p50 and p99 of `sorted` latencies, the p99 held against `target_ms`.
    pub fn latency(what: &str, sorted: &[Duration], target_ms: u64) -> Row {
        let (p50, p99) = (percentile(sorted, 50.0), percentile(sorted, 99.0));
        let row = Row {
            what: what.into(),
            measured: format!("p50 {:.0} / p99 {:.0} ms", ms(p50), ms(p99)),
            raw: "—".into(),
            ratio: "—".into(),
            target: format!("p99 < {target_ms} ms"),
            pass: Some(p99 < Duration::from_millis(target_ms)),
        };
        row.print_now();
        row
    }

    pub fn print_now(&self) {
        println!(
            "  → {}: {} (raw {}, {}; target {}) {}",
            self.what,
            self.measured,
            self.raw,
            self.ratio,
            self.target,
            verdict(self.pass)
        );
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "info",
    }
}

pub fn print_table(rows: &[Row]) {
    let widths = [34, 22, 22, 8, 13];
    let line = |cells: [&str; 6]| {
        println!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} | {:<w4$} | {:<4} |",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    };
    line(["what", "measured", "raw", "ratio", "target", ""]);
    println!(
        "|{}|{}|{}|{}|{}|------|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 2),
        "-".repeat(widths[2] + 2),
        "-".repeat(widths[3] + 2),
        "-".repeat(widths[4] + 2)
    );
    for row in rows {
        line([
            &row.what,
            &row.measured,
            &row.raw,
            &row.ratio,
            &row.target,
            verdict(row.pass),
        ]);
    }
}
