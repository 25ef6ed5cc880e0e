//! `BuildService`: what the `strata` client talks to.

use super::blob::status as blob_status;
use super::export::{archive_chunks, looks_like_id};
use super::request::{build_input, platform_of};
use crate::Inner;
use crate::archive;
use crate::auth::Tenant;
use crate::build::{BuildHandle, run_build};
use crate::image::now_rfc3339;
use crate::images::{ImageStoreError, normalise};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;
use strata_proto::build::v1 as build;
use strata_proto::build::v1::build_service_server::BuildService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// The service.
pub struct Builds {
    inner: Arc<Inner>,
}

impl Builds {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// A build of this process, or a finished one from the durable store;
    /// another tenant's is NOT_FOUND like a build that never was, so ids
    /// cannot be probed.
    async fn handle(&self, tenant: Option<&Tenant>, id: &str) -> Result<Arc<BuildHandle>, Status> {
        let not_found = || Status::not_found(format!("no build {id:?}"));
        let live = self
            .inner
            .builds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        let handle = match live {
            Some(h) => h,
            None if !BuildHandle::valid_id(id) => return Err(not_found()),
            None => {
                let bytes = self
                    .inner
                    .blobs
                    .durable()
                    .get_object(&format!("builds/{id}.pb"))
                    .await
                    .map_err(blob_status)?
                    .ok_or_else(not_found)?;
                BuildHandle::decode(id, &bytes)
                    .map(Arc::new)
                    .ok_or_else(|| {
                        Status::data_loss(format!("the log of build {id} is unreadable"))
                    })?
            }
        };
        if !sees_build(tenant, &handle.info()) {
            return Err(not_found());
        }
        Ok(handle)
    }
}

/// Whether a caller of `tenant` may see a build: its own tenant's, or
/// any without client tokens.
fn sees_build(tenant: Option<&Tenant>, info: &build::BuildInfo) -> bool {
    tenant.is_none_or(|Tenant(t)| info.namespace == *t)
}

/// The image store's viewer for a caller of `tenant`.
fn viewer(tenant: &Option<Tenant>) -> crate::images::Viewer<'_> {
    tenant.as_ref().map(|Tenant(t)| t.as_str())
}

/// The namespace a request works in: its token's tenant (a request may
/// repeat it, never name another), else what it asks for.
fn tenant_namespace(tenant: Option<&Tenant>, asked: &str) -> Result<String, Status> {
    match tenant {
        Some(Tenant(t)) if asked.is_empty() || asked == t => Ok(t.clone()),
        Some(Tenant(t)) => Err(Status::permission_denied(format!(
            "the token of tenant {t:?} cannot use namespace {asked:?}"
        ))),
        None => Ok(asked.to_string()),
    }
}

