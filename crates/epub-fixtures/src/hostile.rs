//! Hostile and broken files for the extractor's defences. Each builder documents what a careful
//! reader must do with it; the extractor's tests pin the typed error (or acceptance) for each.

use crate::package::{Entry, book_entries, chapter_document, package_document, zip_entries};
use crate::rawzip::{self, RawData, RawEntry};
use crate::samples::sample_book;
use crate::spec::{Block, BookSpec, ChapterSpec};

fn small_spec(title: &str, blocks: Vec<Block>) -> BookSpec {
    BookSpec::new(title, "Mallory Hostile", "en", vec![ChapterSpec::new("ch1.xhtml", "Chapter One", blocks)])
}

fn text_spec(title: &str) -> BookSpec {
    small_spec(title, vec![Block::Paragraph("Ordinary, readable text.".into())])
}

fn replace(entries: &mut [Entry], name: &str, data: impl Into<Vec<u8>>) {
    let entry = entries.iter_mut().find(|e| e.name == name).expect("fixture entry exists");
    entry.data = data.into();
}

/// Inflated size of [`zip_bomb`]'s chapter, in MiB (well past the default 128 MiB per entry).
pub const ZIP_BOMB_MIB: u32 = 1024;

/// A book whose only chapter, `OEBPS/ch1.xhtml`, inflates to [`ZIP_BOMB_MIB`] MiB of zeros
/// (declared honestly in the zip headers) from about 1 MiB of compressed data.
pub fn zip_bomb() -> Vec<u8> {
    zip_bomb_of(ZIP_BOMB_MIB)
}

/// Like [`zip_bomb`] with a chosen inflated size in MiB. At 64 MiB it stays under the default
/// per-entry limit and is caught by the compression-ratio check alone.
pub fn zip_bomb_of(mebibytes: u32) -> Vec<u8> {
    let (compressed, crc) = rawzip::deflated_zeros(mebibytes);
    let entries = book_entries(&text_spec("Zip Bomb"))
        .into_iter()
        .map(|entry| {
            let data = if entry.name == "mimetype" {
                RawData::Stored(entry.data)
            } else if entry.name == "OEBPS/ch1.xhtml" {
                RawData::PreDeflated { compressed: compressed.clone(), crc, size: mebibytes << 20 }
            } else {
                RawData::Deflate(entry.data)
            };
            RawEntry { name: entry.name, data }
        })
        .collect();
    rawzip::write(entries)
}

/// The classic "billion laughs" internal DTD subset: ten levels of ten-fold entity references.
pub const BILLION_LAUGHS_DTD: &str = r#"<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"#;

/// A package document (`OEBPS/content.opf`) with a billion-laughs DTD and `&lol9;` in its title.
pub fn billion_laughs_opf() -> Vec<u8> {
    let spec = text_spec("Billion Laughs");
    let opf = package_document(&spec)
        .replacen("?>\n", &format!("?>\n{BILLION_LAUGHS_DTD}"), 1)
        .replace("<dc:title>Billion Laughs</dc:title>", "<dc:title>&lol9;</dc:title>");
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/content.opf", opf);
    zip_entries(&entries)
}

/// A chapter (`OEBPS/ch1.xhtml`) with a billion-laughs DTD and `&lol9;` in a paragraph.
pub fn billion_laughs_chapter() -> Vec<u8> {
    let spec = small_spec("Billion Laughs Chapter", vec![Block::Paragraph("Laugh: &lol9;".into())]);
    let chapter = chapter_document(&spec, &spec.chapters[0]).replace("<!DOCTYPE html>\n", BILLION_LAUGHS_DTD);
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/ch1.xhtml", chapter);
    zip_entries(&entries)
}

/// A readable book with an extra, unreferenced entry named `../../evil.xhtml`. Nothing refers to
/// it, so a reader that never extracts to disk can ignore it and read the book.
pub fn path_traversal_entry() -> Vec<u8> {
    let mut entries = book_entries(&text_spec("Path Traversal Entry"));
    entries.push(Entry::new("../../evil.xhtml", "<html><body><p>escaped</p></body></html>"));
    zip_entries(&entries)
}

/// A book whose only spine item's href climbs out of the container (`../../evil.xhtml`), with an
/// entry of exactly the name the naive join produces (`OEBPS/../../evil.xhtml`).
pub fn path_traversal_spine() -> Vec<u8> {
    let spec = text_spec("Path Traversal Spine");
    let opf = package_document(&spec).replace("href=\"ch1.xhtml\"", "href=\"../../evil.xhtml\"");
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/content.opf", opf);
    let chapter = entries.iter().find(|e| e.name == "OEBPS/ch1.xhtml").expect("chapter").data.clone();
    entries.push(Entry::new("OEBPS/../../evil.xhtml", chapter));
    zip_entries(&entries)
}

