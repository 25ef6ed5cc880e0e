//! Hostile input to the frontend: property tests that nothing panics and
//! every error points at a line that exists, then one test per limit and
//! escape (Dockerfile size, line and instruction length, instruction and
//! stage counts, expansion limits, invalid UTF-8, COPY/ADD sources outside
//! the context, `.dockerignore`d files), each checking that the message
//! names the problem and the Dockerfile line.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use strata_frontend::Limits;
use strata_frontend::context::{ContextEntry, ContextManifest, EntryKind};
use strata_frontend::plan::{
    Action, BuildPlan, CopySource, Offline, PlanError, PlanOptions, plan_dockerfile,
};

/// Lines built from Dockerfile-ish fragments, so the generator reaches deep
/// into the parser and planner rather than failing at the first byte.
fn dockerfile_line() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "MAINTAINER",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "#",
        "# escape=`",
        "from",
        "RUNN",
        "",
    ]);
    let fragment = prop::sample::select(vec![
        " ",
        "\\",
        "`",
        "\"",
        "'",
        "$",
        "${",
        "}",
        "${A:-x}",
        "${A:?e}",
        "${A/x/y}",
        "=",
        "[",
        "]",
        "\"a\"",
        ",",
        "--from=",
        "--mount=type=cache,target=/x",
        "--chown=1:1",
        "--link",
        "AS",
        "stage",
        "0",
        "1",
        "busybox",
        "scratch",
        "<<EOF",
        "<<-'E'",
        "EOF",
        "\t",
        "\n",
        "-- ",
        "*",
        "../",
        "/",
        ".",
        "é",
        "\u{feff}",
        "--platform=$TARGETPLATFORM",
        "CMD",
        "NONE",
    ]);
    (keyword, prop::collection::vec(fragment, 0..8))
        .prop_map(|(k, frags)| format!("{k} {}", frags.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn structured_input_never_panics(lines in prop::collection::vec(dockerfile_line(), 0..12)) {
        let df = lines.join("\n");
        let line_count = df.lines().count().max(1);
        match plan_dockerfile(df.as_bytes(), None, &PlanOptions::default(), &Offline) {
            Ok(plan) => prop_assert!(!plan.stages.is_empty()),
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.line <= line_count + 1, "line {} of {}: {}", e.line, line_count, e.message);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = plan_dockerfile(&bytes, None, &PlanOptions::default(), &Offline);
    }
}

fn plan(df: &[u8], ctx: Option<&ContextManifest>, limits: Limits) -> Result<BuildPlan, PlanError> {
    let opts = PlanOptions {
        limits,
        ..PlanOptions::default()
    };
    plan_dockerfile(df, ctx, &opts, &Offline)
}

/// Plans `df` and expects an error on `line` (0: none) whose message
/// contains every one of `parts`.
fn fails(df: &[u8], ctx: Option<&ContextManifest>, limits: Limits, line: usize, parts: &[&str]) {
    let err = plan(df, ctx, limits).expect_err("must be rejected");
    assert_eq!(err.line, line, "wrong line: {err}");
    for part in parts {
        assert!(
            err.message.contains(part),
            "{part:?} not in: {}",
            err.message
        );
    }
    if line > 0 {
        assert!(
            err.with_file("Dockerfile")
                .starts_with(&format!("Dockerfile:{line}: ")),
            "{}",
            err.with_file("Dockerfile")
        );
    }
}

#[test]
fn an_oversized_dockerfile_is_rejected_before_parsing() {
    let limit = Limits::default().max_dockerfile_bytes;
    // Short comment lines, so only the total size is over a limit.
    let mut df = b"FROM busybox\n".to_vec();
    while df.len() <= limit {
        df.extend_from_slice(b"# padding padding padding padding padding padding padding\n");
    }
    df.truncate(limit + 1);
    let want = format!(
        "Dockerfile is {} bytes, more than the limit of {limit} bytes",
        limit + 1
    );
    fails(&df, None, Limits::default(), 0, &[&want]);
    df.truncate(limit);
    assert!(
        plan(&df, None, Limits::default()).is_ok(),
        "exactly the limit is fine"
    );
}

#[test]
fn long_lines_and_instructions_name_their_line() {
    let small = || Limits {
        max_line_bytes: 64,
        max_instruction_bytes: 100,
        ..Limits::default()
    };
    let long = "x".repeat(80);
    let df = format!("FROM busybox\nRUN true\nRUN echo {long}\n");
    fails(
        df.as_bytes(),
        None,
        small(),
        3,
        &["line is 90 bytes, more than the limit of 64 bytes"],
    );
    // Inside a continuation the physical line is named.
    let df = format!("FROM busybox\nRUN echo a \\\n  b \\\n  {long}\n");
    fails(
        df.as_bytes(),
        None,
        small(),
        4,
        &["more than the limit of 64 bytes"],
    );
    // Short lines that join into a long instruction: its first line.
    let part = format!("{} \\\n", "y".repeat(40));
    let df = format!("FROM busybox\nRUN echo \\\n{}z\n", part.repeat(4));
    fails(
        df.as_bytes(),
        None,
        small(),
        2,
        &["instruction is longer than the limit of 100 bytes"],
    );
}

#[test]
fn instruction_and_stage_counts_are_bounded() {
    let limits = Limits {
        max_instructions: 10,
        max_stages: 3,
        ..Limits::default()
    };
    let df = format!("FROM busybox\n{}", "RUN true\n".repeat(20));
    fails(
        df.as_bytes(),
        None,
        limits.clone(),
        11,
        &["more than the limit of 10 instructions"],
    );
    let df = "FROM busybox AS a\nFROM a AS b\nFROM b AS c\nFROM c AS d\n";
    fails(
        df.as_bytes(),
        None,
        limits,
        4,
        &["more than the limit of 3 stages"],
    );
}

#[test]
fn expansion_limits_name_the_line() {
    let nested = format!("{}x{}", "${A:-".repeat(65), "}".repeat(65));
    let df = format!("FROM busybox\nARG A\nENV B={nested}\n");
    fails(
        df.as_bytes(),
        None,
        Limits::default(),
        3,
        &["nested deeper than the limit of 64 levels"],
    );

    // 2,000 characters each replaced by 1,000: 2 MB from a 3 kB Dockerfile.
    let df = format!(
        "FROM busybox\nENV A={} B={}\nWORKDIR /${{A//?/$B}}\n",
        "a".repeat(2000),
        "b".repeat(1000)
    );
    fails(
        df.as_bytes(),
        None,
        Limits::default(),
        3,
        &["result longer than the limit of 1048576 bytes"],
    );

    // Doubling a variable line by line stops at the same bound.
    let mut df = String::from("FROM busybox\nENV A=aaaaaaaaaaaaaaaa\n");
    for _ in 0..17 {
        df.push_str("ENV A=$A$A\n");
    }
    fails(
        df.as_bytes(),
        None,
        Limits::default(),
        19,
        &["result longer than the limit of 1048576 bytes"],
    );

    // Values just under the word bound, used many times: the plan as a
    // whole has a budget (the attack that made a 1.7 kB Dockerfile plan
    // into 420 MB).
    let mut df = String::from("FROM busybox\nENV A=aaaaaaaaaaaaaaaa\n");
    for _ in 0..15 {
        df.push_str("ENV A=$A$A\n");
    }
    let line = 2 + 15 + 1;
    df.push_str("ENV");
    for i in 0..200 {
        df.push_str(&format!(" B{i}=$A"));
    }
    df.push('\n');
    fails(
        df.as_bytes(),
        None,
        Limits::default(),
        line,
        &["the expanded build is larger than the limit of 64 MiB"],
    );
}

#[test]
fn invalid_utf8_is_an_error_naming_the_line() {
    // BuildKit passes the bytes through; strata refuses them rather than
    // guess an encoding, and says which line to fix.
    let df = b"FROM busybox\nRUN echo ok\nRUN echo caf\xe9\n";
    fails(
        df,
        None,
        Limits::default(),
        3,
        &["invalid UTF-8 in Dockerfile; save it as UTF-8"],
    );
    // A UTF-16 file (as some Windows editors save it) fails on line 1.
    let utf16: Vec<u8> = "FROM busybox\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut df = vec![0xff, 0xfe];
    df.extend(utf16);
    fails(&df, None, Limits::default(), 1, &["invalid UTF-8"]);
    // A UTF-8 byte order mark is dropped, as BuildKit does.
    assert!(plan(b"\xef\xbb\xbfFROM busybox\n", None, Limits::default()).is_ok());
}

fn entry(path: &str, kind: EntryKind, content: &str) -> ContextEntry {
    ContextEntry {
        path: path.to_string(),
        kind,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        size: content.len() as u64,
        digest: (kind != EntryKind::Dir)
            .then(|| format!("sha256:{}", hex::encode(Sha256::digest(content.as_bytes())))),
        link_target: (kind == EntryKind::Symlink).then(|| content.to_string()),
        mtime: None,
        hardlink: None,
    }
}

fn context() -> ContextManifest {
    ContextManifest::from_entries(vec![
        entry("etc", EntryKind::Dir, ""),
        entry("etc/passwd", EntryKind::File, "root:x:0:0::/root:/bin/sh\n"),
        entry("app", EntryKind::Dir, ""),
        entry("app/main.py", EntryKind::File, "print(1)\n"),
        entry("up", EntryKind::Symlink, "../../etc/shadow"),
        entry("abs", EntryKind::Symlink, "/etc/shadow"),
        entry("inside", EntryKind::Symlink, "/etc/passwd"),
        entry("loop", EntryKind::Symlink, "loop"),
    ])
}

fn copy_sources(plan: &BuildPlan) -> Vec<CopySource> {
    let Action::Copy { sources, .. } = &plan.steps[0].action else {
        panic!("not a copy: {:?}", plan.steps[0].action)
    };
    sources.clone()
}

#[test]
fn sources_climbing_out_of_the_context_are_rejected() {
    let ctx = context();
    for (instr, src) in [
        ("COPY", "../x"),
        ("COPY", "app/../../x"),
        ("ADD", "../../etc/passwd"),
        ("COPY", "./.."),
    ] {
        let df = format!("FROM busybox\nWORKDIR /w\n{instr} {src} /dst/\n");
        let parts = [
            &format!("{instr} failed: source \"{src}\" is outside the build context")[..],
            "COPY and ADD can only use files inside it",
        ];
        // With the context (the scheduler) and without it (`strata plan`).
        fails(df.as_bytes(), Some(&ctx), Limits::default(), 3, &parts);
        fails(df.as_bytes(), None, Limits::default(), 3, &parts);
    }
    // `..` that stays inside is only cleaned.
    let ok = plan(
        b"FROM busybox\nCOPY app/../etc/passwd /x\n",
        Some(&ctx),
        Limits::default(),
    )
    .expect("stays inside");
    assert_eq!(copy_sources(&ok)[0].path, "app/../etc/passwd");
}

#[test]
fn absolute_sources_are_relative_to_the_context_root() {
    // As in Docker: `/etc/passwd` is the context's etc/passwd, never the
    // host's; the selection and its digest equal the relative spelling.
    let ctx = context();
    let abs = plan(
        b"FROM busybox\nCOPY /etc/passwd /x\n",
        Some(&ctx),
        Limits::default(),
    )
    .expect("absolute source");
    let rel = plan(
        b"FROM busybox\nCOPY etc/passwd /x\n",
        Some(&ctx),
        Limits::default(),
    )
    .expect("relative source");
    assert!(copy_sources(&abs)[0].digest.is_some());
    assert_eq!(copy_sources(&abs)[0].digest, copy_sources(&rel)[0].digest);
    let df = b"FROM busybox\nCOPY /etc/shadow /x\n";
    fails(
        df,
        Some(&ctx),
        Limits::default(),
        2,
        &["\"/etc/shadow\": not found in the build context"],
    );
}

#[test]
fn symlinked_sources_pointing_out_are_rejected() {
    let ctx = context();
    let df = b"FROM busybox\nCOPY up /x\n";
    fails(
        df,
        Some(&ctx),
        Limits::default(),
        2,
        &["COPY failed: source \"up\" is a symlink that points outside the build context"],
    );
    // An absolute target is resolved inside the context, like BuildKit.
    let df = b"FROM busybox\nADD abs /x\n";
    fails(
        df,
        Some(&ctx),
        Limits::default(),
        2,
        &[
            "ADD failed: source \"abs\" is a symlink to \"/etc/shadow\", which is not in the build context",
        ],
    );
    let p = plan(
        b"FROM busybox\nCOPY inside /x\n",
        Some(&ctx),
        Limits::default(),
    )
    .expect("a link to a context file");
    let passwd = ctx.get("etc/passwd").expect("passwd");
    assert_eq!(
        (copy_sources(&p)[0].files, copy_sources(&p)[0].bytes),
        (1, passwd.size)
    );
    let df = b"FROM busybox\nCOPY loop /x\n";
    fails(
        df,
        Some(&ctx),
        Limits::default(),
        2,
        &["source \"loop\": too many levels of symbolic links"],
    );
}

/// A real context directory, removed on drop.
struct TempContext(PathBuf);

impl TempContext {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("strata-hostile-ctx-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write");
    }
}

