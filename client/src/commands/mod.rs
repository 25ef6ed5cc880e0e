//! One module per subcommand. All but `plan` talk to a scheduler.

pub mod build;
pub mod builds;
pub mod cancel;
pub mod history;
pub mod images;
pub mod import;
pub mod logs;
pub mod plan;
pub mod prune;
pub mod push;
pub mod rmi;
pub mod save;
pub mod tag;
pub mod workers;
