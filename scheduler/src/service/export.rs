//! Streaming an exported archive to the client.

use strata_proto::build::v1 as build;
use tokio::sync::mpsc;
use tonic::Status;

pub(super) fn looks_like_id(s: &str) -> bool {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    h.len() >= 12 && h.chars().all(|c| c.is_ascii_hexdigit())
}

pub(super) fn file_digest(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

pub(super) fn stream_file(
    mut file: std::fs::File,
    total: u64,
    digest: String,
    tx: mpsc::Sender<Result<build::ExportImageChunk, Status>>,
) {
    use std::io::Read;
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                return;
            }
        };
        if n == 0 && offset > 0 {
            return;
        }
        buf.truncate(n);
        let chunk = build::ExportImageChunk {
            offset,
            data: buf,
            total_size: total,
            archive_digest: if offset + n as u64 >= total {
                digest.clone()
            } else {
                String::new()
            },
        };
        if tx.blocking_send(Ok(chunk)).is_err() || n == 0 {
            return;
        }
        offset += n as u64;
    }
}
