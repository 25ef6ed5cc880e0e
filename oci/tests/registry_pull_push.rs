//! Push and pull against a real registry (Debian's `docker-registry`) on a
//! loopback port.

mod common;

use common::image::{
    APPLETS, busybox_image, busybox_image_from_file, busybox_layer, layer_entries,
};
use common::registry::TestRegistry;
use oci_spec::image::{Arch, DescriptorBuilder, ImageIndexBuilder, MediaType, Os, PlatformBuilder};
use strata_oci::registry::{
    BlobPushOutcome, ImageRef, ManifestFormat, OCI_INDEX, OCI_MANIFEST, Platform, RegistryError,
    canonical_json,
};

fn reference(registry: &TestRegistry, name: &str) -> ImageRef {
    ImageRef::parse(&format!("{}/{name}", registry.host())).expect("test reference")
}

#[tokio::test]
async fn push_then_pull_by_tag_and_by_digest_round_trips() {
    let registry = TestRegistry::start().await;
    let client = common::client(None, &registry.scratch());
    let layer = busybox_layer();
    let image = busybox_image_from_file(&layer, &registry.scratch());
    let target = reference(&registry, "busybox:latest");

    let pushed = client.push_image(&target, &image).await.expect("push");
    assert_eq!(
        pushed.stats.uploaded, 2,
        "layer and config go up: {:?}",
        pushed.stats
    );
    assert_eq!(
        pushed.stats.bytes_uploaded,
        (layer.gz.len() + image.config.len()) as u64
    );
    assert_eq!(pushed.manifest_media_type, OCI_MANIFEST);

    let by_tag = client
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect("resolve by tag");
    assert_eq!(by_tag.manifest_digest, pushed.manifest_digest);
    assert_eq!(by_tag.manifest_raw, pushed.manifest_raw);
    assert_eq!(by_tag.index_digest, None);
    assert_eq!(by_tag.config_raw, image.config);
    assert_eq!(by_tag.layers, vec![layer.descriptor()]);
    assert_eq!(
        by_tag.config.rootfs().diff_ids(),
        &vec![layer.diff_id.clone()]
    );
    assert_eq!(by_tag.config.architecture(), &Arch::Amd64);

    let pinned = by_tag.pinned();
    assert_eq!(pinned.digest(), Some(&pushed.manifest_digest));
    let by_digest = client
        .resolve(
            &ImageRef::parse(&format!(
                "{}/busybox@{}",
                registry.host(),
                pushed.manifest_digest
            ))
            .unwrap(),
            &Platform::linux_amd64(),
        )
        .await
        .expect("resolve by digest");
    assert_eq!(by_digest.manifest_digest, pushed.manifest_digest);
    assert_eq!(by_digest.config_raw, by_tag.config_raw);

    // The layer comes back byte for byte, to a file and to a writer, and
    // holds busybox and its applets.
    let file = registry.scratch().join("pulled-layer.tar.gz");
    let size = client
        .download_blob(&target, &by_tag.layers[0], &file)
        .await
        .expect("download layer");
    assert_eq!(size, layer.gz.len() as u64);
    let pulled = std::fs::read(&file).expect("read pulled layer");
    assert_eq!(pulled, layer.gz);
    let mut in_memory = Vec::new();
    client
        .copy_blob(&pinned, &by_tag.layers[0], &mut in_memory)
        .await
        .expect("copy layer");
    assert_eq!(in_memory, layer.gz);
    let entries = layer_entries(&pulled);
    assert!(
        entries.iter().any(|(p, _)| p == "bin/busybox"),
        "{entries:?}"
    );
    for applet in APPLETS {
        let path = format!("bin/{applet}");
        assert!(
            entries
                .iter()
                .any(|(p, l)| *p == path && l.as_deref() == Some("busybox")),
            "{path} should link to busybox: {entries:?}"
        );
    }

    // Tagging re-points a tag without moving bytes.
    let tagged = client.tag(&target, "stable").await.expect("tag");
    assert_eq!(tagged, pushed.manifest_digest);
    let stable = client
        .resolve(
            &target.with_tag("stable").unwrap(),
            &Platform::linux_amd64(),
        )
        .await
        .expect("resolve the new tag");
    assert_eq!(stable.manifest_digest, pushed.manifest_digest);

    let missing = client
        .resolve(&target.with_tag("nope").unwrap(), &Platform::linux_amd64())
        .await
        .expect_err("an unknown tag is not found");
    assert!(
        matches!(missing, RegistryError::NotFound { .. }),
        "{missing}"
    );
    assert!(!missing.is_retryable());
}

