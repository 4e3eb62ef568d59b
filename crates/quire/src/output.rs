//! Tables and JSON for the terminal.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// A table with a header row, sized to the terminal.
pub fn table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    for row in rows {
        table.add_row(row);
    }
    table
}

/// Prints a value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// An optional value for a table cell.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A one-line excerpt of at most `max` characters.
pub fn excerpt(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    use checkpoint_store::Clock;
    checkpoint_store::SystemClock.now()
}

/// How long ago `millis` (Unix millis) was, to the second: `3m 12s`.
pub fn age(millis: i64) -> String {
    let seconds = u64::try_from(now_millis() - millis).unwrap_or(0) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
}

/// A Unix-millis time as an RFC 3339 UTC timestamp, to the second.
pub fn timestamp(millis: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Asks before a destructive change: `yes` answers for the operator; otherwise the question is
/// asked on the terminal, and refused (with an error naming `--yes`) when there is none.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to change anything without confirmation: no terminal to ask on (pass --yes to confirm)"
        );
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}
