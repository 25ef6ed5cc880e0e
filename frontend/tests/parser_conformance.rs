//! Runs BuildKit's own parser vectors (`parser-testfiles` and
//! `parser-testfiles-negative`, see `shared/conformance/buildkit/README.md`)
//! against `strata_frontend::parser`: every positive file must dump exactly
//! as BuildKit's parser does, every negative file must be rejected.

use std::path::{Path, PathBuf};

use strata_frontend::instructions::Instruction;
use strata_frontend::parser;

const DIR_VAR: &str = "STRATA_CONFORMANCE_DIR";

fn conformance_dir() -> PathBuf {
    let dir = match std::env::var_os(DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/buildkit"
        )),
    };
    assert!(
        dir.join("parser-testfiles").is_dir(),
        "BuildKit conformance vectors not found in {} (taken from ${DIR_VAR} if set, else relative \
         to this crate's manifest); set {DIR_VAR} to the directory holding them",
        dir.display()
    );
    dir
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn positive_files_dump_like_buildkit() {
    let cases = cases(&conformance_dir().join("parser-testfiles"));
    assert!(
        cases.len() >= 30,
        "expected BuildKit's ~33 parser vectors, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let df = std::fs::read(case.join("Dockerfile")).expect("read Dockerfile");
        let want = std::fs::read_to_string(case.join("result")).expect("read result");
        match parser::parse(&df) {
            Ok(parsed) => {
                let got = format!("{}\n", parsed.dump());
                if got != want {
                    failures.push(format!(
                        "{}:\n--- want\n{want}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{}: parse failed at line {}: {e}",
                case.display(),
                e.start_line
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} parser vectors failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_files_are_rejected() {
    let cases = cases(&conformance_dir().join("parser-testfiles-negative"));
    assert!(
        cases.len() >= 4,
        "expected BuildKit's negative vectors, found {}",
        cases.len()
    );
    for case in &cases {
        let df = std::fs::read(case.join("Dockerfile")).expect("read Dockerfile");
        // BuildKit rejects these either in the parser or when typing the
        // instructions (ENV with no value); both are parse errors to users.
        let result = parser::parse(&df)
            .map_err(|e| e.message)
            .and_then(|parsed| {
                parsed
                    .nodes
                    .iter()
                    .try_for_each(|n| Instruction::from_node(n).map(|_| ()).map_err(|e| e.message))
            });
        let err = result.expect_err(&format!("{} must be rejected", case.display()));
        assert!(!err.is_empty(), "{}: empty error message", case.display());
    }
}