#[tokio::test]
async fn an_index_with_arm64_and_amd64_resolves_to_amd64() {
    let registry = TestRegistry::start().await;
    let client = common::client(None, &registry.scratch());
    let layer = busybox_layer();
    let mut entries = Vec::new();
    let mut digests = std::collections::HashMap::new();
    // arm64 first, so picking the first entry would be wrong.
    for (arch, oci_arch) in [("arm64", Arch::ARM64), ("amd64", Arch::Amd64)] {
        let image = busybox_image(&layer, arch, ManifestFormat::Oci);
        let pushed = client
            .push_image(&reference(&registry, &format!("busybox:{arch}")), &image)
            .await
            .expect("push platform image");
        let mut platform = PlatformBuilder::default()
            .os(Os::Linux)
            .architecture(oci_arch);
        if arch == "arm64" {
            platform = platform.variant("v8");
        }
        entries.push(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(pushed.manifest_digest.clone())
                .size(pushed.manifest_raw.len() as u64)
                .platform(platform.build().unwrap())
                .build()
                .unwrap(),
        );
        digests.insert(arch, pushed.manifest_digest);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(entries)
        .build()
        .unwrap();
    let raw = canonical_json(&index).unwrap();
    let multi = reference(&registry, "busybox:multi");
    let index_digest = client
        .push_manifest(&multi, &raw, OCI_INDEX)
        .await
        .expect("push index");

    let amd64 = client
        .resolve(&multi, &Platform::linux_amd64())
        .await
        .expect("resolve amd64");
    assert_eq!(amd64.manifest_digest, digests["amd64"]);
    assert_eq!(amd64.index_digest, Some(index_digest.clone()));
    assert_eq!(amd64.config.architecture(), &Arch::Amd64);
    let arm64 = client
        .resolve(&multi, &"linux/arm64".parse().unwrap())
        .await
        .expect("resolve arm64");
    assert_eq!(arm64.manifest_digest, digests["arm64"]);

    let err = client
        .resolve(&multi, &"linux/s390x".parse().unwrap())
        .await
        .expect_err("no s390x image");
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::PlatformNotFound { .. }),
        "{msg}"
    );
    assert!(msg.contains("linux/arm64/v8, linux/amd64"), "{msg}");

    // A single-platform tag for another platform is refused too.
    let err = client
        .resolve(
            &reference(&registry, "busybox:arm64"),
            &Platform::linux_amd64(),
        )
        .await
        .expect_err("an arm64 image is not an amd64 one");
    assert!(
        matches!(err, RegistryError::PlatformNotFound { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn pushing_the_same_image_twice_uploads_no_blob_the_second_time() {
    let registry = TestRegistry::start().await;
    let client = common::client(None, &registry.scratch());
    let layer = busybox_layer();
    let image = busybox_image(&layer, "amd64", ManifestFormat::Oci);
    let target = reference(&registry, "busybox:latest");

    let first = client
        .push_image(&target, &image)
        .await
        .expect("first push");
    registry
        .wait_for_request("PUT", "/v2/busybox/manifests/latest", 1)
        .await;
    let uploads_after_first = registry.blob_upload_requests().len();
    assert!(
        uploads_after_first >= 4,
        "two blobs: POST+PATCH+PUT each at least: {uploads_after_first}"
    );

    let second = client
        .push_image(&target, &image)
        .await
        .expect("second push");
    registry
        .wait_for_request("PUT", "/v2/busybox/manifests/latest", 2)
        .await;
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert_eq!(second.stats.uploaded, 0, "{:?}", second.stats);
    assert_eq!(second.stats.already_present, 2, "{:?}", second.stats);
    assert_eq!(second.stats.bytes_uploaded, 0);
    assert_eq!(
        registry.blob_upload_requests().len(),
        uploads_after_first,
        "the second push sent blob bytes:\n{}",
        registry.log_text()
    );
    let heads = registry
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.uri.contains("/v2/busybox/blobs/"))
        .count();
    assert_eq!(heads, 4, "each push asks HEAD for both blobs");

    // Another repository of the same registry gets the blobs by mount.
    let mirror = reference(&registry, "mirror/busybox:latest");
    let mounted = client
        .push_image(&mirror, &image)
        .await
        .expect("push to mirror");
    registry
        .wait_for_request("PUT", "/v2/mirror/busybox/manifests/latest", 1)
        .await;
    assert_eq!(mounted.stats.mounted, 2, "{:?}", mounted.stats);
    assert_eq!(mounted.stats.uploaded, 0, "{:?}", mounted.stats);
    assert_eq!(registry.mounts().len(), 2);
    assert_eq!(registry.blob_upload_requests().len(), uploads_after_first);
    let pulled = client
        .resolve(&mirror, &Platform::linux_amd64())
        .await
        .expect("resolve mirror");
    assert_eq!(pulled.manifest_digest, first.manifest_digest);

    // A fresh client knows nothing, but an explicit hint mounts too.
    let fresh = common::client(None, &registry.scratch());
    let mut blob = image.layers[0].clone();
    blob.mount_from = Some("busybox".to_string());
    let outcome = fresh
        .push_blob(&reference(&registry, "third:latest"), &blob)
        .await
        .expect("push with hint");
    assert_eq!(
        outcome,
        BlobPushOutcome::Mounted {
            from: "busybox".to_string()
        }
    );
}
