//! The gRPC surface: `BuildService` for clients ([`build`]),
//! `WorkerService` and `BlobService` for workers ([`worker`], [`blob`]),
//! each behind its token check ([`crate::auth`]).

mod blob;
mod build;
mod export;
pub(crate) mod request;
mod upload;
mod worker;

use crate::Inner;
use crate::auth::Api;
use std::sync::Arc;
use strata_proto::MAX_MESSAGE_SIZE;
use strata_proto::build::v1::build_service_server::BuildServiceServer;
use strata_proto::worker::v1::blob_service_server::BlobServiceServer;
use strata_proto::worker::v1::worker_service_server::WorkerServiceServer;
use tonic::service::interceptor::InterceptedService;

/// The BuildService implementation (named for the health service).
pub type BuildApi = build::Builds;

/// The scheduler's services, ready to add to a tonic server: each behind
/// its API's token check (a no-op without tokens), plus the standard gRPC
/// health service (no token: probes have none).
pub fn routes(inner: Arc<Inner>) -> tonic::service::Routes {
    let auth = inner.config.auth.clone();
    let gate = move |api: Api| {
        let auth = auth.clone();
        move |req: tonic::Request<()>| auth.check(api, req)
    };
    let build = BuildServiceServer::new(build::Builds::new(Arc::clone(&inner)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let worker = WorkerServiceServer::new(worker::Workers::new(Arc::clone(&inner)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let blob = BlobServiceServer::new(blob::Blobs::new(Arc::clone(&inner)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    inner
        .health
        .clone()
        .add_service(InterceptedService::new(build, gate(Api::Client)))
        .add_service(InterceptedService::new(worker, gate(Api::Worker)))
        .add_service(InterceptedService::new(blob, gate(Api::Worker)))
}
