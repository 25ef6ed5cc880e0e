//! Images as files: `docker save` archives (what `docker load` and skopeo's
//! `docker-archive:` read), OCI image layouts in a tar (`oci-archive:`),
//! the flattened root filesystem (`-o type=local`), and the reverse,
//! `docker import` of a root filesystem tarball.
//!
//! Everything here but [`localise`] is blocking file work on the local
//! directory, run on the blocking pool. The writers read an image's blobs
//! as local files, so an export runs [`localise`] first; `import_rootfs`
//! writes new blobs there and needs nothing brought in.

use crate::blobs::{Blobs, FsBlobs, sha256_of};
use crate::image::{Image, LayerInfo, OCI_CONFIG, OCI_MANIFEST, layers_of};
use crate::images::ImageRecord;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use strata_frontend::plan::{ImageRef, Offline, PlanOptions, Platform, plan_dockerfile};
use strata_oci::layer::{
    Compression, LayerOptions, LayerWriter, UnpackOptions, decompress, recompress, unpack,
    write_layer_from_trees,
};

/// An image's manifest and config, read from the store.
struct Stored {
    manifest: Value,
    manifest_raw: Vec<u8>,
    config_raw: Vec<u8>,
    layers: Vec<LayerInfo>,
}

/// Brings an image's manifest, config and layer blobs into the local
/// directory (from the shared store, verified) so the archive writers can
/// read them as files. Pushes do not: they fetch a layer only if the
/// registry lacks it, and stream it (see [`crate::push`]).
pub async fn localise(blobs: &Blobs, rec: &ImageRecord) -> Result<(), String> {
    let manifest = blobs
        .read(&rec.manifest_digest)
        .await
        .map_err(|e| e.to_string())?;
    let config = blobs
        .read(&rec.config_digest)
        .await
        .map_err(|e| e.to_string())?;
    let manifest: Value = serde_json::from_slice(&manifest).map_err(|e| e.to_string())?;
    let config: Value = serde_json::from_slice(&config).map_err(|e| e.to_string())?;
    for l in layers_of(&manifest, &config)? {
        blobs
            .ensure_local(&l.digest)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn load(blobs: &FsBlobs, rec: &ImageRecord) -> Result<Stored, String> {
    let manifest_raw = blobs
        .read(&rec.manifest_digest)
        .map_err(|e| e.to_string())?;
    let config_raw = blobs.read(&rec.config_digest).map_err(|e| e.to_string())?;
    let manifest: Value = serde_json::from_slice(&manifest_raw).map_err(|e| e.to_string())?;
    let config: Value = serde_json::from_slice(&config_raw).map_err(|e| e.to_string())?;
    let layers =
        layers_of(&manifest, &config).map_err(|e| format!("image {}: {e}", rec.config_digest))?;
    Ok(Stored {
        manifest,
        manifest_raw,
        config_raw,
        layers,
    })
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<(), String> {
    let mut h = header(data.len() as u64);
    tar.append_data(&mut h, path, data)
        .map_err(|e| format!("writing {path}: {e}"))
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &str, file: &Path) -> Result<(), String> {
    let f = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let mut h = header(size);
    tar.append_data(&mut h, path, BufReader::with_capacity(1 << 20, f))
        .map_err(|e| format!("writing {path}: {e}"))
}

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

fn familiar(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            ImageRef::parse(n)
                .map(|r| r.familiar())
                .unwrap_or(n.clone())
        })
        .collect()
}

/// A layer in the compression an export asks for (see
/// [`crate::push::layer_variant`]); `None` keeps each export's default.
pub type Variant<'a> = Option<&'a dyn Fn(&LayerInfo) -> Result<LayerInfo, String>>;

/// Writes a `docker save` archive: `manifest.json`, the config, and each
/// layer as an uncompressed tar named by its diffID (what every `docker
/// load` accepts; zstd layers would not be) — or, when `variant` asks for
/// a compression, as that compressed blob named by its digest.
pub fn write_docker_archive(
    blobs: &FsBlobs,
    rec: &ImageRecord,
    names: &[String],
    out: &Path,
    variant: Variant<'_>,
) -> Result<(), String> {
    let image = load(blobs, rec)?;
    let file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let config_path = format!("blobs/sha256/{}", hex(&rec.config_digest));
    append_bytes(&mut tar, &config_path, &image.config_raw)?;
    let mut layer_paths: Vec<String> = Vec::new();
    for l in &image.layers {
        if let Some(variant) = variant {
            let v = variant(l)?;
            let path = format!("blobs/sha256/{}", hex(&v.digest));
            if !layer_paths.contains(&path) {
                let blob = blobs.path(&v.digest).map_err(|e| e.to_string())?;
                append_file(&mut tar, &path, &blob)?;
            }
            layer_paths.push(path);
            continue;
        }
        let path = format!("blobs/sha256/{}", hex(&l.diff_id));
        if layer_paths.contains(&path) {
            layer_paths.push(path);
            continue;
        }
        let blob = blobs.path(&l.digest).map_err(|e| e.to_string())?;
        let input = File::open(&blob).map_err(|e| format!("layer {}: {e}", l.digest))?;
        let tmp = blobs.temp_path("save");
        let result = File::create(&tmp)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                recompress(
                    BufReader::with_capacity(1 << 20, input),
                    &l.diff_id,
                    Compression::Uncompressed,
                    BufWriter::with_capacity(1 << 20, f),
                    1,
                )
                .map_err(|e| format!("layer {}: {e}", l.digest))
            })
            .and_then(|_| append_file(&mut tar, &path, &tmp));
        let _ = std::fs::remove_file(&tmp);
        result?;
        layer_paths.push(path);
    }
    let tags = familiar(names);
    let manifest = json!([{
        "Config": config_path,
        "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
        "Layers": layer_paths,
    }]);
    append_bytes(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&manifest).map_err(|e| e.to_string())?,
    )?;
    let mut repositories = serde_json::Map::new();
    if let Some(top) = image.layers.last() {
        for t in &tags {
            if let Some((repo, tag)) = t.rsplit_once(':') {
                repositories
                    .entry(repo.to_string())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .map(|m| m.insert(tag.to_string(), json!(hex(&top.diff_id))));
            }
        }
    }
    if !repositories.is_empty() {
        append_bytes(
            &mut tar,
            "repositories",
            &serde_json::to_vec(&repositories).map_err(|e| e.to_string())?,
        )?;
    }
    finish(tar)
}

