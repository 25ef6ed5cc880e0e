//! `strata`: the client CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    strata_client::cli::main()
}
