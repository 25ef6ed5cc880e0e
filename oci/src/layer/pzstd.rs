//! Parallel zstd in independent frames: the input is cut into fixed
//! [`FRAME_SIZE`] pieces, each compressed as a zstd frame of its own (with
//! its checksum) on one of the encoder's threads, and the frames are
//! written one after the other.
//!
//! A zstd stream may be any number of frames (RFC 8878, section 3.1); every
//! decoder reads them as one stream, as it does zstd:chunked and
//! eStargz-style layers. Each frame is compressed by a single-threaded
//! zstd context, so the output is a pure function of the input and the
//! level: it does not depend on the number of threads, on how the caller
//! cut its writes, or on timing. (zstd's own multi-threaded mode, used
//! here before, cut a job short now and then when the machine was busy:
//! the same layer came out as two different blobs.) Frames do not refer
//! to each other, which costs a little ratio at each boundary.

use std::io::{self, Write};

/// Input bytes per frame.
pub const FRAME_SIZE: usize = 4 << 20;

/// A zstd encoder writing independent frames of [`FRAME_SIZE`] input
/// bytes, compressed `threads` at a time (see the module docs).
pub struct FramedZstdEncoder<W: Write> {
    out: W,
    /// One context per thread, reused from frame to frame.
    contexts: Vec<zstd::bulk::Compressor<'static>>,
    /// Full pieces waiting for a batch of `contexts.len()`.
    batch: Vec<Vec<u8>>,
    /// The piece being filled.
    current: Vec<u8>,
    /// Emptied pieces, to be filled again.
    spare: Vec<Vec<u8>>,
    frames: u64,
}

impl<W: Write> FramedZstdEncoder<W> {
    /// A new encoder at `level` compressing on `threads` threads (1
    /// compresses on the calling thread).
    pub fn new(out: W, level: i32, threads: usize) -> io::Result<Self> {
        let contexts = (0..threads.max(1))
            .map(|_| {
                let mut c = zstd::bulk::Compressor::new(level)?;
                c.include_checksum(true)?;
                Ok(c)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            out,
            contexts,
            batch: Vec::new(),
            current: Vec::with_capacity(FRAME_SIZE),
            spare: Vec::new(),
            frames: 0,
        })
    }

    /// Compresses what is buffered and returns the inner writer. An empty
    /// input still makes one (empty) frame: the blob is a zstd stream.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || self.frames + (self.batch.len() as u64) == 0 {
            let last = std::mem::take(&mut self.current);
            self.batch.push(last);
        }
        self.compress_batch()?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Compresses the batch, one piece per context (the first on this
    /// thread), and writes the frames in order.
    fn compress_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let (batch, contexts) = (&self.batch, &mut self.contexts);
        let frames: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let mut pairs = contexts.iter_mut().zip(batch.iter());
            let first = pairs.next();
            let others: Vec<_> = pairs
                .map(|(c, piece)| s.spawn(move || c.compress(piece)))
                .collect();
            let mut done = Vec::with_capacity(batch.len());
            if let Some((c, piece)) = first {
                done.push(c.compress(piece));
            }
            for h in others {
                done.push(
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a zstd thread panicked"))),
                );
            }
            done
        });
        for frame in frames {
            self.out.write_all(&frame?)?;
        }
        self.frames += self.batch.len() as u64;
        for mut piece in self.batch.drain(..) {
            piece.clear();
            self.spare.push(piece);
        }
        Ok(())
    }
}

impl<W: Write> Write for FramedZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (FRAME_SIZE - self.current.len()).min(buf.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == FRAME_SIZE {
            let next = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(FRAME_SIZE));
            let full = std::mem::replace(&mut self.current, next);
            self.batch.push(full);
            if self.batch.len() == self.contexts.len() {
                self.compress_batch()?;
            }
        }
        Ok(n)
    }

    /// Flushes the inner writer only: frames are cut at fixed sizes, so
    /// that the output stays a function of the input.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        let mut x = 0x1234_5678u32;
        for i in 0..len {
            // Half text, half pseudo-random bytes.
            if i % 2 == 0 {
                v.push(b'a' + (i % 26) as u8);
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.push(x as u8);
            }
        }
        v
    }

    fn zst(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut enc = FramedZstdEncoder::new(Vec::new(), 3, threads).unwrap();
        for piece in data.chunks(chunk.max(1)) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn every_decoder_reads_the_frames_as_one_stream() {
        for len in [0, 1, FRAME_SIZE - 1, FRAME_SIZE, 3 * FRAME_SIZE + 17] {
            let data = sample(len);
            let z = zst(&data, 2, 100_003);
            let mut back = Vec::new();
            zstd::stream::read::Decoder::new(z.as_slice())
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
            assert_eq!(zstd::decode_all(z.as_slice()).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn output_depends_on_the_input_alone() {
        let data = sample(5 * FRAME_SIZE + 1234);
        let one = zst(&data, 1, 1 << 20);
        assert_eq!(one, zst(&data, 2, 1 << 20));
        assert_eq!(one, zst(&data, 3, 77_777));
        assert_eq!(one, zst(&data, 4, FRAME_SIZE + 1));
        // Six frames, each with its own magic number.
        let magic = [0x28, 0xb5, 0x2f, 0xfd];
        assert_eq!(one.windows(4).filter(|w| *w == magic).count(), 6);
    }
}