fn finish(tar: tar::Builder<BufWriter<File>>) -> Result<(), String> {
    tar.into_inner()
        .map_err(|e| e.to_string())?
        .into_inner()
        .map_err(|e| e.into_error().to_string())?
        .sync_all()
        .map_err(|e| e.to_string())
}

/// Writes an OCI image layout as a tar: `oci-layout`, `index.json` naming
/// the manifest, and every blob as stored (layers keep their compression,
/// so the manifest digest is the image's own).
pub fn write_oci_archive(
    blobs: &FsBlobs,
    rec: &ImageRecord,
    names: &[String],
    out: &Path,
    variant: Variant<'_>,
) -> Result<(), String> {
    let mut image = load(blobs, rec)?;
    let mut manifest_digest = rec.manifest_digest.clone();
    if let Some(variant) = variant {
        // The asked compression: the same config, a manifest naming the
        // variant blobs.
        let mut layers = Vec::with_capacity(image.layers.len());
        for l in &image.layers {
            layers.push(variant(l)?);
        }
        if let Some(descs) = image.manifest["layers"].as_array_mut() {
            for (d, v) in descs.iter_mut().zip(&layers) {
                d["mediaType"] = json!(v.media_type);
                d["digest"] = json!(v.digest);
                d["size"] = json!(v.size);
            }
        }
        image.manifest_raw = serde_json::to_vec(&image.manifest).map_err(|e| e.to_string())?;
        manifest_digest = sha256_of(&image.manifest_raw);
        image.layers = layers;
    }
    let rec = &ImageRecord {
        manifest_digest,
        ..rec.clone()
    };
    let file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let media_type = image.manifest["mediaType"]
        .as_str()
        .unwrap_or(OCI_MANIFEST)
        .to_string();
    let manifests: Vec<Value> = if names.is_empty() {
        vec![
            json!({"mediaType": media_type, "digest": rec.manifest_digest, "size": image.manifest_raw.len()}),
        ]
    } else {
        names
            .iter()
            .map(|n| {
                let r = ImageRef::parse(n)
                    .map(|r| r.to_string())
                    .unwrap_or(n.clone());
                let tag = r
                    .rsplit_once(':')
                    .map(|(_, t)| t.to_string())
                    .unwrap_or_default();
                json!({
                    "mediaType": media_type,
                    "digest": rec.manifest_digest,
                    "size": image.manifest_raw.len(),
                    "annotations": {
                        "io.containerd.image.name": r,
                        "org.opencontainers.image.ref.name": tag,
                    }
                })
            })
            .collect()
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    append_bytes(
        &mut tar,
        "index.json",
        &serde_json::to_vec(&index).map_err(|e| e.to_string())?,
    )?;
    append_bytes(
        &mut tar,
        &format!("blobs/sha256/{}", hex(&rec.manifest_digest)),
        &image.manifest_raw,
    )?;
    append_bytes(
        &mut tar,
        &format!("blobs/sha256/{}", hex(&rec.config_digest)),
        &image.config_raw,
    )?;
    let mut seen = std::collections::BTreeSet::new();
    for l in &image.layers {
        if seen.insert(l.digest.clone()) {
            let blob = blobs.path(&l.digest).map_err(|e| e.to_string())?;
            append_file(&mut tar, &format!("blobs/sha256/{}", hex(&l.digest)), &blob)?;
        }
    }
    finish(tar)
}

/// Writes the image's merged root filesystem as one tar (layers applied in
/// order, whiteouts honoured), as `-o type=local` and `docker export` see
/// it.
pub fn write_rootfs_tar(blobs: &FsBlobs, rec: &ImageRecord, out: &Path) -> Result<(), String> {
    let image = load(blobs, rec)?;
    let root = blobs.temp_path("rootfs");
    let empty = blobs.temp_path("empty");
    let result = (|| {
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&empty).map_err(|e| e.to_string())?;
        for l in &image.layers {
            let blob = blobs.path(&l.digest).map_err(|e| e.to_string())?;
            let f = File::open(&blob).map_err(|e| format!("layer {}: {e}", l.digest))?;
            let report = unpack(
                BufReader::with_capacity(1 << 20, f),
                &root,
                &UnpackOptions::default(),
            )
            .map_err(|e| format!("layer {}: {e}", l.digest))?;
            if report.diff_id != l.diff_id {
                return Err(format!(
                    "layer {}: content hashes to {}, the config says {}",
                    l.digest, report.diff_id, l.diff_id
                ));
            }
        }
        let file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
        write_layer_from_trees(
            &empty,
            &root,
            BufWriter::with_capacity(1 << 20, file),
            Compression::Uncompressed,
            &LayerOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&empty);
    result
}

/// Instructions `docker import --change` accepts.
const IMPORT_CHANGES: [&str; 10] = [
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// `docker import`: a root filesystem tarball (plain, gzip or zstd)
/// becomes a one-layer image, with `changes` (Dockerfile instructions)
/// applied to its config. The layer is stored zstd-compressed; the tar's
/// bytes are kept as they are, so its diffID is the tarball's sha256.
pub fn import_rootfs(
    blobs: &FsBlobs,
    input: &Path,
    changes: &[String],
    message: &str,
    platform: &Platform,
    created: &str,
) -> Result<Image, String> {
    for c in changes {
        let word = c
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !IMPORT_CHANGES.contains(&word.as_str()) {
            return Err(format!(
                "--change {c:?}: {word} is not allowed (allowed: {})",
                IMPORT_CHANGES.join(", ")
            ));
        }
    }
    let mut dockerfile = String::from("FROM scratch\n");
    for c in changes {
        dockerfile.push_str(c);
        dockerfile.push('\n');
    }
    let plan = plan_dockerfile(
        dockerfile.as_bytes(),
        None,
        &PlanOptions::default(),
        &Offline,
    )
    .map_err(|e| format!("--change: {e}"))?;
    let config = plan
        .stages
        .last()
        .map(|s| s.config.clone())
        .unwrap_or_default();

    let f = File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let (_, mut reader) =
        decompress(BufReader::with_capacity(1 << 20, f)).map_err(|e| e.to_string())?;
    let tmp = blobs.temp_path("import");
    let out = File::create(&tmp).map_err(|e| e.to_string())?;
    let desc = (|| {
        let mut w = LayerWriter::new(BufWriter::with_capacity(1 << 20, out), Compression::ZSTD, 0)
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| format!("reading the tarball: {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            w.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        }
        if total == 0 {
            return Err("the tarball is empty".to_string());
        }
        let (desc, out) = w.finish().map_err(|e| e.to_string())?;
        out.into_inner()
            .map_err(|e| e.into_error().to_string())?
            .sync_all()
            .map_err(|e| e.to_string())?;
        Ok(desc)
    })();
    let desc = match desc {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = check_tar(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    blobs
        .commit(&tmp, &desc.digest)
        .map_err(|e| e.to_string())?;
    let layer = LayerInfo {
        diff_id: desc.diff_id.clone(),
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        size: desc.size,
    };
    let mut doc = serde_json::Map::new();
    doc.insert("architecture".into(), json!(platform.architecture));
    doc.insert("os".into(), json!(platform.os));
    if !platform.variant.is_empty() {
        doc.insert("variant".into(), json!(platform.variant));
    }
    doc.insert("created".into(), json!(created));
    doc.insert(
        "config".into(),
        serde_json::to_value(&config).map_err(|e| e.to_string())?,
    );
    doc.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": [layer.diff_id]}),
    );
    doc.insert(
        "history".into(),
        json!([{"created": created, "created_by": "", "comment": message}]),
    );
    let config_bytes = serde_json::to_vec(&Value::Object(doc)).map_err(|e| e.to_string())?;
    let config_digest = sha256_of(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    Ok(Image {
        manifest_digest: sha256_of(&manifest_bytes),
        config: config_bytes,
        config_digest,
        manifest: manifest_bytes,
        layers: vec![layer],
    })
}

/// Reads the stored layer back as a tar to make sure it is one (a random
/// file is not a root filesystem).
fn check_tar(blob: &Path) -> Result<(), String> {
    let f = File::open(blob).map_err(|e| e.to_string())?;
    let (_, reader) = decompress(BufReader::new(f)).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(reader);
    let mut entries = 0;
    for e in archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        e.map_err(|e| format!("not a tar archive: {e}"))?;
        entries += 1;
    }
    if entries == 0 {
        return Err("not a tar archive (no entries)".to_string());
    }
    Ok(())
}
