//! Context upload: ask the scheduler which blobs it lacks
//! (`FindMissingBlobs`), then stream exactly those (`UploadBlobs`), many
//! small files per message and big files in 1 MiB chunks.

use anyhow::{Context as _, Result, anyhow, bail};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use strata_frontend::context::{ContextManifest, EntryKind};
use strata_proto::CONTEXT_CHUNK_SIZE;
use strata_proto::build::v1 as pb;
use tokio::sync::mpsc;

/// Most digests asked about in one `FindMissingBlobs` call.
pub const FIND_BATCH: usize = 50_000;

/// Where the bytes of a blob to upload are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// A file of the context.
    File(PathBuf),
    /// Bytes in memory (an encoded manifest).
    Bytes(Vec<u8>),
}

/// A blob the build references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>` of its content.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where to read it.
    pub source: BlobSource,
}

/// What an upload did, for the progress line
/// `context: N files, uploaded M (X bytes)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Distinct blobs the build references.
    pub blobs: usize,
    /// Blobs the scheduler lacked and that were sent.
    pub uploaded: usize,
    /// Payload bytes sent.
    pub bytes: u64,
}

/// The distinct file blobs of a context, first path of each digest wins.
pub fn context_blobs(root: &Path, manifest: &ContextManifest) -> Vec<Blob> {
    let mut seen = BTreeSet::new();
    manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| {
            let digest = e.digest.clone()?;
            seen.insert(digest.clone()).then(|| Blob {
                digest,
                size: e.size,
                source: BlobSource::File(root.join(&e.path)),
            })
        })
        .collect()
}

/// Asks which of `digests` the scheduler lacks, in batches of
/// [`FIND_BATCH`].
pub async fn find_missing(
    client: &mut crate::connect::Client,
    digests: &[String],
) -> Result<BTreeSet<String>> {
    let mut missing = BTreeSet::new();
    for batch in digests.chunks(FIND_BATCH) {
        let resp = client
            .find_missing_blobs(pb::FindMissingBlobsRequest {
                digests: batch.to_vec(),
            })
            .await
            .map_err(|s| {
                anyhow!(
                    "checking the build context with the scheduler: {}",
                    s.message()
                )
            })?;
        missing.extend(resp.into_inner().missing_digests);
    }
    Ok(missing)
}

/// Uploads those of `blobs` the scheduler lacks and checks that every one
/// was stored.
pub async fn upload(client: &mut crate::connect::Client, blobs: &[Blob]) -> Result<UploadStats> {
    let digests: Vec<String> = blobs.iter().map(|b| b.digest.clone()).collect();
    let mut stats = UploadStats {
        blobs: blobs.len(),
        ..UploadStats::default()
    };
    if blobs.is_empty() {
        return Ok(stats);
    }
    let missing = find_missing(client, &digests).await?;
    let todo: Vec<Blob> = blobs
        .iter()
        .filter(|b| missing.contains(&b.digest))
        .cloned()
        .collect();
    if todo.is_empty() {
        return Ok(stats);
    }
    stats.uploaded = todo.len();
    stats.bytes = todo.iter().map(|b| b.size).sum();
    let names: BTreeMap<String, String> = todo
        .iter()
        .map(|b| (b.digest.clone(), describe(&b.source)))
        .collect();
    let (tx, rx) = mpsc::channel::<pb::UploadBlobsRequest>(4);
    // File reads and hashing are blocking work: keep them off the runtime.
    let producer = tokio::task::spawn_blocking(move || produce(&todo, &tx));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let sent = client.upload_blobs(stream).await;
    let produced = producer
        .await
        .map_err(|e| anyhow!("reading the build context: {e}"))?;
    // A local read failure explains a rejected stream better than the
    // scheduler's view of it; a scheduler error explains a closed stream.
    if let Err(e) = produced
        && !e.is::<StreamClosed>()
    {
        return Err(e);
    }
    let resp = sent
        .map_err(|s| anyhow!("uploading the build context: {}", s.message()))?
        .into_inner();
    let results: BTreeMap<&str, &pb::BlobUploadResult> = resp
        .results
        .iter()
        .map(|r| (r.digest.as_str(), r))
        .collect();
    for (digest, name) in &names {
        match results.get(digest.as_str()) {
            Some(r) if r.ok => {}
            Some(r) => bail!("uploading {name} ({digest}) failed: {}", r.error),
            None => bail!("uploading {name} ({digest}) failed: the scheduler did not confirm it"),
        }
    }
    Ok(stats)
}

