//! Moving images out of the scheduler: `PushImage` (to a registry) and
//! `ExportImage` (to a tarball, a writer, or unpacked into a directory).

use anyhow::{Context as _, Result, anyhow, bail};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use strata_proto::build::v1 as pb;
use strata_proto::common::v1::Compression;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// What a push does to layer compression (BuildKit's `compression=` and
/// `force-compression=`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PushCompression {
    /// Convert the layers strata built to this; unspecified pushes every
    /// layer as stored.
    pub compression: Compression,
    /// Convert every layer, base-image layers too.
    pub force: bool,
}

/// Pushes `image` (to `destination`, or its own name when empty), its
/// layers as stored unless `how` asks for a conversion, calling `progress`
/// with one line per blob phase change.
pub async fn push_image(
    client: &mut crate::connect::Client,
    image: &str,
    destination: &str,
    how: PushCompression,
    progress: &mut dyn FnMut(&str),
) -> Result<pb::PushComplete> {
    let shown = if destination.is_empty() {
        image
    } else {
        destination
    };
    let mut stream = client
        .push_image(pb::PushImageRequest {
            image: image.to_string(),
            destination: destination.to_string(),
            compression: how.compression.into(),
            force_compression: how.force,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("pushing {shown}: {}", s.message()))?
        .into_inner();
    let to = match how.compression {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::Uncompressed => "uncompressed",
        // The scheduler's default for registry pushes, as docker build.
        Compression::Unspecified => "gzip",
    };
    let converting = format!("Converting to {to} (compression={to})");
    let mut phases: HashMap<String, pb::PushPhase> = HashMap::new();
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| anyhow!("pushing {shown}: {}", s.message()))?;
        let Some(msg) = msg else {
            bail!("pushing {shown}: the scheduler ended the push without confirming it");
        };
        match msg.progress {
            Some(pb::push_progress::Progress::Blob(b)) => {
                let phase = b.phase();
                if phases.insert(b.digest.clone(), phase) != Some(phase) {
                    let what: std::borrow::Cow<'_, str> = match phase {
                        pb::PushPhase::Unspecified => continue,
                        pb::PushPhase::Preparing => "Preparing".into(),
                        pb::PushPhase::Compressing => converting.as_str().into(),
                        pb::PushPhase::Pushing => "Pushing".into(),
                        pb::PushPhase::Pushed => "Pushed".into(),
                        pb::PushPhase::Exists => "Layer already exists".into(),
                        pb::PushPhase::Mounted if !b.mounted_from.is_empty() => {
                            format!("Mounted from {}", b.mounted_from).into()
                        }
                        pb::PushPhase::Mounted => "Mounted from another repository".into(),
                    };
                    progress(&format!("{}: {what}", crate::format::short_id(&b.digest)));
                }
            }
            Some(pb::push_progress::Progress::Complete(c)) => return Ok(c),
            None => {}
        }
    }
}

/// Streams an export into `out`; returns the bytes written. Checks the
/// archive digest when the scheduler sends one.
pub async fn export_to<W: AsyncWrite + Unpin>(
    client: &mut crate::connect::Client,
    req: pb::ExportImageRequest,
    out: &mut W,
) -> Result<u64> {
    let image = req.image.clone();
    let mut stream = client
        .export_image(req)
        .await
        .map_err(|s| anyhow!("exporting {image}: {}", s.message()))?
        .into_inner();
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow!("exporting {image}: {}", s.message()))?
    {
        if chunk.offset != written {
            bail!(
                "exporting {image}: chunk at offset {} after {written} bytes",
                chunk.offset
            );
        }
        hasher.update(&chunk.data);
        out.write_all(&chunk.data).await?;
        written += chunk.data.len() as u64;
        if !chunk.archive_digest.is_empty() {
            let got = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
            if got != chunk.archive_digest {
                bail!(
                    "exporting {image}: the archive is corrupt (digest {got}, expected {})",
                    chunk.archive_digest
                );
            }
        }
    }
    out.flush().await?;
    Ok(written)
}

/// Exports into the file `dest`, written beside it first and renamed into
/// place, so a failed export leaves no half-written file.
pub async fn export_to_file(
    client: &mut crate::connect::Client,
    req: pb::ExportImageRequest,
    dest: &Path,
) -> Result<u64> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let result = export_to(client, req, &mut file).await;
    drop(file);
    match result {
        Ok(n) => {
            tokio::fs::rename(&tmp, dest)
                .await
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

/// Exports `image`'s root filesystem (ROOTFS format) and unpacks it into
/// `dir`, refusing entries that would land outside it.
pub async fn export_local(
    client: &mut crate::connect::Client,
    image: &str,
    dir: &Path,
) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut stream = client
        .export_image(pb::ExportImageRequest {
            image: image.to_string(),
            format: pb::ArchiveFormat::Rootfs.into(),
            compression: Compression::Uncompressed.into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("exporting {image}: {}", s.message()))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let target = dir.to_path_buf();
    // tar is synchronous: unpack on the blocking pool, fed by the stream.
    let unpacker = tokio::task::spawn_blocking(move || {
        unpack(
            ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            },
            &target,
        )
    });
    let mut sent = Ok(());
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if tx.send(chunk.data).await.is_err() {
                    break; // the unpacker failed; its error says why
                }
            }
            Ok(None) => break,
            Err(s) => {
                sent = Err(anyhow!("exporting {image}: {}", s.message()));
                break;
            }
        }
    }
    drop(tx);
    let unpacked = unpacker
        .await
        .map_err(|e| anyhow!("unpacking into {}: {e}", dir.display()))?;
    sent?;
    unpacked
}

/// Unpacks a tar stream into `dir`; entries with absolute paths or `..`
/// are refused, and `unpack_in` refuses any that resolve outside `dir`
/// through symlinks.
pub fn unpack(reader: impl Read, dir: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    for entry in archive
        .entries()
        .with_context(|| format!("unpacking into {}", dir.display()))?
    {
        let mut entry = entry.with_context(|| format!("unpacking into {}", dir.display()))?;
        let path = entry.path()?.into_owned();
        let escapes = path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            bail!(
                "refusing to unpack \"{}\": it would land outside {}",
                path.display(),
                dir.display()
            );
        }
        let inside = entry
            .unpack_in(dir)
            .with_context(|| format!("unpacking {} into {}", path.display(), dir.display()))?;
        if !inside {
            bail!(
                "refusing to unpack \"{}\": it would land outside {}",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// A blocking reader over chunks arriving on a channel.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
