use super::*;
use crate::context::{ContextEntry, ContextManifest, EntryKind};

fn plan_str(df: &str) -> Result<BuildPlan, PlanError> {
    plan_dockerfile(df.as_bytes(), None, &PlanOptions::default(), &Offline)
}

fn plan_with(
    df: &str,
    opts: &PlanOptions,
    ctx: Option<&ContextManifest>,
) -> Result<BuildPlan, PlanError> {
    plan_dockerfile(df.as_bytes(), ctx, opts, &Offline)
}

fn file(path: &str, content: &str) -> ContextEntry {
    use sha2::{Digest, Sha256};
    ContextEntry {
        path: path.to_string(),
        kind: EntryKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: content.len() as u64,
        digest: Some(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(content.as_bytes()))
        )),
        link_target: None,
        mtime: None,
        hardlink: None,
    }
}

fn dir(path: &str) -> ContextEntry {
    ContextEntry {
        path: path.to_string(),
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        digest: None,
        link_target: None,
        mtime: None,
        hardlink: None,
    }
}

#[test]
fn layer_steps_and_metadata() {
    let p = plan_str("FROM busybox\nENV A=1\nRUN echo $A\nWORKDIR /app\nCMD [\"sh\"]\n").unwrap();
    let kinds: Vec<StepKind> = p.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![StepKind::Run, StepKind::Workdir]);
    let stage = &p.stages[0];
    let created: Vec<&str> = stage
        .history
        .iter()
        .map(|h| h.created_by.as_str())
        .collect();
    assert_eq!(
        created,
        vec![
            "ENV A=1",
            "RUN /bin/sh -c echo $A # buildkit",
            "WORKDIR /app",
            "CMD [\"sh\"]"
        ]
    );
    assert_eq!(stage.config.working_dir, "/app");
    assert_eq!(stage.config.cmd, Some(vec!["sh".to_string()]));
    assert!(stage.config.env.contains(&"A=1".to_string()));
    assert!(stage.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(p.steps[1].depends_on, vec![p.steps[0].id.clone()]);
}

#[test]
fn args_reach_run_env_but_not_config() {
    let mut opts = PlanOptions::default();
    opts.build_args.insert("V".into(), "2".into());
    let p = plan_with("FROM busybox\nARG V=1\nRUN echo $V\n", &opts, None).unwrap();
    let run = &p.steps[0];
    assert!(run.exec.env.iter().any(|e| &**e == "V=2"));
    assert_eq!(run.created_by, "RUN |1 V=2 /bin/sh -c echo $V # buildkit");
    assert!(!p.stages[0].config.env.iter().any(|e| e.starts_with("V=")));
    assert_eq!(run.args_used.get("V").map(String::as_str), Some("2"));
    let other = plan_str("FROM busybox\nARG V=1\nRUN echo $V\n").unwrap();
    assert_ne!(other.steps[0].cache_key, run.cache_key);
}

#[test]
fn global_args_need_redeclaring() {
    let p = plan_str(
        "ARG TAG=1.36\nARG X=hello\nFROM busybox:${TAG}\nRUN echo $X\nARG X\nWORKDIR /$X\n",
    )
    .unwrap();
    assert_eq!(p.stages[0].base, "busybox:1.36");
    // Before the redeclaration X is not in the environment; after it, it is.
    assert!(!p.steps[0].exec.env.iter().any(|e| e.starts_with("X=")));
    assert_eq!(p.stages[0].config.working_dir, "/hello");
}

#[test]
fn env_after_arg_wins() {
    let p = plan_str("FROM busybox\nARG V=arg\nENV V=env\nWORKDIR /$V\n").unwrap();
    assert_eq!(p.stages[0].config.working_dir, "/env");
}

#[test]
fn copy_sources_are_digested_by_content() {
    let ctx = ContextManifest::from_entries(vec![
        dir("src"),
        file("src/a.py", "print(1)"),
        file("README", "x"),
    ]);
    let ctx2 = ContextManifest::from_entries(vec![
        dir("src"),
        file("src/a.py", "print(2)"),
        file("README", "x"),
    ]);
    let df = "FROM busybox\nCOPY src /app/\nCOPY README /\n";
    let opts = PlanOptions::default();
    let a = plan_with(df, &opts, Some(&ctx)).unwrap();
    let b = plan_with(df, &opts, Some(&ctx2)).unwrap();
    assert_ne!(a.steps[0].cache_key, b.steps[0].cache_key);
    // A change invalidates the changed step and every later one.
    assert_ne!(a.steps[1].cache_key, b.steps[1].cache_key);
    let Action::Copy { dest, sources, .. } = &a.steps[0].action else {
        panic!("not a copy")
    };
    assert_eq!(dest, "/app/");
    assert_eq!(sources[0].files, 1);
    let err = plan_with("FROM busybox\nCOPY missing /x\n", &opts, Some(&ctx)).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(
        err.message
            .contains("\"missing\": not found in the build context"),
        "{}",
        err.message
    );
    let err = plan_with("FROM busybox\nCOPY ../etc/passwd /x\n", &opts, Some(&ctx)).unwrap_err();
    assert!(
        err.message.contains("outside the build context"),
        "{}",
        err.message
    );
}