fn describe(source: &BlobSource) -> String {
    match source {
        BlobSource::File(p) => p.display().to_string(),
        BlobSource::Bytes(_) => "the context manifest".to_string(),
    }
}

/// The scheduler stopped reading the upload stream.
#[derive(Debug, thiserror::Error)]
#[error("the scheduler closed the upload stream early")]
struct StreamClosed;

/// Batches chunks into messages of at most [`CONTEXT_CHUNK_SIZE`] payload
/// bytes. Chunks of one blob are pushed contiguously, so blobs never
/// interleave.
struct Batcher<'a> {
    tx: &'a mpsc::Sender<pb::UploadBlobsRequest>,
    chunks: Vec<pb::UploadChunk>,
    payload: usize,
}

impl Batcher<'_> {
    fn push(&mut self, chunk: pb::UploadChunk) -> Result<()> {
        if self.payload + chunk.data.len() > CONTEXT_CHUNK_SIZE {
            self.flush()?;
        }
        self.payload += chunk.data.len();
        self.chunks.push(chunk);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.chunks.is_empty() {
            return Ok(());
        }
        self.payload = 0;
        let chunks = std::mem::take(&mut self.chunks);
        self.tx
            .blocking_send(pb::UploadBlobsRequest { chunks })
            .map_err(|_| anyhow::Error::new(StreamClosed))
    }
}

fn produce(blobs: &[Blob], tx: &mpsc::Sender<pb::UploadBlobsRequest>) -> Result<()> {
    let mut batch = Batcher {
        tx,
        chunks: Vec::new(),
        payload: 0,
    };
    let mut buf = vec![0u8; CONTEXT_CHUNK_SIZE];
    for blob in blobs {
        match &blob.source {
            BlobSource::Bytes(bytes) => send_bytes(&mut batch, &blob.digest, bytes)?,
            BlobSource::File(path) => send_file(&mut batch, blob, path, &mut buf)?,
        }
    }
    batch.flush()
}

fn send_bytes(batch: &mut Batcher<'_>, digest: &str, bytes: &[u8]) -> Result<()> {
    let total = bytes.len() as u64;
    let mut offset = 0usize;
    loop {
        let end = (offset + CONTEXT_CHUNK_SIZE).min(bytes.len());
        batch.push(pb::UploadChunk {
            digest: digest.to_string(),
            offset: offset as u64,
            data: bytes[offset..end].to_vec(),
            total_size: total,
            last: end == bytes.len(),
        })?;
        if end == bytes.len() {
            return Ok(());
        }
        offset = end;
    }
}

fn send_file(batch: &mut Batcher<'_>, blob: &Blob, path: &Path, buf: &mut [u8]) -> Result<()> {
    let changed = || {
        anyhow!(
            "{} changed while the build context was being uploaded; run the build again",
            path.display()
        )
    };
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = file
                .read(&mut buf[filled..])
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        hasher.update(&buf[..filled]);
        let next = offset + filled as u64;
        let last = filled < buf.len() || next == blob.size;
        if next > blob.size || (last && next != blob.size) {
            return Err(changed());
        }
        if last {
            let digest = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
            if digest != blob.digest {
                return Err(changed());
            }
        }
        batch.push(pb::UploadChunk {
            digest: blob.digest.clone(),
            offset,
            data: buf[..filled].to_vec(),
            total_size: blob.size,
            last,
        })?;
        if last {
            return Ok(());
        }
        offset = next;
    }
}
