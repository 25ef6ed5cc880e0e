//! Runs BuildKit's own shell-lexer vectors (`envVarTest` and `wordsTest`,
//! see `shared/conformance/buildkit/README.md`) against
//! `strata_frontend::shell`, the way BuildKit's `lex_test.go` reads them.

use std::path::PathBuf;

use strata_frontend::shell::Lexer;

const DIR_VAR: &str = "STRATA_CONFORMANCE_DIR";

fn conformance_dir() -> PathBuf {
    let dir = match std::env::var_os(DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/buildkit"
        )),
    };
    if !dir.join("envVarTest").is_file() || !dir.join("wordsTest").is_file() {
        panic!(
            "BuildKit conformance vectors not found: looked for envVarTest and wordsTest in {} \
             (taken from ${DIR_VAR} if set, else relative to this crate's manifest); \
             set {DIR_VAR} to the directory holding them",
            dir.display()
        );
    }
    dir
}

fn read(name: &str) -> String {
    let path = conformance_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Outcome of running one vector file.
#[derive(Default)]
struct Tally {
    run: usize,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, file: &str, line: usize, input: &str, expected: &str, got: &str) {
        self.failures.push(format!(
            "{file}:{line}: input {input:?}: expected {expected}, got {got}"
        ));
    }

    fn finish(self, file: &str) {
        println!(
            "{file}: {} vectors run, {} failed",
            self.run,
            self.failures.len()
        );
        assert!(self.run > 0, "{file}: no vectors found");
        assert!(
            self.failures.is_empty(),
            "{file}: {} of {} vectors failed:\n{}",
            self.failures.len(),
            self.run,
            self.failures.join("\n")
        );
    }
}

#[test]
fn buildkit_env_var_vectors() {
    const FILE: &str = "envVarTest";
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let lexer = Lexer::new('\\');
    let mut tally = Tally::default();
    for (idx, line) in read(FILE).lines().enumerate() {
        let line_no = idx + 1;
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 3 {
            tally.run += 1;
            tally.fail(
                FILE,
                line_no,
                line,
                "3 |-separated fields",
                "a malformed vector",
            );
            continue;
        }
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        match platform {
            "A" | "U" => {}
            "W" => continue,
            _ => {
                tally.run += 1;
                tally.fail(
                    FILE,
                    line_no,
                    input,
                    "platform A, U or W",
                    &format!("{platform:?}"),
                );
                continue;
            }
        }
        tally.run += 1;
        let got = lexer.process_word(input, &env);
        match (expected, got) {
            ("error", Err(_)) => {}
            ("error", Ok(exp)) => tally.fail(
                FILE,
                line_no,
                input,
                "an error",
                &format!("{:?}", exp.value),
            ),
            (_, Ok(exp)) if exp.value == expected => {}
            (_, Ok(exp)) => tally.fail(
                FILE,
                line_no,
                input,
                &format!("{expected:?}"),
                &format!("{:?}", exp.value),
            ),
            (_, Err(e)) => tally.fail(
                FILE,
                line_no,
                input,
                &format!("{expected:?}"),
                &format!("error: {e}"),
            ),
        }
    }
    tally.finish(FILE);
}

#[test]
fn buildkit_words_vectors() {
    const FILE: &str = "wordsTest";
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut tally = Tally::default();
    for (idx, line) in read(FILE).lines().enumerate() {
        let line_no = idx + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            // Like BuildKit's EnvsFromSlice: split at the first '=', keep
            // trailing spaces of the value.
            let rest = rest.trim_start_matches(' ');
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        tally.run += 1;
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 2 {
            tally.fail(FILE, line_no, line, "exactly one |", "a malformed vector");
            continue;
        }
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        let got = match lexer.process_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_owned()],
        };
        if got != expected {
            tally.fail(
                FILE,
                line_no,
                input,
                &format!("{expected:?}"),
                &format!("{got:?}"),
            );
        }
    }
    tally.finish(FILE);
}
