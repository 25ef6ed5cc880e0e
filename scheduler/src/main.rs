//! `strata-scheduler`: not implemented yet; prints its usage and exits non-zero.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprint!("{}", strata_scheduler::USAGE);
    ExitCode::from(2)
}
