//! Path helpers for names inside the archive: percent-decoding and lexical normalisation.

/// Resolves `.` and `..` lexically. `None` when the path is absolute or climbs above the root,
/// i.e. when it would escape the container.
pub(crate) fn normalize(path: &str) -> Option<String> {
    if path.starts_with('/') || path.starts_with('\\') || path.as_bytes().get(1) == Some(&b':') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Decodes `%XX` escapes (two hex digits, nothing else); anything else stays as it is, and
/// invalid UTF-8 is replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_detects_escapes() {
        assert_eq!(normalize("OEBPS/./text/../ch1.xhtml").as_deref(), Some("OEBPS/ch1.xhtml"));
        assert_eq!(normalize("OEBPS/../ch1.xhtml").as_deref(), Some("ch1.xhtml"));
        assert_eq!(normalize("OEBPS/../../evil.xhtml"), None);
        assert_eq!(normalize("/etc/passwd"), None);
        assert_eq!(normalize("C:/x"), None);
    }

    #[test]
    fn percent_decodes() {
        assert_eq!(percent_decode("a%20b%C3%A9%zz"), "a bé%zz");
        // A sign is no hex digit: `u8::from_str_radix` would read "+5" as 5.
        assert_eq!(percent_decode("ch%+5.xhtml"), "ch%+5.xhtml");
        assert_eq!(percent_decode("%-1%4"), "%-1%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
