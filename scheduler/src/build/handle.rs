//! One build's state and its event log.
//!
//! Events get increasing sequence numbers from 1. While a build runs, every
//! event is journalled to the state (`events/<id>`, see
//! [`BuildHandle::journal_to`]) and watchers are served an event only once
//! the journal holds it: the handle keeps a *durable* watermark, the
//! highest sequence written, that the journal's writer advances. So
//! whatever a client has seen, a restarted scheduler finds too, and it
//! numbers the resumed build's events after the highest sequence in the
//! journal ([`BuildHandle::restore`]): a client that reattaches with the
//! last sequence it saw misses nothing and sees nothing twice. A handle
//! with no journal (a finished build read back, a build of a test) serves
//! events as they come. A finished build's log is kept as `builds/<id>.pb`
//! (its `BuildInfo`, then its events, each length-delimited protobuf), so
//! `strata logs` works after the fact and in a later process.

use prost::Message as _;
use std::sync::Mutex;
use std::time::SystemTime;
use strata_proto::build::v1 as build;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A build known to this scheduler.
#[derive(Debug)]
pub struct BuildHandle {
    /// Its id.
    pub id: String,
    /// Cancelled by `CancelBuild`.
    pub cancel: CancellationToken,
    info: Mutex<build::BuildInfo>,
    log: Mutex<Log>,
    /// The highest sequence watchers may be served (see the module doc).
    durable: watch::Sender<u64>,
}

/// Every event emitted, durable or not, and where new ones go.
#[derive(Debug, Default)]
struct Log {
    /// In order of strictly increasing sequence.
    events: Vec<build::BuildEvent>,
    /// The sequence of the last event (0: none yet).
    last: u64,
    /// The sequence of the last event given to a journal (or held for
    /// one): later events need no writing.
    sent: u64,
    journal: Journal,
}

#[derive(Debug, Default)]
enum Journal {
    /// Not journalled: an event is durable as soon as every one given to a
    /// journal is.
    #[default]
    Off,
    /// A resumed build before its journal is attached: events wait for it.
    Pending,
    /// Events go to the writer, which marks each durable once written.
    Open(mpsc::UnboundedSender<build::BuildEvent>),
}

/// Whether an event ends a build.
pub fn is_terminal(ev: &build::BuildEvent) -> bool {
    matches!(
        ev.event,
        Some(
            build::build_event::Event::BuildFinished(_) | build::build_event::Event::BuildFailed(_)
        )
    )
}

/// `events` in order of sequence, each sequence once (the first copy: a
/// retried append can store an event twice), none numbered 0.
fn by_sequence(mut events: Vec<build::BuildEvent>) -> Vec<build::BuildEvent> {
    events.retain(|e| e.sequence != 0);
    events.sort_by_key(|e| e.sequence);
    events.dedup_by_key(|e| e.sequence);
    events
}

