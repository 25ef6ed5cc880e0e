//! A byte pipe between two threads. The layer writer writes its blob
//! into one end while a thread of its own writes it out from the other
//! (see `write_layer_with`); the worker tees the tar it writes into one
//! end while its unpacker reads it from the other.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Chunks in flight, of at most [`CHUNK_MAX`] bytes each: the pipe holds
/// at most about 10 MiB (these, the one being read and the one being
/// filled); a writer that gets ahead waits for the reader.
const CHUNKS: usize = 8;

/// The most one write takes: a bigger write (a whole 4 MiB zstd frame) is
/// taken in pieces, so that chunks stay small whatever the writer's writes.
const CHUNK_MAX: usize = 1 << 20;

/// A pipe: what is written to the [`PipeWriter`] is read, in order, from
/// the [`PipeReader`]. Dropping the writer ends the stream; dropping the
/// reader makes writes fail with `BrokenPipe`. The reader hands each chunk
/// back once read, and the writer fills it again: a layer's megabytes
/// cross in a few reused buffers, not one fresh allocation (and page
/// faults) per chunk.
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(CHUNKS);
    let (give_back, reuse) = sync_channel(CHUNKS + 1);
    (
        PipeWriter { tx, reuse },
        PipeReader {
            rx,
            give_back,
            chunk: Vec::new(),
            pos: 0,
        },
    )
}

/// The writing end of a [`pipe`].
pub struct PipeWriter {
    tx: SyncSender<Vec<u8>>,
    reuse: Receiver<Vec<u8>>,
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(CHUNK_MAX);
        let mut chunk = self.reuse.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(&buf[..n]);
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end of a [`pipe`].
pub struct PipeReader {
    rx: Receiver<Vec<u8>>,
    give_back: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    /// Writes everything still to come to `out`, chunk by chunk as it
    /// arrives (no copy through a read buffer), until the writer is gone.
    /// Does not flush `out`.
    pub fn write_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        while self.next_chunk() {
            out.write_all(&self.chunk[self.pos..])?;
            self.pos = self.chunk.len();
        }
        Ok(())
    }

    /// Makes sure an unread byte is at hand, if more are to come; false at
    /// the end of the stream.
    fn next_chunk(&mut self) -> bool {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let done = std::mem::replace(&mut self.chunk, next);
                    // A full return channel (or a writer that is gone)
                    // just drops the buffer.
                    if done.capacity() > 0 {
                        let _ = self.give_back.try_send(done);
                    }
                    self.pos = 0;
                }
                // The writer is gone: the end of the stream.
                Err(_) => return false,
            }
        }
        true
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.next_chunk() {
            return Ok(0);
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::{CHUNK_MAX, pipe};
    use std::io::{ErrorKind, Read, Write};

    #[test]
    fn bytes_arrive_in_order_and_the_stream_ends_with_the_writer() {
        let (mut w, mut r) = pipe();
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let writer = std::thread::spawn(move || {
            for chunk in sent.chunks(100_003) {
                w.write_all(chunk).expect("write");
            }
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).expect("read");
        writer.join().expect("writer");
        assert_eq!(got, expected);
    }

    #[test]
    fn read_chunks_go_back_to_the_writer() {
        let (mut w, mut r) = pipe();
        let mut got = [0u8; 4];
        w.write_all(b"abcd").expect("write");
        w.write_all(b"efgh").expect("write");
        r.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"abcd");
        // Taking the second chunk hands the first one back.
        r.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"efgh");
        let reused = w.reuse.try_recv().expect("the first chunk came back");
        assert!(reused.capacity() >= 4);
    }

    #[test]
    fn write_to_passes_every_chunk_on_in_order() {
        let (mut w, mut r) = pipe();
        let writer = std::thread::spawn(move || {
            for chunk in [&b"ab"[..], b"", b"cde", b"f"] {
                w.write_all(chunk).expect("write");
            }
        });
        let mut got = Vec::new();
        r.read_exact(&mut [0u8; 1]).expect("read");
        r.write_to(&mut got).expect("write_to");
        writer.join().expect("writer");
        assert_eq!(got, b"bcdef");
    }

    #[test]
    fn a_big_write_crosses_in_chunks_of_at_most_chunk_max() {
        let (mut w, mut r) = pipe();
        let sent: Vec<u8> = (0..(3 * CHUNK_MAX + 5) as u32).map(|i| i as u8).collect();
        let expected = sent.clone();
        let writer = std::thread::spawn(move || w.write_all(&sent).expect("write"));
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while r.next_chunk() {
            sizes.push(r.chunk.len() - r.pos);
            got.extend_from_slice(&r.chunk[r.pos..]);
            r.pos = r.chunk.len();
        }
        writer.join().expect("writer");
        assert_eq!(got, expected);
        assert_eq!(sizes, [CHUNK_MAX, CHUNK_MAX, CHUNK_MAX, 5]);
    }

    #[test]
    fn writes_fail_once_the_reader_is_gone() {
        let (mut w, r) = pipe();
        drop(r);
        let err = w.write_all(b"tar").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    }
}
