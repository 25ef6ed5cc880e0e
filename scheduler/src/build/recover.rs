//! Builds survive a scheduler restart: each running build's request is
//! kept in the state (`requests/<id>`) and its events journalled there as
//! they happen (`events/<id>`), each carrying its sequence number. Watchers
//! are served an event only once it is journalled (the handle's durable
//! watermark, which the journal's writer advances), so a scheduler that
//! starts on the same state (Redis) and resumes every build it finds
//! unfinished, under the same id, numbers on after the highest sequence
//! any client can have seen: a client reattaching with the last sequence it
//! saw continues without a lost or repeated line, and steps that finished
//! before the restart come from the cache instead of running again, each
//! ending once in the log (`ends::Earlier`). Both
//! keys go once the build's whole log is in the durable store.
//!
//! While the state cannot be written, watchers wait and the writer retries;
//! once the build has ended, or an event has failed for `GIVE_UP_AFTER`
//! (an error that retrying does not cure), it gives up: watchers are then
//! served every event as it comes, the build is no longer journalled, and
//! its whole log still goes to the durable store at the end. So a state
//! outage never holds back a build's end nor hides a running build's
//! events for long.

use super::handle::BuildHandle;
use super::persist::persist;
use super::run::run_build;
use crate::Inner;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;
use strata_proto::build::v1 as build;
use strata_state::StateStore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The first wait before writing an event to the journal again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long one event may fail to be journalled before the writer stops
/// journalling the build (and stops holding its events back).
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

fn request_key(id: &str) -> String {
    format!("requests/{id}")
}

fn events_key(id: &str) -> String {
    format!("events/{id}")
}

/// Keeps a build's request and first summary so it can be resumed.
pub async fn remember(inner: &Inner, id: &str, req: &build::BuildRequest, info: &build::BuildInfo) {
    let mut bytes = Vec::new();
    // Encoding into a Vec cannot fail.
    let _ = req.encode_length_delimited(&mut bytes);
    let _ = info.encode_length_delimited(&mut bytes);
    if let Err(e) = inner.state.put(&request_key(id), &bytes, None).await {
        tracing::warn!(
            build_id = id,
            "the build cannot be resumed after a restart: {e}"
        );
    }
}

/// Starts journalling `handle`'s events to the state; the task ends when
/// the journal is closed and everything is written (or given up on).
pub fn journal(inner: &Arc<Inner>, handle: &Arc<BuildHandle>) -> JoinHandle<()> {
    start_journal(Arc::clone(&inner.state), Arc::clone(handle))
}

fn start_journal(state: Arc<dyn StateStore>, handle: Arc<BuildHandle>) -> JoinHandle<()> {
    start_journal_giving_up_after(state, handle, GIVE_UP_AFTER)
}

fn start_journal_giving_up_after(
    state: Arc<dyn StateStore>,
    handle: Arc<BuildHandle>,
    give_up_after: Duration,
) -> JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    handle.journal_to(tx);
    tokio::spawn(write_journal(state, handle, rx, give_up_after))
}