#[test]
fn parallel_branches_and_target() {
    let df = "FROM busybox AS base\nRUN echo base\n\
        FROM base AS a\nRUN echo a\nFROM base AS b\nRUN echo b\n\
        FROM base AS c\nRUN echo c\nFROM base AS d\nRUN echo d\n\
        FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\nCOPY --from=d /d /d\n";
    let p = plan_str(df).unwrap();
    assert_eq!(p.stages.len(), 6);
    let base_step = p.steps.iter().find(|s| s.stage == 0).unwrap().id.clone();
    for stage in 1..=4 {
        let s = p.steps.iter().find(|s| s.stage == stage).unwrap();
        assert_eq!(s.depends_on, vec![base_step.clone()]);
    }
    let finals: Vec<&Step> = p.steps.iter().filter(|s| s.stage == 5).collect();
    assert_eq!(finals.len(), 4);
    assert_eq!(finals[0].depends_on, vec!["s1-1".to_string()]);
    assert_eq!(
        finals[3].depends_on,
        vec!["s5-3".to_string(), "s4-1".to_string()]
    );

    let opts = PlanOptions {
        target: Some("C".into()),
        ..Default::default()
    };
    let t = plan_with(df, &opts, None).unwrap();
    let idx: Vec<usize> = t.stages.iter().map(|s| s.index).collect();
    assert_eq!(idx, vec![0, 3]);
    assert_eq!(t.steps.len(), 2);
}

#[test]
fn errors_name_line_and_problem() {
    let cases = [
        (
            "FROM busybox\nRUNN x\n",
            2,
            "unknown instruction: RUNN (did you mean RUN?)",
        ),
        (
            "RUN x\nFROM busybox\n",
            1,
            "RUN instruction before the first FROM",
        ),
        ("ARG A=1\n", 1, "no FROM instruction"),
        (
            "FROM busybox AS a\nCOPY --from=a /x /y\n",
            2,
            "refers to its own stage",
        ),
        (
            "FROM busybox AS a\nCOPY --from=b /x /y\nFROM busybox AS b\n",
            2,
            "defined after stage",
        ),
        (
            "FROM busybox AS builder\nFROM busybox\nCOPY --from=buidler /x /y\n",
            3,
            "no stage named \"buidler\" (did you mean \"builder\"?)",
        ),
        (
            "FROM later\nFROM busybox AS later\n",
            1,
            "refers to a stage defined later",
        ),
        (
            "FROM busybox\nCOPY --chown=a --badflag /x /y\n",
            2,
            "unknown flag: --badflag",
        ),
        (
            "FROM busybox\nRUN --network=wifi true\n",
            2,
            "invalid network mode",
        ),
        (
            "FROM busybox\nCOPY --chmod=999 a /b\n",
            2,
            "invalid chmod parameter",
        ),
        (
            "FROM busybox\nWORKDIR ${X:?must be set}\n",
            2,
            "X: must be set",
        ),
    ];
    for (df, line, want) in cases {
        let err = plan_str(df).unwrap_err();
        assert_eq!(err.line, line, "{df}: {err}");
        assert!(
            err.message.contains(want),
            "{df}: got {:?}, want {want:?}",
            err.message
        );
    }
    let err = plan_with(
        "FROM busybox\n",
        &PlanOptions {
            target: Some("nope".into()),
            ..Default::default()
        },
        None,
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("target stage \"nope\" could not be found")
    );
}

#[test]
fn onbuild_triggers_run_in_child_stage() {
    let p = plan_str("FROM busybox AS base\nONBUILD RUN echo child\nFROM base\nRUN echo own\n")
        .unwrap();
    let child: Vec<&str> = p
        .steps
        .iter()
        .filter(|s| s.stage == 1)
        .map(|s| s.instruction.as_str())
        .collect();
    assert_eq!(child, vec!["RUN echo child", "RUN echo own"]);
    assert!(p.stages[1].config.on_build.is_empty());
    assert_eq!(
        p.stages[0].config.on_build,
        vec!["RUN echo child".to_string()]
    );
}

