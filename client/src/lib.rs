//! The `strata` client: a `docker build`-compatible CLI for the strata
//! build farm. Every command except `plan` talks gRPC to a scheduler's
//! `strata.build.v1.BuildService`: a remote one (`--scheduler`) or, with the
//! `embedded` feature, one started in this process.

pub mod cli;
pub mod commands;
pub mod connect;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod format;
pub mod progress;
pub mod transfer;
pub mod watch;

/// An error that ends the process with a given exit status after its
/// message (if any) was already printed, e.g. 130 after Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct Exit(pub u8);
