//! Markdown clean-up after htmd: undo its defensive escapes, trim line ends, collapse blank lines
//! and hard-split runs without whitespace.
//!
//! The markdown feeds a chunker and an embedding model, not a renderer, so literal text matters
//! more than round-tripping: `2\*3` and `1\.` are noise to both. The one escape we keep is `\#` at
//! the start of a line, so that a paragraph starting with "# " never becomes a fake heading in the
//! chunker's heading paths. Runs longer than the limit get a newline inserted because the
//! downstream splitter is quadratic on long runs without break opportunities.

/// Characters htmd escapes with a backslash in text nodes.
const ESCAPABLE: &[char] = &['\\', '*', '_', '`', '[', ']', '.', '#', '>', '-', '+', '=', '~', '<'];

/// Applies every clean-up step to the markdown of one chapter.
pub(crate) fn tidy(markdown: &str, max_run: usize) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut in_fence = false;
    let mut blank_pending = false;
    for line in markdown.lines() {
        let trimmed = line.trim_end();
        let fence = trimmed.trim_start().starts_with("```") || trimmed.trim_start().starts_with("~~~");
        if trimmed.trim_start().is_empty() && !in_fence {
            blank_pending = !out.is_empty();
            continue;
        }
        if blank_pending {
            out.push('\n');
            blank_pending = false;
        }
        if in_fence || fence {
            out.push_str(trimmed);
        } else {
            unescape_into(trimmed, &mut out);
        }
        out.push('\n');
        if fence {
            in_fence = !in_fence;
        }
    }
    split_long_runs(out.trim_end(), max_run)
}

fn unescape_into(line: &str, out: &mut String) {
    let mut chars = line.chars().peekable();
    let mut at_line_start = true;
    let mut in_code = false;
    while let Some(c) = chars.next() {
        if c == '`' {
            in_code = !in_code;
        } else if c == '\\'
            && !in_code
            && let Some(&next) = chars.peek()
            && ESCAPABLE.contains(&next)
            && !(next == '#' && at_line_start)
        {
            out.push(next);
            chars.next();
            at_line_start = false;
            continue;
        }
        at_line_start &= c.is_whitespace();
        out.push(c);
    }
}

/// Inserts a newline into every run of more than `max_run` non-whitespace characters.
pub(crate) fn split_long_runs(text: &str, max_run: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / max_run.max(1));
    let mut run = 0usize;
    for c in text.chars() {
        if c.is_whitespace() {
            run = 0;
        } else {
            if run >= max_run {
                out.push('\n');
                run = 0;
            }
            run += 1;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_but_keeps_heading_guard_and_code() {
        assert_eq!(tidy(r"2\*3 and 1\. and a\_b \[x\]", 2000), "2*3 and 1. and a_b [x]");
        assert_eq!(tidy(r"\# not a heading", 2000), r"\# not a heading");
        assert_eq!(tidy("```\na\\*b\n```", 2000), "```\na\\*b\n```");
        assert_eq!(tidy(r"back\\slash", 2000), r"back\slash");
    }

    #[test]
    fn collapses_blank_lines_and_trailing_spaces() {
        assert_eq!(tidy("\n\na  \n\n\n\n  \nb\n\n", 2000), "a\n\nb");
    }

    #[test]
    fn splits_long_runs() {
        let out = split_long_runs(&"x".repeat(25), 10);
        assert_eq!(out, format!("{}\n{}\n{}", "x".repeat(10), "x".repeat(10), "x".repeat(5)));
        assert_eq!(split_long_runs("ab cd", 2), "ab cd");
        let multibyte = split_long_runs(&"é".repeat(5), 2);
        assert_eq!(multibyte, "éé\néé\né");
    }
}
