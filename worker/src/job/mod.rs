//! One layer job: materialise the parent filesystem, apply the step (RUN in
//! runc, COPY/ADD, WORKDIR's mkdir), and turn the change into an OCI layer
//! in the local store.

mod commit;
mod file_action;
mod mounts;
mod run;

use crate::copy::CopyError;
use crate::executor::{ExecError, ExitStatus, Network, OutputChunk};
use crate::fetch::FetchError;
use crate::pull::PullError;
use crate::snapshot::SnapshotError;
use crate::store::{LayerRef, StoreError};
use std::path::PathBuf;
use std::time::Duration;
use strata_oci::layer::{Compression, LayerError};
use thiserror::Error;

pub use commit::PendingBlob;
pub use mounts::{CacheMountUser, CacheMountUsers, cache_mount_dir};
pub use run::{Worker, WorkerConfig};

/// Where COPY/ADD (or a bind mount) reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A directory on the worker (the materialised build context).
    Dir(PathBuf),
    /// The filesystem of a layer chain (another stage or an image),
    /// bottom layer first.
    Layers(Vec<LayerRef>),
}

/// A `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// `type=cache`: a directory kept on the worker per id.
    Cache {
        /// Mount point.
        target: String,
        /// Cache id (defaults to the target in Dockerfiles).
        id: String,
        /// Read-only.
        readonly: bool,
        /// Owner and mode of a newly created cache directory.
        uid: u32,
        /// Group of a newly created cache directory.
        gid: u32,
        /// Mode of a newly created cache directory.
        mode: u32,
    },
    /// `type=secret`: a file that never reaches a layer.
    Secret {
        /// Mount point.
        target: String,
        /// Content.
        data: Vec<u8>,
        /// File mode.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// `type=tmpfs`.
    Tmpfs {
        /// Mount point.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// `type=bind` from the context or another stage (read-only).
    Bind {
        /// Mount point.
        target: String,
        /// Where the files come from.
        from: FileSource,
        /// Path inside the source.
        source: String,
    },
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobAction {
    /// RUN.
    Run {
        /// Final argv (shell already prepended for shell form).
        argv: Vec<String>,
        /// `--network`.
        network: Network,
        /// `--security=insecure`.
        insecure: bool,
        /// `--mount`s.
        mounts: Vec<RunMount>,
        /// Files mounted read-only for the run (heredoc scripts): path,
        /// content, mode.
        inline_files: Vec<(String, Vec<u8>, u32)>,
    },
    /// COPY or ADD.
    Copy {
        /// Where the sources are.
        from: FileSource,
        /// Source paths or wildcards, relative to the source root; for ADD
        /// also `http://` and `https://` URLs, downloaded by the worker.
        sources: Vec<String>,
        /// Absolute destination; a trailing `/` means a directory.
        dest: String,
        /// `--chown` (user[:group], resolved in the destination).
        chown: String,
        /// `--chmod`.
        chmod: String,
        /// `--exclude` patterns.
        exclude: Vec<String>,
        /// ADD rather than COPY: URL sources are downloaded and tar
        /// archives extracted.
        add: bool,
        /// ADD `--unpack`: `None` extracts local archives but not
        /// downloaded ones (Docker's default); `Some(b)` decides for both.
        unpack: Option<bool>,
        /// ADD `--checksum` (`sha256:<hex>`) of the single URL source.
        checksum: Option<String>,
        /// `--parents`: keep the matched paths' directories
        /// ([`crate::copy::copy_parents`]).
        parents: bool,
        /// `--link`: copy onto an empty tree, so the layer holds only what
        /// the copy wrote, as BuildKit's merge of a scratch copy does
        /// (destination paths are not resolved against the parent).
        link: bool,
        /// Heredoc sources (`COPY <<EOF /dest`): delimiter and content,
        /// copied after `sources` as files of that name, mode 0644, owned
        /// by root before `--chown`/`--chmod`.
        inline: Vec<(String, Vec<u8>)>,
    },
    /// WORKDIR creating its directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Owner (the USER in force).
        user: String,
    },
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Unique per attempt; names the snapshot and the container.
    pub id: String,
    /// Parent filesystem, bottom layer first.
    pub parent: Vec<LayerRef>,
    /// What to do.
    pub action: JobAction,
    /// Environment (`K=V`).
    pub env: Vec<String>,
    /// USER.
    pub user: String,
    /// Working directory.
    pub workdir: String,
    /// Clamp layer times to this (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<i64>,
    /// Layer compression.
    pub compression: Compression,
    /// Kill a RUN after this long.
    pub timeout: Option<Duration>,
    /// `/etc/hosts` entries of a RUN beyond its own (`--add-host`): host,
    /// address.
    pub extra_hosts: Vec<(String, String)>,
}

/// What a job produced.
#[derive(Debug)]
pub struct JobOutcome {
    /// The layer, stored locally: its unpacked dir and its blob, or (with
    /// `pending` set) its unpacked dir alone, the blob fields empty.
    pub layer: LayerRef,
    /// Keeps the layer from store eviction while the outcome lives (drop
    /// it once the layer is uploaded).
    pub held: crate::store::Held,
    /// The layer is empty (the step changed nothing).
    pub empty: bool,
    /// How a RUN ended.
    pub exit: Option<ExitStatus>,
    /// Wall time of the whole job.
    pub duration: Duration,
    /// From [`Worker::run_job_early`](run::Worker::run_job_early): the
    /// layer's blob, still to make (`layer` has its diffID only).
    pub pending: Option<PendingBlob>,
}

/// Why a job failed.
#[derive(Debug, Error)]
pub enum JobError {
    /// The command exited non-zero or was killed by a signal.
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    Failed {
        /// The argv joined.
        command: String,
        /// Docker's exit code (128+signal for a signal).
        code: i32,
        /// The full status.
        status: ExitStatus,
    },
    /// The runtime failed (runc missing, cancelled, timed out...).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Mounting the filesystem failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// COPY failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// Downloading an ADD URL failed.
    #[error("ADD: {0}")]
    Fetch(#[from] FetchError),
    /// Pulling a base image failed.
    #[error(transparent)]
    Pull(Box<PullError>),
    /// Making the layer failed.
    #[error("making the layer: {0}")]
    Layer(#[from] LayerError),
    /// `--chown`, `--chmod` or USER could not be resolved.
    #[error("{0}")]
    Invalid(String),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The snapshot changed between hashing the layer's tar and packing
    /// its blob.
    #[error(
        "the step's files changed while its layer was made: its tar hashed to {before}, then to {after}"
    )]
    Changed {
        /// The diffID reported first.
        before: String,
        /// The blob's.
        after: String,
    },
}

impl From<PullError> for JobError {
    fn from(e: PullError) -> Self {
        JobError::Pull(Box::new(e))
    }
}

/// Forwarded output of a RUN (re-exported for callers).
pub type Output = OutputChunk;
