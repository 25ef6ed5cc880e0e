//! COPY, ADD and WORKDIR's mkdir: downloading ADD's URL sources (async),
//! then copying or extracting into the step's root (blocking).

use super::mounts::source_root;
use super::{FileSource, Job, JobAction, JobError};
use crate::copy::{
    Chmod, CopyOptions, add, add_matches, copy, copy_matches, copy_parents, resolve_in_root,
};
use crate::fetch::{Checksum, FetchedFile, fetch_url, is_url};
use crate::snapshot::{Snapshot, Snapshotter};
use crate::store::Store;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use strata_frontend::dockerignore::PatternMatcher;
use tokio_util::sync::CancellationToken;

/// ADD's URL sources, downloaded into a scratch directory removed on drop.
pub(super) struct Downloads {
    /// Per source of the action: the downloaded file, for URL sources.
    pub files: Vec<Option<FetchedFile>>,
    scratch: Option<PathBuf>,
}

impl Drop for Downloads {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Downloads the URL sources of an ADD into `scratch/<n>/` (one directory
/// per source, so equal names do not collide) and checks `--checksum`.
pub(super) async fn download_sources(
    action: &JobAction,
    worker: &super::run::Worker,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<Downloads, JobError> {
    let mut downloads = Downloads {
        files: Vec::new(),
        scratch: None,
    };
    let JobAction::Copy {
        sources,
        add: true,
        checksum,
        ..
    } = action
    else {
        return Ok(downloads);
    };
    let checksum = match checksum {
        Some(c) => {
            if sources.len() != 1 || !is_url(&sources[0]) {
                return Err(JobError::Invalid(format!(
                    "ADD --checksum={c} needs exactly one source, an http(s) URL"
                )));
            }
            Some(Checksum::parse(c)?)
        }
        None => None,
    };
    for (n, source) in sources.iter().enumerate() {
        if !is_url(source) {
            downloads.files.push(None);
            continue;
        }
        downloads.scratch = Some(scratch.to_path_buf());
        // Built by the first URL any job downloads.
        let client = worker.http().await?;
        let dir = scratch.join(n.to_string());
        let fetched = tokio::select! {
            r = fetch_url(client, source, &dir, checksum.as_ref()) => r.map_err(JobError::from),
            () = cancel.cancelled() => Err(JobError::Cancelled),
        };
        match fetched {
            Ok(f) => downloads.files.push(Some(f)),
            Err(e) => {
                // Cleaned here rather than by a blocking drop on the runtime.
                let _ = tokio::fs::remove_dir_all(scratch).await;
                downloads.scratch = None;
                return Err(e);
            }
        }
    }
    Ok(downloads)
}

/// COPY/ADD and WORKDIR's mkdir, on the blocking pool. `plain_root`: the
/// root is a plain directory only this step writes (see
/// [`Snapshot::plain`]), so files from the materialised context may be
/// hardlinked into it.
pub(super) fn apply_file_action(
    job: &Job,
    root: &Path,
    plain_root: bool,
    downloads: &Downloads,
    store: &Store,
    snapshotter: &dyn Snapshotter,
) -> Result<(), JobError> {
    match &job.action {
        JobAction::Copy {
            from,
            sources,
            dest,
            chown,
            chmod,
            exclude,
            add: is_add,
            unpack,
            checksum: _,
            parents,
            link: _,
            inline,
        } => {
            let mut opts = copy_options(job, root, chown, chmod, exclude)?;
            opts.link_sources = plain_root && matches!(from, FileSource::Dir(_));
            opts.archive_limits.max_bytes = store.max_add_bytes();
            let mut keep: Vec<Box<dyn Snapshot>> = Vec::new();
            let mut src_root = None;
            for (n, s) in sources.iter().enumerate() {
                if let Some(Some(file)) = downloads.files.get(n) {
                    let dir = file.path.parent().unwrap_or(Path::new("/"));
                    let name = format!("/{}", file.name);
                    let unpack = unpack.unwrap_or(false);
                    add_matches(dir, &[name], root, dest, &opts, unpack, s)?;
                    continue;
                }
                // Mounted only when a local source needs it.
                let src_root = match &src_root {
                    Some(r) => r,
                    None => src_root.insert(source_root(
                        from,
                        store,
                        snapshotter,
                        &format!("{}-src", job.id),
                        &mut keep,
                    )?),
                };
                if *is_add {
                    add(src_root, s, root, dest, &opts, unpack.unwrap_or(true))?;
                } else if *parents {
                    copy_parents(src_root, s, root, dest, &opts)?;
                } else {
                    copy(src_root, s, root, dest, &opts)?;
                }
            }
            if !inline.is_empty() {
                copy_heredocs(inline, store, root, dest, &opts)?;
            }
            Ok(())
        }
        JobAction::Mkdir { path, user } => {
            let target = resolve_in_root(root, path, true)?;
            if target.is_dir() {
                return Ok(());
            }
            // BuildKit's mkdir takes USER as a file-op owner (`llb.WithUser`),
            // not as the identity a RUN would get.
            let (uid, gid) = if user.is_empty() {
                (0, 0)
            } else {
                crate::executor::user::resolve_chown(root, user)
                    .map_err(|e| JobError::Invalid(format!("USER {user}: {e}")))?
            };
            crate::executor::rootpath::mkdir_all_chown(&target, uid, gid).map_err(|source| {
                JobError::Io {
                    op: "creating",
                    path: target.clone(),
                    source,
                }
            })
        }
        JobAction::Run { .. } => Ok(()),
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `COPY <<EOF /dest`: as BuildKit does, each heredoc becomes a file named
/// by its delimiter, mode 0644 and owned by root, in a scratch directory,
/// and is copied from there like a single-file source.
fn copy_heredocs(
    inline: &[(String, Vec<u8>)],
    store: &Store,
    root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), JobError> {
    let scratch = Scratch(store.temp_path("heredocs"));
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| JobError::Io { op, path, source }
    };
    std::fs::create_dir_all(&scratch.0).map_err(io("creating", &scratch.0))?;
    for (name, data) in inline {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(JobError::Invalid(format!(
                "heredoc name \"{name}\" cannot name a file"
            )));
        }
        let file = scratch.0.join(name);
        std::fs::write(&file, data).map_err(io("writing", &file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .map_err(io("setting the mode of", &file))?;
        std::os::unix::fs::lchown(&file, Some(0), Some(0)).map_err(io("chown", &file))?;
        copy_matches(&scratch.0, &[format!("/{name}")], root, dest, opts)?;
    }
    Ok(())
}

fn copy_options(
    job: &Job,
    root: &Path,
    chown: &str,
    chmod: &str,
    exclude: &[String],
) -> Result<CopyOptions, JobError> {
    let owner = if chown.is_empty() {
        None
    } else {
        Some(
            crate::executor::user::resolve_chown(root, chown)
                .map_err(|e| JobError::Invalid(format!("--chown={chown}: {e}")))?,
        )
    };
    Ok(CopyOptions {
        chown: owner,
        chmod: if chmod.is_empty() {
            None
        } else {
            Some(Chmod::parse(chmod).map_err(JobError::Invalid)?)
        },
        exclude: if exclude.is_empty() {
            None
        } else {
            Some(
                PatternMatcher::new(exclude)
                    .map_err(|e| JobError::Invalid(format!("--exclude: {e}")))?,
            )
        },
        utime: job.source_date_epoch,
        ..CopyOptions::default()
    })
}
