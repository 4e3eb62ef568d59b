//! A tiny valid PNG, generated rather than checked in so that no binary blob needs explaining.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

/// A 2×2 RGB PNG (a red, green, blue and white pixel): signature, IHDR, IDAT, IEND.
pub fn tiny_png() -> Vec<u8> {
    let (width, height) = (2u32, 2u32);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);

    // Each scanline starts with its filter type (0, none).
    let raw: [u8; 14] = [0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255];
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::new(9));
    encoder.write_all(&raw).expect("writing into memory");
    let idat = encoder.finish().expect("finishing into memory");
    chunk(&mut png, b"IDAT", &idat);

    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // PNG chunk lengths are u32 by format; our chunks are a few bytes long.
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}