pub(super) fn image_status(e: ImageStoreError) -> Status {
    match e {
        ImageStoreError::NotFound(_) => Status::not_found(e.to_string()),
        ImageStoreError::InvalidName { .. } => Status::invalid_argument(e.to_string()),
        ImageStoreError::Io(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl BuildService for Builds {
    async fn find_missing_blobs(
        &self,
        request: Request<build::FindMissingBlobsRequest>,
    ) -> Result<Response<build::FindMissingBlobsResponse>, Status> {
        let digests = request.into_inner().digests;
        for d in &digests {
            crate::blobs::digest_hex(d).map_err(blob_status)?;
        }
        // A shared store answers one HEAD per blob: ask many at once.
        let blobs = &self.inner.blobs;
        let present: Vec<Option<u64>> = futures::stream::iter(digests.clone())
            .map(|d| async move { blobs.stat(&d).await })
            .buffered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(blob_status)?;
        Ok(Response::new(build::FindMissingBlobsResponse {
            missing_digests: digests
                .into_iter()
                .zip(present)
                .filter(|(_, p)| p.is_none())
                .map(|(d, _)| d)
                .collect(),
        }))
    }

    async fn upload_blobs(
        &self,
        request: Request<Streaming<build::UploadBlobsRequest>>,
    ) -> Result<Response<build::UploadBlobsResponse>, Status> {
        super::upload::upload_blobs(&self.inner, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_build(
        &self,
        request: Request<build::BuildRequest>,
    ) -> Result<Response<build::BuildAccepted>, Status> {
        if self
            .inner
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Status::unavailable(
                "the scheduler is shutting down; retry on another one",
            ));
        }
        let tenant = Tenant::of(&request);
        let mut req = request.into_inner();
        req.namespace = tenant_namespace(tenant.as_ref(), &req.namespace)?;
        let input = build_input(&self.inner, &req).await?;
        let id = uuid::Uuid::new_v4().simple().to_string()[..20].to_string();
        let info = build::BuildInfo {
            build_id: id.clone(),
            status: build::BuildStatus::Queued as i32,
            // With client tokens, the tenant: who may watch and cancel it.
            namespace: req.namespace.clone(),
            target: req.target.clone(),
            tags: req.tags.clone(),
            platforms: req.platforms.clone(),
            dockerfile_path: input.dockerfile_name.clone(),
            client: req.client.clone(),
            created_at: Some(SystemTime::now().into()),
            ..Default::default()
        };
        crate::build::recover::remember(&self.inner, &id, &req, &info).await;
        let handle = Arc::new(BuildHandle::new(id.clone(), info));
        self.inner
            .builds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Arc::clone(&handle));
        tracing::info!(build_id = id, tags = ?req.tags, "build accepted");
        // The build's span is a child of this call's (and so of the
        // client's trace); its steps' and the workers' spans follow.
        let span = tracing::info_span!("build", build_id = %id);
        tokio::spawn(tracing::Instrument::instrument(
            run_build(Arc::clone(&self.inner), handle, input),
            span,
        ));
        Ok(Response::new(build::BuildAccepted {
            build_id: id,
            accepted_at: Some(SystemTime::now().into()),
            deduplicated: false,
            warnings: Vec::new(),
        }))
    }

    type WatchBuildStream = Stream<build::BuildEvent>;

    async fn watch_build(
        &self,
        request: Request<build::WatchRequest>,
    ) -> Result<Response<Self::WatchBuildStream>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let handle = self.handle(tenant.as_ref(), &req.build_id).await?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut seen = req.after_sequence;
            let mut changes = handle.subscribe();
            loop {
                for ev in handle.events_after(seen) {
                    seen = ev.sequence;
                    let terminal = crate::build::is_terminal(&ev);
                    let is_log = matches!(ev.event, Some(build::build_event::Event::StepLog(_)));
                    if !(req.exclude_logs && is_log) && tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                    if terminal {
                        return;
                    }
                }
                if req.no_follow || changes.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_build(
        &self,
        request: Request<build::CancelBuildRequest>,
    ) -> Result<Response<build::CancelBuildResponse>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let handle = self.handle(tenant.as_ref(), &req.build_id).await?;
        let already = handle.finished();
        if !already {
            tracing::info!(
                build_id = req.build_id,
                reason = req.reason,
                "cancelling build"
            );
            handle.cancel.cancel();
            let mut changes = handle.subscribe();
            let wait = async {
                while !handle.finished() {
                    if changes.changed().await.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
        }
        Ok(Response::new(build::CancelBuildResponse {
            status: handle.info().status,
            already_finished: already,
        }))
    }

    async fn get_build(
        &self,
        request: Request<build::GetBuildRequest>,
    ) -> Result<Response<build::GetBuildResponse>, Status> {
        let tenant = Tenant::of(&request);
        let handle = self
            .handle(tenant.as_ref(), &request.into_inner().build_id)
            .await?;
        Ok(Response::new(build::GetBuildResponse {
            build: Some(handle.info()),
        }))
    }

    async fn list_builds(
        &self,
        request: Request<build::ListBuildsRequest>,
    ) -> Result<Response<build::ListBuildsResponse>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        // A tenant lists its own builds; without tokens, a namespace
        // asked for, else every build.
        let namespace = tenant_namespace(tenant.as_ref(), &req.namespace)?;
        let mut builds: BTreeMap<String, build::BuildInfo> = BTreeMap::new();
        for (id, info) in crate::build::finished_builds(&self.inner)
            .await
            .map_err(|e| Status::unavailable(format!("listing builds: {e}; retry")))?
        {
            builds.insert(id, info);
        }
        for (id, h) in self
            .inner
            .builds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            builds.insert(id.clone(), h.info());
        }
        let mut out: Vec<build::BuildInfo> = builds
            .into_values()
            .filter(|b| namespace.is_empty() || b.namespace == namespace)
            .filter(|b| req.statuses.is_empty() || req.statuses.contains(&b.status))
            .filter(|b| req.tag.is_empty() || b.tags.contains(&req.tag))
            .map(|mut b| {
                b.plan = None;
                b.step_outcomes.clear();
                // A running build's duration so far.
                if b.duration.is_none()
                    && let Some(started) = b.started_at
                    && let Ok(t) = SystemTime::try_from(started)
                {
                    b.duration = SystemTime::now()
                        .duration_since(t)
                        .ok()
                        .and_then(|d| prost_types::Duration::try_from(d).ok());
                }
                b
            })
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.created_at.map(|t| (t.seconds, t.nanos))));
        let size = if req.page_size == 0 {
            50
        } else {
            req.page_size as usize
        };
        out.truncate(size);
        Ok(Response::new(build::ListBuildsResponse {
            builds: out,
            next_page_token: String::new(),
        }))
    }

    async fn list_images(
        &self,
        request: Request<build::ListImagesRequest>,
    ) -> Result<Response<build::ListImagesResponse>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let filter = (!req.reference.is_empty()).then_some(req.reference.as_str());
        Ok(Response::new(build::ListImagesResponse {
            images: self.inner.images.list(viewer(&tenant), filter, req.all),
        }))
    }

    async fn image_history(
        &self,
        request: Request<build::ImageHistoryRequest>,
    ) -> Result<Response<build::ImageHistoryResponse>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let entries = self
            .inner
            .images
            .history(viewer(&tenant), &self.inner.blobs, &req.image)
            .await
            .map_err(image_status)?;
        Ok(Response::new(build::ImageHistoryResponse { entries }))
    }

    async fn remove_image(
        &self,
        request: Request<build::RemoveImageRequest>,
    ) -> Result<Response<build::RemoveImageResponse>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let (untagged, deleted) = self
            .inner
            .images
            .remove(viewer(&tenant), &req.image)
            .map_err(image_status)?;
        Ok(Response::new(build::RemoveImageResponse {
            untagged,
            deleted,
        }))
    }

    async fn tag_image(
        &self,
        request: Request<build::TagImageRequest>,
    ) -> Result<Response<build::TagImageResponse>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let rec = self
            .inner
            .images
            .tag(viewer(&tenant), &req.source, &req.target)
            .map_err(image_status)?;
        Ok(Response::new(build::TagImageResponse {
            manifest_digest: rec.manifest_digest,
        }))
    }

    type PushImageStream = Stream<build::PushProgress>;

    async fn push_image(
        &self,
        request: Request<build::PushImageRequest>,
    ) -> Result<Response<Self::PushImageStream>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let compression = crate::push::registry_compression(req.compression);
        let rec = self
            .inner
            .images
            .get(viewer(&tenant), &req.image)
            .map_err(image_status)?;
        let destination = if req.destination.is_empty() {
            req.image.clone()
        } else {
            req.destination.clone()
        };
        let (tx, rx) = mpsc::channel(64);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            if let Err(e) = crate::push::push(
                &inner,
                &rec,
                &destination,
                Some(compression),
                req.force_compression,
                &tx,
            )
            .await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExportImageStream = Stream<build::ExportImageChunk>;

    async fn export_image(
        &self,
        request: Request<build::ExportImageRequest>,
    ) -> Result<Response<Self::ExportImageStream>, Status> {
        let tenant = Tenant::of(&request);
        let req = request.into_inner();
        let rec = self
            .inner
            .images
            .get(viewer(&tenant), &req.image)
            .map_err(image_status)?;
        let format = build::ArchiveFormat::try_from(req.format).unwrap_or_default();
        let mut names = req.names.clone();
        if names.is_empty() && normalise(&req.image).is_ok() && !looks_like_id(&req.image) {
            names.push(req.image.clone());
        }
        archive::localise(&self.inner.blobs, &rec)
            .await
            .map_err(|e| Status::unavailable(format!("exporting {}: {e}", req.image)))?;
        let inner = Arc::clone(&self.inner);
        let out = inner.blobs.temp_path("export");
        let path = out.clone();
        let compression = crate::push::push_compression(req.compression);
        let written = tokio::task::spawn_blocking(move || {
            let convert = |l: &crate::image::LayerInfo| {
                crate::push::layer_variant(&inner, l, compression.unwrap_or_default())
            };
            let variant: archive::Variant<'_> = compression.map(|_| &convert as _);
            match format {
                build::ArchiveFormat::Oci => {
                    archive::write_oci_archive(inner.blobs.local(), &rec, &names, &path, variant)
                }
                build::ArchiveFormat::Rootfs => {
                    archive::write_rootfs_tar(inner.blobs.local(), &rec, &path)
                }
                _ => {
                    archive::write_docker_archive(inner.blobs.local(), &rec, &names, &path, variant)
                }
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&out);
            return Err(Status::internal(format!("exporting {}: {e}", req.image)));
        }
        // Stream the finished archive; the file is unlinked once open.
        let file = std::fs::File::open(&out).map_err(|e| Status::internal(e.to_string()))?;
        let _ = std::fs::remove_file(&out);
        Ok(Response::new(Box::pin(archive_chunks(file))))
    }

    async fn import_image(
        &self,
        request: Request<Streaming<build::ImportImageRequest>>,
    ) -> Result<Response<build::ImportImageResponse>, Status> {
        use build::import_image_request::Payload;
        let tenant = Tenant::of(&request);
        let mut stream = request.into_inner();
        let header = match stream.next().await {
            Some(Ok(build::ImportImageRequest {
                payload: Some(Payload::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "ImportImage must start with a header",
                ));
            }
        };
        if !header.reference.is_empty() {
            normalise(&header.reference).map_err(image_status)?;
        }
        let tmp = self.inner.blobs.temp_path("import-src");
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let copy = async {
            use tokio::io::AsyncWriteExt;
            while let Some(msg) = stream.next().await {
                if let Some(Payload::Data(d)) = msg?.payload {
                    file.write_all(&d)
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
            }
            file.flush()
                .await
                .map_err(|e| Status::internal(e.to_string()))
        };
        if let Err(e) = copy.await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let inner = Arc::clone(&self.inner);
        let src = tmp.clone();
        let platform = platform_of(header.platform.as_ref())?;
        let message = if header.message.is_empty() {
            "Imported from -".to_string()
        } else {
            header.message.clone()
        };
        let changes = header.changes.clone();
        let image = tokio::task::spawn_blocking(move || {
            archive::import_rootfs(
                inner.blobs.local(),
                &src,
                &changes,
                &message,
                &platform,
                &now_rfc3339(),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()));
        let _ = std::fs::remove_file(&tmp);
        let image = image?.map_err(|e| Status::invalid_argument(format!("import: {e}")))?;
        let tags: Vec<String> = if header.reference.is_empty() {
            Vec::new()
        } else {
            vec![header.reference.clone()]
        };
        let rec = self
            .inner
            .images
            .record(&self.inner.blobs, &image, &tags, "", viewer(&tenant))
            .await
            .map_err(image_status)?;
        Ok(Response::new(build::ImportImageResponse {
            manifest_digest: rec.manifest_digest,
            config_digest: rec.config_digest,
            tags,
            size: rec.size,
        }))
    }

    async fn list_workers(
        &self,
        _request: Request<build::ListWorkersRequest>,
    ) -> Result<Response<build::ListWorkersResponse>, Status> {
        Ok(Response::new(build::ListWorkersResponse {
            workers: self.inner.pool.workers(),
        }))
    }

    async fn prune(
        &self,
        request: Request<build::PruneRequest>,
    ) -> Result<Response<build::PruneResponse>, Status> {
        let tenant = Tenant::of(&request);
        let mut req = request.into_inner();
        req.namespace = tenant_namespace(tenant.as_ref(), &req.namespace)?;
        let report = crate::prune::prune(&self.inner, &req)
            .await
            .map_err(|e| match e {
                crate::prune::PruneError::BadRequest(m) => Status::invalid_argument(m),
                e => Status::unavailable(format!("{e}; nothing more was removed, retry")),
            })?;
        Ok(Response::new(report))
    }
}
