//! A linear scan for ATX headings (`#` .. `######`) that skips fenced code blocks.
//!
//! The scan is deliberately small and independent of text-splitter's markdown parser: it only
//! needs to know where headings start and what they say, so that every chunk can be given the
//! stack of headings in force at its start.

/// One ATX heading line found in the markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heading {
    /// Byte offset of the start of the heading's line.
    pub(crate) line_start: usize,
    /// 1 for `#`, up to 6 for `######`.
    pub(crate) level: u8,
    /// The heading text without the opening and closing `#` sequences.
    pub(crate) title: String,
}

/// Returns every ATX heading outside fenced code blocks, in document order.
pub(crate) fn scan(markdown: &str) -> Vec<Heading> {
    let mut headings = Vec::new();
    // The open fence, if any: its character (` or ~) and its length.
    let mut fence: Option<(char, usize)> = None;
    let mut line_start = 0;
    for raw in markdown.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\n', '\r']);
        let start = line_start;
        line_start += raw.len();
        if let Some((fence_char, fence_len)) = fence {
            if closes_fence(line, fence_char, fence_len) {
                fence = None;
            }
            continue;
        }
        if let Some(open) = opens_fence(line) {
            fence = Some(open);
            continue;
        }
        if let Some((level, title)) = parse_atx(line) {
            headings.push(Heading { line_start: start, level, title });
        }
    }
    headings
}

/// Strips up to three spaces of indentation, the CommonMark limit for headings and fences.
fn strip_indent(line: &str) -> Option<&str> {
    let spaces = line.bytes().take_while(|&b| b == b' ').count();
    (spaces <= 3).then(|| &line[spaces..])
}

fn opens_fence(line: &str) -> Option<(char, usize)> {
    let rest = strip_indent(line)?;
    let fence_char = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.chars().take_while(|&c| c == fence_char).count();
    // A backtick fence's info string may not contain backticks.
    if len < 3 || (fence_char == '`' && rest[len..].contains('`')) {
        return None;
    }
    Some((fence_char, len))
}

fn closes_fence(line: &str, fence_char: char, fence_len: usize) -> bool {
    let Some(rest) = strip_indent(line) else {
        return false;
    };
    let len = rest.chars().take_while(|&c| c == fence_char).count();
    len >= fence_len && rest[len * fence_char.len_utf8()..].trim().is_empty()
}

/// Parses one line as an ATX heading: returns its level and its title.
pub(crate) fn parse_atx(line: &str) -> Option<(u8, String)> {
    let rest = strip_indent(line)?;
    let hashes = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let after = &rest[hashes..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let content = after.trim_matches([' ', '\t']);
    // An optional closing sequence of `#`s counts only when preceded by a space or tab
    // (`# C#` is about C#), or when it is the whole content.
    let without_closing = content.trim_end_matches('#');
    let title = if without_closing.is_empty() {
        ""
    } else if without_closing.ends_with([' ', '\t']) {
        without_closing.trim_end_matches([' ', '\t'])
    } else {
        content
    };
    // `hashes` is at most 6, so the conversion cannot fail.
    Some((u8::try_from(hashes).unwrap_or(6), title.to_owned()))
}

/// The heading stack, advanced monotonically through the document.
pub(crate) struct HeadingStack<'h> {
    headings: &'h [Heading],
    next: usize,
    stack: Vec<(u8, &'h str)>,
}

impl<'h> HeadingStack<'h> {
    pub(crate) fn new(headings: &'h [Heading]) -> Self {
        Self { headings, next: 0, stack: Vec::new() }
    }

    /// Applies every heading whose line starts at or before `byte_offset` and returns the path.
    ///
    /// Offsets must not decrease between calls; the whole walk is linear in the number of headings.
    pub(crate) fn path_at(&mut self, byte_offset: usize) -> Vec<String> {
        while let Some(heading) = self.headings.get(self.next) {
            if heading.line_start > byte_offset {
                break;
            }
            self.next += 1;
            // A heading closes every open section at its own level or deeper.
            while self.stack.last().is_some_and(|(level, _)| *level >= heading.level) {
                self.stack.pop();
            }
            // An empty heading (`#` alone) closes sections but names nothing.
            if !heading.title.is_empty() {
                self.stack.push((heading.level, &heading.title));
            }
        }
        self.stack.iter().map(|(_, title)| (*title).to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<(u8, &str)>) {
        assert_eq!(parse_atx(line), expected.map(|(l, t)| (l, t.to_owned())), "line {line:?}");
    }

    #[test]
    fn atx_forms() {
        check("# Title", Some((1, "Title")));
        check("###   Spaced   ", Some((3, "Spaced")));
        check("## Closed ##", Some((2, "Closed")));
        check("# C#", Some((1, "C#")));
        check("#", Some((1, "")));
        check("### ###", Some((3, "")));
        check("   # three spaces", Some((1, "three spaces")));
        check("    # four spaces is code", None);
        check("#hashtag", None);
        check("####### seven", None);
        check("###### six", Some((6, "six")));
    }

    #[test]
    fn fenced_code_hides_headings() {
        let md = "# A\n```\n# not a heading\n```\n## B\n~~~~\n# no\n~~~\n# still no\n~~~~\n# C\n";
        let titles: Vec<_> = scan(md).into_iter().map(|h| h.title).collect();
        assert_eq!(titles, ["A", "B", "C"]);
    }

    #[test]
    fn stack_replaces_same_and_deeper_levels() {
        let md = "# A\n### A.x\n## B\ntext\n# C\n";
        let headings = scan(md);
        let mut stack = HeadingStack::new(&headings);
        assert_eq!(stack.path_at(md.find("## B").unwrap() - 1), ["A", "A.x"]);
        assert_eq!(stack.path_at(md.find("text").unwrap()), ["A", "B"]);
        assert_eq!(stack.path_at(md.len()), ["C"]);
    }
}
