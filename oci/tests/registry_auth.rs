//! Credentials from a docker-style config.json: HTTP basic against a real
//! registry with an htpasswd file, and the bearer-token exchange against
//! an in-test token server.

mod common;

use common::fake_registry::{CannedImage, FakeRegistry};
use common::image::{busybox_image, busybox_layer, config_json};
use common::registry::TestRegistry;
use strata_oci::registry::{ImageRef, ManifestFormat, Platform, RegistryError};

#[tokio::test]
async fn basic_auth_needs_the_credentials_from_config_json() {
    let registry = TestRegistry::start_with_htpasswd("alice", "s3cret:pw").await;
    let scratch = registry.scratch();
    let target = ImageRef::parse(&format!("{}/private/busybox:latest", registry.host())).unwrap();
    let layer = busybox_layer();
    let image = busybox_image(&layer, "amd64", ManifestFormat::Oci);

    let good_dir = scratch.join("good");
    std::fs::create_dir_all(&good_dir).unwrap();
    let good = common::write_docker_config(&good_dir, &registry.host(), "alice", "s3cret:pw");
    let client = common::client(Some(good), &scratch);
    let pushed = client
        .push_image(&target, &image)
        .await
        .expect("push with credentials");
    let pulled = client
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect("pull with credentials");
    assert_eq!(pulled.manifest_digest, pushed.manifest_digest);

    // No credentials at all.
    let anonymous = common::client(None, &scratch);
    let err = anonymous
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect_err("anonymous pull must fail");
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains("unauthorized") && msg.contains(&registry.host()),
        "{msg}"
    );
    assert!(!err.is_retryable());
    let err = anonymous
        .push_image(&target.with_tag("anon").unwrap(), &image)
        .await
        .expect_err("anonymous push must fail");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    // A wrong password, given as username/password fields.
    let bad_dir = scratch.join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = bad_dir.join("config.json");
    let json = serde_json::json!({
        "auths": { format!("http://{}", registry.host()): { "username": "alice", "password": "wrong" } }
    });
    std::fs::write(&bad, json.to_string()).unwrap();
    let err = common::client(Some(bad), &scratch)
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect_err("a wrong password must fail");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_the_config_json_credentials() {
    let mut fake = FakeRegistry::bind().await;
    let layer = busybox_layer();
    let canned = CannedImage::new(layer.gz.clone(), config_json("amd64", &[&layer]));
    fake.serve_image("secure/busybox", "latest", &canned);
    fake.require_bearer("bob", "hunter2", "token-for-bob");
    fake.serve();
    let scratch = tempfile::tempdir().unwrap();
    let target = ImageRef::parse(&format!("{}/secure/busybox:latest", fake.host())).unwrap();

    let anonymous = common::client(None, scratch.path());
    let err = anonymous
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect_err("no token without credentials");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let config = common::write_docker_config(scratch.path(), &fake.host(), "bob", "hunter2");
    let client = common::client(Some(config), scratch.path());
    let image = client
        .resolve(&target, &Platform::linux_amd64())
        .await
        .expect("pull with a bearer token");
    assert_eq!(image.manifest_digest.to_string(), canned.manifest_digest);
    let mut bytes = Vec::new();
    client
        .copy_blob(&target, &image.layers[0], &mut bytes)
        .await
        .expect("layer with a bearer token");
    assert_eq!(bytes, layer.gz);

    let seen = fake.seen();
    let token_request = seen
        .iter()
        .find(|s| {
            s.target.starts_with("/token")
                && s.authorization
                    .as_deref()
                    .is_some_and(|a| a.starts_with("Basic "))
        })
        .unwrap_or_else(|| panic!("no token request with basic credentials: {seen:?}"));
    assert!(
        token_request
            .target
            .contains("scope=repository%3Asecure%2Fbusybox%3Apull")
            && token_request.target.contains("service=fake-registry"),
        "{token_request:?}"
    );
    let blob_request = seen
        .iter()
        .find(|s| s.target.contains("/blobs/") && s.authorization.is_some())
        .unwrap_or_else(|| panic!("no authorised blob request: {seen:?}"));
    assert_eq!(
        blob_request.authorization.as_deref(),
        Some("Bearer token-for-bob")
    );
}
