//! Parsing of `strata build`'s structured flags (`--output`, `--secret`,
//! `--platform`, `--network`, SOURCE_DATE_EPOCH) into wire values. Every
//! error names the value that was wrong.

use anyhow::{Context as _, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use strata_frontend::plan::Platform;
use strata_proto::build::v1 as pb;
use strata_proto::common::v1 as common;

/// Where a build result goes, parsed from `-o`/`--output` (buildx syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// `type=image`: keep it in the scheduler's image store (always done).
    Image,
    /// `type=registry`: push every tag (same as `--push`).
    Registry {
        /// `compression=gzip|zstd|uncompressed`: the layers strata built
        /// go up in it; unspecified is gzip, as docker build --push (zstd
        /// pushes them as stored; base layers stay as pulled).
        compression: common::Compression,
        /// `force-compression=true`: convert every layer, base layers too
        /// (to gzip when no compression is named, as BuildKit).
        force_compression: bool,
    },
    /// `type=docker,dest=F`: a docker-archive tarball written to `F`.
    Docker {
        /// The tarball to write.
        dest: PathBuf,
        /// `compression=`: unspecified writes uncompressed layers.
        compression: common::Compression,
    },
    /// `type=oci,dest=F`: an OCI image-layout tarball written to `F`.
    Oci {
        /// The tarball to write.
        dest: PathBuf,
        /// `compression=`: unspecified keeps the layers as stored.
        compression: common::Compression,
    },
    /// `type=local,dest=DIR`: the final root filesystem unpacked into `DIR`.
    Local {
        /// The directory to fill.
        dest: PathBuf,
    },
}

/// Parses a layer compression name (`gzip`, `zstd`, `uncompressed`).
pub fn compression(value: Option<&String>) -> std::result::Result<common::Compression, String> {
    match value.map(String::as_str) {
        None | Some("") => Ok(common::Compression::Unspecified),
        Some("gzip") => Ok(common::Compression::Gzip),
        Some("zstd") => Ok(common::Compression::Zstd),
        Some("uncompressed") => Ok(common::Compression::Uncompressed),
        Some(other) => Err(format!(
            "unknown compression \"{other}\" (expected gzip, zstd or uncompressed)"
        )),
    }
}

/// A boolean output attribute (`true`/`false`, absent is false).
fn flag(attrs: &BTreeMap<String, String>, key: &str) -> std::result::Result<bool, String> {
    match attrs.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") | Some("") => Ok(true),
        Some(other) => Err(format!("{key}=\"{other}\" (expected true or false)")),
    }
}

impl OutputSpec {
    /// Parses one `--output` value: `type=T[,dest=D][,k=v...]`, or a bare
    /// path (buildx shorthand for `type=local,dest=PATH`).
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |why: String| anyhow!("invalid --output \"{raw}\": {why}");
        if raw.is_empty() {
            return Err(bad("empty value".into()));
        }
        if !raw.contains('=') {
            if raw == "-" {
                return Err(bad(
                    "writing to stdout is not supported; use type=docker,dest=FILE".into(),
                ));
            }
            return Ok(Self::Local { dest: raw.into() });
        }
        let mut attrs = BTreeMap::new();
        for part in raw.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("\"{part}\" is not key=value")))?;
            attrs.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let ty = attrs
            .remove("type")
            .ok_or_else(|| bad("type is missing (type=registry|docker|oci|local)".into()))?;
        let dest = attrs.remove("dest").filter(|d| !d.is_empty());
        let need_dest = |dest: Option<String>| {
            dest.map(PathBuf::from)
                .ok_or_else(|| bad(format!("type={ty} needs dest=PATH")))
        };
        let spec = match ty.as_str() {
            "image" => Self::Image,
            "registry" => Self::Registry {
                compression: compression(attrs.get("compression")).map_err(bad)?,
                force_compression: flag(&attrs, "force-compression").map_err(bad)?,
            },
            "docker" => Self::Docker {
                dest: need_dest(dest)?,
                compression: compression(attrs.get("compression")).map_err(bad)?,
            },
            "oci" => Self::Oci {
                dest: need_dest(dest)?,
                compression: compression(attrs.get("compression")).map_err(bad)?,
            },
            "local" => Self::Local {
                dest: need_dest(dest)?,
            },
            other => {
                return Err(bad(format!(
                    "unknown type \"{other}\" (expected registry, docker, oci, local or image)"
                )));
            }
        };
        let spec = if matches!(spec, Self::Image | Self::Registry { .. })
            && attrs.get("push").map(String::as_str) == Some("true")
        {
            Self::Registry {
                compression: compression(attrs.get("compression")).map_err(bad)?,
                force_compression: flag(&attrs, "force-compression").map_err(bad)?,
            }
        } else {
            spec
        };
        Ok(spec)
    }

    /// The wire form, for `BuildRequest.outputs` (the scheduler records
    /// them; the client fetches file outputs itself).
    pub fn to_proto(&self) -> pb::Output {
        let (ty, dest) = match self {
            Self::Image => (pb::OutputType::Image, None),
            Self::Registry { .. } => (pb::OutputType::Registry, None),
            Self::Docker { dest, .. } => (pb::OutputType::Docker, Some(dest)),
            Self::Oci { dest, .. } => (pb::OutputType::Oci, Some(dest)),
            Self::Local { dest } => (pb::OutputType::Local, Some(dest)),
        };
        pb::Output {
            r#type: ty.into(),
            attrs: dest
                .map(|d| ("dest".to_string(), d.display().to_string()))
                .into_iter()
                .collect(),
        }
    }
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable's value.
    Env(String),
}

