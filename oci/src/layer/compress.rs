//! Compression and digests in one pass: the tar stream is hashed (diffID),
//! compressed, and the compressed bytes hashed (blob digest) and counted as
//! they go to the output.

use std::io::{self, BufReader, Read, Write};

use sha2::{Digest, Sha256};

use super::error::LayerError;
use super::meta::read_full;
use super::pgzip::ParallelGzEncoder;
use super::pzstd::FramedZstdEncoder;

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a layer blob is compressed, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at `level` (1..=22; BuildKit's default is 3), in independent
    /// 4 MiB frames compressed in parallel (see [`super::FramedZstdEncoder`]).
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
    /// gzip at `level` (0..=9; BuildKit's default is 6), compressed in
    /// parallel 1 MiB blocks (see [`ParallelGzEncoder`]).
    Gzip {
        /// The deflate compression level.
        level: u32,
    },
    /// A plain tar.
    Uncompressed,
}

impl Default for Compression {
    /// zstd level 3.
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

impl Compression {
    /// gzip at BuildKit's default level (6).
    pub const GZIP: Compression = Compression::Gzip { level: 6 };
    /// zstd at BuildKit's default level (3).
    pub const ZSTD: Compression = Compression::Zstd { level: 3 };

    /// The compression format, without the level.
    pub fn kind(&self) -> CompressionKind {
        match self {
            Compression::Zstd { .. } => CompressionKind::Zstd,
            Compression::Gzip { .. } => CompressionKind::Gzip,
            Compression::Uncompressed => CompressionKind::Uncompressed,
        }
    }

    /// The OCI layer media type of blobs compressed this way.
    pub fn media_type(&self) -> &'static str {
        self.kind().media_type()
    }
}

/// A compression format, as recognised from a blob's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionKind {
    /// zstd frames.
    Zstd,
    /// gzip member(s).
    Gzip,
    /// No compression.
    Uncompressed,
}

impl CompressionKind {
    /// The OCI layer media type for this format.
    pub fn media_type(&self) -> &'static str {
        match self {
            CompressionKind::Zstd => MEDIA_TYPE_TAR_ZSTD,
            CompressionKind::Gzip => MEDIA_TYPE_TAR_GZIP,
            CompressionKind::Uncompressed => MEDIA_TYPE_TAR,
        }
    }

    /// Recognises gzip (`1f 8b`) and zstd (`28 b5 2f fd`, or a skippable
    /// frame `5? 2a 4d 18`) by their magic bytes; anything else is taken to
    /// be an uncompressed tar.
    pub fn detect(prefix: &[u8]) -> CompressionKind {
        match prefix {
            [0x1f, 0x8b, ..] => CompressionKind::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => CompressionKind::Zstd,
            [b, 0x2a, 0x4d, 0x18, ..] if b & 0xf0 == 0x50 => CompressionKind::Zstd,
            _ => CompressionKind::Uncompressed,
        }
    }
}

/// What a registry and an image config need to know about a layer blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDescriptor {
    /// `sha256:<hex>` of the uncompressed tar (the image config's diffID).
    pub diff_id: String,
    /// `sha256:<hex>` of the blob as stored and pushed.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
    /// The OCI layer media type of the blob.
    pub media_type: String,
}

/// A compressing writer for one of the [`Compression`] variants.
pub enum Compressor<W: Write> {
    /// zstd, in independent frames compressed in parallel.
    Zstd(FramedZstdEncoder<W>),
    /// Parallel gzip.
    Gzip(ParallelGzEncoder<W>),
    /// Pass-through.
    Uncompressed(W),
}

