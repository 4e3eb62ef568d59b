//! Tables and JSON for the terminal.
//!
//! Much of what the commands print came in with a book: its title, its chunks' text, the reasons
//! its jobs failed (which quote names from inside the archive). Such text passes through
//! [`printable`] before it reaches a terminal, where an escape sequence could clear the screen,
//! retitle the window, hide what follows or, on some terminals, type an answer back. Tables and
//! excerpts apply it to every cell, so a command that prints through them need not remember to.
//! JSON output needs none: serde escapes every control character.

use std::borrow::Cow;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// A table with a header row, sized to the terminal.
pub fn table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    for row in rows {
        table.add_row(row.map(|cell| printable(&cell).into_owned()));
    }
    table
}

/// `text` without what a terminal would take for a command rather than text: control characters
/// (C0, DEL, C1, which include ESC and the 8-bit CSI) and the bidirectional overrides and isolates
/// (which reorder what follows them on screen). Newlines and tabs stay, for multi-line cells.
pub fn printable(text: &str) -> Cow<'_, str> {
    let is_terminal_control = |c: char| {
        (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if text.contains(is_terminal_control) {
        Cow::Owned(text.chars().filter(|&c| !is_terminal_control(c)).collect())
    } else {
        Cow::Borrowed(text)
    }
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
    let flat: String = printable(text).split_whitespace().collect::<Vec<_>>().join(" ");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_terminal_escapes_and_control_characters() {
        let hostile = "Title\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31mred\u{7f}\u{202e}txt.exe\u{0}";
        assert_eq!(printable(hostile), "Title]0;owned[2J31mredtxt.exe");
        assert!(matches!(printable("plain\ttext\nwith é and 中文"), Cow::Borrowed("plain\ttext\nwith é and 中文")));
    }

    #[test]
    fn tables_and_excerpts_print_no_escape_sequence() {
        let cell = "\u{1b}[31mred\u{1b}[0m\nsecond line".to_owned();
        let rendered = table(["text"], [[cell.clone()]]).to_string();
        assert!(!rendered.contains('\u{1b}'), "{rendered:?}");
        assert!(rendered.contains("[31mred[0m"), "{rendered:?}");
        assert_eq!(excerpt(&cell, 80), "[31mred[0m second line");
    }
}
