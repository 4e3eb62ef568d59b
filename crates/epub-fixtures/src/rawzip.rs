//! A minimal hand-rolled zip writer for files the `zip` crate rightly refuses to produce: entries
//! whose compressed data is supplied pre-built (the zip bomb) and whose declared sizes we choose.

use std::io::Write;

use flate2::Compression;
use flate2::write::DeflateEncoder;

/// How an entry's data is stored.
pub(crate) enum RawData {
    /// Stored as is.
    Stored(Vec<u8>),
    /// Deflated from these bytes.
    Deflate(Vec<u8>),
    /// Already-deflated bytes with the CRC and uncompressed size they inflate to.
    PreDeflated { compressed: Vec<u8>, crc: u32, size: u32 },
}

pub(crate) struct RawEntry {
    pub(crate) name: String,
    pub(crate) data: RawData,
}

/// Writes a zip (no zip64, no data descriptors, fixed 2000-01-01 timestamps).
pub(crate) fn write(entries: Vec<RawEntry>) -> Vec<u8> {
    const TIME: u16 = 0;
    // 2000-01-01 in DOS format: ((2000 - 1980) << 9) | (1 << 5) | 1.
    const DATE: u16 = (20 << 9) | (1 << 5) | 1;
    let mut out = Vec::new();
    let mut central = Vec::new();
    let count = entries.len();
    for entry in entries {
        let (method, crc, size, body): (u16, u32, u32, Vec<u8>) = match entry.data {
            RawData::Stored(bytes) => (0, crc32fast::hash(&bytes), len32(&bytes), bytes),
            RawData::Deflate(bytes) => {
                let mut encoder = DeflateEncoder::new(Vec::new(), Compression::new(6));
                encoder.write_all(&bytes).expect("writing into memory");
                let compressed = encoder.finish().expect("finishing into memory");
                (8, crc32fast::hash(&bytes), len32(&bytes), compressed)
            }
            RawData::PreDeflated { compressed, crc, size } => (8, crc, size, compressed),
        };
        let offset = out.len() as u32;
        let name = entry.name.as_bytes();
        let header = |sig: u32, central_fields: bool, buf: &mut Vec<u8>| {
            buf.extend_from_slice(&sig.to_le_bytes());
            if central_fields {
                buf.extend_from_slice(&20u16.to_le_bytes()); // version made by
            }
            buf.extend_from_slice(&20u16.to_le_bytes()); // version needed
            buf.extend_from_slice(&0x0800u16.to_le_bytes()); // flags: UTF-8 names
            buf.extend_from_slice(&method.to_le_bytes());
            buf.extend_from_slice(&TIME.to_le_bytes());
            buf.extend_from_slice(&DATE.to_le_bytes());
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.extend_from_slice(&len32(&body).to_le_bytes());
            buf.extend_from_slice(&size.to_le_bytes());
            buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buf.extend_from_slice(&0u16.to_le_bytes()); // extra field length
            if central_fields {
                buf.extend_from_slice(&0u16.to_le_bytes()); // comment length
                buf.extend_from_slice(&0u16.to_le_bytes()); // disk number
                buf.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
                buf.extend_from_slice(&(0o100644u32 << 16).to_le_bytes()); // external attributes
                buf.extend_from_slice(&offset.to_le_bytes());
            }
            buf.extend_from_slice(name);
        };
        header(0x0403_4b50, false, &mut out);
        header(0x0201_4b50, true, &mut central);
        out.extend_from_slice(&body);
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // this disk, disk with the central directory
    out.extend_from_slice(&(count as u16).to_le_bytes());
    out.extend_from_slice(&(count as u16).to_le_bytes());
    out.extend_from_slice(&len32(&central).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

fn len32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).expect("fixture entries are far below 4 GiB")
}

/// A raw deflate stream that inflates to `mebibytes` MiB of zero bytes, with its CRC-32.
///
/// Built without ever holding the inflated data: one MiB of zeros is compressed once and
/// sync-flushed (so it ends on a byte boundary with a non-final block and refers to nothing before
/// it), the chunk is repeated, and an empty final block closes the stream. The CRC of the whole is
/// combined from the CRC of one chunk, in O(log n) per step.
pub(crate) fn deflated_zeros(mebibytes: u32) -> (Vec<u8>, u32) {
    const MIB: usize = 1 << 20;
    let zeros = vec![0u8; MIB];
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&zeros).expect("writing into memory");
    // `flush` on a flate2 writer is a zlib sync flush: byte-aligned, stream left open.
    encoder.flush().expect("flushing into memory");
    let chunk = encoder.get_ref().clone();

    let mut stream = Vec::with_capacity(chunk.len() * mebibytes as usize + 2);
    let chunk_crc = {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&zeros);
        hasher
    };
    let mut crc = crc32fast::Hasher::new();
    for _ in 0..mebibytes {
        stream.extend_from_slice(&chunk);
        crc.combine(&chunk_crc);
    }
    // An empty final block with fixed Huffman codes: BFINAL=1, BTYPE=01, end-of-block.
    stream.extend_from_slice(&[0x03, 0x00]);
    (stream, crc.finalize())
}
