//! XHTML chapter → markdown, with htmd (html5ever underneath, so tolerant of broken markup).
//!
//! htmd's defaults are tuned for web pages; for book text we change what DEPENDENCY-NOTES lists:
//! the `<head>` (title, styles, scripts) is dropped instead of emitted as text; self-closing
//! non-void tags such as `<title/>` (valid XHTML, but an HTML parser treats them as open tags and
//! swallows the body) are expanded before parsing; links keep their text and lose their target
//! (targets are file names inside the book: noise for chunking and embedding); footnote
//! references and back-links are dropped while the footnote text is kept; `<br/>` becomes a plain
//! newline; images keep only their alt text; `<nav>` (tables of contents, landmarks) is dropped.
//! Headings stay ATX (`#`), which the chunker relies on for heading paths.

use htmd::element_handler::{HandlerResult, Handlers};
use htmd::options::{BulletListMarker, Options};
use htmd::{Element, HtmlToMarkdown};

use crate::xml_guard::{Token, Tokenizer};

/// A converter configured for book chapters. Build once per book.
pub(crate) fn converter() -> HtmlToMarkdown {
    let options = Options {
        bullet_list_marker: BulletListMarker::Dash,
        ul_bullet_spacing: 1,
        ol_number_spacing: 1,
        ..Options::default()
    };
    HtmlToMarkdown::builder()
        .options(options)
        .skip_tags(vec!["head", "title", "style", "script", "noscript", "template", "nav", "button"])
        .add_handler(vec!["a"], anchor)
        .add_handler(vec!["br"], |_: &dyn Handlers, _: Element| Some(HandlerResult::from("\n")))
        .add_handler(vec!["img"], image)
        .build()
}

/// Converts one chapter. The input must have passed the nesting guard.
pub(crate) fn to_markdown(converter: &HtmlToMarkdown, xhtml: &str) -> String {
    let html = expand_self_closing(xhtml);
    // htmd's convert never fails (the io::Result is for API symmetry); an error yields no text.
    converter.convert(&html).unwrap_or_default()
}

fn attr<'a>(element: &'a Element<'_>, name: &str) -> Option<&'a str> {
    element.attrs.iter().find(|a| &*a.name.local == name).map(|a| &*a.value)
}

/// Whether an element is a footnote reference or a back-link, by EPUB 3 or DPUB-ARIA semantics.
fn is_note_link(element: &Element<'_>) -> bool {
    let epub_type = attr(element, "epub:type").unwrap_or("");
    let role = attr(element, "role").unwrap_or("");
    epub_type.split_whitespace().any(|t| t == "noteref" || t == "backlink")
        || role.split_whitespace().any(|r| r == "doc-noteref" || r == "doc-backlink")
}

fn anchor(handlers: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    if is_note_link(&element) {
        return None;
    }
    Some(handlers.walk_children(element.node))
}

fn image(_: &dyn Handlers, element: Element) -> Option<HandlerResult> {
    let alt = attr(&element, "alt").map(str::trim).filter(|a| !a.is_empty())?;
    Some(HandlerResult::from(alt.to_owned()))
}

/// Rewrites `<tag …/>` as `<tag …></tag>` for every non-void element, as an XML parser reads it.
fn expand_self_closing(xhtml: &str) -> String {
    const VOID: &[&str] =
        &["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"];
    let bytes = xhtml.as_bytes();
    let mut out = String::with_capacity(xhtml.len() + 64);
    let mut copied = 0;
    for token in Tokenizer::new(bytes) {
        let Token::Empty(tag) = token else { continue };
        let name = String::from_utf8_lossy(tag.name);
        let local = String::from_utf8_lossy(tag.local_name()).to_ascii_lowercase();
        if VOID.contains(&local.as_str()) {
            continue;
        }
        let (start, end) = tag.span;
        // The tag ends with "/>"; spans fall on ASCII bytes, hence on char boundaries.
        let Some(inner) = xhtml.get(start..end).and_then(|t| t.strip_suffix("/>")) else { continue };
        out.push_str(&xhtml[copied..start]);
        out.push_str(inner);
        out.push_str("></");
        out.push_str(&name);
        out.push('>');
        copied = end;
    }
    out.push_str(&xhtml[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(xhtml: &str, expected: &str) {
        let markdown = crate::text::tidy(&to_markdown(&converter(), xhtml), 2000);
        assert_eq!(markdown, expected, "\n--- got ---\n{markdown}\n");
    }

    #[test]
    fn self_closing_title_does_not_swallow_the_body() {
        check("<html><head><title/></head><body><p>Body text.</p></body></html>", "Body text.");
    }

    #[test]
    fn head_style_and_script_are_dropped() {
        check(
            "<html><head><title>T</title><style>p{}</style><script>x()</script></head><body><h1>Head</h1><p>Text</p></body></html>",
            "# Head\n\nText",
        );
    }

    #[test]
    fn noterefs_are_dropped_and_links_keep_their_text() {
        check(
            r##"<p>See<a epub:type="noteref" href="n.xhtml#n1">1</a> the <a href="ch2.xhtml">next chapter</a>.</p>"##,
            "See the next chapter.",
        );
    }

    #[test]
    fn br_leaves_no_stray_spaces() {
        check("<p>one<br/>two</p>", "one\ntwo");
    }

    #[test]
    fn images_keep_alt_text_only() {
        check(r#"<p><img src="a.png" alt="A lamp"/></p><p><img src="b.png"/></p>"#, "A lamp");
    }

    #[test]
    fn expands_self_closing_non_void_tags_only() {
        assert_eq!(expand_self_closing(r#"<a id="x"/><br/><p/>"#), r#"<a id="x"></a><br/><p></p>"#);
    }
}
