//! The gRPC surface: `BuildService` for clients ([`build`]),
//! `WorkerService` and `BlobService` for workers ([`worker`], [`blob`]).

mod blob;
mod build;
mod export;
mod request;
mod worker;

use crate::Inner;
use std::sync::Arc;
use strata_proto::MAX_MESSAGE_SIZE;
use strata_proto::build::v1::build_service_server::BuildServiceServer;
use strata_proto::worker::v1::blob_service_server::BlobServiceServer;
use strata_proto::worker::v1::worker_service_server::WorkerServiceServer;

/// The scheduler's services, ready to add to a tonic server.
pub fn routes(inner: Arc<Inner>) -> tonic::service::Routes {
    let build = BuildServiceServer::new(build::Builds::new(Arc::clone(&inner)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let worker = WorkerServiceServer::new(worker::Workers::new(Arc::clone(&inner)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let blob = BlobServiceServer::new(blob::Blobs::new(inner))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    tonic::service::Routes::new(build)
        .add_service(worker)
        .add_service(blob)
}