#[test]
fn heredocs_become_commands() {
    let p = plan_str("FROM busybox\nRUN <<EOF\necho hi\nEOF\nRUN <<EOT bash\n#!/bin/bash\necho x\nEOT\nRUN <<SH\n#!/bin/sh\necho y\nSH\n").unwrap();
    let Action::Run { argv, .. } = &p.steps[0].action else {
        panic!()
    };
    assert_eq!(
        argv,
        &vec!["/bin/sh".to_string(), "-c".into(), "echo hi\n".into()]
    );
    let Action::Run { argv, .. } = &p.steps[1].action else {
        panic!()
    };
    assert_eq!(argv[2], "<<EOT bash\n#!/bin/bash\necho x\nEOT");
    let Action::Run {
        argv, inline_files, ..
    } = &p.steps[2].action
    else {
        panic!()
    };
    assert_eq!(argv[2], "/dev/pipes/SH");
    assert_eq!(inline_files[0].data, "#!/bin/sh\necho y\n");
}

#[test]
fn no_cache_filter_marks_one_stage() {
    let df = "FROM busybox AS a\nRUN echo a\nFROM busybox\nCOPY --from=a /x /x\nRUN echo b\n";
    let opts = PlanOptions {
        no_cache_filter: vec!["a".into()],
        ..Default::default()
    };
    let p = plan_with(df, &opts, None).unwrap();
    assert!(p.steps.iter().filter(|s| s.stage == 0).all(|s| s.no_cache));
    // The final stage's COPY reads the rebuilt stage, and its RUN builds
    // on that COPY: both rebuild.
    assert!(p.steps.iter().filter(|s| s.stage == 1).all(|s| s.no_cache));
}

#[test]
fn no_cache_filter_leaves_stages_that_do_not_read_it_cached() {
    let df = "FROM busybox AS a\nRUN echo a\n\
        FROM busybox AS b\nRUN echo b\n\
        FROM b AS c\nRUN echo c\n\
        FROM busybox\nRUN echo final\nCOPY --from=c /c /c\nRUN echo after\n";
    let opts = PlanOptions {
        no_cache_filter: vec!["B".into()],
        ..Default::default()
    };
    let p = plan_with(df, &opts, None).unwrap();
    let no_cache = |needle: &str| {
        p.steps
            .iter()
            .find(|s| s.instruction.contains(needle))
            .unwrap_or_else(|| panic!("no step {needle}"))
            .no_cache
    };
    assert!(no_cache("echo b"));
    // Built on b (FROM b), or reading what was built on it.
    assert!(no_cache("echo c"));
    assert!(no_cache("COPY --from=c"));
    assert!(no_cache("echo after"));
    // Unrelated to b.
    assert!(!no_cache("echo final"));
    let p = plan_with(df, &PlanOptions::default(), None).unwrap();
    assert!(p.steps.iter().all(|s| !s.no_cache));
    let all = PlanOptions {
        no_cache: true,
        ..Default::default()
    };
    let p = plan_with(df, &all, None).unwrap();
    assert!(p.steps.iter().all(|s| s.no_cache));
}

/// A resolver that knows a fixed set of images.
struct Images(BTreeMap<String, BaseImage>);

impl Images {
    fn new(images: &[(&str, &str)]) -> Self {
        Self(
            images
                .iter()
                .map(|(r, d)| {
                    (
                        ImageRef::parse(r).unwrap().to_string(),
                        BaseImage {
                            digest: d.to_string(),
                            config: ImageConfig::default(),
                        },
                    )
                })
                .collect(),
        )
    }
}

impl ImageResolver for Images {
    fn resolve(&self, r: &ImageRef, _: &Platform) -> Result<Option<BaseImage>, String> {
        Ok(self.0.get(&r.to_string()).cloned())
    }
}

