//! The thread pool behind the parallel encoders ([`super::pgzip`],
//! [`super::pzstd`]): the caller hands in its input in fixed-size pieces,
//! the pool's threads compress them while the caller goes on, and the
//! results come back in input order. With one thread the pieces are
//! compressed on the caller's thread.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What compresses one piece (`last`: the input's final piece); each
/// thread has its own.
pub(crate) type Codec<T> = Box<dyn FnMut(&[u8], bool) -> io::Result<T> + Send>;

struct Job {
    seq: u64,
    data: Vec<u8>,
    last: bool,
}

/// A piece's result, with its input buffer back for reuse.
type Done<T> = (u64, Vec<u8>, io::Result<T>);

struct Threads<T> {
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<Done<T>>,
    handles: Vec<JoinHandle<()>>,
}

pub(crate) struct OrderedPool<T> {
    threads: Option<Threads<T>>,
    /// With one thread: the caller's own codec.
    inline: Option<Codec<T>>,
    max_in_flight: u64,
    next_seq: u64,
    next_out: u64,
    done: BTreeMap<u64, io::Result<T>>,
    spare: Vec<Vec<u8>>,
    /// A piece failed to compress or to be emitted: the output is
    /// incomplete, and the pool takes nothing more.
    failed: bool,
}

impl<T: Send + 'static> OrderedPool<T> {
    /// A pool of `threads` threads named `name-N`, each with a codec from
    /// `make`.
    pub(crate) fn new(
        threads: usize,
        name: &str,
        mut make: impl FnMut() -> io::Result<Codec<T>>,
    ) -> io::Result<Self> {
        let threads = threads.max(1);
        let mut pool = OrderedPool {
            threads: None,
            inline: None,
            max_in_flight: 2 * threads as u64,
            next_seq: 0,
            next_out: 0,
            done: BTreeMap::new(),
            spare: Vec::new(),
            failed: false,
        };
        if threads == 1 {
            pool.inline = Some(make()?);
            return Ok(pool);
        }
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (res_tx, res_rx) = mpsc::channel::<Done<T>>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let mut codec = make()?;
            let (job_rx, res_tx) = (Arc::clone(&job_rx), res_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A codec that panics fails its piece (and so the
                        // stream) rather than leaving the caller waiting
                        // for it; the thread ends, its codec unusable.
                        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            codec(&job.data, job.last)
                        }));
                        let panicked = out.is_err();
                        let out = out.unwrap_or_else(|_| {
                            Err(io::Error::other("a compression thread panicked"))
                        });
                        if res_tx.send((job.seq, job.data, out)).is_err() || panicked {
                            return;
                        }
                    }
                })?;
            handles.push(handle);
        }
        pool.threads = Some(Threads {
            jobs: Some(job_tx),
            results: res_rx,
            handles,
        });
        Ok(pool)
    }

    /// An empty buffer for the next piece (one handed back if any).
    pub(crate) fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Fails if an earlier piece failed: the stream is then incomplete for
    /// good, and its encoder must take no more input.
    pub(crate) fn check(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write to this compressed stream failed",
            ));
        }
        Ok(())
    }

    /// Hands in the next piece; `emit` gets every result ready by now, in
    /// order. Waits while too many pieces are in flight.
    pub(crate) fn submit(
        &mut self,
        data: Vec<u8>,
        last: bool,
        emit: &mut dyn FnMut(T) -> io::Result<()>,
    ) -> io::Result<()> {
        self.check()?;
        let sent = self.hand_in(data, last, emit);
        self.failed = sent.is_err();
        sent
    }

    /// Waits for every piece handed in; `emit` gets the rest in order.
    pub(crate) fn drain(&mut self, emit: &mut dyn FnMut(T) -> io::Result<()>) -> io::Result<()> {
        self.check()?;
        let mut drained = Ok(());
        while drained.is_ok() && self.next_out < self.next_seq {
            drained = self.collect_one(emit);
        }
        self.failed = drained.is_err();
        drained
    }

    fn hand_in(
        &mut self,
        data: Vec<u8>,
        last: bool,
        emit: &mut dyn FnMut(T) -> io::Result<()>,
    ) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(codec) = &mut self.inline {
            let out = codec(&data, last);
            self.next_out += 1;
            self.give_back(data);
            return emit(out?);
        }
        let jobs = self
            .threads
            .as_ref()
            .and_then(|t| t.jobs.as_ref())
            .ok_or_else(gone)?;
        jobs.send(Job { seq, data, last }).map_err(|_| gone())?;
        while self.next_seq - self.next_out >= self.max_in_flight {
            self.collect_one(emit)?;
        }
        Ok(())
    }

    /// Waits for one result, then emits every result now in order.
    fn collect_one(&mut self, emit: &mut dyn FnMut(T) -> io::Result<()>) -> io::Result<()> {
        let results = &self.threads.as_ref().ok_or_else(gone)?.results;
        let (seq, data, out) = results.recv().map_err(|_| gone())?;
        self.give_back(data);
        self.done.insert(seq, out);
        while let Some(out) = self.done.remove(&self.next_out) {
            self.next_out += 1;
            emit(out?)?;
        }
        Ok(())
    }

    fn give_back(&mut self, mut data: Vec<u8>) {
        data.clear();
        if self.spare.len() < self.max_in_flight as usize {
            self.spare.push(data);
        }
    }
}

impl<T> Drop for OrderedPool<T> {
    fn drop(&mut self) {
        if let Some(mut t) = self.threads.take() {
            t.jobs = None;
            for h in t.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("a compression thread exited")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose codec doubles each byte, and panics on a piece that
    /// starts with `0xff`.
    fn pool(threads: usize) -> OrderedPool<Vec<u8>> {
        OrderedPool::new(threads, "test-pool", || {
            Ok(Box::new(|piece: &[u8], _last: bool| {
                assert!(piece.first() != Some(&0xff), "the codec's bug");
                Ok(piece.iter().map(|b| b.wrapping_mul(2)).collect())
            }))
        })
        .expect("pool")
    }

    #[test]
    fn results_come_back_in_input_order() {
        let mut p = pool(3);
        let mut out = Vec::new();
        for i in 0..20u8 {
            p.submit(vec![i; 1000], i == 19, &mut |r| {
                out.push(r[0]);
                Ok(())
            })
            .expect("submit");
        }
        p.drain(&mut |r| {
            out.push(r[0]);
            Ok(())
        })
        .expect("drain");
        assert_eq!(out, (0..20u8).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_codec_fails_the_stream_instead_of_hanging() {
        // On a thread of its own, so that a hang fails the test.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for threads in [2, 3] {
                let mut p = pool(threads);
                let mut emit = |_: Vec<u8>| Ok(());
                let mut failed = None;
                for i in 0..10u8 {
                    let piece = if i == 4 { vec![0xff; 10] } else { vec![i; 10] };
                    if let Err(e) = p.submit(piece, false, &mut emit) {
                        failed = Some(e);
                        break;
                    }
                }
                let err = match failed {
                    Some(e) => e,
                    None => p.drain(&mut emit).expect_err("the stream failed"),
                };
                let _ = tx.send((threads, err.to_string(), p.check().is_err()));
            }
        });
        for threads in [2, 3] {
            let (t, err, refused) = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the pool hung on a panicking codec");
            assert_eq!(t, threads);
            assert!(err.contains("panicked"), "{threads} threads: {err}");
            assert!(refused, "{threads} threads: the pool takes nothing more");
        }
    }
}
