//! gRPC wire contract of strata, the distributed remote container-image
//! builder.
//!
//! The `.proto` sources live next to this crate in `proto/strata/**` and are
//! compiled at build time with [`protox`](https://docs.rs/protox) (no `protoc`
//! needed) into [`prost`] messages and [`tonic`] clients and servers.
//!
//! - [`build::v1`]: `strata.build.v1.BuildService`, called by the `strata`
//!   CLI (and dashboards) on `strata-scheduler`: context upload, build
//!   submission, the resumable build event stream, image management, worker
//!   listing and pruning.
//! - [`worker::v1`]: `strata.worker.v1.WorkerService`, the single
//!   bidirectional stream between `strata-worker` and `strata-scheduler`
//!   (registration, heartbeats, job assignment and results).
//! - [`common::v1`]: `strata.common.v1`, types shared by both: platforms,
//!   OCI descriptors and layers, image config, context manifests, log
//!   chunks, secrets.
//!
//! Conventions: digests are `"sha256:<hex>"` strings, sizes are `u64` bytes,
//! times are `google.protobuf.Timestamp` / `Duration` ([`prost_types`]).
//! Messages carrying secret material ([`common::v1::Secret`],
//! [`common::v1::RegistryAuth`]) have hand-written `Debug` impls that redact
//! it.
//!
//! # Creating clients
//!
//! The generated clients have no `connect(url)` constructor (it would clash
//! with the `WorkerService.Connect` rpc method); build a
//! [`tonic::transport::Channel`] and wrap it, raising the message size limit
//! to [`MAX_MESSAGE_SIZE`]:
//!
//! ```no_run
//! use strata_proto::build::v1::{GetBuildRequest, build_service_client::BuildServiceClient};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Channel::from_static("http://scheduler:7070")
//!     .connect()
//!     .await?;
//! let mut client = BuildServiceClient::new(channel)
//!     .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
//!     .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE);
//! let build = client
//!     .get_build(GetBuildRequest { build_id: "b-1".into() })
//!     .await?
//!     .into_inner();
//! println!("{:?}", build.build.map(|b| b.status()));
//! # Ok(())
//! # }
//! ```

/// `strata.common.v1`: types shared by the build and worker APIs.
pub mod common {
    /// Version 1 of the shared types.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("strata.common.v1");
    }
}

impl common::v1::Layer {
    /// A layer: its diffID, and its blob's media type, digest and size.
    pub fn of_blob(diff_id: &str, media_type: &str, digest: &str, size: u64) -> Self {
        Self {
            diff_id: diff_id.to_string(),
            blob: Some(common::v1::Descriptor {
                media_type: media_type.to_string(),
                digest: digest.to_string(),
                size,
                ..Default::default()
            }),
            uncompressed_size: 0,
        }
    }
}

/// `strata.build.v1`: the client-facing build API.
pub mod build {
    /// Version 1 of the build API: `BuildService` and its messages.
    ///
    /// Client: [`crate::build::v1::build_service_client::BuildServiceClient`]; server trait:
    /// [`crate::build::v1::build_service_server::BuildService`].
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("strata.build.v1");
    }
}

