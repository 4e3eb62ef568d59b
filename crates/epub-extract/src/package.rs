//! What we read from the OCF files ourselves, where the `epub` crate is weak: the rootfile path
//! (epub panics on `full-path=""` or `"/"`), the NCX it will parse (so it can be guarded first),
//! and `META-INF/encryption.xml` (which epub ignores entirely).
//!
//! **Encryption policy.** What matters is whether the *text* is readable, so the decision is per
//! spine item, in `extract`: a spine item listed in `encryption.xml` is refused whatever the
//! algorithm (font obfuscation — `http://www.idpf.org/2008/embedding`,
//! `http://ns.adobe.com/pdf/enc#RC` — scrambles the first bytes of any file it is applied to, so
//! an obfuscated chapter is unreadable too). Resources outside the spine (fonts, images) may be
//! encrypted or obfuscated with any algorithm: the book's text is unaffected, so it is accepted.
//!
//! Every file read here has passed [`xml_guard::guard`] first, and only the UTF-8 text it returns
//! is tokenized (a UTF-16 package document read as bytes would hide its NCX reference, and so
//! the NCX, from the guard); nothing here is handed to an XML parser.

use std::path::Path;

use crate::error::{ExtractError, Part};
use crate::prescan::Archive;
use crate::xml_guard::{self, Token, Tokenizer};

/// Reads, guards and checks `META-INF/container.xml`; returns the package document's full path,
/// which is then guaranteed present in the archive.
pub(crate) fn rootfile(archive: &mut Archive<'_>, max_depth: usize) -> Result<String, ExtractError> {
    const CONTAINER: &str = "META-INF/container.xml";
    let bytes = match archive.read(CONTAINER) {
        None => return Err(ExtractError::MissingContainer),
        Some(Err(reason)) => return Err(ExtractError::BadContainer { reason: format!("cannot be read: {reason}") }),
        Some(Ok(bytes)) => bytes,
    };
    let bytes = xml_guard::guard(&bytes, Part::Container, CONTAINER, max_depth)?;
    // Mirror epub: the first `rootfile` element in document order is the one it uses.
    let rootfile = Tokenizer::new(&bytes).find_map(|token| match token {
        Token::Start(tag) | Token::Empty(tag) if tag.local_name() == b"rootfile" => Some(tag),
        _ => None,
    });
    let Some(rootfile) = rootfile else {
        return Err(ExtractError::BadContainer { reason: "no rootfile element".into() });
    };
    let Some(full_path) = rootfile.attr("full-path") else {
        return Err(ExtractError::BadContainer { reason: "the rootfile has no full-path attribute".into() });
    };
    // epub takes the parent of this path and panics when there is none ("" or "/").
    if Path::new(&full_path).parent().is_none() || full_path.trim().is_empty() {
        return Err(ExtractError::BadContainer {
            reason: format!("the rootfile full-path {full_path:?} names no file"),
        });
    }
    if archive.lookup(&full_path).is_none() {
        return Err(ExtractError::MissingPackage { path: full_path });
    }
    Ok(full_path)
}

/// Which required sections a package document has, to explain epub's bare "Invalid EPub".
#[derive(Debug, Default)]
pub(crate) struct PackageShape {
    has_metadata: bool,
    has_manifest: bool,
    has_spine: bool,
}

impl PackageShape {
    /// The first required section that is missing, if any.
    pub(crate) fn missing_section(&self) -> Option<&'static str> {
        [("metadata", self.has_metadata), ("manifest", self.has_manifest), ("spine", self.has_spine)]
            .into_iter()
            .find_map(|(name, present)| (!present).then_some(name))
    }
}

/// Guards the package document and the NCX epub will parse (the one named by `<spine toc>`).
pub(crate) fn guard_package(
    archive: &mut Archive<'_>,
    opf_path: &str,
    max_depth: usize,
) -> Result<PackageShape, ExtractError> {
    let opf = match archive.read(opf_path) {
        Some(Ok(bytes)) => bytes,
        Some(Err(reason)) => return Err(ExtractError::BadPackage { path: opf_path.to_owned(), reason }),
        None => return Err(ExtractError::MissingPackage { path: opf_path.to_owned() }),
    };
    let opf = xml_guard::guard(&opf, Part::Package, opf_path, max_depth)?;

    let mut shape = PackageShape::default();
    let mut toc_id = None;
    let mut items = Vec::new();
    for token in Tokenizer::new(&opf) {
        if let Token::Start(tag) | Token::Empty(tag) = token {
            match tag.local_name() {
                b"metadata" => shape.has_metadata = true,
                b"manifest" => shape.has_manifest = true,
                b"spine" => {
                    shape.has_spine = true;
                    toc_id = tag.attr("toc");
                }
                b"item" => items.push((tag.attr("id"), tag.attr("href"))),
                _ => {}
            }
        }
    }
    let Some(toc_id) = toc_id else { return Ok(shape) };
    let Some(href) = items.into_iter().find(|(id, _)| id.as_deref() == Some(&toc_id)).and_then(|(_, h)| h) else {
        return Ok(shape);
    };
    // The same join epub performs, so we guard exactly the file it would read.
    let base = Path::new(opf_path).parent().unwrap_or(Path::new(""));
    let ncx_path = base.join(&href).to_string_lossy().into_owned();
    if let Some(Ok(ncx)) = archive.read(&ncx_path) {
        xml_guard::guard(&ncx, Part::Ncx, &ncx_path, max_depth)?;
    }
    Ok(shape)
}

/// One `EncryptedData` of `META-INF/encryption.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encrypted {
    /// Normalised, percent-decoded path from the container root.
    pub(crate) path: String,
    /// The `EncryptionMethod` algorithm URI.
    pub(crate) algorithm: String,
}

/// The resources listed in `META-INF/encryption.xml` (empty when there is none). A malformed file
/// yields what could be read: refusing the book is decided per spine item by the caller.
pub(crate) fn encrypted_resources(archive: &mut Archive<'_>, max_depth: usize) -> Result<Vec<Encrypted>, ExtractError> {
    const ENCRYPTION: &str = "META-INF/encryption.xml";
    let Some(Ok(bytes)) = archive.read(ENCRYPTION) else { return Ok(Vec::new()) };
    let bytes = xml_guard::guard(&bytes, Part::Encryption, ENCRYPTION, max_depth)?;
    let mut out = Vec::new();
    let mut algorithm: Option<String> = None;
    for token in Tokenizer::new(&bytes) {
        match token {
            Token::Start(tag) | Token::Empty(tag) => match tag.local_name() {
                b"EncryptedData" => algorithm = None,
                b"EncryptionMethod" => algorithm = tag.attr("Algorithm"),
                b"CipherReference" => {
                    if let Some(uri) = tag.attr("URI") {
                        let decoded = crate::paths::percent_decode(&uri);
                        out.push(Encrypted {
                            path: crate::paths::normalize(&decoded).unwrap_or(decoded),
                            algorithm: algorithm.clone().unwrap_or_else(|| "(no algorithm named)".into()),
                        });
                    }
                }
                _ => {}
            },
            Token::End => {}
        }
    }
    Ok(out)
}
