//! The one form every check reads: UTF-8.
//!
//! `xml_guard` scans bytes for ASCII markup (`<`, `<!ENTITY`), which is sound only where ASCII
//! means ASCII. A file that opens with a UTF-16 byte-order mark is read as UTF-16 by the `epub`
//! crate's XML parser and by the chapter conversion, yet scanned as it is it shows no markup at
//! all, so an entity bomb or ten thousand nested elements would pass the guard. Every file is
//! therefore turned into UTF-8 first; the guard scans that, and the conversion reads the very
//! bytes the guard passed. UTF-32, which nothing downstream decodes, is refused by name.

use std::borrow::Cow;

use crate::error::{ExtractError, Part};

/// The text of a file as UTF-8: as it is, without a UTF-8 byte-order mark, or transcoded from
/// UTF-16 when a byte-order mark says so (unpaired surrogates become U+FFFD, as invalid UTF-8
/// does later). Refuses UTF-32.
pub(crate) fn utf8<'a>(bytes: &'a [u8], part: Part, path: &str) -> Result<Cow<'a, [u8]>, ExtractError> {
    let unsupported = |encoding: &str| ExtractError::UnsupportedEncoding {
        part,
        path: path.to_owned(),
        encoding: encoding.to_owned(),
    };
    // UTF-32LE's mark starts with UTF-16LE's, so it is looked for first.
    match bytes {
        [0xFF, 0xFE, 0x00, 0x00, ..] => Err(unsupported("UTF-32LE")),
        [0x00, 0x00, 0xFE, 0xFF, ..] => Err(unsupported("UTF-32BE")),
        [0xEF, 0xBB, 0xBF, rest @ ..] => Ok(Cow::Borrowed(rest)),
        [0xFF, 0xFE, rest @ ..] => Ok(Cow::Owned(utf16(rest, u16::from_le_bytes).into_bytes())),
        [0xFE, 0xFF, rest @ ..] => Ok(Cow::Owned(utf16(rest, u16::from_be_bytes).into_bytes())),
        _ => Ok(Cow::Borrowed(bytes)),
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units: Vec<u16> = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]])).collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(text: &str) -> Vec<u8> {
        [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect()
    }

    #[test]
    fn utf16_with_a_byte_order_mark_becomes_utf8() {
        let be: Vec<u8> =
            [0xFE, 0xFF].into_iter().chain("<p>é</p>".encode_utf16().flat_map(u16::to_be_bytes)).collect();
        assert_eq!(utf8(&utf16le("<p>é</p>"), Part::Chapter, "c").unwrap().as_ref(), "<p>é</p>".as_bytes());
        assert_eq!(utf8(&be, Part::Chapter, "c").unwrap().as_ref(), "<p>é</p>".as_bytes());
    }

    #[test]
    fn utf8_passes_through_without_its_byte_order_mark() {
        assert!(matches!(utf8(b"<p/>", Part::Ncx, "n").unwrap(), Cow::Borrowed(b"<p/>")));
        assert_eq!(utf8(b"\xEF\xBB\xBF<p/>", Part::Ncx, "n").unwrap().as_ref(), b"<p/>");
    }

    #[test]
    fn utf32_is_refused_by_name() {
        let error = utf8(b"\xFF\xFE\x00\x00<\x00\x00\x00", Part::Package, "p.opf").unwrap_err();
        assert_eq!(
            error,
            ExtractError::UnsupportedEncoding {
                part: Part::Package,
                path: "p.opf".into(),
                encoding: "UTF-32LE".into()
            }
        );
        assert!(matches!(
            utf8(b"\x00\x00\xFE\xFF\x00\x00\x00<", Part::Chapter, "c"),
            Err(ExtractError::UnsupportedEncoding { .. })
        ));
    }
}
