//! `strata build`: build an image from a Dockerfile, as `docker build`.
//! Without a scheduler address the build runs embedded (in this process).

use super::plan::{dockerfile_path, parse_build_args};
use crate::embedded::{BuildSpec, Embedded, Event, images};
use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use strata_frontend::plan::{PlanOptions, Platform};
use tokio::sync::mpsc;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// `plain` (a live terminal view is not implemented yet).
    Auto,
    /// One timestamped, step-prefixed line per event.
    Plain,
    /// One JSON event per line.
    Json,
    /// Only the image ID at the end.
    Quiet,
}

/// Arguments of `strata build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// Set a build-time variable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build this stage.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Do not use cached layers.
    #[arg(long)]
    pub no_cache: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Secret to expose to RUN --mount=type=secret (`id=ID,src=PATH`).
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub secrets: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (digests, layers, steps) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Scheduler to build on (a farm); embedded build when unset.
    #[arg(long, env = "STRATA_SCHEDULER", value_name = "URL")]
    pub scheduler: Option<String>,
    /// The build context directory.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// Where embedded mode keeps its store and images: `$STRATA_HOME`, else
/// `/var/lib/strata` for root, else `~/.local/share/strata`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("STRATA_HOME") {
        return PathBuf::from(h);
    }
    if nix_is_root() {
        return PathBuf::from("/var/lib/strata");
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".local/share/strata")
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn parse_secrets(raw: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for s in raw {
        let mut id = None;
        let mut src = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("type", "file")) => {}
                _ => bail!("invalid --secret {s:?}: expected id=ID,src=PATH"),
            }
        }
        let id = id.ok_or_else(|| anyhow!("invalid --secret {s:?}: id is missing"))?;
        let src = src.unwrap_or_else(|| id.clone());
        let data =
            std::fs::read(&src).with_context(|| format!("--secret id={id}: cannot read {src}"))?;
        out.insert(id, data);
    }
    Ok(out)
}

fn stamp(start: Instant) -> String {
    format!("{:>6.1}s", start.elapsed().as_secs_f64())
}

/// Runs `strata build`.
pub async fn run(args: &BuildArgs) -> Result<()> {
    if let Some(s) = &args.scheduler {
        bail!(
            "building on a farm scheduler ({s}) is not implemented yet; unset STRATA_SCHEDULER to build embedded"
        );
    }
    if !args.context.is_dir() {
        bail!("context \"{}\" is not a directory", args.context.display());
    }
    let df_path = dockerfile_path(&args.context, args.file.as_deref());
    let dockerfile = std::fs::read(&df_path)
        .with_context(|| format!("cannot read Dockerfile \"{}\"", df_path.display()))?;
    let mut options = PlanOptions {
        build_args: parse_build_args(&args.build_args)?,
        target: args.target.clone(),
        no_cache: args.no_cache,
        ..PlanOptions::default()
    };
    if let Some(p) = &args.platform {
        options.platform = Platform::parse(p).map_err(anyhow::Error::msg)?;
    }
    let source_date_epoch = options
        .build_args
        .get("SOURCE_DATE_EPOCH")
        .and_then(|v| v.parse().ok());
    let spec = BuildSpec {
        dockerfile,
        dockerfile_name: df_path.display().to_string(),
        context: args.context.clone(),
        options,
        secrets: parse_secrets(&args.secrets)?,
        source_date_epoch,
    };
    let home = home();
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let builder = Embedded::open(&home, Default::default()).await?;
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    let progress = args.progress;
    let start = Instant::now();
    let printer = tokio::spawn(async move {
        let mut numbers: BTreeMap<String, usize> = BTreeMap::new();
        let mut total = 0;
        while let Some(ev) = rx.recv().await {
            let line = match (&ev, progress) {
                (_, Progress::Quiet) => continue,
                (Event::Planned { steps }, Progress::Json) => serde_json::json!({"event": "planned", "steps": steps}).to_string(),
                (Event::Planned { steps }, _) => {
                    total = *steps;
                    format!("{} planned {steps} steps", stamp(start))
                }
                (Event::StepStarted { id, instruction }, Progress::Json) => serde_json::json!({"event": "step_started", "step": id, "instruction": instruction}).to_string(),
                (Event::StepStarted { id, instruction }, _) => {
                    let n = numbers.len() + 1;
                    numbers.insert(id.clone(), n);
                    format!("{} #{n} [{n}/{total}] {instruction}", stamp(start))
                }
                (Event::Log { id, data }, Progress::Json) => serde_json::json!({"event": "log", "step": id, "data": String::from_utf8_lossy(data)}).to_string(),
                (Event::Log { id, data }, _) => {
                    let n = numbers.get(id).copied().unwrap_or(0);
                    String::from_utf8_lossy(data).lines().map(|l| format!("{} #{n} {l}", stamp(start))).collect::<Vec<_>>().join("\n")
                }
                (Event::StepCached { id, instruction }, Progress::Json) => serde_json::json!({"event": "step_cached", "step": id, "instruction": instruction}).to_string(),
                (Event::StepCached { id, instruction }, _) => {
                    let n = numbers.len() + 1;
                    numbers.insert(id.clone(), n);
                    format!("{} #{n} [{n}/{total}] {instruction}\n{} #{n} CACHED", stamp(start), stamp(start))
                }
                (Event::StepDone { id, duration, size }, Progress::Json) => serde_json::json!({"event": "step_done", "step": id, "seconds": duration.as_secs_f64(), "size": size}).to_string(),
                (Event::StepDone { id, duration, .. }, _) => {
                    let n = numbers.get(id).copied().unwrap_or(0);
                    format!("{} #{n} DONE {:.1}s", stamp(start), duration.as_secs_f64())
                }
            };
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    });
    let result = builder.build(&spec, &tx).await;
    drop(tx);
    let _ = printer.await;
    let out = result?;
    let rec = images::record(&home, builder.worker().store(), &out.image, &args.tags)?;
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &rec.config_digest)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.metadata_file {
        let steps: Vec<serde_json::Value> = out
            .plan
            .steps
            .iter()
            .map(|s| serde_json::json!({"id": s.id, "instruction": s.instruction, "layer": out.layers.get(&s.id).map(|l| &l.digest), "size": out.layers.get(&s.id).map(|l| l.size)}))
            .collect();
        let meta = serde_json::json!({
            "containerimage.digest": rec.manifest_digest,
            "containerimage.config.digest": rec.config_digest,
            "image.name": args.tags.join(","),
            "layers": out.image.layers,
            "steps": steps,
        });
        std::fs::write(f, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if args.progress == Progress::Quiet {
        println!("{}", rec.config_digest);
    } else {
        eprintln!("{} writing image {} done", stamp(start), rec.config_digest);
        for t in &args.tags {
            eprintln!("{} naming to {t} done", stamp(start));
        }
    }
    Ok(())
}