/// The sample book cut in half: no end-of-central-directory record.
pub fn truncated() -> Vec<u8> {
    let mut bytes = sample_book();
    bytes.truncate(bytes.len() / 2);
    bytes
}

/// Not a zip at all: the start of a PDF.
pub fn not_a_zip() -> Vec<u8> {
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec()
}

/// A book whose `<spine>` has no itemref.
pub fn empty_spine() -> Vec<u8> {
    let spec = text_spec("Empty Spine");
    let opf = package_document(&spec);
    let start = opf.find("<spine>").expect("spine start") + "<spine>".len();
    let end = opf.find("</spine>").expect("spine end");
    let opf = format!("{}\n  {}", &opf[..start], &opf[end..]);
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/content.opf", opf);
    zip_entries(&entries)
}

/// The algorithm named for the DRM fixture: AES-128-CBC from XML Encryption.
pub const DRM_ALGORITHM: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";

fn encryption_xml(algorithm: &str, uri: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" xmlns:enc="http://www.w3.org/2001/04/xmlenc#">
  <enc:EncryptedData>
    <enc:EncryptionMethod Algorithm="{algorithm}"/>
    <enc:CipherData><enc:CipherReference URI="{uri}"/></enc:CipherData>
  </enc:EncryptedData>
</encryption>
"#
    )
}

/// A book whose chapter `OEBPS/ch1.xhtml` is listed in `META-INF/encryption.xml` with
/// [`DRM_ALGORITHM`] and holds ciphertext-like bytes.
pub fn drm_encrypted() -> Vec<u8> {
    let mut entries = book_entries(&text_spec("Encrypted"));
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    replace(&mut entries, "OEBPS/ch1.xhtml", garbage);
    entries.insert(2, Entry::new("META-INF/encryption.xml", encryption_xml(DRM_ALGORITHM, "OEBPS/ch1.xhtml")));
    zip_entries(&entries)
}

/// A readable book with an IDPF-obfuscated font (`http://www.idpf.org/2008/embedding`): the text
/// is in the clear and must be accepted.
pub fn font_obfuscated() -> Vec<u8> {
    let spec = text_spec("Obfuscated Font");
    let opf = package_document(&spec).replace(
        "  </manifest>",
        "    <item id=\"font\" href=\"fonts/serif.otf\" media-type=\"font/otf\"/>\n  </manifest>",
    );
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/content.opf", opf);
    entries.insert(
        2,
        Entry::new(
            "META-INF/encryption.xml",
            encryption_xml("http://www.idpf.org/2008/embedding", "OEBPS/fonts/serif.otf"),
        ),
    );
    entries.push(Entry::new("OEBPS/fonts/serif.otf", vec![0x5Au8; 2048]));
    zip_entries(&entries)
}

/// A chapter with `levels` nested `<div>`s around a paragraph (100 000 is the usual test).
pub fn deep_nesting(levels: usize) -> Vec<u8> {
    let raw = format!("{}<p>deep</p>{}", "<div>".repeat(levels), "</div>".repeat(levels));
    zip_entries(&book_entries(&small_spec("Deep Nesting", vec![Block::Raw(raw)])))
}

/// A package document nested `levels` deep inside `<metadata>` (the `epub` crate recurses on it).
pub fn deep_opf(levels: usize) -> Vec<u8> {
    let spec = text_spec("Deep Package");
    let nested = format!("{}{}", "<x:meta xmlns:x=\"urn:x\">".repeat(levels), "</x:meta>".repeat(levels));
    let opf = package_document(&spec).replace("  </metadata>", &format!("{nested}\n  </metadata>"));
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/content.opf", opf);
    zip_entries(&entries)
}

/// Length of [`long_run`]'s unbroken run of letters.
pub const LONG_RUN_BYTES: usize = 2 * 1024 * 1024;

/// A chapter holding one paragraph of [`LONG_RUN_BYTES`] letters with no whitespace.
pub fn long_run() -> Vec<u8> {
    let run = "abcdefghij".repeat(LONG_RUN_BYTES / 10);
    zip_entries(&book_entries(&small_spec("Long Run", vec![Block::Paragraph(run)])))
}

/// A book whose chapters hold no text: an empty paragraph, an image without alt text, whitespace.
pub fn no_text() -> Vec<u8> {
    let mut chapter = ChapterSpec::new(
        "ch1.xhtml",
        "",
        vec![Block::Raw("<p>   </p><div><img src=\"x.png\" alt=\"\"/></div>\n".into())],
    );
    chapter.blocks.remove(0); // no `<h1>` either
    let spec = BookSpec::new("No Text", "Mallory Hostile", "en", vec![chapter]);
    zip_entries(&book_entries(&spec))
}

