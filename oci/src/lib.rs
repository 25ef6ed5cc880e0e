//! OCI images for strata: the pieces both the worker and the scheduler
//! need.
//!
//! - [`layer`]: filesystem changes to deterministic OCI layer tars
//!   (whiteouts, hardlinks, xattrs), compression, digests, and unpacking.
//! - [`registry`]: the distribution API client (pull and push, auth).

pub mod layer;
pub mod registry;
