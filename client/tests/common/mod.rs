//! Shared by the client's integration tests: an in-process
//! `BuildService` mock that records the calls it gets.

// Each test crate uses a different part of the mock.
#![allow(dead_code)]

use futures::Stream;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_service_server::{BuildService, BuildServiceServer};
use tonic::{Request, Response, Status, Streaming};

/// One WatchBuild answer: its events, then whether the stream hangs open
/// (a running build) instead of ending.
pub type Script = (Vec<pb::BuildEvent>, bool);

/// What the mock was sent.
#[derive(Default)]
pub struct Recorded {
    pub find: Vec<Vec<String>>,
    pub uploads: Vec<Vec<pb::UploadBlobsRequest>>,
    pub watches: Vec<pb::WatchRequest>,
    pub cancels: Vec<String>,
}

/// The mock scheduler.
#[derive(Clone, Default)]
pub struct Mock {
    pub rec: Arc<Mutex<Recorded>>,
    pub stored: Arc<Mutex<HashSet<String>>>,
    pub reject: Arc<Mutex<HashSet<String>>>,
    /// One script per WatchBuild call.
    pub scripts: Arc<Mutex<VecDeque<Script>>>,
}

pub type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the mock"))
}

#[tonic::async_trait]
impl BuildService for Mock {
    async fn find_missing_blobs(
        &self,
        r: Request<pb::FindMissingBlobsRequest>,
    ) -> Result<Response<pb::FindMissingBlobsResponse>, Status> {
        let digests = r.into_inner().digests;
        self.rec.lock().unwrap().find.push(digests.clone());
        let stored = self.stored.lock().unwrap();
        let mut seen = HashSet::new();
        let missing = digests
            .into_iter()
            .filter(|d| !stored.contains(d) && seen.insert(d.clone()))
            .collect();
        Ok(Response::new(pb::FindMissingBlobsResponse {
            missing_digests: missing,
        }))
    }

    async fn upload_blobs(
        &self,
        r: Request<Streaming<pb::UploadBlobsRequest>>,
    ) -> Result<Response<pb::UploadBlobsResponse>, Status> {
        let mut stream = r.into_inner();
        let mut messages = Vec::new();
        let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut order = Vec::new();
        let mut bytes = 0;
        while let Some(m) = stream.message().await? {
            for c in &m.chunks {
                let buf = blobs.entry(c.digest.clone()).or_insert_with(|| {
                    order.push(c.digest.clone());
                    Vec::new()
                });
                assert_eq!(c.offset, buf.len() as u64, "chunks are contiguous");
                buf.extend_from_slice(&c.data);
                bytes += c.data.len() as u64;
            }
            messages.push(m);
        }
        self.rec.lock().unwrap().uploads.push(messages);
        let reject = self.reject.lock().unwrap().clone();
        let mut results = Vec::new();
        for d in order {
            let got = format!("sha256:{}", hex::encode(Sha256::digest(&blobs[&d])));
            let ok = got == d && !reject.contains(&d);
            if ok {
                self.stored.lock().unwrap().insert(d.clone());
            }
            results.push(pb::BlobUploadResult {
                digest: d,
                ok,
                error: if ok {
                    String::new()
                } else {
                    "digest mismatch".into()
                },
            });
        }
        Ok(Response::new(pb::UploadBlobsResponse {
            results,
            bytes_received: bytes,
        }))
    }

    async fn start_build(
        &self,
        _: Request<pb::BuildRequest>,
    ) -> Result<Response<pb::BuildAccepted>, Status> {
        unimplemented()
    }

    type WatchBuildStream = Boxed<pb::BuildEvent>;

    async fn watch_build(
        &self,
        r: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchBuildStream>, Status> {
        let req = r.into_inner();
        let after = req.after_sequence;
        self.rec.lock().unwrap().watches.push(req);
        let (events, hang) = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| Status::unavailable("no more scripts"))?;
        let events: Vec<Result<pb::BuildEvent, Status>> = events
            .into_iter()
            .filter(|e| e.sequence > after)
            .map(Ok)
            .collect();
        let s = futures::stream::iter(events);
        if hang {
            Ok(Response::new(Box::pin(futures::StreamExt::chain(
                s,
                futures::stream::pending(),
            ))))
        } else {
            Ok(Response::new(Box::pin(s)))
        }
    }

    async fn cancel_build(
        &self,
        r: Request<pb::CancelBuildRequest>,
    ) -> Result<Response<pb::CancelBuildResponse>, Status> {
        self.rec
            .lock()
            .unwrap()
            .cancels
            .push(r.into_inner().build_id);
        Ok(Response::new(pb::CancelBuildResponse {
            status: pb::BuildStatus::Cancelled.into(),
            already_finished: false,
        }))
    }

    async fn get_build(
        &self,
        _: Request<pb::GetBuildRequest>,
    ) -> Result<Response<pb::GetBuildResponse>, Status> {
        unimplemented()
    }

    async fn list_builds(
        &self,
        _: Request<pb::ListBuildsRequest>,
    ) -> Result<Response<pb::ListBuildsResponse>, Status> {
        unimplemented()
    }

    async fn list_images(
        &self,
        _: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        unimplemented()
    }

    async fn image_history(
        &self,
        _: Request<pb::ImageHistoryRequest>,
    ) -> Result<Response<pb::ImageHistoryResponse>, Status> {
        unimplemented()
    }

    async fn remove_image(
        &self,
        _: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        unimplemented()
    }

    async fn tag_image(
        &self,
        _: Request<pb::TagImageRequest>,
    ) -> Result<Response<pb::TagImageResponse>, Status> {
        unimplemented()
    }

    type PushImageStream = Boxed<pb::PushProgress>;

    async fn push_image(
        &self,
        _: Request<pb::PushImageRequest>,
    ) -> Result<Response<Self::PushImageStream>, Status> {
        unimplemented()
    }

    type ExportImageStream = Boxed<pb::ExportImageChunk>;

    async fn export_image(
        &self,
        _: Request<pb::ExportImageRequest>,
    ) -> Result<Response<Self::ExportImageStream>, Status> {
        unimplemented()
    }

    async fn import_image(
        &self,
        _: Request<Streaming<pb::ImportImageRequest>>,
    ) -> Result<Response<pb::ImportImageResponse>, Status> {
        unimplemented()
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        unimplemented()
    }

    async fn prune(
        &self,
        _: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneResponse>, Status> {
        unimplemented()
    }
}

pub async fn serve(mock: Mock) -> strata_client::connect::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = BuildServiceServer::new(mock)
        .max_decoding_message_size(strata_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(strata_proto::MAX_MESSAGE_SIZE);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    strata_client::connect::connect_url(&format!("http://{addr}"))
        .await
        .unwrap()
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