/// One `--secret` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// Id used by `RUN --mount=type=secret,id=ID`.
    pub id: String,
    /// Where the value comes from.
    pub source: SecretSource,
}

impl SecretSpec {
    /// Parses `id=ID[,src=PATH|,env=VAR][,type=file|env]` as buildx does: a
    /// missing source means the file (or variable) named like the id.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |why: &str| anyhow!("invalid --secret \"{raw}\": {why}");
        let (mut id, mut src, mut env, mut ty) = (None, None, None, None);
        for part in raw.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", v @ ("file" | "env"))) => ty = Some(v.to_string()),
                Some(("type", _)) => return Err(bad("type must be file or env")),
                _ => return Err(bad("expected id=ID,src=PATH or id=ID,env=VAR")),
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad("id is missing"))?;
        let source = match (src, env, ty.as_deref()) {
            (Some(_), Some(_), _) => return Err(bad("give either src or env, not both")),
            (Some(s), None, None | Some("file")) => SecretSource::File(s.into()),
            (None, Some(e), None | Some("env")) => SecretSource::Env(e),
            (None, None, Some("env")) => SecretSource::Env(id.clone()),
            (None, None, _) => SecretSource::File(id.clone().into()),
            _ => return Err(bad("the type does not match the source")),
        };
        Ok(Self { id, source })
    }

    /// Reads the secret's value.
    pub fn load(&self) -> Result<common::Secret> {
        let value = match &self.source {
            SecretSource::File(p) => std::fs::read(p)
                .with_context(|| format!("--secret id={}: cannot read {}", self.id, p.display()))?,
            SecretSource::Env(v) => std::env::var_os(v)
                .ok_or_else(|| {
                    anyhow!(
                        "--secret id={}: environment variable {v} is not set",
                        self.id
                    )
                })?
                .into_encoded_bytes(),
        };
        Ok(common::Secret {
            id: self.id.clone(),
            value,
        })
    }
}

/// Parses `--platform` (comma-separated `os/arch[/variant]`).
pub fn parse_platforms(raw: Option<&str>) -> Result<Vec<common::Platform>> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(|p| {
            let p = Platform::parse(p.trim())
                .map_err(|e| anyhow!("invalid --platform \"{raw}\": {e}"))?;
            Ok(common::Platform {
                os: p.os,
                architecture: p.architecture,
                variant: p.variant,
                ..Default::default()
            })
        })
        .collect()
}

/// SOURCE_DATE_EPOCH from the build arg of that name, else the
/// environment (as buildx); unset when neither is.
pub fn source_date_epoch(
    build_args: &BTreeMap<String, String>,
    env: Option<&str>,
) -> Result<Option<prost_types::Timestamp>> {
    let (value, origin) = match build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => (v.as_str(), "--build-arg SOURCE_DATE_EPOCH"),
        None => match env {
            Some(v) => (v, "SOURCE_DATE_EPOCH"),
            None => return Ok(None),
        },
    };
    if value.is_empty() {
        return Ok(None);
    }
    let seconds: i64 = value
        .parse()
        .map_err(|_| anyhow!("invalid {origin}=\"{value}\": expected Unix seconds"))?;
    if seconds < 0 {
        bail!("invalid {origin}=\"{value}\": expected Unix seconds");
    }
    Ok(Some(prost_types::Timestamp { seconds, nanos: 0 }))
}

/// Who is submitting the build.
pub fn client_metadata() -> pb::ClientMetadata {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    pb::ClientMetadata {
        hostname,
        user,
        client_version: env!("CARGO_PKG_VERSION").to_string(),
        client_platform: format!("{}/{arch}", std::env::consts::OS),
        extra: Default::default(),
    }
}
