//! The `strata` client: a `docker build`-compatible CLI for the strata
//! build farm.
//!
//! Today it plans builds locally (`strata plan`); building, images and
//! the farm commands arrive with the scheduler (see ARCHITECTURE.md).

pub mod cli;
pub mod commands;
#[cfg(feature = "embedded")]
pub mod embedded;