/// Appends each event in order, marking it durable once stored; retries
/// a failed append until it succeeds, the build has ended or the event
/// has failed for `give_up_after`.
async fn write_journal(
    state: Arc<dyn StateStore>,
    handle: Arc<BuildHandle>,
    mut rx: mpsc::UnboundedReceiver<build::BuildEvent>,
    give_up_after: Duration,
) {
    let key = events_key(&handle.id);
    let mut writing = true;
    while let Some(ev) = rx.recv().await {
        let bytes = ev.encode_to_vec();
        let mut delay = RETRY_FIRST;
        let mut failing_since = None;
        while writing {
            match state.append(&key, &bytes).await {
                Ok(_) => break,
                Err(e) if handle.finished() => {
                    tracing::warn!(
                        build_id = handle.id,
                        "journalling {key} stopped at event {}: {e}; the build has ended \
                         and its whole log goes to the durable store",
                        ev.sequence
                    );
                    writing = false;
                }
                Err(e)
                    if failing_since
                        .get_or_insert_with(tokio::time::Instant::now)
                        .elapsed()
                        >= give_up_after =>
                {
                    tracing::warn!(
                        build_id = handle.id,
                        "journalling {key} stopped at event {}: {e}, failing for over \
                         {give_up_after:?}; watchers are served the build's events \
                         unjournalled from now on and its whole log goes to the durable \
                         store at the end (a scheduler restart before then would resume \
                         it from the last journalled event)",
                        ev.sequence
                    );
                    writing = false;
                }
                Err(e) => {
                    tracing::warn!(
                        build_id = handle.id,
                        "journalling {key}, event {}: {e}; watchers wait, retrying in {delay:?}",
                        ev.sequence
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
        handle.mark_durable(ev.sequence);
    }
}

/// Drops a finished build's request and journal (its log is durable).
pub async fn forget(inner: &Inner, id: &str) {
    for key in [request_key(id), events_key(id)] {
        if let Err(e) = inner.state.delete(&key).await {
            tracing::warn!("removing {key}: {e}");
        }
    }
}

/// Resumes every unfinished build the state remembers.
pub async fn resume_all(inner: &Arc<Inner>) {
    let pending = match inner.state.scan("requests/").await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot look for builds to resume: {e}");
            return;
        }
    };
    for (key, bytes) in pending {
        let id = key.trim_start_matches("requests/").to_string();
        if let Err(e) = resume(inner, &id, &bytes).await {
            tracing::warn!(build_id = id, "cannot resume the build: {e}");
        }
    }
}

async fn resume(inner: &Arc<Inner>, id: &str, bytes: &[u8]) -> Result<(), String> {
    if !BuildHandle::valid_id(id) {
        return Err("not a build id".into());
    }
    if inner
        .builds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(id)
    {
        return Ok(());
    }
    let mut buf = bytes;
    let req = build::BuildRequest::decode_length_delimited(&mut buf).map_err(|e| e.to_string())?;
    let info = build::BuildInfo::decode_length_delimited(&mut buf).map_err(|e| e.to_string())?;
    let handle = Arc::new(BuildHandle::new(id.to_string(), info));
    handle.restore(journalled(inner.state.as_ref(), id).await?);
    inner
        .builds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.to_string(), Arc::clone(&handle));
    if handle.finished() {
        // It ended just before the restart; only its log was not kept.
        persist(inner, &handle).await;
        forget(inner, id).await;
        return Ok(());
    }
    let input = match crate::service::request::build_input(inner, &req).await {
        Ok(i) => i,
        Err(status) => {
            let failure = build::BuildFailed {
                status: build::BuildStatus::Failed as i32,
                error: Some(build::BuildError {
                    code: build::ErrorCode::Internal as i32,
                    message: format!(
                        "cannot resume after a scheduler restart: {}",
                        status.message()
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let journal = journal(inner, &handle);
            handle.emit(build::build_event::Event::BuildFailed(failure));
            handle.close_journal();
            let _ = journal.await;
            persist(inner, &handle).await;
            forget(inner, id).await;
            return Ok(());
        }
    };
    tracing::info!(build_id = id, "resuming a build after a scheduler restart");
    // Held until `run_build` attaches the journal, like every event of a
    // resumed build.
    handle.emit(build::build_event::Event::Warning(build::BuildWarning {
        message:
            "the scheduler restarted; the build resumes (steps that finished come from the cache)"
                .into(),
        ..Default::default()
    }));
    let span = tracing::info_span!("build", build_id = %id, resumed = true);
    tokio::spawn(tracing::Instrument::instrument(
        run_build(Arc::clone(inner), handle, input),
        span,
    ));
    Ok(())
}

/// The events journalled for build `id`, as stored (a retried append may
/// have stored one twice: [`BuildHandle::restore`] keeps it once).
async fn journalled(state: &dyn StateStore, id: &str) -> Result<Vec<build::BuildEvent>, String> {
    let key = events_key(id);
    let entries = state.range(&key, 0).await.map_err(|e| e.to_string())?;
    let mut events = Vec::with_capacity(entries.len());
    for (i, bytes) in entries.iter().enumerate() {
        match build::BuildEvent::decode(bytes.as_slice()) {
            Ok(ev) => events.push(ev),
            Err(e) => tracing::warn!(build_id = id, "{key}: entry {i} is unreadable: {e}"),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use strata_state::{MemoryState, StateError};
    use tokio::sync::Semaphore;

    /// A state whose appends wait for a permit and fail while `failures`
    /// lasts (`u32::MAX`: for ever); everything else is a `MemoryState`.
    #[derive(Debug)]
    struct SlowState {
        inner: MemoryState,
        permits: Semaphore,
        failures: AtomicU32,
    }

    impl SlowState {
        fn new(permits: usize, failures: u32) -> Arc<Self> {
            Arc::new(Self {
                inner: MemoryState::new(),
                permits: Semaphore::new(permits),
                failures: AtomicU32::new(failures),
            })
        }

        async fn stored(&self, id: &str) -> Vec<u64> {
            journalled(&self.inner, id)
                .await
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect()
        }
    }

    #[tonic::async_trait]
    impl StateStore for SlowState {
        fn describe(&self) -> String {
            "slow".into()
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            value: &[u8],
            ttl: Option<Duration>,
        ) -> Result<(), StateError> {
            self.inner.put(key, value, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<bool, StateError> {
            self.inner.delete(key).await
        }
        async fn put_if_absent(
            &self,
            key: &str,
            value: &[u8],
            ttl: Option<Duration>,
        ) -> Result<Option<Vec<u8>>, StateError> {
            self.inner.put_if_absent(key, value, ttl).await
        }
        async fn delete_if_equals(&self, key: &str, value: &[u8]) -> Result<bool, StateError> {
            self.inner.delete_if_equals(key, value).await
        }
        async fn expire_if_equals(
            &self,
            key: &str,
            value: &[u8],
            ttl: Duration,
        ) -> Result<bool, StateError> {
            self.inner.expire_if_equals(key, value, ttl).await
        }
        async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
            self.inner.scan(prefix).await
        }
        async fn append(&self, key: &str, value: &[u8]) -> Result<u64, StateError> {
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                    0 => None,
                    u32::MAX => Some(u32::MAX),
                    n => Some(n - 1),
                })
                .is_ok();
            if failing {
                return Err(StateError::Backend {
                    store: self.describe(),
                    op: "RPUSH",
                    key: key.into(),
                    detail: "connection refused".into(),
                });
            }
            self.permits.acquire().await.unwrap().forget();
            self.inner.append(key, value).await
        }
        async fn range(&self, key: &str, from: u64) -> Result<Vec<Vec<u8>>, StateError> {
            self.inner.range(key, from).await
        }
    }

    fn log_line(text: &str) -> build::build_event::Event {
        build::build_event::Event::StepLog(build::StepLog {
            step_id: "s0-1".into(),
            chunk: Some(strata_proto::common::v1::LogChunk {
                data: text.as_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn failed() -> build::build_event::Event {
        build::build_event::Event::BuildFailed(build::BuildFailed::default())
    }

    fn served(h: &BuildHandle) -> Vec<u64> {
        h.events_after(0).iter().map(|e| e.sequence).collect()
    }

    /// Waits until watchers may see `n` events.
    async fn durable(h: &BuildHandle, n: u64) {
        let mut changes = h.subscribe();
        tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|d| *d >= n))
            .await
            .expect("the event never became durable")
            .unwrap();
    }

    #[tokio::test]
    async fn a_watcher_is_served_only_what_the_journal_holds() {
        let state = SlowState::new(0, 0);
        let h = Arc::new(BuildHandle::new("b1".into(), build::BuildInfo::default()));
        let writer = start_journal(state.clone(), Arc::clone(&h));
        for i in 1..=3 {
            h.emit(log_line(&format!("line-{i}\n")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(served(&h), Vec::<u64>::new(), "served before written");
        assert_eq!(*h.subscribe().borrow(), 0);
        assert_eq!(h.info().last_sequence, 0);

        state.permits.add_permits(1);
        durable(&h, 1).await;
        assert_eq!(state.stored("b1").await, [1]);
        assert_eq!(served(&h), [1]);
        assert_eq!(h.events_after(1), []);

        state.permits.add_permits(2);
        durable(&h, 3).await;
        assert_eq!(state.stored("b1").await, [1, 2, 3]);
        assert_eq!(served(&h), [1, 2, 3]);
        assert_eq!(h.info().last_sequence, 3);
        h.close_journal();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_journal_holds_events_back_until_it_is_written() {
        let state = SlowState::new(usize::MAX >> 4, 3);
        let h = Arc::new(BuildHandle::new("b2".into(), build::BuildInfo::default()));
        let writer = start_journal(state.clone(), Arc::clone(&h));
        h.emit(log_line("line-1\n"));
        h.emit(log_line("line-2\n"));
        // Three failures: 100 + 200 + 400 ms of retries.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(served(&h), Vec::<u64>::new());
        durable(&h, 2).await;
        assert_eq!(state.stored("b2").await, [1, 2]);
        assert_eq!(served(&h), [1, 2]);
        h.close_journal();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_journal_that_cannot_be_written_is_given_up_once_the_build_ends() {
        let state = SlowState::new(usize::MAX >> 4, u32::MAX);
        let h = Arc::new(BuildHandle::new("b3".into(), build::BuildInfo::default()));
        let writer = start_journal(state.clone(), Arc::clone(&h));
        h.emit(log_line("line-1\n"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(served(&h), Vec::<u64>::new(), "served though never written");
        h.emit(failed());
        h.close_journal();
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer never gave up")
            .unwrap();
        assert_eq!(served(&h), [1, 2]);
        assert!(state.stored("b3").await.is_empty());
    }

    #[tokio::test]
    async fn a_journal_failing_too_long_is_given_up_while_the_build_runs() {
        let state = SlowState::new(usize::MAX >> 4, u32::MAX);
        let h = Arc::new(BuildHandle::new("b5".into(), build::BuildInfo::default()));
        let writer = start_journal_giving_up_after(
            state.clone(),
            Arc::clone(&h),
            Duration::from_millis(300),
        );
        h.emit(log_line("line-1\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(served(&h), Vec::<u64>::new(), "served though never written");
        // Still running: after the cap the event is served all the same,
        // and later ones are not held back (nor journalled).
        durable(&h, 1).await;
        assert!(!h.finished());
        assert_eq!(served(&h), [1]);
        h.emit(log_line("line-2\n"));
        durable(&h, 2).await;
        assert_eq!(served(&h), [1, 2]);
        assert!(state.stored("b5").await.is_empty());
        h.close_journal();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_resumed_build_numbers_on_after_its_highest_journalled_event() {
        let state = SlowState::new(usize::MAX >> 4, 0);
        // A retried append stored 2 and 4 twice.
        for seq in [1, 2, 2, 3, 4, 4] {
            let ev = build::BuildEvent {
                build_id: "b4".into(),
                sequence: seq,
                event: Some(log_line(&format!("line-{seq}\n"))),
                ..Default::default()
            };
            state
                .inner
                .append("events/b4", &ev.encode_to_vec())
                .await
                .unwrap();
        }
        let h = Arc::new(BuildHandle::new("b4".into(), build::BuildInfo::default()));
        h.restore(journalled(state.as_ref(), "b4").await.unwrap());
        assert_eq!(served(&h), [1, 2, 3, 4]);
        assert_eq!(h.info().last_sequence, 4);
        // Not by count (6): after the highest.
        assert_eq!(h.emit(log_line("resumed\n")), 5);
        // Held until the resumed run's journal has it.
        assert_eq!(served(&h), [1, 2, 3, 4]);
        let writer = start_journal(state.clone(), Arc::clone(&h));
        durable(&h, 5).await;
        assert_eq!(served(&h), [1, 2, 3, 4, 5]);
        assert_eq!(state.stored("b4").await, [1, 2, 2, 3, 4, 4, 5]);
        h.close_journal();
        writer.await.unwrap();

        // Restored once more, the journal still reads as 1..=5.
        let again = BuildHandle::new("b4".into(), build::BuildInfo::default());
        again.restore(journalled(state.as_ref(), "b4").await.unwrap());
        assert_eq!(served(&again), [1, 2, 3, 4, 5]);
        assert_eq!(again.emit(failed()), 6);
    }
}