/// A `container.xml` whose rootfile has `full-path=""` (the `epub` crate panics on it).
pub fn container_full_path_empty() -> Vec<u8> {
    let mut entries = book_entries(&text_spec("Empty Full Path"));
    let container = crate::package::CONTAINER_XML.replace("OEBPS/content.opf", "");
    replace(&mut entries, "META-INF/container.xml", container);
    zip_entries(&entries)
}

/// A book without `META-INF/container.xml`.
pub fn missing_container() -> Vec<u8> {
    let mut entries = book_entries(&text_spec("No Container"));
    entries.retain(|e| e.name != "META-INF/container.xml");
    zip_entries(&entries)
}

/// A book whose spine names `OEBPS/ch2.xhtml`, which the archive lacks.
pub fn missing_spine_item() -> Vec<u8> {
    let spec = text_spec("Missing Chapter");
    let opf = package_document(&spec)
        .replace(
            "  </manifest>",
            "    <item id=\"ch2\" href=\"ch2.xhtml\" media-type=\"application/xhtml+xml\"/>\n  </manifest>",
        )
        .replace("  </spine>", "    <itemref idref=\"ch2\"/>\n  </spine>");
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/content.opf", opf);
    zip_entries(&entries)
}

/// `text` as UTF-16LE after its byte-order mark: the form in which a byte-level scan for ASCII
/// markup sees none, while the `epub` crate's XML parser and the chapter conversion read it all.
fn utf16le(text: &str) -> Vec<u8> {
    [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect()
}

/// [`billion_laughs_opf`] with its package document in UTF-16 (byte-order mark, `encoding="UTF-16"`).
pub fn utf16_billion_laughs_opf() -> Vec<u8> {
    let spec = text_spec("UTF-16 Billion Laughs");
    let opf = package_document(&spec)
        .replacen("encoding=\"UTF-8\"", "encoding=\"UTF-16\"", 1)
        .replacen("?>\n", &format!("?>\n{BILLION_LAUGHS_DTD}"), 1)
        .replace("<dc:title>UTF-16 Billion Laughs</dc:title>", "<dc:title>&lol9;</dc:title>");
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/content.opf", utf16le(&opf));
    zip_entries(&entries)
}

/// An EPUB 2 book whose package document is in UTF-16 and whose NCX (`OEBPS/toc.ncx`, UTF-8)
/// holds the billion-laughs DTD: read as bytes, the package document names no NCX to guard.
pub fn utf16_opf_with_billion_laughs_ncx() -> Vec<u8> {
    let mut spec = text_spec("UTF-16 Package, Hostile NCX");
    spec.version = crate::spec::EpubVersion::Epub2;
    let opf = package_document(&spec).replacen("encoding=\"UTF-8\"", "encoding=\"UTF-16\"", 1);
    let mut entries = book_entries(&spec);
    let ncx = String::from_utf8(entries.iter().find(|e| e.name == "OEBPS/toc.ncx").expect("an NCX").data.clone())
        .expect("the NCX is UTF-8")
        .replacen("?>\n", &format!("?>\n{BILLION_LAUGHS_DTD}"), 1)
        .replacen("<text>UTF-16 Package, Hostile NCX</text>", "<text>&lol9;</text>", 1);
    replace(&mut entries, "OEBPS/content.opf", utf16le(&opf));
    replace(&mut entries, "OEBPS/toc.ncx", ncx);
    zip_entries(&entries)
}

/// [`deep_nesting`] with the chapter in UTF-16.
pub fn utf16_deep_nesting(levels: usize) -> Vec<u8> {
    let raw = format!("{}<p>deep</p>{}", "<div>".repeat(levels), "</div>".repeat(levels));
    let spec = small_spec("UTF-16 Deep Nesting", vec![Block::Raw(raw)]);
    let chapter = utf16le(&chapter_document(&spec, &spec.chapters[0]));
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/ch1.xhtml", chapter);
    zip_entries(&entries)
}

/// A readable book whose only chapter is in UTF-16 (with a byte-order mark): legal, and read.
pub fn utf16_chapter() -> Vec<u8> {
    let spec = small_spec("UTF-16 Chapter", vec![Block::Paragraph("Ordinary text, read from UTF-16: é.".into())]);
    let chapter = utf16le(&chapter_document(&spec, &spec.chapters[0]));
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/ch1.xhtml", chapter);
    zip_entries(&entries)
}

/// A book whose only chapter is in UTF-32LE (with its byte-order mark), which no reader of the
/// book decodes.
pub fn utf32_chapter() -> Vec<u8> {
    let spec = text_spec("UTF-32 Chapter");
    let text = chapter_document(&spec, &spec.chapters[0]);
    let chapter: Vec<u8> =
        [0xFF, 0xFE, 0x00, 0x00].into_iter().chain(text.chars().flat_map(|c| u32::from(c).to_le_bytes())).collect();
    let mut entries = book_entries(&spec);
    replace(&mut entries, "OEBPS/ch1.xhtml", chapter);
    zip_entries(&entries)
}
