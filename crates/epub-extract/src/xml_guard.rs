//! A cheap, byte-level markup scanner used before any real parser sees a file.
//!
//! The `epub` crate's XML code and html5ever/htmd all recurse per nesting level and overflow the
//! stack on deep input; the `xml` parser inside `epub` would honour entity declarations. So every
//! container, package document, NCX and chapter first goes through [`guard`], which refuses
//! internal-subset `<!ENTITY` declarations and nesting deeper than the limit, in one linear pass
//! over the file's UTF-8 text (a UTF-16 file is transcoded first, the one allocation). The same [`Tokenizer`] also serves the few places where we read
//! attributes ourselves (container.xml, encryption.xml, the spine's NCX reference).
//!
//! The scanner is deliberately forgiving (unbalanced end tags saturate at zero, HTML void elements
//! written without `/>` do not nest) so that it never refuses a book html5ever would read shallowly.

use std::borrow::Cow;

use crate::encoding;
use crate::error::{ExtractError, Part};

/// Refuses entity declarations and nesting deeper than `max_depth`, in the file's text as UTF-8
/// (see [`encoding`](crate::encoding)). Returns that text: whatever reads the file next reads the
/// bytes that were checked.
pub(crate) fn guard<'a>(
    bytes: &'a [u8],
    part: Part,
    path: &str,
    max_depth: usize,
) -> Result<Cow<'a, [u8]>, ExtractError> {
    let text = encoding::utf8(bytes, part, path)?;
    let mut tokens = Tokenizer::new(&text);
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for token in &mut tokens {
        match token {
            Token::Start(tag) => {
                // Only HTML has void elements, and only unprefixed: an OPF `<x:meta>` nests.
                if part != Part::Chapter || !is_void(tag.name) {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
            }
            Token::End => depth = depth.saturating_sub(1),
            Token::Empty(_) => {}
        }
    }
    if tokens.saw_entity_declaration {
        return Err(ExtractError::XmlEntities { part, path: path.to_owned() });
    }
    if deepest > max_depth {
        return Err(ExtractError::TooDeep { part, path: path.to_owned(), depth: deepest, limit: max_depth });
    }
    Ok(text)
}

/// HTML elements that never have content, so `<br>` (without `/>`) does not open a level.
fn is_void(name: &[u8]) -> bool {
    const VOID: &[&[u8]] = &[
        b"area", b"base", b"br", b"col", b"embed", b"hr", b"img", b"input", b"link", b"meta", b"source", b"track",
        b"wbr",
    ];
    VOID.iter().any(|v| v.eq_ignore_ascii_case(name))
}

/// One tag seen by the [`Tokenizer`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tag<'a> {
    /// The qualified name, e.g. `enc:EncryptionMethod`.
    pub(crate) name: &'a [u8],
    /// Everything between the name and the closing `>` / `/>`.
    attributes: &'a [u8],
    /// Byte range of the whole tag in the input.
    pub(crate) span: (usize, usize),
}

impl<'a> Tag<'a> {
    /// The name without its namespace prefix.
    pub(crate) fn local_name(&self) -> &'a [u8] {
        match self.name.iter().rposition(|&b| b == b':') {
            Some(colon) => &self.name[colon + 1..],
            None => self.name,
        }
    }

    /// The value of the attribute whose local name is `wanted` (prefixes ignored), with the five
    /// predefined XML entities and numeric references decoded.
    pub(crate) fn attr(&self, wanted: &str) -> Option<String> {
        let bytes = self.attributes;
        let mut i = 0;
        while i < bytes.len() {
            while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
                i += 1;
            }
            let name_start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
                i += 1;
            }
            let name = &bytes[name_start..i];
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] != b'=' {
                if name.is_empty() {
                    i += 1;
                }
                continue;
            }
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                let start = i + 1;
                let end = bytes[start..].iter().position(|&b| b == quote).map_or(bytes.len(), |p| start + p);
                i = end + 1;
                &bytes[start..end]
            } else {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                &bytes[start..i]
            };
            let local = match name.iter().rposition(|&b| b == b':') {
                Some(colon) => &name[colon + 1..],
                None => name,
            };
            if local == wanted.as_bytes() {
                return Some(decode_entities(&String::from_utf8_lossy(value)));
            }
        }
        None
    }
}

/// Decodes `&amp; &lt; &gt; &quot; &apos;` and numeric character references; leaves anything
/// else (never expands a declared entity).
pub(crate) fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';').filter(|&s| s <= 12) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A tag event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Token<'a> {
    /// `<name …>`
    Start(Tag<'a>),
    /// `</name>`
    End,
    /// `<name …/>`
    Empty(Tag<'a>),
}

/// Iterates over the tags of XML or HTML bytes, skipping comments, CDATA, processing instructions,
/// the DOCTYPE (noting any `<!ENTITY` in it) and the content of `<script>`/`<style>`.
pub(crate) struct Tokenizer<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Set once an `<!ENTITY` declaration was seen inside a DOCTYPE.
    pub(crate) saw_entity_declaration: bool,
}

