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
use std::sync::{Arc, Mutex};

use super::ordered::OrderedPool;

/// Input bytes per frame.
pub const FRAME_SIZE: usize = 4 << 20;

/// A zstd encoder writing independent frames of [`FRAME_SIZE`] input
/// bytes, compressed on `threads` threads while the caller goes on (see
/// the module docs).
pub struct FramedZstdEncoder<W: Write> {
    out: W,
    pool: OrderedPool<Vec<u8>>,
    /// Frame buffers written out, for the threads to compress into again
    /// (fresh megabytes cost page faults on every frame).
    written: Arc<Mutex<Vec<Vec<u8>>>>,
    /// The piece being filled.
    current: Vec<u8>,
    frames: u64,
}

impl<W: Write> FramedZstdEncoder<W> {
    /// A new encoder at `level` compressing on `threads` threads (1
    /// compresses on the calling thread).
    pub fn new(out: W, level: i32, threads: usize) -> io::Result<Self> {
        let written = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let pool = OrderedPool::new(threads, "strata-zstd", || {
            // One context per thread, reused from frame to frame.
            let mut c = zstd::bulk::Compressor::new(level)?;
            c.include_checksum(true)?;
            let written = Arc::clone(&written);
            Ok(Box::new(move |piece: &[u8], _last: bool| {
                let reused = written.lock().ok().and_then(|mut w| w.pop());
                let mut frame = reused.unwrap_or_default();
                frame.clear();
                frame.reserve(zstd::zstd_safe::compress_bound(piece.len()));
                c.compress_to_buffer(piece, &mut frame)?;
                Ok(frame)
            }))
        })?;
        Ok(Self {
            out,
            pool,
            written,
            current: Vec::with_capacity(FRAME_SIZE),
            frames: 0,
        })
    }

    /// Compresses what is buffered and returns the inner writer. An empty
    /// input still makes one (empty) frame: the blob is a zstd stream.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || self.frames == 0 {
            let last = std::mem::take(&mut self.current);
            self.submit(last, true)?;
        }
        let (out, written) = (&mut self.out, &self.written);
        self.pool.drain(&mut |frame| emit(out, written, frame))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn submit(&mut self, piece: Vec<u8>, last: bool) -> io::Result<()> {
        self.frames += 1;
        let (out, written) = (&mut self.out, &self.written);
        self.pool
            .submit(piece, last, &mut |frame| emit(out, written, frame))
    }
}

/// Writes a frame out and keeps its buffer for another (as many as there
/// can be in flight, which the pool bounds).
fn emit(out: &mut impl Write, written: &Mutex<Vec<Vec<u8>>>, frame: Vec<u8>) -> io::Result<()> {
    out.write_all(&frame)?;
    if let Ok(mut w) = written.lock() {
        w.push(frame);
    }
    Ok(())
}

impl<W: Write> Write for FramedZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pool.check()?;
        if self.current.len() == FRAME_SIZE {
            // Handed in only now, with more input to follow: the last
            // piece is always the one `finish` hands in.
            let next = self.pool.buffer(FRAME_SIZE);
            let full = std::mem::replace(&mut self.current, next);
            self.submit(full, false)?;
        }
        let n = (FRAME_SIZE - self.current.len()).min(buf.len());
        self.current.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Flushes the inner writer only: frames are cut at fixed sizes, so
    /// that the output stays a function of the input.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// Half text, half pseudo-random bytes (also `compress.rs`'s sample).
    pub(crate) fn sample(len: usize) -> Vec<u8> {
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

    #[test]
    fn whole_frames_make_no_empty_frame_and_the_bytes_are_pinned() {
        use sha2::{Digest, Sha256};
        let magic = [0x28, 0xb5, 0x2f, 0xfd];
        let z = zst(&sample(2 * FRAME_SIZE), 2, 1 << 20);
        assert_eq!(z.windows(4).filter(|w| *w == magic).count(), 2);
        // The bytes are part of every zstd layer's digest: a change here
        // (of this code or of the zstd library) changes them all.
        assert_eq!(
            hex::encode(Sha256::digest(&z)),
            "baa6c32998bae40969a70f69a0a9b4000c48b52e5e3b52aa551c13365ccd0a35",
        );
    }

    /// Takes `room` bytes, then fails (also `mod.rs`'s failing writer).
    pub(crate) struct Full {
        pub(crate) room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_fails_the_stream_for_good() {
        let data = sample(6 * FRAME_SIZE);
        for threads in [1, 2] {
            let mut enc = FramedZstdEncoder::new(Full { room: 1000 }, 3, threads).unwrap();
            let written = data.chunks(1 << 20).try_for_each(|c| enc.write_all(c));
            let err = written
                .and_then(|()| enc.finish().map(|_| ()))
                .expect_err("the inner writer failed");
            assert!(err.to_string().contains("disk full"), "{err}");
        }
        // Once failed, nothing more is taken and `finish` fails too.
        let mut enc = FramedZstdEncoder::new(Full { room: 1000 }, 3, 1).unwrap();
        let _ = data.chunks(1 << 20).try_for_each(|c| enc.write_all(c));
        assert!(enc.write(b"more").is_err());
        assert!(enc.finish().is_err());
    }
}
