//! Summaries of runs and the markdown table they are printed as.

use std::time::Duration;

use crate::scenarios::Run;

/// One configuration's runs, labelled for the table.
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Unit of the rate column.
    pub unit: &'static str,
    /// Concurrent tasks.
    pub workers: String,
    /// Jobs per lease (or leases per heartbeat).
    pub batch: String,
    /// Whether the share of call time spent in `lease` means anything for this row.
    pub show_lease_share: bool,
    /// The measured runs, in the order they ran.
    pub runs: Vec<Run>,
}

/// The median of the rates; for an even count, the mean of the two middle ones.
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 }
}

/// The run whose rate is the median (the lower middle one for an even count), for the columns
/// that describe one run rather than a rate.
fn median_run(runs: &[Run]) -> Run {
    let mut by_rate = runs.to_vec();
    by_rate.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    by_rate[(by_rate.len() - 1) / 2]
}

/// Rates in thousands above 10k keep the table readable without hiding the spread.
fn rate(value: f64) -> String {
    if value >= 10_000.0 { format!("{:.1}k", value / 1000.0) } else { format!("{value:.0}") }
}

fn latency(value: Duration) -> String {
    let micros = value.as_secs_f64() * 1e6;
    if micros >= 1000.0 { format!("{:.2} ms", micros / 1000.0) } else { format!("{micros:.0} µs") }
}

/// The markdown table of all rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measurement | workers | batch | median | min–max | runs | mean call (median run) | worst call (all runs) | time in lease |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let mut rates: Vec<f64> = row.runs.iter().map(Run::rate).collect();
        rates.sort_by(f64::total_cmp);
        let typical = median_run(&row.runs);
        let worst = row.runs.iter().map(|run| run.worst_call).max().unwrap_or_default();
        let lease_share = if row.show_lease_share {
            format!("{:.0}%", 100.0 * typical.lease_time.as_secs_f64() / typical.call_time.as_secs_f64())
        } else {
            "–".to_owned()
        };
        // Rows timed only end to end (the apalis drains) have no per-call figures.
        let (mean_call, worst_call) = if typical.calls == 0 {
            ("–".to_owned(), "–".to_owned())
        } else {
            (latency(typical.mean_call()), latency(worst))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} {} | {}–{} | {} | {} | {} | {} |\n",
            row.name,
            row.workers,
            row.batch,
            rate(median(&rates)),
            row.unit,
            rate(rates[0]),
            rate(rates[rates.len() - 1]),
            rates.len(),
            mean_call,
            worst_call,
            lease_share,
        ));
    }
    out
}

/// The system load average (1, 5 and 15 minutes), where the OS exposes it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}