impl<'a> Tokenizer<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0, saw_entity_declaration: false }
    }

    fn skip_past(&mut self, needle: &[u8]) {
        self.pos = find(self.bytes, self.pos, needle).map_or(self.bytes.len(), |at| at + needle.len());
    }

    /// Skips a DOCTYPE, including an internal subset in brackets, honouring quotes.
    fn skip_doctype(&mut self) {
        let bytes = self.bytes;
        let mut i = self.pos;
        let mut in_subset = false;
        let mut quote: Option<u8> = None;
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None => match b {
                    b'"' | b'\'' => quote = Some(b),
                    b'[' => in_subset = true,
                    b']' => in_subset = false,
                    b'<' if in_subset && bytes[i..].starts_with(b"<!ENTITY") => self.saw_entity_declaration = true,
                    b'<' if in_subset && bytes[i..].starts_with(b"<!--") => {
                        i = find(bytes, i, b"-->").map_or(bytes.len(), |at| at + 2);
                    }
                    b'>' if !in_subset => {
                        self.pos = i + 1;
                        return;
                    }
                    _ => {}
                },
            }
            i += 1;
        }
        self.pos = bytes.len();
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let bytes = self.bytes;
        loop {
            let lt = memchr(b'<', bytes, self.pos)?;
            let rest = &bytes[lt..];
            self.pos = lt + 1;
            if rest.starts_with(b"<!--") {
                self.skip_past(b"-->");
            } else if rest.starts_with(b"<![CDATA[") {
                self.skip_past(b"]]>");
            } else if rest.starts_with(b"<?") {
                self.skip_past(b"?>");
            } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"<!DOCTYPE") {
                self.skip_doctype();
            } else if rest.starts_with(b"<!") {
                self.skip_past(b">");
            } else {
                let closing = rest.get(1) == Some(&b'/');
                let name_start = lt + 1 + usize::from(closing);
                if !bytes.get(name_start).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_' || *b >= 0x80) {
                    continue; // a stray `<` in text
                }
                let mut i = name_start;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !matches!(bytes[i], b'>' | b'/') {
                    i += 1;
                }
                let name = &bytes[name_start..i];
                let attr_start = i;
                // Find the closing `>` outside quoted attribute values.
                let mut quote: Option<u8> = None;
                while i < bytes.len() {
                    match (quote, bytes[i]) {
                        (Some(q), b) if b == q => quote = None,
                        (None, b'"' | b'\'') => quote = Some(bytes[i]),
                        (None, b'>') => break,
                        _ => {}
                    }
                    i += 1;
                }
                let end = i.min(bytes.len());
                self.pos = (end + 1).min(bytes.len());
                let self_closing = end > attr_start && bytes[end - 1] == b'/';
                let attributes = &bytes[attr_start..if self_closing { end - 1 } else { end }];
                let tag = Tag { name, attributes, span: (lt, self.pos) };
                if closing {
                    return Some(Token::End);
                }
                if self_closing {
                    return Some(Token::Empty(tag));
                }
                // Script and style content is raw text in HTML: skip to the matching end tag so a
                // `<` inside it is not taken for markup.
                let local = tag.local_name();
                if local.eq_ignore_ascii_case(b"script") || local.eq_ignore_ascii_case(b"style") {
                    let mut close = b"</".to_vec();
                    close.extend_from_slice(name);
                    if let Some(at) = find_ignore_case(bytes, self.pos, &close) {
                        self.pos = at;
                    }
                }
                return Some(Token::Start(tag));
            }
        }
    }
}

fn memchr(needle: u8, haystack: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.iter().position(|&b| b == needle).map(|p| from + p)
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while let Some(candidate) = memchr(first, haystack, at) {
        if haystack[candidate..].starts_with(needle) {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

fn find_ignore_case(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let mut at = from;
    while let Some(candidate) = memchr(b'<', haystack, at) {
        if haystack.len() - candidate >= needle.len()
            && haystack[candidate..candidate + needle.len()].eq_ignore_ascii_case(needle)
        {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(input: &str, limit: usize) -> Option<usize> {
        match guard(input.as_bytes(), Part::Chapter, "x", limit) {
            Err(ExtractError::TooDeep { depth, .. }) => Some(depth),
            Err(other) => panic!("unexpected {other}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn counts_nesting_and_ignores_void_self_closing_and_comments() {
        assert_eq!(depth_error("<a><b><c/><br><img src='>'/></b></a>", 1), Some(2));
        assert_eq!(depth_error("<a><!-- <b><b><b> --><![CDATA[<b><b>]]></a>", 1), None);
        assert_eq!(depth_error("<a><script>if (a<b && c<d) {}</script></a>", 2), None);
    }

    #[test]
    fn refuses_entity_declarations_but_not_plain_doctypes() {
        let plain = r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "x.dtd"><html/>"#;
        assert!(guard(plain.as_bytes(), Part::Chapter, "x", 10).is_ok());
        let bomb = r#"<!DOCTYPE x [ <!ENTITY a "]>"> ]><x>&a;</x>"#;
        assert!(matches!(
            guard(bomb.as_bytes(), Part::Package, "p.opf", 10),
            Err(ExtractError::XmlEntities { part: Part::Package, .. })
        ));
    }

    #[test]
    fn reads_attributes_with_prefixes_and_entities() {
        let mut tokens = Tokenizer::new(br#"<enc:CipherReference URI="a%20b&amp;c.xhtml" x:y='1'/>"#);
        let Some(Token::Empty(tag)) = tokens.next() else { panic!("expected an empty tag") };
        assert_eq!(tag.local_name(), b"CipherReference");
        assert_eq!(tag.attr("URI").as_deref(), Some("a%20b&c.xhtml"));
        assert_eq!(tag.attr("y").as_deref(), Some("1"));
        assert_eq!(tag.attr("z"), None);
    }

    #[test]
    fn decodes_only_predefined_and_numeric_entities() {
        assert_eq!(decode_entities("a &lt;b&gt; &#233;&#x41; &lol; & x"), "a <b> éA &lol; & x");
    }
}
