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

/// Decodes `%XX` escapes; invalid escapes stay as they are, invalid UTF-8 is replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(value) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16)
        {
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    }
}