/// `strata.worker.v1`: the worker <-> scheduler API.
pub mod worker {
    /// Version 1 of the worker API: `WorkerService` and its messages.
    ///
    /// Client (worker side): [`crate::worker::v1::worker_service_client::WorkerServiceClient`];
    /// server trait (scheduler side):
    /// [`crate::worker::v1::worker_service_server::WorkerService`].
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("strata.worker.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of all strata protos plus the
/// well-known types they import, with source info (comments). Feed it to
/// `tonic-reflection` to serve gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));

/// Maximum encoded gRPC message size, in both directions, that strata
/// clients and servers accept (and must configure with
/// `max_decoding_message_size` / `max_encoding_message_size`): 16 MiB.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Maximum payload bytes per streamed message for blob uploads
/// (`UploadBlobsRequest`, summed over its chunks), image exports and
/// imports: 1 MiB.
pub const CONTEXT_CHUNK_SIZE: usize = 1024 * 1024;

/// Largest encoded `ContextManifest` a client may send inline in a
/// `BuildRequest`; bigger manifests must be uploaded as a blob and
/// referenced by `ContextRef.manifest_digest`: 4 MiB.
pub const MAX_INLINE_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Maximum size of the `log_tail` carried by failure messages and events:
/// 8 KiB.
pub const LOG_TAIL_MAX_BYTES: usize = 8 * 1024;

/// Version of the worker protocol (`Register.protocol_version`,
/// `RegisterAck.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Features of a worker (`Register.features`): parts of an assignment
/// added after protocol version 1, which an older worker would ignore.
pub const WORKER_FEATURES: &[&str] = &[FEATURE_EXTRA_HOSTS, FEATURE_CACHE_SHARING];

/// `JobAssignment.extra_hosts` (`--add-host`).
pub const FEATURE_EXTRA_HOSTS: &str = "extra-hosts";

/// `CacheMount.sharing` other than shared (`sharing=locked`, `private`).
pub const FEATURE_CACHE_SHARING: &str = "cache-sharing";

/// Features of a scheduler (`RegisterAck.features`) a worker may rely on.
pub const SCHEDULER_FEATURES: &[&str] = &[FEATURE_EARLY_DIFF_ID];

/// A `JobCommitted` may name the layer by its diffID alone, and `Hurry`
/// says when steps wait for a layer: the worker may put off its blob.
pub const FEATURE_EARLY_DIFF_ID: &str = "early-diff-id";

/// Every layer `a` reads: its parent chain's, and those of the snapshots
/// a COPY --from or a RUN --mount=from reads.
pub fn layers_read(a: &worker::v1::JobAssignment) -> Vec<&common::v1::Layer> {
    use worker::v1::{file_source::Source, job_assignment::Instruction, mount::Kind};
    let mut snapshots: Vec<&common::v1::Snapshot> = a.parent.iter().collect();
    let mut sources = Vec::new();
    match &a.instruction {
        Some(Instruction::Copy(c)) => sources.extend(c.from.as_ref()),
        Some(Instruction::Run(r)) => {
            for m in &r.mounts {
                match &m.kind {
                    Some(Kind::Bind(b)) => sources.extend(b.from.as_ref()),
                    Some(Kind::Cache(c)) => sources.extend(c.from.as_ref()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    for s in sources {
        if let Some(Source::Snapshot(snap)) = &s.source {
            snapshots.push(snap);
        }
    }
    snapshots.into_iter().flat_map(|s| &s.layers).collect()
}

/// [`layers_read`], to change them (the same walk, mutably): [`fill_blobs`].
fn layers_read_mut(a: &mut worker::v1::JobAssignment) -> Vec<&mut common::v1::Layer> {
    use worker::v1::{file_source::Source, job_assignment::Instruction, mount::Kind};
    let mut snapshots: Vec<&mut common::v1::Snapshot> = a.parent.iter_mut().collect();
    let mut sources = Vec::new();
    match &mut a.instruction {
        Some(Instruction::Copy(c)) => sources.extend(c.from.as_mut()),
        Some(Instruction::Run(r)) => {
            for m in &mut r.mounts {
                match &mut m.kind {
                    Some(Kind::Bind(b)) => sources.extend(b.from.as_mut()),
                    Some(Kind::Cache(c)) => sources.extend(c.from.as_mut()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    for s in sources {
        if let Some(Source::Snapshot(snap)) = &mut s.source {
            snapshots.push(snap);
        }
    }
    snapshots
        .into_iter()
        .flat_map(|s| s.layers.iter_mut())
        .collect()
}

/// Gives each layer `a` reads without a blob (reported by its worker
/// before the blob was made) the blob `stored` knows for its diffID.
pub fn fill_blobs(
    a: &mut worker::v1::JobAssignment,
    stored: impl Fn(&str) -> Option<common::v1::Layer>,
) {
    for l in layers_read_mut(a) {
        if l.blob.as_ref().is_none_or(|b| b.digest.is_empty())
            && let Some(full) = stored(&l.diff_id)
        {
            *l = full;
        }
    }
}

/// The features a worker needs to run `a` as asked.
pub fn features_needed(a: &worker::v1::JobAssignment) -> Vec<&'static str> {
    use worker::v1::{CacheSharing, job_assignment::Instruction, mount::Kind};
    let mut needed = Vec::new();
    if !a.extra_hosts.is_empty() {
        needed.push(FEATURE_EXTRA_HOSTS);
    }
    if let Some(Instruction::Run(run)) = &a.instruction
        && run.mounts.iter().any(|m| {
            matches!(&m.kind, Some(Kind::Cache(c)) if c.sharing != CacheSharing::Shared as i32
                && c.sharing != CacheSharing::Unspecified as i32)
        })
    {
        needed.push(FEATURE_CACHE_SHARING);
    }
    needed
}

/// Placeholder printed instead of sensitive values.
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for common::v1::Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("value", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for common::v1::RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { REDACTED };
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("identity_token", &redact(&self.identity_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::build::v1 as b;
    use super::common::v1 as c;
    use super::worker::v1 as w;
    use super::*;
    use prost::Message;
    use prost_types::{FileDescriptorProto, FileDescriptorSet};
    use std::collections::BTreeSet;

    fn platform() -> c::Platform {
        c::Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: "v8".into(),
            ..Default::default()
        }
    }

    fn layer(n: u8) -> c::Layer {
        c::Layer {
            diff_id: format!("sha256:{}", hex64(n)),
            blob: Some(c::Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                digest: format!("sha256:{}", hex64(n.wrapping_add(100))),
                size: 1234 + u64::from(n),
                ..Default::default()
            }),
            uncompressed_size: 4096,
        }
    }

    fn hex64(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) -> M {
        let bytes = msg.encode_to_vec();
        assert!(!bytes.is_empty(), "non-default message encodes to bytes");
        let back = M::decode(bytes.as_slice()).expect("decode");
        assert_eq!(&back, msg);
        back
    }

    #[test]
    fn build_request_round_trips() {
        let req = b::BuildRequest {
            dockerfile: Some(b::build_request::Dockerfile::DockerfileContent(
                b"FROM alpine\nRUN echo hi\n".to_vec(),
            )),
            dockerfile_path: "Dockerfile".into(),
            context: Some(c::ContextRef {
                manifest: Some(c::context_ref::Manifest::Inline(c::ContextManifest {
                    entries: vec![c::ContextEntry {
                        path: "src/main.rs".into(),
                        kind: c::EntryKind::File.into(),
                        mode: 0o644,
                        size: 42,
                        digest: format!("sha256:{}", hex64(1)),
                        ..Default::default()
                    }],
                    dockerignore_digest: String::new(),
                })),
            }),
            build_args: [("VERSION".to_string(), "1.2".to_string())].into(),
            tags: vec!["app:latest".into()],
            outputs: vec![b::Output {
                r#type: b::OutputType::Registry.into(),
                attrs: [("compression".to_string(), "zstd".to_string())].into(),
            }],
            secrets: vec![c::Secret {
                id: "npmrc".into(),
                value: b"token=hunter2".to_vec(),
            }],
            platforms: vec![platform()],
            source_date_epoch: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let back = round_trip(&req);
        assert_eq!(back.outputs[0].r#type(), b::OutputType::Registry);
        assert_eq!(back.secrets[0].value, b"token=hunter2");
    }

    #[test]
    fn build_event_round_trips() {
        let ev = b::BuildEvent {
            build_id: "b-1".into(),
            sequence: 7,
            timestamp: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 2,
            }),
            event: Some(b::build_event::Event::StepLog(b::StepLog {
                step_id: "s-3".into(),
                job_id: "j-9".into(),
                attempt: 1,
                chunk: Some(c::LogChunk {
                    stream: c::LogStream::Stderr.into(),
                    data: vec![0xff, b'\n'],
                    seq: 3,
                    timestamp: None,
                }),
            })),
        };
        round_trip(&ev);

        let failed = b::BuildEvent {
            build_id: "b-1".into(),
            sequence: 8,
            event: Some(b::build_event::Event::BuildFailed(b::BuildFailed {
                status: b::BuildStatus::Failed.into(),
                error: Some(b::BuildError {
                    code: b::ErrorCode::StepFailed.into(),
                    exit_code: Some(0),
                    signal: None,
                    location: Some(c::SourceLocation {
                        file: "Dockerfile".into(),
                        start_line: 2,
                        end_line: 2,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let back = round_trip(&failed);
        // `optional` keeps presence: exit code 0 is distinguishable from unset.
        let Some(b::build_event::Event::BuildFailed(f)) = back.event else {
            panic!("wrong event variant");
        };
        let err = f.error.expect("error");
        assert_eq!(err.exit_code, Some(0));
        assert_eq!(err.signal, None);
    }

    #[test]
    fn worker_messages_round_trip() {
        let reg = w::WorkerMessage {
            message: Some(w::worker_message::Message::Register(w::Register {
                worker_id: "w-1".into(),
                protocol_version: PROTOCOL_VERSION,
                capacity: 4,
                platforms: vec![platform()],
                layers_held: vec![layer(1).diff_id],
                runtime: Some(c::RuntimeInfo {
                    runtime: "runc".into(),
                    snapshotter: "overlayfs".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        round_trip(&reg);

        let job = w::SchedulerMessage {
            message: Some(w::scheduler_message::Message::AssignJob(w::JobAssignment {
                job_id: "j-1".into(),
                lease_id: "l-1".into(),
                attempt: 2,
                kind: c::StepKind::Run.into(),
                parent: Some(c::Snapshot {
                    name: "alpine:3.20".into(),
                    manifest_digest: format!("sha256:{}", hex64(9)),
                    layers: vec![layer(1), layer(2)],
                }),
                config: Some(c::ImageConfig {
                    env: vec!["PATH=/usr/bin".into()],
                    // Explicitly empty entrypoint, distinct from unset.
                    entrypoint: Some(c::StringList { values: vec![] }),
                    ..Default::default()
                }),
                instruction: Some(w::job_assignment::Instruction::Run(w::RunInstruction {
                    argv: vec!["/bin/sh".into(), "-c".into(), "make".into()],
                    shell_form: true,
                    mounts: vec![
                        w::Mount {
                            target: "/root/.cargo".into(),
                            readonly: false,
                            kind: Some(w::mount::Kind::Cache(w::CacheMount {
                                id: "default/cargo".into(),
                                sharing: w::CacheSharing::Locked.into(),
                                ..Default::default()
                            })),
                        },
                        w::Mount {
                            target: "/run/secrets/npmrc".into(),
                            readonly: true,
                            kind: Some(w::mount::Kind::Secret(w::SecretMount {
                                id: "npmrc".into(),
                                required: true,
                                ..Default::default()
                            })),
                        },
                    ],
                    ..Default::default()
                })),
                network_mode: c::NetworkMode::None.into(),
                timeout: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..Default::default()
            })),
        };
        let back = round_trip(&job);
        let Some(w::scheduler_message::Message::AssignJob(a)) = back.message else {
            panic!("wrong message variant");
        };
        assert!(a.config.expect("config").entrypoint.is_some());
        assert_eq!(a.parent.expect("parent").layers.len(), 2);
    }

    #[test]
    fn sensitive_values_are_redacted_from_debug() {
        let secret = c::Secret {
            id: "npmrc".into(),
            value: b"hunter2".to_vec(),
        };
        let auth = c::RegistryAuth {
            server: "ghcr.io".into(),
            username: "bot".into(),
            password: "hunter2".into(),
            identity_token: String::new(),
        };
        let req = b::BuildRequest {
            secrets: vec![secret],
            registry_auth: vec![auth],
            ..Default::default()
        };
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("hunter2"), "secret leaked: {dbg}");
        // Raw bytes would be printed as a list of numbers; make sure not.
        assert!(!dbg.contains("104, 117, 110"), "secret bytes leaked: {dbg}");
        assert!(dbg.contains("npmrc") && dbg.contains("ghcr.io"));
        assert!(dbg.contains(REDACTED));
    }

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid descriptor set")
    }

    fn strata_files(fds: &FileDescriptorSet) -> Vec<&FileDescriptorProto> {
        fds.file
            .iter()
            .filter(|f| f.package().starts_with("strata."))
            .collect()
    }

    /// (method, client_streaming, server_streaming)
    fn service_methods(fds: &FileDescriptorSet, full_name: &str) -> Vec<(String, bool, bool)> {
        let (pkg, name) = full_name.rsplit_once('.').expect("qualified");
        let svc = fds
            .file
            .iter()
            .filter(|f| f.package() == pkg)
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("service {full_name} missing from descriptor set"));
        svc.method
            .iter()
            .map(|m| {
                (
                    m.name().to_string(),
                    m.client_streaming(),
                    m.server_streaming(),
                )
            })
            .collect()
    }

    #[test]
    fn descriptor_set_has_both_services_and_all_methods() {
        let fds = descriptor_set();
        let build = service_methods(&fds, "strata.build.v1.BuildService");
        let expected_build = [
            ("FindMissingBlobs", false, false),
            ("UploadBlobs", true, false),
            ("StartBuild", false, false),
            ("WatchBuild", false, true),
            ("CancelBuild", false, false),
            ("GetBuild", false, false),
            ("ListBuilds", false, false),
            ("ListImages", false, false),
            ("ImageHistory", false, false),
            ("RemoveImage", false, false),
            ("TagImage", false, false),
            ("PushImage", false, true),
            ("ExportImage", false, true),
            ("ImportImage", true, false),
            ("ListWorkers", false, false),
            ("Prune", false, false),
        ];
        let expected_build: Vec<_> = expected_build
            .iter()
            .map(|&(n, c, s)| (n.to_string(), c, s))
            .collect();
        assert_eq!(build, expected_build);

        let worker = service_methods(&fds, "strata.worker.v1.WorkerService");
        assert_eq!(worker, vec![("Connect".to_string(), true, true)]);

        // The generated servers agree with the descriptor on the names.
        assert_eq!(
            b::build_service_server::SERVICE_NAME,
            "strata.build.v1.BuildService"
        );
        assert_eq!(
            w::worker_service_server::SERVICE_NAME,
            "strata.worker.v1.WorkerService"
        );

        // Imports are included so reflection can resolve every type.
        let names: BTreeSet<&str> = fds.file.iter().map(|f| f.name()).collect();
        assert!(names.contains("google/protobuf/timestamp.proto"));
        assert!(names.contains("google/protobuf/duration.proto"));
    }

    /// "Document every rpc and field": every service, rpc, message, field,
    /// oneof, enum and enum value in the strata protos has a leading comment.
    #[test]
    fn every_element_is_documented() {
        // FileDescriptorProto / DescriptorProto / EnumDescriptorProto /
        // ServiceDescriptorProto field numbers used in source-info paths.
        const MESSAGE: i32 = 4;
        const ENUM: i32 = 5;
        const SERVICE: i32 = 6;
        const FIELD: i32 = 2;
        const NESTED: i32 = 3;
        const ONEOF: i32 = 8;
        const ENUM_VALUE: i32 = 2;
        const METHOD: i32 = 2;

        fn idx(i: usize) -> i32 {
            i32::try_from(i).expect("small index")
        }

        fn walk_message(
            m: &prost_types::DescriptorProto,
            path: Vec<i32>,
            name: String,
            out: &mut Vec<(Vec<i32>, String)>,
        ) {
            if m.options.as_ref().is_some_and(|o| o.map_entry()) {
                return; // synthesized for map<,> fields
            }
            out.push((path.clone(), name.clone()));
            for (i, f) in m.field.iter().enumerate() {
                let p = [path.as_slice(), &[FIELD, idx(i)]].concat();
                out.push((p, format!("{name}.{}", f.name())));
            }
            for (i, o) in m.oneof_decl.iter().enumerate() {
                // proto3 `optional` fields get synthetic oneofs "_<field>".
                if o.name().starts_with('_') {
                    continue;
                }
                let p = [path.as_slice(), &[ONEOF, idx(i)]].concat();
                out.push((p, format!("{name}.{} (oneof)", o.name())));
            }
            for (i, n) in m.nested_type.iter().enumerate() {
                let p = [path.as_slice(), &[NESTED, idx(i)]].concat();
                walk_message(n, p, format!("{name}.{}", n.name()), out);
            }
            for (i, e) in m.enum_type.iter().enumerate() {
                let p = [path.as_slice(), &[4, idx(i)]].concat();
                walk_enum(e, p, format!("{name}.{}", e.name()), out);
            }
        }

        fn walk_enum(
            e: &prost_types::EnumDescriptorProto,
            path: Vec<i32>,
            name: String,
            out: &mut Vec<(Vec<i32>, String)>,
        ) {
            out.push((path.clone(), name.clone()));
            for (i, v) in e.value.iter().enumerate() {
                let p = [path.as_slice(), &[ENUM_VALUE, idx(i)]].concat();
                out.push((p, format!("{name}.{}", v.name())));
            }
        }

        let fds = descriptor_set();
        let files = strata_files(&fds);
        assert_eq!(files.len(), 8, "all strata proto files are compiled");
        let mut undocumented = Vec::new();
        let mut checked = 0usize;
        for file in files {
            let mut elements = Vec::new();
            for (i, m) in file.message_type.iter().enumerate() {
                walk_message(
                    m,
                    vec![MESSAGE, idx(i)],
                    m.name().to_string(),
                    &mut elements,
                );
            }
            for (i, e) in file.enum_type.iter().enumerate() {
                walk_enum(e, vec![ENUM, idx(i)], e.name().to_string(), &mut elements);
            }
            for (i, s) in file.service.iter().enumerate() {
                elements.push((vec![SERVICE, idx(i)], s.name().to_string()));
                for (j, m) in s.method.iter().enumerate() {
                    elements.push((
                        vec![SERVICE, idx(i), METHOD, idx(j)],
                        format!("{}.{}", s.name(), m.name()),
                    ));
                }
            }
            let info = file.source_code_info.as_ref().expect("source info kept");
            for (path, name) in elements {
                checked += 1;
                let documented = info.location.iter().any(|l| {
                    l.path == path
                        && l.leading_comments()
                            .trim()
                            .chars()
                            .any(char::is_alphanumeric)
                });
                if !documented {
                    undocumented.push(format!("{}: {name}", file.name()));
                }
            }
        }
        assert!(
            checked > 500,
            "walked the whole schema ({checked} elements)"
        );
        assert!(
            undocumented.is_empty(),
            "undocumented proto elements:\n{}",
            undocumented.join("\n")
        );
    }

    #[test]
    fn size_limits_are_consistent() {
        // A full upload message (chunk payload + framing) and an inline
        // manifest must fit in one gRPC message.
        const { assert!(CONTEXT_CHUNK_SIZE + 64 * 1024 <= MAX_MESSAGE_SIZE) };
        const { assert!(MAX_INLINE_MANIFEST_BYTES < MAX_MESSAGE_SIZE) };
        const { assert!(LOG_TAIL_MAX_BYTES < CONTEXT_CHUNK_SIZE) };

        let chunk = b::UploadBlobsRequest {
            chunks: vec![b::UploadChunk {
                digest: format!("sha256:{}", hex64(3)),
                offset: 0,
                data: vec![0u8; CONTEXT_CHUNK_SIZE],
                total_size: CONTEXT_CHUNK_SIZE as u64,
                last: true,
            }],
        };
        assert!(chunk.encoded_len() <= MAX_MESSAGE_SIZE);
    }

    #[test]
    fn a_job_needs_the_features_of_what_it_asks_for() {
        let cache = |sharing: w::CacheSharing| w::Mount {
            kind: Some(w::mount::Kind::Cache(w::CacheMount {
                sharing: sharing as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let run = |mounts| w::JobAssignment {
            instruction: Some(w::job_assignment::Instruction::Run(w::RunInstruction {
                mounts,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(features_needed(&run(vec![cache(w::CacheSharing::Shared)])).is_empty());
        assert!(features_needed(&run(vec![cache(w::CacheSharing::Unspecified)])).is_empty());
        assert_eq!(
            features_needed(&run(vec![cache(w::CacheSharing::Locked)])),
            [FEATURE_CACHE_SHARING]
        );
        let mut a = run(vec![cache(w::CacheSharing::Private)]);
        a.extra_hosts = vec!["h:10.0.0.1".into()];
        assert_eq!(
            features_needed(&a),
            [FEATURE_EXTRA_HOSTS, FEATURE_CACHE_SHARING]
        );
        // Every feature asked for is one a worker of this release has.
        for f in features_needed(&a) {
            assert!(WORKER_FEATURES.contains(&f));
        }
    }
}
