//! Prune's tests: what it removes and keeps, pins taken while it runs, an unreadable image.

use super::*;
use crate::image::LayerInfo;
use crate::{Scheduler, SchedulerConfig};
use std::collections::HashMap;

async fn scheduler(dir: &std::path::Path) -> Scheduler {
    Scheduler::open(SchedulerConfig::new(dir)).await.unwrap()
}

/// Stores `bytes` as a blob last written `age` ago.
async fn old_blob(inner: &Inner, bytes: &[u8], age: Duration) -> String {
    let digest = inner.blobs.put_bytes(bytes).await.unwrap();
    let path = inner.blobs.local().path(&digest).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
    digest
}

fn request(ns: &str, until: Option<&str>) -> build::PruneRequest {
    build::PruneRequest {
        namespace: ns.to_string(),
        filters: until
            .map(|u| HashMap::from([("until".to_string(), u.to_string())]))
            .unwrap_or_default(),
        ..Default::default()
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_prune_sees_every_pin_taken_while_it_runs_even_once_released() {
    let pins = Pins::default();
    pins.pin("before", ["sha256:a"]);
    let watch = pins.watch();
    // A build that pinned before the prune started and ends during it.
    pins.release("before");
    // A build that records a layer during the prune and ends.
    pins.pin("during", ["sha256:b"]);
    pins.release("during");
    assert!(!pins.is_pinned("sha256:a") && !pins.is_pinned("sha256:b"));
    assert!(watch.saw("sha256:a") && watch.saw("sha256:b"));
    assert!(!watch.saw("sha256:c"));
    drop(watch);
    // The next prune starts afresh.
    let next = pins.watch();
    assert!(!next.saw("sha256:a"));
    assert!(pins.watches.lock().unwrap().len() == 1);
}

#[tokio::test]
async fn unreferenced_blobs_go_only_in_a_default_prune_and_honour_until() {
    let dir = tempfile::tempdir().unwrap();
    let s = scheduler(dir.path()).await;
    let inner = s.inner();
    let orphan = old_blob(inner, b"an old context file", HOUR).await;
    let fresh = inner.blobs.put_bytes(b"an upload just made").await.unwrap();

    let r = prune(inner, &request("team-a", None)).await.unwrap();
    assert_eq!(r.deleted_blobs, 0, "another namespace's prune");
    assert!(inner.blobs.has(&orphan).await);

    let r = prune(inner, &request("", Some("2h"))).await.unwrap();
    assert_eq!(r.deleted_blobs, 0, "until=2h keeps a blob an hour old");
    assert!(inner.blobs.has(&orphan).await);

    let r = prune(inner, &request("", Some("30m"))).await.unwrap();
    assert_eq!(r.deleted_blobs, 1);
    assert!(!inner.blobs.has(&orphan).await);
    assert!(inner.blobs.has(&fresh).await, "within the grace period");
}

#[tokio::test]
async fn a_base_image_layer_counts_as_used_when_a_build_resolved_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = scheduler(dir.path()).await;
    let inner = s.inner();
    let layer = old_blob(inner, b"a base layer pulled long ago", 2 * HOUR).await;
    let unused = old_blob(inner, b"a base layer nobody uses", 2 * HOUR).await;
    note_base_use(inner, "sha256:manifest", std::slice::from_ref(&layer)).await;

    let r = prune(inner, &request("", Some("1h"))).await.unwrap();
    assert_eq!(r.deleted_blobs, 1);
    assert!(inner.blobs.has(&layer).await, "resolved just now");
    assert!(!inner.blobs.has(&unused).await);
    // Without until it still stays for the grace period.
    prune(inner, &request("", None)).await.unwrap();
    assert!(inner.blobs.has(&layer).await);
}

#[tokio::test]
async fn a_pinned_layer_stays_though_its_entry_goes() {
    let dir = tempfile::tempdir().unwrap();
    let s = scheduler(dir.path()).await;
    let inner = s.inner();
    let mut entries = Vec::new();
    for (n, body) in [b"layer one".as_slice(), b"layer two"].iter().enumerate() {
        let digest = inner.blobs.put_bytes(body).await.unwrap();
        let entry = crate::cache::CacheEntry {
            layer: LayerInfo {
                diff_id: digest.clone(),
                digest: digest.clone(),
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size: body.len() as u64,
            },
            build_id: "b".into(),
            worker_id: "w".into(),
            created: "2026-01-01T00:00:00Z".into(),
        };
        inner
            .cache
            .insert(DEFAULT_NAMESPACE, &format!("k{n}"), &entry)
            .await
            .unwrap();
        entries.push(digest);
    }
    inner.pins.pin("running-build", [entries[0].as_str()]);
    let r = prune(inner, &request("", None)).await.unwrap();
    assert_eq!(r.deleted_cache_entries, 2);
    assert_eq!(r.deleted_blobs, 1);
    assert!(inner.blobs.has(&entries[0]).await, "pinned");
    assert!(!inner.blobs.has(&entries[1]).await);
    inner.pins.release("running-build");
    // Unreferenced now, and younger than the grace period.
    prune(inner, &request("", None)).await.unwrap();
    assert!(inner.blobs.has(&entries[0]).await);
}

#[tokio::test]
async fn an_unreadable_image_aborts_the_prune_and_its_layers_stay() {
    let dir = tempfile::tempdir().unwrap();
    let s = scheduler(dir.path()).await;
    let inner = s.inner();
    let layer = old_blob(inner, b"a layer of a stored image", 2 * HOUR).await;
    let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [layer]}});
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = inner.blobs.put_bytes(&config).await.unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"digest": config_digest},
        "layers": [{"digest": layer, "size": 25,
            "mediaType": "application/vnd.oci.image.layer.v1.tar"}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let image = crate::image::Image {
        manifest_digest: strata_store::sha256_of(&manifest),
        config,
        config_digest,
        manifest,
        layers: Vec::new(),
    };
    inner
        .images
        .record(&inner.blobs, &image, &["app:1".into()], "b", None)
        .await
        .unwrap();
    let r = prune(inner, &request("", None)).await.unwrap();
    assert_eq!(r.deleted_blobs, 0, "the image holds its layer");

    // The image's config can no longer be read.
    inner
        .blobs
        .local_store()
        .delete(&image.config_digest)
        .await
        .unwrap();
    let e = prune(inner, &request("", None)).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "prune aborted: could not read image {}: its config {}",
            image.manifest_digest, image.config_digest
        )),
        "{msg}"
    );
    assert!(inner.blobs.has(&layer).await, "the layer stays");
}
