//! One module per subcommand.

#[cfg(feature = "embedded")]
pub mod build;
#[cfg(feature = "embedded")]
pub mod images;
pub mod plan;
