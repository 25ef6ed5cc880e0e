//! Fixtures of the image tests: a two-layer busybox image (gzip + zstd
//! layers) pushed with an arm64 sibling behind an index, tar archives in
//! every ADD compression, and a tiny HTTP server on loopback.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, ImageIndexBuilder, MediaType, Os, PlatformBuilder,
};
use strata_oci::registry::{
    BlobSource, BlobUpload, ImagePush, ImageRef, ManifestFormat, OCI_INDEX, RegistryClient,
    canonical_json, sha256_digest,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::registry_support::{TestRegistry, require_tool};

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\napp:x:1000:\n";
pub const MOTD: &str = "pulled from a registry\n";
const APPLETS: &[&str] = &["sh", "echo", "cat", "ls", "id", "stat", "wc", "mkdir"];

/// One entry of a test tar.
pub enum Entry<'a> {
    /// A directory.
    Dir(&'a str, u32),
    /// A file: name, content, mode, owner.
    File(&'a str, &'a [u8], u32, (u64, u64)),
    /// A symlink: name, target.
    Link(&'a str, &'a str),
}

/// A tar of `entries`, mtime 1_600_000_000.
pub fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_600_000_000);
        match e {
            Entry::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).expect("dir");
            }
            Entry::File(name, data, mode, (uid, gid)) => {
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data).expect("file");
            }
            Entry::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, name, target).expect("link");
            }
        }
    }
    b.into_inner().expect("finish tar")
}

/// A tar with one entry whose name is written as given (`../evil`),
/// which `tar::Builder` would refuse to write.
pub fn raw_tar(names: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for name in names {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(4);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).expect("append");
    }
    b.into_inner().expect("finish tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).expect("xz");
    e.finish().expect("xz")
}

pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).expect("bzip2");
    e.finish().expect("bzip2")
}

/// A layer as pushed.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub media_type: MediaType,
}

impl Layer {
    pub fn gzip(tar: &[u8]) -> Self {
        Self {
            blob: gzip(tar),
            diff_id: sha256_digest(tar).to_string(),
            media_type: MediaType::ImageLayerGzip,
        }
    }

    pub fn zstd(tar: &[u8]) -> Self {
        Self {
            blob: zstd(tar),
            diff_id: sha256_digest(tar).to_string(),
            media_type: MediaType::ImageLayerZstd,
        }
    }

    pub fn digest(&self) -> String {
        sha256_digest(&self.blob).to_string()
    }

    fn upload(&self) -> BlobUpload {
        BlobUpload {
            descriptor: Descriptor::new(
                self.media_type.clone(),
                self.blob.len() as u64,
                sha256_digest(&self.blob),
            ),
            source: BlobSource::Bytes(self.blob.clone().into()),
            mount_from: None,
        }
    }
}

/// The amd64 image's layers: busybox and its applets (gzip), then
/// `/etc` with an `app` user and a motd (zstd).
pub fn amd64_layers() -> Vec<Layer> {
    let busybox = std::fs::read(require_tool("busybox", "busybox-static")).expect("read busybox");
    let mut entries = vec![
        Entry::Dir("bin/", 0o755),
        Entry::File("bin/busybox", &busybox, 0o755, (0, 0)),
    ];
    let names: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    entries.extend(names.iter().map(|n| Entry::Link(n, "busybox")));
    let etc = tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/passwd", PASSWD.as_bytes(), 0o644, (0, 0)),
        Entry::File("etc/group", GROUP.as_bytes(), 0o644, (0, 0)),
        Entry::File("etc/motd", MOTD.as_bytes(), 0o644, (0, 0)),
    ]);
    vec![Layer::gzip(&tar(&entries)), Layer::zstd(&etc)]
}

fn config(arch: &str, layers: &[Layer]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("config")
}

/// What was pushed.
pub struct PushedImage {
    /// `HOST/busybox:multi`, an index of arm64 (first) and amd64.
    pub reference: String,
    /// The amd64 manifest digest.
    pub amd64_manifest: String,
    /// The index digest.
    pub index: String,
    /// The amd64 layers.
    pub layers: Vec<Layer>,
}

/// Pushes the amd64 image and an arm64 one (a single different layer)
/// behind one index, arm64 listed first.
pub async fn push_busybox(registry: &TestRegistry, client: &RegistryClient) -> PushedImage {
    let amd64 = amd64_layers();
    let arm64 = vec![Layer::gzip(&tar(&[Entry::File(
        "etc/motd",
        b"arm64\n",
        0o644,
        (0, 0),
    )]))];
    let mut entries = Vec::new();
    let mut digests = HashMap::new();
    for (arch, oci_arch, layers) in [
        ("arm64", Arch::ARM64, &arm64),
        ("amd64", Arch::Amd64, &amd64),
    ] {
        let target = ImageRef::parse(&format!("{}/busybox:{arch}", registry.host())).expect("ref");
        let image = ImagePush {
            format: ManifestFormat::Oci,
            config: config(arch, layers),
            layers: layers.iter().map(Layer::upload).collect(),
            annotations: Default::default(),
        };
        let pushed = client.push_image(&target, &image).await.expect("push");
        let platform = PlatformBuilder::default()
            .os(Os::Linux)
            .architecture(oci_arch)
            .build()
            .expect("platform");
        entries.push(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(pushed.manifest_digest.clone())
                .size(pushed.manifest_raw.len() as u64)
                .platform(platform)
                .build()
                .expect("descriptor"),
        );
        digests.insert(arch, pushed.manifest_digest.to_string());
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(entries)
        .build()
        .expect("index");
    let reference = format!("{}/busybox:multi", registry.host());
    let index_digest = client
        .push_manifest(
            &ImageRef::parse(&reference).expect("ref"),
            &canonical_json(&index).expect("json"),
            OCI_INDEX,
        )
        .await
        .expect("push index");
    PushedImage {
        reference,
        amd64_manifest: digests["amd64"].clone(),
        index: index_digest.to_string(),
        layers: amd64,
    }
}

/// One route of [`HttpServer`].
pub struct Route {
    pub path: &'static str,
    pub body: Vec<u8>,
    pub last_modified: Option<&'static str>,
}

/// A minimal HTTP/1.1 server on 127.0.0.1: `GET` of a route's path
/// answers its body, anything else 404. Stops on drop.
pub struct HttpServer {
    pub base: String,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(routes: Vec<Route>) -> HttpServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let routes = Arc::new(routes);
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let routes = Arc::clone(&routes);
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let response = match routes.iter().find(|r| r.path == path) {
                    Some(r) => {
                        let mut h = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
                            r.body.len()
                        );
                        if let Some(lm) = r.last_modified {
                            h.push_str(&format!("Last-Modified: {lm}\r\n"));
                        }
                        h.push_str("\r\n");
                        let mut out = h.into_bytes();
                        out.extend_from_slice(&r.body);
                        out
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = conn.write_all(&response).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    HttpServer {
        base,
        requests,
        task,
    }
}
