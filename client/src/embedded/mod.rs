//! Embedded mode: a scheduler and a worker in this process, on a local
//! store under `STRATA_HOME`, served to the rest of the client over a
//! private gRPC channel. Every command then takes the same path as against
//! a remote farm.

use anyhow::{Result, bail};
use std::path::Path;
use tonic::transport::Channel;

/// The running in-process farm; dropping it stops the scheduler and the
/// worker.
pub struct Farm {
    _private: (),
}

/// Starts a scheduler and a worker in this process with their state under
/// `home`, and returns a channel to the scheduler's `BuildService`.
pub async fn start(home: &Path) -> Result<(Channel, Farm)> {
    let _ = home;
    bail!("the embedded farm is not wired yet")
}
