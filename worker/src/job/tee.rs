//! A byte pipe between two threads: the layer writer tees the tar it
//! writes into one end, the unpacker reads it from the other.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Chunks in flight: the writer batches 256 KiB (file data comes in 1 MiB
/// chunks), so this bounds the pipe to a few MiB; a writer that gets
/// ahead waits for the reader.
const CHUNKS: usize = 8;

/// A pipe: what is written to the [`PipeWriter`] is read, in order, from
/// the [`PipeReader`]. Dropping the writer ends the stream; dropping the
/// reader makes writes fail with `BrokenPipe`. The reader hands each chunk
/// back once read, and the writer fills it again: a layer's megabytes
/// cross in a few reused buffers, not one fresh allocation (and page
/// faults) per chunk.
pub(crate) fn pipe() -> (PipeWriter, PipeReader) {
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

pub(crate) struct PipeWriter {
    tx: SyncSender<Vec<u8>>,
    reuse: Receiver<Vec<u8>>,
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut chunk = self.reuse.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(buf);
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) struct PipeReader {
    rx: Receiver<Vec<u8>>,
    give_back: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::pipe;
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
    fn writes_fail_once_the_reader_is_gone() {
        let (mut w, r) = pipe();
        drop(r);
        let err = w.write_all(b"tar").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    }
}
