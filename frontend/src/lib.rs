//! The Dockerfile frontend of strata.
//!
//! Everything between the bytes of a Dockerfile and the per-layer job graph
//! the scheduler dispatches lives here, with Docker's (BuildKit's) semantics:
//!
//! - [`parser`]: bytes to raw instruction nodes (directives, continuations,
//!   exec/shell forms, flags, heredocs).
//! - [`shell`]: BuildKit's shell-word lexer for variable expansion.
//! - [`instructions`]: raw nodes to typed instructions with validated flags.
//! - [`dockerignore`] and [`context`]: which context files a build sees.
//! - [`plan`]: stages, ARG scoping, expansion and the step DAG with the
//!   inputs of every step's cache key.
#![warn(missing_docs)]

pub mod context;
pub mod dockerignore;
pub mod hosts;
pub mod instructions;
pub mod limits;
pub mod parser;
pub mod plan;
pub mod shell;

pub use limits::Limits;
