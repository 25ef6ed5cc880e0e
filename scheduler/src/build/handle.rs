//! One build's state and its event log.
//!
//! Events get consecutive sequence numbers from 1. A watcher reads every
//! event after the last sequence it saw and then waits for more, so a
//! client that reattaches with `after_sequence` misses nothing and sees
//! nothing twice. While the build runs, every event is also journalled to
//! the state (`events/<id>`, see [`BuildHandle::journal_to`]) so a
//! restarted scheduler resumes it with the same numbering; a finished
//! build's log is kept as `builds/<id>.pb` (its `BuildInfo`, then its
//! events, each length-delimited protobuf), so `strata logs` works after
//! the fact and in a later process.

use prost::Message as _;
use std::sync::Mutex;
use std::time::SystemTime;
use strata_proto::build::v1 as build;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A build known to this scheduler.
#[derive(Debug)]
pub struct BuildHandle {
    /// Its id.
    pub id: String,
    /// Cancelled by `CancelBuild`.
    pub cancel: CancellationToken,
    info: Mutex<build::BuildInfo>,
    events: Mutex<Vec<build::BuildEvent>>,
    last: watch::Sender<u64>,
    journal: Mutex<Option<tokio::sync::mpsc::UnboundedSender<build::BuildEvent>>>,
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

impl BuildHandle {
    /// A new, queued build.
    pub fn new(id: String, info: build::BuildInfo) -> Self {
        Self {
            id,
            cancel: CancellationToken::new(),
            info: Mutex::new(info),
            events: Mutex::new(Vec::new()),
            last: watch::channel(0).0,
            journal: Mutex::new(None),
        }
    }

    /// Sends every later event to `journal` too (in order), until
    /// [`BuildHandle::close_journal`].
    pub fn journal_to(&self, journal: tokio::sync::mpsc::UnboundedSender<build::BuildEvent>) {
        *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(journal);
    }

    /// Stops journalling (the writer then sees the channel close).
    pub fn close_journal(&self) {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Puts back events of an earlier run (a resumed build), numbering on.
    pub fn restore(&self, events: Vec<build::BuildEvent>) {
        let n = events.len() as u64;
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = events;
        self.info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_sequence = n;
        self.last.send_replace(n);
    }

    /// Appends an event; returns its sequence number.
    pub fn emit(&self, event: build::build_event::Event) -> u64 {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let sequence = events.len() as u64 + 1;
        let ev = build::BuildEvent {
            build_id: self.id.clone(),
            sequence,
            timestamp: Some(SystemTime::now().into()),
            event: Some(event),
        };
        // Under the events lock, so the journal gets them in order.
        if let Some(j) = &*self.journal.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = j.send(ev.clone());
        }
        events.push(ev);
        self.info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_sequence = sequence;
        self.last.send_replace(sequence);
        sequence
    }

    /// Events after `sequence`, in order.
    pub fn events_after(&self, sequence: u64) -> Vec<build::BuildEvent> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events
            .iter()
            .skip(usize::try_from(sequence).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Wakes when new events arrive.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }

    /// Whether the build has finished (its last event is terminal).
    pub fn finished(&self) -> bool {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.last().is_some_and(is_terminal)
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
        for ev in self.events_after(0) {
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
        let handle = Self::new(id.to_string(), info);
        while !buf.is_empty() {
            let ev = build::BuildEvent::decode_length_delimited(&mut buf).ok()?;
            handle
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ev);
        }
        let n = handle.events_after(0).len() as u64;
        handle.last.send_replace(n);
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
}
