//! The strata worker: runs per-layer jobs in runc and turns each step's
//! filesystem change into an OCI layer. [`agent`] is its session with a
//! scheduler; [`job`] runs one job; [`executor`] (runc), [`snapshot`]
//! (overlayfs / copy), [`copy`] (COPY/ADD), [`store`] (blobs and unpacked
//! layers), [`pull`], [`fetch`] and [`assignment`] do the parts.

pub mod agent;
pub mod assignment;
mod boot;
pub mod config;
pub mod context;
pub mod copy;
pub mod evict;
pub mod fetch;
pub mod headroom;
pub mod job;
pub mod keyed;
pub mod pull;
pub mod snapshot;
pub mod store;

pub mod executor;