impl BuildHandle {
    /// A new, queued build.
    pub fn new(id: String, info: build::BuildInfo) -> Self {
        Self {
            id,
            cancel: CancellationToken::new(),
            info: Mutex::new(info),
            log: Mutex::new(Log::default()),
            durable: watch::channel(0).0,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends every event not yet durable, then every later one, to
    /// `journal`, in order. Its writer calls [`BuildHandle::mark_durable`]
    /// as each is written; until then watchers do not see it.
    pub fn journal_to(&self, journal: mpsc::UnboundedSender<build::BuildEvent>) {
        let mut log = self.log();
        let durable = *self.durable.borrow();
        for ev in log.events.iter().filter(|e| e.sequence > durable) {
            let _ = journal.send(ev.clone());
        }
        log.sent = log.last;
        log.journal = Journal::Open(journal);
    }

    /// Stops journalling (the writer then sees the channel close). Call it
    /// after the build's last event: a later one is served only once the
    /// writer has marked every earlier one durable.
    pub fn close_journal(&self) {
        self.log().journal = Journal::Off;
    }

    /// Marks every event up to `sequence` durable (written to the journal,
    /// or given up on) and wakes the watchers.
    pub fn mark_durable(&self, sequence: u64) {
        self.advance(&self.log(), sequence);
    }

    /// Moves the watermark to `sequence`, or past the events that need no
    /// writing once every one that does is written. Called under the
    /// log's lock, so an `emit` cannot slip between.
    fn advance(&self, log: &Log, sequence: u64) {
        let to = if sequence >= log.sent {
            log.last
        } else {
            sequence
        };
        if self.durable.send_if_modified(|d| {
            let newer = to > *d;
            if newer {
                *d = to;
            }
            newer
        }) {
            self.update(|i| i.last_sequence = to);
        }
    }

    /// Puts back the journalled events of an earlier run (a resumed build):
    /// in order of their own sequence numbers, a sequence stored twice
    /// kept once, numbering on after the highest. Events emitted from now
    /// on wait for [`BuildHandle::journal_to`].
    pub fn restore(&self, events: Vec<build::BuildEvent>) {
        let events = by_sequence(events);
        let last = events.last().map_or(0, |e| e.sequence);
        let mut log = self.log();
        *log = Log {
            events,
            last,
            sent: last,
            journal: Journal::Pending,
        };
        self.durable.send_replace(last);
        self.update(|i| i.last_sequence = last);
    }

    /// Appends an event; returns its sequence number. Watchers see it once
    /// it is durable (at once when the build is not journalled).
    pub fn emit(&self, event: build::build_event::Event) -> u64 {
        let mut log = self.log();
        let sequence = log.last + 1;
        let ev = build::BuildEvent {
            build_id: self.id.clone(),
            sequence,
            timestamp: Some(SystemTime::now().into()),
            event: Some(event),
        };
        // Under the log's lock, so the journal gets them in order.
        let journalled = match &log.journal {
            Journal::Open(j) => j.send(ev.clone()).is_ok(),
            Journal::Pending => true,
            Journal::Off => false,
        };
        log.events.push(ev);
        log.last = sequence;
        if journalled {
            log.sent = sequence;
        } else {
            let durable = *self.durable.borrow();
            self.advance(&log, durable);
        }
        sequence
    }

    /// Durable events after `sequence`, in order.
    pub fn events_after(&self, sequence: u64) -> Vec<build::BuildEvent> {
        let log = self.log();
        let durable = *self.durable.borrow();
        let from = log.events.partition_point(|e| e.sequence <= sequence);
        let to = log.events.partition_point(|e| e.sequence <= durable);
        log.events
            .get(from..to.max(from))
            .unwrap_or_default()
            .to_vec()
    }

    /// Every event of the log, durable or not (a resumed build reads
    /// what its log says already).
    pub fn logged(&self) -> Vec<build::BuildEvent> {
        self.log().events.clone()
    }

    /// Wakes when more events are durable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Whether the build has finished (its last event is terminal).
    pub fn finished(&self) -> bool {
        self.log().events.last().is_some_and(is_terminal)
    }

    /// A snapshot of the build's summary.
    pub fn info(&self) -> build::BuildInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the summary.
    pub fn update(&self, f: impl FnOnce(&mut build::BuildInfo)) {
        f(&mut self.info.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The finished build as bytes: its summary, then every event, each
    /// length-delimited (what `builds/<id>.pb` holds).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot run out of space.
        let _ = self.info().encode_length_delimited(&mut buf);
        for ev in &self.log().events {
            let _ = ev.encode_length_delimited(&mut buf);
        }
        buf
    }

    /// Whether `id` can be a build id (and so a key segment).
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    /// A build from [`BuildHandle::encode`]'s bytes.
    pub fn decode(id: &str, bytes: &[u8]) -> Option<Self> {
        let mut buf = bytes;
        let info = build::BuildInfo::decode_length_delimited(&mut buf).ok()?;
        let mut events = Vec::new();
        while !buf.is_empty() {
            events.push(build::BuildEvent::decode_length_delimited(&mut buf).ok()?);
        }
        let handle = Self::new(id.to_string(), info);
        handle.restore(events);
        handle.log().journal = Journal::Off;
        Some(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_and_survive_persistence() {
        let h = BuildHandle::new("b1".into(), build::BuildInfo::default());
        h.emit(build::build_event::Event::StepCancelled(
            build::StepCancelled {
                step_id: "s0-0".into(),
                reason: "x".into(),
            },
        ));
        h.emit(build::build_event::Event::BuildFailed(
            build::BuildFailed::default(),
        ));
        assert!(h.finished());
        assert_eq!(h.events_after(1).len(), 1);
        assert_eq!(h.events_after(1)[0].sequence, 2);
        let back = BuildHandle::decode("b1", &h.encode()).unwrap();
        assert_eq!(back.events_after(0), h.events_after(0));
        assert_eq!(back.info().last_sequence, 2);
        assert!(!BuildHandle::valid_id("../b1"));
        assert!(BuildHandle::decode("b1", b"\x05garbage").is_none());
    }

    fn warning(n: u64) -> build::BuildEvent {
        build::BuildEvent {
            build_id: "b2".into(),
            sequence: n,
            event: Some(build::build_event::Event::Warning(build::BuildWarning {
                message: format!("w{n}"),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn sequences(h: &BuildHandle) -> Vec<u64> {
        h.events_after(0).iter().map(|e| e.sequence).collect()
    }

    #[test]
    fn a_restored_log_keeps_each_sequence_once_and_numbers_on_after_the_highest() {
        let h = BuildHandle::new("b2".into(), build::BuildInfo::default());
        h.restore(vec![
            warning(1),
            warning(2),
            warning(2),
            warning(4),
            warning(3),
            warning(4),
        ]);
        assert_eq!(sequences(&h), [1, 2, 3, 4]);
        assert_eq!(h.events_after(2)[0].sequence, 3);
        assert_eq!(h.info().last_sequence, 4);
        let next = h.emit(build::build_event::Event::BuildFailed(
            build::BuildFailed::default(),
        ));
        assert_eq!(next, 5);
        // A resumed build's new events wait for its journal.
        assert_eq!(sequences(&h), [1, 2, 3, 4]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        h.journal_to(tx);
        assert_eq!(rx.try_recv().map(|e| e.sequence).ok(), Some(5));
        assert_eq!(sequences(&h), [1, 2, 3, 4]);
        h.mark_durable(5);
        assert_eq!(sequences(&h), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn events_after_the_journal_closes_wait_for_the_earlier_ones() {
        let h = BuildHandle::new("b3".into(), build::BuildInfo::default());
        let (tx, _rx) = mpsc::unbounded_channel();
        h.journal_to(tx);
        let step = || {
            build::build_event::Event::StepCancelled(build::StepCancelled {
                step_id: "s0-0".into(),
                reason: "x".into(),
            })
        };
        h.emit(step());
        h.emit(step());
        h.close_journal();
        h.emit(step());
        assert_eq!(sequences(&h), Vec::<u64>::new());
        h.mark_durable(1);
        assert_eq!(sequences(&h), [1]);
        h.mark_durable(2);
        assert_eq!(sequences(&h), [1, 2, 3]);
    }
}
