//! `WorkerService.Connect`: one bidirectional stream per worker. The first
//! message must be `Register`; the pool then sends jobs down the stream
//! and routes what comes back to the builds.

use crate::Inner;
use futures::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use strata_proto::worker::v1 as wire;
use strata_proto::worker::v1::worker_service_server::WorkerService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The service.
pub struct Workers {
    inner: Arc<Inner>,
}

impl Workers {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

type SchedulerStream =
    Pin<Box<dyn futures::Stream<Item = Result<wire::SchedulerMessage, Status>> + Send>>;

fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[tonic::async_trait]
impl WorkerService for Workers {
    type ConnectStream = SchedulerStream;

    async fn connect(
        &self,
        request: Request<Streaming<wire::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("the stream closed before Register"))??;
        let Some(wire::worker_message::Message::Register(reg)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message of a worker session must be Register",
            ));
        };
        if reg.protocol_version != strata_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker speaks protocol {}, this scheduler {}",
                reg.protocol_version,
                strata_proto::PROTOCOL_VERSION
            )));
        }
        let worker_id = if reg.worker_id.is_empty() {
            format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        } else if valid_worker_id(&reg.worker_id) {
            reg.worker_id.clone()
        } else {
            return Err(Status::invalid_argument(format!(
                "invalid worker id {:?}: use letters, digits, '-', '_' or '.' (at most 64)",
                reg.worker_id
            )));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let cfg = &self.inner.config;
        let ack = wire::RegisterAck {
            worker_id: worker_id.clone(),
            heartbeat_interval: prost_types::Duration::try_from(cfg.heartbeat_interval).ok(),
            lease_duration: prost_types::Duration::try_from(cfg.lease_duration).ok(),
            blob_store: Some(blob_store_advert(cfg.s3.as_ref())),
            scheduler_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version: strata_proto::PROTOCOL_VERSION,
            extra: Default::default(),
            features: strata_proto::SCHEDULER_FEATURES
                .iter()
                .map(|f| f.to_string())
                .collect(),
        };
        let _ = tx.send(Ok(wire::SchedulerMessage {
            message: Some(wire::scheduler_message::Message::RegisterAck(ack)),
        }));
        let session = self.inner.pool.register(&worker_id, &reg, tx);
        tracing::info!(
            worker_id,
            hostname = reg.hostname,
            capacity = reg.capacity,
            "worker connected"
        );
        let inner = Arc::clone(&self.inner);
        record_worker(&inner, &worker_id).await;
        tokio::spawn(async move {
            loop {
                match incoming.next().await {
                    Some(Ok(msg)) => {
                        let heartbeat = matches!(
                            msg.message,
                            Some(wire::worker_message::Message::Heartbeat(_))
                        );
                        if let Some(m) = msg.message {
                            inner.pool.on_message(&worker_id, session, m);
                        }
                        if heartbeat {
                            record_worker(&inner, &worker_id).await;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(worker_id, "worker stream failed: {e}");
                        break;
                    }
                    None => break,
                }
            }
            tracing::info!(worker_id, "worker disconnected");
            inner.pool.disconnect(&worker_id, session);
            if let Err(e) = inner.state.delete(&format!("workers/{worker_id}")).await {
                tracing::debug!("removing worker {worker_id} from the registry: {e}");
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// Publishes a worker's record (capacity, load, counters) in the shared
/// state's registry (`workers/<id>`), expiring unless heartbeats renew it:
/// what other schedulers and dashboards read.
async fn record_worker(inner: &Inner, worker_id: &str) {
    let Some(info) = inner
        .pool
        .workers()
        .into_iter()
        .find(|w| w.worker_id == worker_id)
    else {
        return;
    };
    let ttl = inner.config.heartbeat_interval * 3;
    if let Err(e) = inner
        .state
        .put(
            &format!("workers/{worker_id}"),
            &prost::Message::encode_to_vec(&info),
            Some(ttl),
        )
        .await
    {
        tracing::debug!("recording worker {worker_id}: {e}");
    }
}

/// Where workers read and write blobs: the shared S3 store directly (with
/// their own credentials) when the farm has one, else this scheduler's
/// `BlobService`.
fn blob_store_advert(s3: Option<&strata_store::S3Config>) -> wire::BlobStoreConfig {
    match s3 {
        Some(c) => wire::BlobStoreConfig {
            kind: wire::BlobStoreKind::S3 as i32,
            endpoint: c.endpoint.clone().unwrap_or_default(),
            bucket: c.bucket.clone(),
            prefix: c.prefix.clone(),
            region: c.region.clone(),
            force_path_style: c.force_path_style,
            ..Default::default()
        },
        None => wire::BlobStoreConfig {
            kind: wire::BlobStoreKind::Scheduler as i32,
            ..Default::default()
        },
    }
}
