//! `strata build`: upload the context, submit the build, follow its events
//! and fetch the requested outputs, as `docker build`.

pub mod context;
pub mod metadata;
pub mod options;
mod outputs;
pub mod upload;

use crate::connect;
use crate::progress::{self, Mode, Renderer};
use crate::watch::{self, Outcome, WatchOptions};
use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use options::{OutputSpec, SecretSpec};
use prost::Message as _;
use std::path::{Path, PathBuf};
use strata_frontend::context::{ContextError, ContextManifest, DigestCache, EntryKind};
use strata_frontend::hosts::ExtraHost;
use strata_proto::build::v1 as pb;
use strata_proto::common::v1 as common;
use upload::{Blob, BlobSource};

/// `--network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// The scheduler's default (an isolated network with outbound access).
    Default,
    /// The worker host's network (grants the `network.host` entitlement).
    Host,
    /// No network.
    None,
}

/// Arguments of `strata build`.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the
    /// environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build this stage.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform(s), `os/arch[/variant]`, comma-separated.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for steps of this stage; repeatable.
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// Always resolve base images against their registry.
    #[arg(long)]
    pub pull: bool,
    /// Grant an entitlement the Dockerfile needs: `security.insecure` (for
    /// `RUN --security=insecure`; the scheduler must allow it too).
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_parser = ["security.insecure", "network.host"])]
    pub allow: Vec<String>,
    /// Cache namespace (tenant or project): builds reuse only their own
    /// namespace's cache unless the farm shares namespaces.
    #[arg(long, env = "STRATA_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub progress: Mode,
    /// Output destination: `type=registry`, `type=docker,dest=FILE`,
    /// `type=oci,dest=FILE`, `type=local,dest=DIR`; repeatable.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Push every tag after the build (`--output type=registry`).
    #[arg(long)]
    pub push: bool,
    /// Write build metadata (digests, layers, steps) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Network mode of RUN steps.
    #[arg(long, value_enum, value_name = "MODE")]
    pub network: Option<Network>,
    /// Secret for `RUN --mount=type=secret` (`id=ID,src=PATH` or
    /// `id=ID,env=VAR`); repeatable.
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub secrets: Vec<String>,
    /// Set a label on the image (`KEY=VALUE`, or `KEY` for an empty
    /// value), over the Dockerfile's `LABEL`s; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add an `/etc/hosts` entry for RUN steps (`HOST:IP`); repeatable.
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Print nothing but the image ID (`--progress quiet`).
    #[arg(short = 'q', long, conflicts_with = "progress")]
    pub quiet: bool,
    /// Accepted from `docker buildx build` scripts and not used: every
    /// build of a farm shares its layer cache (a warning says so).
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Accepted from `docker buildx build` scripts and not used (see
    /// `--cache-from`).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Accepted from `docker buildx build` scripts: the image is always
    /// kept in strata's image store (`strata images`).
    #[arg(long)]
    pub load: bool,
    /// The build context directory.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// Everything a build needs that comes from the local machine, checked
/// before any connection is made.
#[derive(Debug)]
pub struct Prepared {
    /// The request, without its context reference.
    pub request: pb::BuildRequest,
    /// The context as walked.
    pub manifest: ContextManifest,
    /// The Dockerfile text, for error snippets.
    pub dockerfile: Vec<u8>,
    /// Outputs to fetch after the build.
    pub outputs: Vec<OutputSpec>,
}

/// How the user named the Dockerfile (`Dockerfile` by default).
fn dockerfile_name(args: &BuildArgs) -> (PathBuf, String) {
    match &args.file {
        Some(f) => (f.clone(), f.display().to_string()),
        None => (args.context.join("Dockerfile"), "Dockerfile".to_string()),
    }
}

/// Validates the flags, reads the Dockerfile, secrets and the context.
pub fn prepare(args: &BuildArgs) -> Result<Prepared> {
    if !args.context.is_dir() {
        bail!("context \"{}\" is not a directory", args.context.display());
    }
    let build_args = super::plan::parse_build_args(&args.build_args)?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| OutputSpec::parse(o))
        .collect::<Result<Vec<_>>>()?;
    if args.push
        && !outputs
            .iter()
            .any(|o| matches!(o, OutputSpec::Registry { .. }))
    {
        outputs.push(OutputSpec::Registry {
            compression: Default::default(),
            force_compression: false,
        });
    }
    if outputs
        .iter()
        .any(|o| matches!(o, OutputSpec::Registry { .. }))
        && args.tags.is_empty()
    {
        bail!("--push / --output type=registry needs at least one -t NAME:TAG to push to");
    }
    let labels = args
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some(("", _)) => Err(anyhow!("invalid --label {l:?}: the key is empty")),
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None if l.is_empty() => Err(anyhow!("invalid --label \"\": the key is empty")),
            None => Ok((l.clone(), String::new())),
        })
        .collect::<Result<_>>()?;
    let add_hosts = args
        .add_hosts
        .iter()
        .map(|h| {
            ExtraHost::parse(h)
                .map(|h| h.wire())
                .map_err(|e| anyhow!(e))
        })
        .collect::<Result<_>>()?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| SecretSpec::parse(s)?.load())
        .collect::<Result<Vec<_>>>()?;
    let platforms = options::parse_platforms(args.platform.as_deref())?;
    let env_epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let source_date_epoch = options::source_date_epoch(&build_args, env_epoch.as_deref())?;
    let (df_path, df_name) = dockerfile_name(args);
    let dockerfile = std::fs::read(&df_path)
        .with_context(|| format!("cannot read Dockerfile \"{}\"", df_path.display()))?;
    let manifest = walk_context(&args.context)
        .with_context(|| format!("cannot read build context \"{}\"", args.context.display()))?;
    let network = args.network.unwrap_or(Network::Default);
    let network_mode = match network {
        Network::Default => common::NetworkMode::Unspecified,
        Network::Host => common::NetworkMode::Host,
        Network::None => common::NetworkMode::None,
    };
    let request = pb::BuildRequest {
        dockerfile: Some(pb::build_request::Dockerfile::DockerfileContent(
            dockerfile.clone(),
        )),
        dockerfile_path: df_name,
        build_args: build_args.into_iter().collect(),
        target: args.target.clone().unwrap_or_default(),
        tags: args.tags.clone(),
        outputs: outputs.iter().map(OutputSpec::to_proto).collect(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        network_mode: network_mode.into(),
        // buildx grants the entitlement that `--network host` needs.
        entitlements: {
            let mut e = args.allow.clone();
            if network == Network::Host && !e.iter().any(|x| x == "network.host") {
                e.push("network.host".to_string());
            }
            e
        },
        secrets,
        labels,
        add_hosts,
        platforms,
        source_date_epoch,
        client: Some(options::client_metadata()),
        namespace: args.namespace.clone(),
        ..Default::default()
    };
    Ok(Prepared {
        request,
        manifest,
        dockerfile,
        outputs,
    })
}

