//! Cutting the markdown into segments before text-splitter sees it.
//!
//! text-splitter is quadratic in the length of a stretch of text that offers no break
//! opportunity at a high semantic level (a 1 MiB word takes ~25 s, a 2 MB paragraph without
//! sentence punctuation ~24 s). So the splitter is never given the whole document: it is run on
//! segments, which are byte ranges of the original markdown, cut
//!
//! 1. before every heading of level [`SECTION_LEVEL`] or shallower, so that no chunk spans two
//!    such sections;
//! 2. every [`segment_budget`] bytes at the latest (preferably at a blank line, else at a line
//!    break, else at whitespace), which bounds the splitter's work per segment;
//! 3. around and inside every run of non-whitespace longer than `max_chars` characters, which is
//!    cut into pieces of `max_chars` characters (the last one may be shorter).
//!
//! Segments are contiguous, in order, and cover the markdown, so offsets inside a segment map
//! back to the original by adding the segment's start.

use std::ops::Range;

use crate::headings::Heading;

/// Headings of this level or shallower (`#` and `##`) always start a new chunk.
pub(crate) const SECTION_LEVEL: u8 = 2;

/// The largest segment handed to text-splitter, in bytes.
///
/// The splitter's cost on a segment without good break opportunities grows with the square of
/// its length divided by the chunk size, so the budget scales with `max_chars`; the total cost is
/// then linear in the document length. Ordinary prose has paragraph breaks far more often than
/// this, so the cut almost always falls on a blank line and does not change the chunks.
pub(crate) fn segment_budget(max_chars: usize) -> usize {
    max_chars.saturating_mul(8).max(8 * 1024)
}

/// Cuts `markdown` into contiguous segments (see the module doc).
pub(crate) fn segments(markdown: &str, headings: &[Heading], max_chars: usize) -> Vec<Range<usize>> {
    let budget = segment_budget(max_chars);
    let mut out = Vec::new();
    let mut section_start = 0;
    let section_ends = headings
        .iter()
        .filter(|h| h.level <= SECTION_LEVEL && h.line_start > 0)
        .map(|h| h.line_start)
        .chain(std::iter::once(markdown.len()));
    for section_end in section_ends {
        if section_end <= section_start {
            continue;
        }
        for window in budget_windows(markdown, section_start..section_end, budget) {
            split_long_runs(markdown, window, max_chars, &mut out);
        }
        section_start = section_end;
    }
    out
}

/// Splits `range` into windows of at most `budget` bytes, cutting at the best break in the
/// second half of each window. Each byte is searched at most once, so this is linear.
fn budget_windows(markdown: &str, range: Range<usize>, budget: usize) -> Vec<Range<usize>> {
    let mut windows = Vec::new();
    let mut pos = range.start;
    while range.end - pos > budget {
        let hard = markdown.floor_char_boundary(pos + budget);
        let search_from = markdown.ceil_char_boundary(pos + budget / 2).min(hard);
        let region = &markdown[search_from..hard];
        let cut = if let Some(i) = region.rfind("\n\n") {
            search_from + i + 2
        } else if let Some(i) = region.rfind('\n') {
            search_from + i + 1
        } else if let Some((i, c)) = region.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
            search_from + i + c.len_utf8()
        } else {
            hard
        };
        // `hard` is past `pos` unless a single character is longer than the budget, which cannot
        // happen (the budget is at least 8 KiB); the guard keeps the loop finite regardless.
        let cut = if cut > pos { cut } else { markdown.ceil_char_boundary(pos + 1) };
        windows.push(pos..cut);
        pos = cut;
    }
    if pos < range.end {
        windows.push(pos..range.end);
    }
    windows
}

/// Pushes `range` onto `out`, cut before and inside every run of non-whitespace longer than
/// `max_chars` characters, so that each piece of such a run but the last is exactly `max_chars`
/// characters, and cut again where the run ends.
fn split_long_runs(markdown: &str, range: Range<usize>, max_chars: usize, out: &mut Vec<Range<usize>>) {
    let mut seg_start = range.start;
    let mut run_start = range.start;
    let mut run_chars = 0usize;
    let mut run_was_cut = false;
    for (i, c) in markdown[range.clone()].char_indices() {
        let i = range.start + i;
        if c.is_whitespace() {
            if run_was_cut {
                // The last piece of a cut run is a segment of its own too, so the prose after
                // it is chunked as if the run were not there.
                out.push(seg_start..i);
                seg_start = i;
                run_was_cut = false;
            }
            run_chars = 0;
            continue;
        }
        if run_chars == 0 {
            run_start = i;
            run_was_cut = false;
        } else if run_chars == max_chars {
            // This character would make the run longer than a chunk may be.
            if !run_was_cut && run_start > seg_start {
                out.push(seg_start..run_start);
                seg_start = run_start;
            }
            out.push(seg_start..i);
            seg_start = i;
            run_was_cut = true;
            run_chars = 0;
        }
        run_chars += 1;
    }
    if seg_start < range.end {
        out.push(seg_start..range.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headings::scan;

    fn pieces(markdown: &str, max_chars: usize) -> Vec<&str> {
        let segs = segments(markdown, &scan(markdown), max_chars);
        // Contiguous and covering.
        let mut pos = 0;
        for s in &segs {
            assert_eq!(s.start, pos);
            assert!(s.end > s.start);
            pos = s.end;
        }
        assert_eq!(pos, markdown.len());
        segs.into_iter().map(|r| &markdown[r]).collect()
    }

    #[test]
    fn cuts_before_top_level_headings_only() {
        let md = "intro\n# A\ntext\n### A.1\nmore\n## B\nend";
        assert_eq!(pieces(md, 100), ["intro\n", "# A\ntext\n### A.1\nmore\n", "## B\nend"]);
    }

    #[test]
    fn cuts_long_runs_into_max_pieces() {
        assert_eq!(pieces("ab abcdefg hi", 3), ["ab ", "abc", "def", "g", " hi"]);
        assert_eq!(pieces("abcdef", 3), ["abc", "def"]);
        assert_eq!(pieces("abc def", 3), ["abc def"]);
        assert_eq!(pieces("éééé x", 2), ["éé", "éé", " x"]);
    }

    #[test]
    fn budget_prefers_blank_lines() {
        let para = format!("{}\n\n", "word ".repeat(1000));
        let md = para.repeat(10);
        let segs = pieces(&md, 100);
        assert!(segs.len() > 1);
        for s in &segs {
            assert!(s.len() <= segment_budget(100));
            assert!(s.ends_with("\n\n"));
        }
    }
}
