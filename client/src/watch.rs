//! Following a build's event stream (`WatchBuild`): dedupe by sequence,
//! reattach after a dropped stream, and cancel the build on Ctrl-C.

use crate::progress::Renderer;
use anyhow::{Result, anyhow, bail};
use std::future::Future;
use std::time::Duration;
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_event::Event;

/// How a watch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The build succeeded.
    Finished(pb::BuildFinished),
    /// The build failed or was cancelled.
    Failed(Box<pb::BuildFailed>),
    /// The user interrupted the watch; `CancelBuild` was sent.
    Interrupted,
    /// Not following, and every recorded event was shown (the build is
    /// still running).
    Ended,
}

/// Options of [`watch`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Wait for new events until the build ends (else only replay).
    pub follow: bool,
    /// Ask the scheduler to leave out step logs.
    pub exclude_logs: bool,
    /// Reattach this many times after the stream drops without a terminal
    /// event.
    pub retries: u32,
    /// Wait before the first reattach; doubled for each further one.
    pub backoff: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            follow: true,
            exclude_logs: false,
            retries: 5,
            backoff: Duration::from_millis(250),
        }
    }
}

/// Resolves when the user presses Ctrl-C (never, if the signal cannot be
/// watched).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Status codes after which reattaching cannot help.
fn permanent(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::NotFound
            | tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::Unimplemented
            | tonic::Code::FailedPrecondition
    )
}

/// Streams the events of `build_id` into `renderer` until a terminal event
/// (or, without `follow`, the end of the recorded events). When `interrupt`
/// resolves first, sends `CancelBuild` and returns [`Outcome::Interrupted`].
pub async fn watch(
    client: &mut crate::connect::Client,
    build_id: &str,
    renderer: &mut dyn Renderer,
    opts: &WatchOptions,
    interrupt: impl Future<Output = ()>,
) -> Result<Outcome> {
    tokio::pin!(interrupt);
    let mut last = 0u64;
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let req = pb::WatchRequest {
            build_id: build_id.to_string(),
            after_sequence: last,
            exclude_logs: opts.exclude_logs,
            no_follow: !opts.follow,
        };
        let mut c = client.clone();
        let opened = tokio::select! {
            r = c.watch_build(req) => r,
            () = &mut interrupt => return cancel(client, build_id, renderer).await,
        };
        let why = match opened {
            Err(status) if permanent(status.code()) => {
                bail!("watching build {build_id}: {}", status.message())
            }
            Err(status) => status.message().to_string(),
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    tokio::select! {
                        m = stream.message() => match m {
                            Ok(Some(ev)) => {
                                // A reattach may replay what was seen. The
                                // scheduler serves only journalled events and a
                                // resumed build numbers on after them, so a
                                // sequence names one event for good.
                                if ev.sequence != 0 && ev.sequence <= last {
                                    continue;
                                }
                                last = last.max(ev.sequence);
                                failures = 0;
                                renderer.event(&ev)?;
                                match ev.event {
                                    Some(Event::BuildFinished(f)) => {
                                        renderer.finish()?;
                                        return Ok(Outcome::Finished(f));
                                    }
                                    Some(Event::BuildFailed(f)) => {
                                        renderer.finish()?;
                                        return Ok(Outcome::Failed(Box::new(f)));
                                    }
                                    _ => {}
                                }
                            }
                            Ok(None) if !opts.follow => {
                                renderer.finish()?;
                                return Ok(Outcome::Ended);
                            }
                            Ok(None) => break "the event stream ended early".to_string(),
                            Err(status) if permanent(status.code()) => {
                                bail!("watching build {build_id}: {}", status.message())
                            }
                            Err(status) => break status.message().to_string(),
                        },
                        _ = ticker.tick() => renderer.tick()?,
                        () = &mut interrupt => return cancel(client, build_id, renderer).await,
                    }
                }
            }
        };
        failures += 1;
        if failures > opts.retries {
            return Err(anyhow!(
                "lost the event stream of build {build_id} after {} attempts: {why} \
                 (the build may still be running: strata logs -f {build_id})",
                opts.retries + 1
            ));
        }
        let wait = opts.backoff * 2u32.saturating_pow(failures - 1);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut interrupt => return cancel(client, build_id, renderer).await,
        }
    }
}

async fn cancel(
    client: &mut crate::connect::Client,
    build_id: &str,
    renderer: &mut dyn Renderer,
) -> Result<Outcome> {
    renderer.finish()?;
    client
        .cancel_build(pb::CancelBuildRequest {
            build_id: build_id.to_string(),
            reason: "cancelled by the client (interrupt)".to_string(),
        })
        .await
        .map_err(|s| anyhow!("cancelling build {build_id}: {}", s.message()))?;
    Ok(Outcome::Interrupted)
}
