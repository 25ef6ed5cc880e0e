//! Tenants apart, with the real binaries on loopback: one tenant cannot
//! list, watch, cancel or get another's builds, nor see, tag, push,
//! export, remove or build FROM its images.

use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_service_client::BuildServiceClient;
use strata_tests::base_image::push_busybox;
use strata_tests::registry::TestRegistry;
use strata_tests::secure::{context, strata, tenant_farm, text, with_token};
use tonic::Code;

#[test]
fn a_tenant_cannot_see_or_touch_another_tenants_builds_and_images() {
    let registry = TestRegistry::start();
    let base = push_busybox(&registry, "busybox:latest");
    let dir = tempfile::tempdir().expect("dir");
    let (sched, worker, url) =
        tenant_farm(dir.path(), &[("team-a", "tok-a"), ("team-b", "tok-b")], &[]);
    let logs = || format!("{}\n{}", sched.proc.log(), worker.proc.log());
    // Never pushed: only team-a's image store has it.
    let private = format!("{}/team-a/app:1", registry.host());
    let ctx = context(&dir.path().join("ctx"), &base);
    let o = strata(
        &url,
        &[("STRATA_TOKEN", "tok-a")],
        &["build", "--progress", "plain", "-t", &private, &ctx],
    );
    assert!(o.status.success(), "{}\n{}", text(&o), logs());

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut c = BuildServiceClient::new(channel);
        let a = Some("tok-a");
        let b = Some("tok-b");
        let builds = c
            .list_builds(with_token(pb::ListBuildsRequest::default(), a))
            .await
            .expect("team-a lists its builds")
            .into_inner()
            .builds;
        assert_eq!(builds.len(), 1, "{builds:?}");
        let id = builds[0].build_id.clone();
        let images = c
            .list_images(with_token(pb::ListImagesRequest::default(), a))
            .await
            .expect("team-a lists its images")
            .into_inner()
            .images;
        let mine = images
            .iter()
            .find(|i| i.repository.ends_with("team-a/app"))
            .unwrap_or_else(|| panic!("team-a's image is not listed: {images:?}"))
            .clone();

        // Team B: none of it exists.
        let listed = c
            .list_builds(with_token(pb::ListBuildsRequest::default(), b))
            .await
            .expect("team-b lists builds")
            .into_inner()
            .builds;
        assert!(listed.is_empty(), "team-b sees {listed:?}");
        let listed = c
            .list_images(with_token(
                pb::ListImagesRequest {
                    all: true,
                    ..Default::default()
                },
                b,
            ))
            .await
            .expect("team-b lists images")
            .into_inner()
            .images;
        assert!(listed.is_empty(), "team-b sees {listed:?}");
        let code = |r: Result<(), tonic::Status>| r.map_or_else(|s| s.code(), |()| Code::Ok);
        let watch = pb::WatchRequest {
            build_id: id.clone(),
            ..Default::default()
        };
        let cancel = pb::CancelBuildRequest {
            build_id: id.clone(),
            reason: "hostile".into(),
        };
        let get = pb::GetBuildRequest {
            build_id: id.clone(),
        };
        assert_eq!(
            code(c.watch_build(with_token(watch, b)).await.map(drop)),
            Code::NotFound
        );
        assert_eq!(
            code(c.cancel_build(with_token(cancel, b)).await.map(drop)),
            Code::NotFound
        );
        assert_eq!(
            code(c.get_build(with_token(get.clone(), b)).await.map(drop)),
            Code::NotFound
        );
        // By name and by id (full and short): "No such image".
        let short = mine.image_id.trim_start_matches("sha256:")[..12].to_string();
        for image in [private.clone(), mine.image_id.clone(), short] {
            let tag = pb::TagImageRequest {
                source: image.clone(),
                target: "stolen:1".into(),
                ..Default::default()
            };
            let push = pb::PushImageRequest {
                image: image.clone(),
                destination: format!("{}/stolen:1", registry.host()),
                ..Default::default()
            };
            let export = pb::ExportImageRequest {
                image: image.clone(),
                ..Default::default()
            };
            let history = pb::ImageHistoryRequest {
                image: image.clone(),
                ..Default::default()
            };
            let remove = pb::RemoveImageRequest {
                image: image.clone(),
                ..Default::default()
            };
            let refused = [
                ("tag", code(c.tag_image(with_token(tag, b)).await.map(drop))),
                (
                    "push",
                    code(c.push_image(with_token(push, b)).await.map(drop)),
                ),
                (
                    "export",
                    code(c.export_image(with_token(export, b)).await.map(drop)),
                ),
                (
                    "history",
                    code(c.image_history(with_token(history, b)).await.map(drop)),
                ),
                (
                    "remove",
                    code(c.remove_image(with_token(remove, b)).await.map(drop)),
                ),
            ];
            for (what, got) in refused {
                assert_eq!(got, Code::NotFound, "team-b's {what} of {image}");
            }
        }

        // Team A's build and image are untouched and still its own.
        let info = c
            .get_build(with_token(get, a))
            .await
            .expect("team-a's build")
            .into_inner()
            .build
            .expect("build info");
        assert_eq!(info.status, pb::BuildStatus::Succeeded as i32, "{info:?}");
        assert_eq!(info.namespace, "team-a");
        c.tag_image(with_token(
            pb::TagImageRequest {
                source: mine.image_id.clone(),
                target: "team-a/app:2".into(),
                ..Default::default()
            },
            a,
        ))
        .await
        .expect("team-a tags its image");
        let mut export = c
            .export_image(with_token(
                pb::ExportImageRequest {
                    image: private.clone(),
                    ..Default::default()
                },
                a,
            ))
            .await
            .expect("team-a exports its image")
            .into_inner();
        let chunk = export.message().await.expect("a chunk").expect("data");
        assert!(chunk.total_size > 0);
    });

    // FROM: team-a's name means its image; for team-b it is only a name
    // in a registry, where nothing was pushed.
    let from = dir.path().join("from");
    std::fs::create_dir_all(&from).expect("context");
    std::fs::write(
        from.join("Dockerfile"),
        format!("FROM {private}\nRUN cat /proof\n"),
    )
    .expect("Dockerfile");
    let from = from.to_str().expect("utf-8");
    let o = strata(
        &url,
        &[("STRATA_TOKEN", "tok-a")],
        &["build", "--progress", "plain", from],
    );
    assert!(o.status.success(), "{}\n{}", text(&o), logs());
    assert!(text(&o).contains("secured"), "{}", text(&o));
    let o = strata(
        &url,
        &[("STRATA_TOKEN", "tok-b")],
        &["build", "--progress", "plain", from],
    );
    assert!(
        !o.status.success(),
        "team-b built FROM team-a's image:\n{}",
        text(&o)
    );
    assert!(!text(&o).contains("secured"), "{}", text(&o));
}