impl<W: Write> Compressor<W> {
    /// A compressor writing to `out` with `threads` threads.
    ///
    /// For both zstd and gzip the bytes depend on the input and the level
    /// alone, never on the thread count, the machine or timing, so a
    /// layer's digest does not either.
    pub fn new(out: W, compression: Compression, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(match compression {
            Compression::Zstd { level } => {
                Compressor::Zstd(FramedZstdEncoder::new(out, level, threads)?)
            }
            Compression::Gzip { level } => {
                Compressor::Gzip(ParallelGzEncoder::new(out, level, threads)?)
            }
            Compression::Uncompressed => Compressor::Uncompressed(out),
        })
    }

    /// Ends the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Zstd(enc) => enc.finish(),
            Compressor::Gzip(enc) => enc.finish(),
            Compressor::Uncompressed(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Uncompressed(w) => w.write(buf),
        }
    }

    /// Flushes the inner writer. Data held by the compressor stays there
    /// until [`Compressor::finish`]: cutting compression blocks on flush
    /// would make the blob depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Uncompressed(w) => w.flush(),
        }
    }
}

/// Counts and (optionally) hashes what passes through.
pub(crate) struct DigestWriter<W: Write> {
    pub(crate) out: W,
    pub(crate) hasher: Option<Sha256>,
    pub(crate) written: u64,
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Takes an uncompressed layer tar and writes the compressed blob to the
/// inner writer, computing the diffID, the blob digest and both sizes in
/// the same pass.
pub struct LayerWriter<W: Write> {
    compression: Compression,
    diff: Sha256,
    uncompressed: u64,
    inner: Compressor<DigestWriter<W>>,
}

impl<W: Write> LayerWriter<W> {
    /// A writer producing a `compression` blob on `out`, compressing on
    /// `threads` threads.
    pub fn new(out: W, compression: Compression, threads: usize) -> Result<Self, LayerError> {
        // An uncompressed blob's digest is its diffID: hash once.
        Self::hashing_blob(
            out,
            compression,
            threads,
            compression != Compression::Uncompressed,
        )
    }

    /// [`LayerWriter::new`], but with `hash_blob` false the compressed
    /// bytes are not hashed here: whoever reads them from `out` does (on
    /// another thread), and [`LayerWriter::finish`] leaves the blob digest
    /// empty for it to fill in.
    pub(crate) fn hashing_blob(
        out: W,
        compression: Compression,
        threads: usize,
        hash_blob: bool,
    ) -> Result<Self, LayerError> {
        let digest = DigestWriter {
            out,
            hasher: hash_blob.then(Sha256::new),
            written: 0,
        };
        Ok(LayerWriter {
            compression,
            diff: Sha256::new(),
            uncompressed: 0,
            inner: Compressor::new(digest, compression, threads).map_err(LayerError::Stream)?,
        })
    }

    /// Ends the blob, flushes the inner writer and returns the blob's
    /// descriptor and the inner writer.
    pub fn finish(self) -> Result<(LayerDescriptor, W), LayerError> {
        let mut digest_writer = self.inner.finish().map_err(LayerError::Stream)?;
        // Callers often hand in a BufWriter and drop what is returned; a
        // failed final flush must not go unnoticed.
        digest_writer.flush().map_err(LayerError::Stream)?;
        let diff_id = sha256_string(self.diff);
        let digest = match digest_writer.hasher {
            Some(h) => sha256_string(h),
            None if self.compression == Compression::Uncompressed => diff_id.clone(),
            None => String::new(),
        };
        let desc = LayerDescriptor {
            diff_id,
            digest,
            size: digest_writer.written,
            uncompressed_size: self.uncompressed,
            media_type: self.compression.media_type().to_owned(),
        };
        Ok((desc, digest_writer.out))
    }
}

impl<W: Write> Write for LayerWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.diff.update(&buf[..n]);
        self.uncompressed += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `sha256:<hex>` of a finished hasher.
pub(crate) fn sha256_string(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Wraps a layer blob in the decompressor its magic bytes call for.
pub fn decompress<'a, R: Read + 'a>(
    mut input: R,
) -> io::Result<(CompressionKind, Box<dyn Read + 'a>)> {
    let mut magic = [0u8; 4];
    let n = read_full(&mut input, &mut magic)?;
    let kind = CompressionKind::detect(&magic[..n]);
    let stream = io::Cursor::new(magic[..n].to_vec()).chain(input);
    let reader: Box<dyn Read + 'a> = match kind {
        CompressionKind::Gzip => {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(stream)))
        }
        CompressionKind::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
        CompressionKind::Uncompressed => Box::new(stream),
    };
    Ok((kind, reader))
}