impl Drop for TempContext {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn dockerignored_files_are_invisible_to_copy_and_add() {
    let t = TempContext::new();
    t.write("app/main.py", b"print(1)\n");
    t.write("app/.env", b"SECRET=1\n");
    t.write("secrets/key", b"k");
    t.write(".dockerignore", b"secrets\n**/.env\n");
    symlink("../secrets/key", t.0.join("app/key")).expect("symlink");
    let ctx = ContextManifest::walk(&t.0).expect("walk");
    assert!(ctx.get("secrets/key").is_none() && ctx.get("app/.env").is_none());

    for src in [
        "secrets/key",
        "app/.env",
        "/secrets/key",
        "secrets/../secrets/key",
    ] {
        let df = format!("FROM busybox\nCOPY {src} /x\n");
        let want =
            format!("\"{src}\": not found in the build context (or excluded by .dockerignore)");
        fails(df.as_bytes(), Some(&ctx), Limits::default(), 2, &[&want]);
    }
    // A link in the context cannot reach an ignored file either.
    fails(
        b"FROM busybox\nCOPY app/key /x\n",
        Some(&ctx),
        Limits::default(),
        2,
        &[
            "source \"app/key\" is a symlink to \"../secrets/key\", which is not in the build context",
        ],
    );
    // A wildcard simply matches nothing there, as in BuildKit.
    let p = plan(
        b"FROM busybox\nCOPY secrets/* /x/\n",
        Some(&ctx),
        Limits::default(),
    )
    .expect("wildcard");
    assert_eq!(copy_sources(&p)[0].files, 0);
    // A malformed --exclude names the flag and the pattern.
    fails(
        b"FROM busybox\nCOPY --exclude=[ app /x\n",
        Some(&ctx),
        Limits::default(),
        2,
        &["--exclude: syntax error in pattern \"[\""],
    );
}
