//! `strata import FILE|- NAME[:TAG]`: make an image from a root filesystem
//! tarball, as `docker import`.

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;
use strata_proto::CONTEXT_CHUNK_SIZE;
use strata_proto::build::v1 as pb;
use tokio::sync::mpsc;

/// Arguments of `strata import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The tarball (plain, gzip, zstd...), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Name for the new image.
    #[arg(value_name = "NAME[:TAG]")]
    pub reference: String,
    /// Dockerfile instruction to apply to the config, e.g. `CMD ["/app"]`;
    /// repeatable.
    #[arg(short = 'c', long = "change", value_name = "CHANGE")]
    pub changes: Vec<String>,
    /// Commit message for the history.
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    pub message: Option<String>,
}

/// Runs `strata import`; prints the new image ID.
pub async fn run(client: &mut crate::connect::Client, args: &ImportArgs) -> Result<()> {
    let stdin = args.file.as_os_str() == "-";
    let (reader, total): (Box<dyn Read + Send>, u64) = if stdin {
        (Box::new(std::io::stdin()), 0)
    } else {
        let f = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(f), len)
    };
    let header = pb::ImportImageRequest {
        payload: Some(pb::import_image_request::Payload::Header(
            pb::ImportHeader {
                format: pb::ArchiveFormat::Rootfs.into(),
                reference: args.reference.clone(),
                changes: args.changes.clone(),
                message: args.message.clone().unwrap_or_default(),
                total_size: total,
                ..Default::default()
            },
        )),
    };
    let (tx, rx) = mpsc::channel::<pb::ImportImageRequest>(4);
    tx.send(header)
        .await
        .map_err(|_| anyhow!("import stream closed"))?;
    let name = args.file.display().to_string();
    let producer = tokio::task::spawn_blocking(move || read_chunks(reader, &tx, &name));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let sent = client.import_image(stream).await;
    producer
        .await
        .map_err(|e| anyhow!("reading {}: {e}", args.file.display()))??;
    let resp = sent
        .map_err(|s| anyhow!("importing {}: {}", args.file.display(), s.message()))?
        .into_inner();
    println!("{}", resp.config_digest);
    Ok(())
}

fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    tx: &mpsc::Sender<pb::ImportImageRequest>,
    name: &str,
) -> Result<()> {
    let mut buf = vec![0u8; CONTEXT_CHUNK_SIZE];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {name}"))?;
        if n == 0 {
            return Ok(());
        }
        let msg = pb::ImportImageRequest {
            payload: Some(pb::import_image_request::Payload::Data(buf[..n].to_vec())),
        };
        if tx.blocking_send(msg).is_err() {
            // The scheduler rejected the import; its status says why.
            return Ok(());
        }
    }
}