/// Re-encodes a layer blob (any compression, detected from its magic
/// bytes) as `to`, checking on the way that its uncompressed content hashes
/// to `expected_diff_id`: the way to make the gzip variant of a layer from
/// the stored zstd one. On a mismatch the error is returned after `out` was
/// written, so write to a temporary location and discard it on error.
pub fn recompress<R: Read, W: Write>(
    input: R,
    expected_diff_id: &str,
    to: Compression,
    out: W,
    threads: usize,
) -> Result<LayerDescriptor, LayerError> {
    let (_, mut reader) = decompress(input).map_err(LayerError::Read)?;
    let mut writer = LayerWriter::new(out, to, threads)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut reader, &mut buf).map_err(LayerError::Read)?;
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n]).map_err(LayerError::Stream)?;
    }
    let (desc, _) = writer.finish()?;
    if desc.diff_id != expected_diff_id {
        return Err(LayerError::DiffIdMismatch {
            expected: expected_diff_id.to_owned(),
            actual: desc.diff_id,
        });
    }
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: u32) -> Vec<u8> {
        crate::layer::pzstd::tests::sample(len as usize)
    }

    fn blob(data: &[u8], c: Compression, threads: usize) -> (LayerDescriptor, Vec<u8>) {
        let mut w = LayerWriter::new(Vec::new(), c, threads).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn zstd_blobs_do_not_depend_on_thread_count() {
        // Seven zstd frames ([`FRAME_SIZE`] each).
        let data = sample(28 << 20);
        let (one, _) = blob(&data, Compression::ZSTD, 1);
        let (two, _) = blob(&data, Compression::ZSTD, 2);
        let (four, _) = blob(&data, Compression::ZSTD, 4);
        assert_eq!(one, two);
        assert_eq!(one, four);
    }

    #[test]
    fn descriptor_digests_and_sizes_match_the_bytes() {
        let data = sample(3 << 20);
        for c in [
            Compression::ZSTD,
            Compression::GZIP,
            Compression::Uncompressed,
        ] {
            let (desc, bytes) = blob(&data, c, 2);
            assert_eq!(desc.diff_id, sha256_string(Sha256::new_with_prefix(&data)));
            assert_eq!(desc.digest, sha256_string(Sha256::new_with_prefix(&bytes)));
            assert_eq!(desc.size, bytes.len() as u64);
            assert_eq!(desc.uncompressed_size, data.len() as u64);
            assert_eq!(desc.media_type, c.media_type());
            let (kind, mut r) = decompress(bytes.as_slice()).unwrap();
            assert_eq!(kind, c.kind());
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert!(back == data, "{c:?} round trip");
        }
    }

    #[test]
    fn recompress_checks_the_diff_id() {
        let data = sample(3 << 20);
        let (zdesc, zbytes) = blob(&data, Compression::ZSTD, 2);
        let (gdesc, _) = blob(&data, Compression::GZIP, 2);
        let got = recompress(
            zbytes.as_slice(),
            &zdesc.diff_id,
            Compression::GZIP,
            Vec::new(),
            2,
        )
        .unwrap();
        assert_eq!(got, gdesc);
        let wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let err =
            recompress(zbytes.as_slice(), wrong, Compression::GZIP, Vec::new(), 2).unwrap_err();
        assert!(matches!(err, LayerError::DiffIdMismatch { .. }), "{err}");
    }
}
