//! Telling a tar archive from any other file the way BuildKit's ADD does
//! (`isArchivePath`): the compression is recognised by its magic bytes
//! (moby's `archive.DetectCompression`, never by the file name), and the
//! file is an archive when, decompressed, it starts with a valid tar header.

use std::io::{self, Chain, Cursor, Read};
use std::path::Path;

/// A compression format an ADD archive may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    /// A plain tar.
    Uncompressed,
    /// gzip (`1f 8b 08`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`, or a skippable frame `5? 2a 4d 18`).
    Zstd,
}

/// Bytes needed to recognise every format.
const MAGIC_LEN: usize = 6;

impl ArchiveCompression {
    /// Recognises the format from the first bytes of a file, in moby's
    /// order (bzip2, gzip, xz, zstd); anything else is uncompressed.
    pub fn detect(prefix: &[u8]) -> Self {
        match prefix {
            [0x42, 0x5a, 0x68, ..] => Self::Bzip2,
            [0x1f, 0x8b, 0x08, ..] => Self::Gzip,
            [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, ..] => Self::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            [b, 0x2a, 0x4d, 0x18, ..] if b & 0xf0 == 0x50 => Self::Zstd,
            _ => Self::Uncompressed,
        }
    }
}

/// A reader with the bytes already read to detect its format put back in
/// front.
type Peeked<R> = Chain<Cursor<Vec<u8>>, R>;

fn peek<R: Read>(mut input: R) -> io::Result<(Vec<u8>, Peeked<R>)> {
    let mut prefix = vec![0u8; MAGIC_LEN];
    let mut n = 0;
    while n < MAGIC_LEN {
        match input.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    prefix.truncate(n);
    Ok((prefix.clone(), Cursor::new(prefix).chain(input)))
}

/// Detects `input`'s compression and returns a reader of its decompressed
/// bytes. Concatenated gzip, bzip2, xz and zstd streams are read whole, as
/// Go's readers do.
pub fn decompress<'a, R: Read + 'a>(
    input: R,
) -> io::Result<(ArchiveCompression, Box<dyn Read + 'a>)> {
    let (prefix, input) = peek(input)?;
    let kind = ArchiveCompression::detect(&prefix);
    let reader: Box<dyn Read + 'a> = match kind {
        ArchiveCompression::Uncompressed => Box::new(input),
        ArchiveCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        ArchiveCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        ArchiveCompression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
        ArchiveCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
    };
    Ok((kind, reader))
}

/// Whether the file at `path` (already resolved, not followed if it is a
/// link) is a tar archive ADD extracts: a regular file that, decompressed,
/// begins with a valid tar header. Anything unreadable is "not an archive"
/// (and then fails or succeeds as a plain copy would), as in BuildKit.
pub fn archive_compression(path: &Path) -> Option<ArchiveCompression> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let (kind, reader) = decompress(io::BufReader::new(file)).ok()?;
    let mut archive = tar::Archive::new(reader);
    match archive.entries().ok()?.next() {
        Some(Ok(_)) => Some(kind),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "a.txt", &b"hi"[..]).expect("append");
        b.into_inner().expect("finish")
    }

    fn compressed(kind: ArchiveCompression, data: &[u8]) -> Vec<u8> {
        match kind {
            ArchiveCompression::Uncompressed => data.to_vec(),
            ArchiveCompression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).expect("gzip");
                e.finish().expect("gzip")
            }
            ArchiveCompression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).expect("bzip2");
                e.finish().expect("bzip2")
            }
            ArchiveCompression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).expect("xz");
                e.finish().expect("xz")
            }
            ArchiveCompression::Zstd => zstd::encode_all(data, 1).expect("zstd"),
        }
    }

    #[test]
    fn archives_are_recognised_by_content_not_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        for kind in [
            ArchiveCompression::Uncompressed,
            ArchiveCompression::Gzip,
            ArchiveCompression::Bzip2,
            ArchiveCompression::Xz,
            ArchiveCompression::Zstd,
        ] {
            let path = dir.path().join(format!("{kind:?}.txt"));
            std::fs::write(&path, compressed(kind, &tar_bytes())).expect("write");
            assert_eq!(archive_compression(&path), Some(kind), "{kind:?}");
            // The same compression around something that is not a tar.
            let plain = dir.path().join(format!("{kind:?}.tar.gz"));
            std::fs::write(&plain, compressed(kind, b"just some text, no tar header")).expect("w");
            assert_eq!(archive_compression(&plain), None, "{kind:?} of text");
        }
        let empty = dir.path().join("empty.tar");
        std::fs::write(&empty, b"").expect("write");
        assert_eq!(archive_compression(&empty), None);
        assert_eq!(archive_compression(dir.path()), None, "a directory");
    }
}
