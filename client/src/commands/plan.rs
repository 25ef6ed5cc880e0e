//! `strata plan`: parse and plan a Dockerfile against a context directory
//! and print the job graph.

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use strata_frontend::context::ContextManifest;
use strata_frontend::plan::{BuildPlan, Offline, PlanOptions, Platform, plan_dockerfile};

/// Output formats of `strata plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A human-readable tree of stages and steps.
    Text,
    /// The full plan as one JSON document.
    Json,
}

/// Arguments of `strata plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Plan only what this stage needs.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform (os/arch[/variant]).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The build context directory.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// Parses `KEY=VALUE` build args; a bare `KEY` takes its value from the
/// environment, as `docker build` does (and is dropped when unset).
pub fn parse_build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg \"{a}\": the name is empty"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// The Dockerfile path and its display name for error messages.
pub fn dockerfile_path(context: &Path, file: Option<&Path>) -> PathBuf {
    file.map_or_else(|| context.join("Dockerfile"), Path::to_path_buf)
}

/// Runs `strata plan`.
pub fn run(args: &PlanArgs) -> Result<()> {
    if !args.context.is_dir() {
        bail!("context \"{}\" is not a directory", args.context.display());
    }
    let df_path = dockerfile_path(&args.context, args.file.as_deref());
    let dockerfile = std::fs::read(&df_path)
        .with_context(|| format!("cannot read Dockerfile \"{}\"", df_path.display()))?;
    let manifest = ContextManifest::walk(&args.context)
        .with_context(|| format!("cannot read build context \"{}\"", args.context.display()))?;
    let mut opts = PlanOptions {
        build_args: parse_build_args(&args.build_args)?,
        target: args.target.clone(),
        ..PlanOptions::default()
    };
    if let Some(p) = &args.platform {
        opts.platform = Platform::parse(p).map_err(anyhow::Error::msg)?;
    }
    let plan = plan_dockerfile(&dockerfile, Some(&manifest), &opts, &Offline)
        .map_err(|e| anyhow::anyhow!(e.with_file(&df_path.display().to_string())))?;
    let out = match args.format {
        Format::Json => serde_json::to_string_pretty(&plan)? + "\n",
        Format::Text => render_text(&plan),
    };
    print!("{out}");
    for w in &plan.warnings {
        if w.line == 0 {
            eprintln!("warning: {}", w.message);
        } else {
            eprintln!("warning: {}:{}: {}", df_path.display(), w.line, w.message);
        }
    }
    Ok(())
}

/// Renders the plan as a tree: stages, then each stage's steps with what
/// they wait for.
pub fn render_text(plan: &BuildPlan) -> String {
    let mut s = String::new();
    for stage in &plan.stages {
        let name = stage
            .name
            .as_deref()
            .map(|n| format!(" AS {n}"))
            .unwrap_or_default();
        let target = if stage.index == plan.target {
            "  (target)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "stage {}: FROM {}{name}{target}",
            stage.index, stage.base
        );
        for step in plan.steps.iter().filter(|st| st.stage == stage.index) {
            let after = if step.depends_on.is_empty() {
                String::new()
            } else {
                format!("  <- {}", step.depends_on.join(", "))
            };
            let cache = if step.no_cache { "  [no-cache]" } else { "" };
            let _ = writeln!(
                s,
                "  {:<6} line {:<4} {}{after}{cache}",
                step.id,
                step.line,
                first_line(&step.instruction)
            );
        }
    }
    let _ = writeln!(
        s,
        "{} steps in {} stages",
        plan.steps.len(),
        plan.stages.len()
    );
    s
}

fn first_line(s: &str) -> String {
    const MAX: usize = 72;
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > MAX {
        format!("{}...", line.chars().take(MAX).collect::<String>())
    } else {
        line.to_string()
    }
}
