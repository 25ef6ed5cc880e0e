//! Property tests: hostile input never panics the frontend, and errors
//! always point at a line that exists.

use proptest::prelude::*;
use strata_frontend::plan::{Offline, PlanOptions, plan_dockerfile};

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