fn keys(df: &str, ctx: Option<&ContextManifest>, images: &Images) -> Vec<String> {
    plan_dockerfile(df.as_bytes(), ctx, &PlanOptions::default(), images)
        .unwrap()
        .steps
        .iter()
        .map(|s| s.cache_key.clone())
        .collect()
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn a_new_base_image_digest_changes_every_key() {
    let df = "FROM busybox:latest\nRUN echo a\nRUN echo b\n";
    let before = keys(df, None, &Images::new(&[("busybox:latest", D1)]));
    let same = keys(df, None, &Images::new(&[("busybox:latest", D1)]));
    let moved = keys(df, None, &Images::new(&[("busybox:latest", D2)]));
    assert_eq!(before, same);
    assert_ne!(before[0], moved[0]);
    assert_ne!(before[1], moved[1]);
}

#[test]
fn a_new_digest_of_an_image_copied_from_changes_that_step_and_later_ones() {
    let df = "FROM busybox:latest\nRUN echo a\n\
        COPY --from=example.com/tools:1 /bin/tool /bin/tool\nRUN echo b\n";
    let before = keys(
        df,
        None,
        &Images::new(&[("busybox:latest", D1), ("example.com/tools:1", D1)]),
    );
    let moved = keys(
        df,
        None,
        &Images::new(&[("busybox:latest", D1), ("example.com/tools:1", D2)]),
    );
    assert_eq!(before[0], moved[0], "the RUN before the COPY");
    assert_ne!(before[1], moved[1], "the COPY --from the moved tag");
    assert_ne!(before[2], moved[2], "the RUN after it");
}

#[test]
fn a_new_digest_of_an_image_mounted_from_changes_the_run() {
    let df = "FROM busybox:latest\nRUN echo a\n\
        RUN --mount=type=bind,from=example.com/tools:1,target=/t /t/tool\n";
    let before = keys(
        df,
        None,
        &Images::new(&[("busybox:latest", D1), ("example.com/tools:1", D1)]),
    );
    let moved = keys(
        df,
        None,
        &Images::new(&[("busybox:latest", D1), ("example.com/tools:1", D2)]),
    );
    assert_eq!(before[0], moved[0]);
    assert_ne!(before[1], moved[1]);
}

#[test]
fn copy_keys_cover_mode_and_owner_but_not_mtime() {
    let df = "FROM busybox\nCOPY app.sh /app.sh\nRUN /app.sh\n";
    let base = Images::new(&[("busybox", D1)]);
    let with = |f: &dyn Fn(&mut ContextEntry)| {
        let mut e = file("app.sh", "echo hi");
        f(&mut e);
        keys(df, Some(&ContextManifest::from_entries(vec![e])), &base)
    };
    let plain = with(&|_| {});
    let touched = with(&|e| e.mtime = Some((1_700_000_000, 5)));
    let touched_again = with(&|e| e.mtime = Some((1_800_000_000, 0)));
    assert_eq!(plain, touched, "an mtime-only change stays cached");
    assert_eq!(plain, touched_again);
    let chmod = with(&|e| e.mode = 0o755);
    assert_ne!(plain[0], chmod[0], "a mode change rebuilds the COPY");
    assert_ne!(plain[1], chmod[1], "and the RUN after it");
    let chown = with(&|e| e.uid = 1000);
    assert_ne!(plain[0], chown[0], "an owner change rebuilds the COPY");
    let chgrp = with(&|e| e.gid = 1000);
    assert_ne!(plain[0], chgrp[0], "a group change rebuilds the COPY");
    assert_ne!(chown[0], chgrp[0]);
}

#[test]
fn label_flags_go_on_the_target_stage_s_config_over_its_labels() {
    let df = "FROM scratch AS a\nLABEL from=a\nFROM scratch\nLABEL kept=1 over=dockerfile\nCOPY --from=a / /\n";
    let opts = PlanOptions {
        labels: BTreeMap::from([
            ("over".to_string(), "flag".to_string()),
            ("new".to_string(), String::new()),
        ]),
        ..PlanOptions::default()
    };
    let p = plan_with(df, &opts, None).unwrap();
    let plain = plan_str(df).unwrap();
    let target = p.target_stage().unwrap();
    assert_eq!(
        target.config.labels,
        BTreeMap::from([
            ("kept".to_string(), "1".to_string()),
            ("over".to_string(), "flag".to_string()),
            ("new".to_string(), String::new()),
        ])
    );
    // Not on other stages, and no step nor history entry of their own.
    let a = p.stages.iter().find(|s| s.index == 0).unwrap();
    assert_eq!(a.config.labels.len(), 1);
    assert_eq!(target.history, plain.target_stage().unwrap().history);
    let keys = |p: &BuildPlan| {
        p.steps
            .iter()
            .map(|s| s.cache_key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&p), keys(&plain));
}

#[test]
fn add_host_reaches_every_run_step_and_its_cache_key() {
    let df = "FROM scratch\nCOPY a /a\nRUN true\nFROM scratch\nCOPY --from=0 /a /b\nRUN false\n";
    let ctx = ContextManifest {
        entries: vec![file("a", "a")],
    };
    let opts = PlanOptions {
        extra_hosts: vec!["mirror.test:10.1.2.3".into()],
        ..PlanOptions::default()
    };
    let with = plan_with(df, &opts, Some(&ctx)).unwrap();
    let without = plan_with(
        df,
        &PlanOptions {
            extra_hosts: Vec::new(),
            ..opts.clone()
        },
        Some(&ctx),
    )
    .unwrap();
    assert_eq!(with.steps.len(), 4);
    // What comes before any RUN keeps its key; each RUN has the hosts
    // and a key of its own.
    assert_eq!(with.steps[0].cache_key, without.steps[0].cache_key);
    for (w, o) in with.steps.iter().zip(&without.steps) {
        if let Action::Run { extra_hosts, .. } = &w.action {
            assert_eq!(extra_hosts, &["mirror.test:10.1.2.3"]);
            assert_ne!(w.cache_key, o.cache_key, "{}", w.instruction);
        }
    }
    assert_eq!(
        with.steps
            .iter()
            .filter(|s| matches!(s.action, Action::Run { .. }))
            .count(),
        2
    );
}