/// Uploads what the scheduler lacks and returns the context reference
/// (inline, or by digest for manifests over the inline limit).
pub async fn send_context(
    client: &mut crate::connect::Client,
    root: &Path,
    manifest: &ContextManifest,
    renderer: &mut dyn Renderer,
) -> Result<common::ContextRef> {
    let files = manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .count();
    let blobs = upload::context_blobs(root, manifest);
    let stats = upload::upload(client, &blobs).await?;
    renderer.message(&format!(
        "context: {files} files, uploaded {} ({} bytes)",
        stats.uploaded, stats.bytes
    ))?;
    let wire = context::manifest_to_proto(manifest, Some(root));
    let encoded = wire.encode_to_vec();
    if encoded.len() <= strata_proto::MAX_INLINE_MANIFEST_BYTES {
        return Ok(common::ContextRef {
            manifest: Some(common::context_ref::Manifest::Inline(wire)),
        });
    }
    let digest = context::sha256_digest(&encoded);
    let blob = Blob {
        digest: digest.clone(),
        size: encoded.len() as u64,
        source: BlobSource::Bytes(encoded),
    };
    upload::upload(client, std::slice::from_ref(&blob)).await?;
    Ok(common::ContextRef {
        manifest: Some(common::context_ref::Manifest::ManifestDigest(digest)),
    })
}

