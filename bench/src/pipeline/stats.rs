//! Median and spread of repeated measurements, formatted for markdown tables.

/// Median, minimum and maximum of a non-empty sample.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// `None` for an empty sample. The median of an even count is the mean of the middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
        Some(Spread { median, min: sorted[0], max: sorted[sorted.len() - 1], n: sorted.len() })
    }
}

/// Milliseconds as `812 ms` or `12.3 s`.
pub fn ms(value: f64) -> String {
    if value.abs() >= 10_000.0 {
        format!("{:.1} s", value / 1000.0)
    } else if value.abs() >= 1000.0 {
        format!("{:.2} s", value / 1000.0)
    } else {
        format!("{value:.0} ms")
    }
}

/// KiB as MiB.
#[allow(dead_code, reason = "the library bench shares this file without printing memory this way")]
pub fn mib(kib: f64) -> String {
    format!("{:.0} MiB", kib / 1024.0)
}

/// `median (min–max)` with `format` for each number; `–` for no data.
pub fn cell(spread: Option<Spread>, format: fn(f64) -> String) -> String {
    match spread {
        None => "–".to_owned(),
        Some(s) if s.n == 1 => format(s.median),
        Some(s) => format!("{} ({}–{})", format(s.median), format(s.min), format(s.max)),
    }
}