/// Runs `strata build`.
pub async fn run(args: &BuildArgs, scheduler: Option<&str>) -> Result<()> {
    let root = args.context.clone();
    // Hashing the context is blocking work.
    let prepared = {
        let owned = args.clone();
        tokio::task::spawn_blocking(move || prepare(&owned))
            .await
            .map_err(|e| anyhow!("reading the build context: {e}"))??
    };
    let mode = if args.quiet {
        Mode::Quiet
    } else {
        args.progress
    }
    .resolve();
    let mut renderer = progress::renderer(mode);
    if !args.cache_from.is_empty() || !args.cache_to.is_empty() {
        renderer.message(
            "WARNING: --cache-from/--cache-to are not used: every build of this farm (or of this STRATA_HOME) shares one layer cache",
        )?;
    }
    let mut conn = connect::connect(scheduler).await?;
    let client = &mut conn.client;
    let context = send_context(client, &root, &prepared.manifest, renderer.as_mut()).await?;
    let mut request = prepared.request;
    request.context = Some(context);
    let accepted = client
        .start_build(request)
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let build_id = accepted.build_id;
    let outcome = watch::watch(
        client,
        &build_id,
        renderer.as_mut(),
        &WatchOptions::default(),
        watch::ctrl_c(),
    )
    .await?;
    let result = match outcome {
        Outcome::Finished(f) => {
            let result = f.result.unwrap_or_default();
            outputs::finish(
                client,
                args,
                &build_id,
                &result,
                &prepared.outputs,
                mode,
                renderer.as_mut(),
            )
            .await
        }
        Outcome::Failed(f) => {
            let status = f.status();
            if let Some(e) = &f.error {
                let report =
                    progress::failure_report(renderer.view(), e, Some(&prepared.dockerfile));
                eprint!("{report}");
            }
            Err(anyhow!(progress::error_summary(status, f.error.as_ref())))
        }
        Outcome::Interrupted => {
            eprintln!("cancelled");
            Err(crate::Exit(130).into())
        }
        Outcome::Ended => Err(anyhow!(
            "the event stream of build {build_id} ended before the build did"
        )),
    };
    // Embedded: the cancelled steps are gone before the process is.
    conn.close().await;
    result
}

/// Where the digests of a context's files are kept between builds:
/// `$XDG_CACHE_HOME/strata/context-digests/` (else `~/.cache/strata/...`),
/// one file per context directory.
fn digest_cache_file(context: &std::path::Path) -> Option<std::path::PathBuf> {
    use sha2::{Digest as _, Sha256};
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = env("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    let root = std::fs::canonicalize(context).ok()?;
    let name = hex::encode(&Sha256::digest(root.as_os_str().as_encoded_bytes())[..16]);
    Some(base.join("strata/context-digests").join(name))
}

/// Walks the context, reading only the files that changed since the last
/// build of it on this machine.
fn walk_context(context: &std::path::Path) -> Result<ContextManifest, ContextError> {
    let Some(file) = digest_cache_file(context) else {
        return ContextManifest::walk(context);
    };
    let mut cache = DigestCache::load(&file);
    let manifest = ContextManifest::walk_cached(context, Some(&mut cache))?;
    if let Err(e) = cache.save(&file) {
        tracing::debug!("not saving context digests to {}: {e}", file.display());
    }
    Ok(manifest)
}
