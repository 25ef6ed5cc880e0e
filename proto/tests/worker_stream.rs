//! End-to-end check of the generated tonic code: a scheduler-side
//! `WorkerService` server and a worker-side client exchange messages over the
//! bidirectional `Connect` stream on a real loopback TCP connection.

use std::pin::Pin;

use strata_proto::MAX_MESSAGE_SIZE;
use strata_proto::PROTOCOL_VERSION;
use strata_proto::common::v1 as c;
use strata_proto::worker::v1::scheduler_message::Message as ToWorker;
use strata_proto::worker::v1::worker_message::Message as ToScheduler;
use strata_proto::worker::v1::worker_service_client::WorkerServiceClient;
use strata_proto::worker::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use strata_proto::worker::v1::{
    ActiveJob, Heartbeat, Ping, Register, RegisterAck, SchedulerMessage, WorkerMessage,
};
// tonic re-exports the tokio-stream it is built against for generated code.
use tonic::codegen::tokio_stream::{self, Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic::{Request, Response, Status, Streaming};

/// A toy scheduler: acks Register, answers every Heartbeat with a Ping whose
/// nonce is the number of jobs the heartbeat listed.
struct ToyScheduler;

#[tonic::async_trait]
impl WorkerService for ToyScheduler {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let reply = match msg.map(|m| m.message) {
                    Ok(Some(ToScheduler::Register(reg))) => ToWorker::RegisterAck(RegisterAck {
                        worker_id: format!("assigned-{}", reg.hostname),
                        protocol_version: PROTOCOL_VERSION.min(reg.protocol_version),
                        heartbeat_interval: Some(secs(5)),
                        lease_duration: Some(secs(30)),
                        ..Default::default()
                    }),
                    Ok(Some(ToScheduler::Heartbeat(hb))) => ToWorker::Ping(Ping {
                        nonce: hb.running.len() as u64,
                        sent_at: None,
                    }),
                    Ok(_) => continue,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let msg = SchedulerMessage {
                    message: Some(reply),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn secs(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

#[tokio::test]
async fn worker_connect_stream_round_trip() {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(
                WorkerServiceServer::new(ToyScheduler)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE),
            )
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to toy scheduler");
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

    let outbound = tokio_stream::iter([
        WorkerMessage {
            message: Some(ToScheduler::Register(Register {
                hostname: "node-a".into(),
                protocol_version: PROTOCOL_VERSION,
                capacity: 2,
                platforms: vec![c::Platform {
                    os: "linux".into(),
                    architecture: "amd64".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        },
        WorkerMessage {
            message: Some(ToScheduler::Heartbeat(Heartbeat {
                running: vec![
                    ActiveJob {
                        job_id: "j-1".into(),
                        lease_id: "l-1".into(),
                    },
                    ActiveJob {
                        job_id: "j-2".into(),
                        lease_id: "l-2".into(),
                    },
                ],
                ..Default::default()
            })),
        },
    ]);
    let mut inbound = client
        .connect(outbound)
        .await
        .expect("Connect rpc")
        .into_inner();

    let first = inbound.message().await.expect("stream ok").expect("ack");
    let Some(ToWorker::RegisterAck(ack)) = first.message else {
        panic!("expected RegisterAck, got {first:?}");
    };
    assert_eq!(ack.worker_id, "assigned-node-a");
    assert_eq!(ack.protocol_version, PROTOCOL_VERSION);
    assert_eq!(ack.lease_duration.map(|d| d.seconds), Some(30));

    let second = inbound.message().await.expect("stream ok").expect("ping");
    let Some(ToWorker::Ping(ping)) = second.message else {
        panic!("expected Ping, got {second:?}");
    };
    assert_eq!(ping.nonce, 2);

    // The client closed its side; the server's stream ends cleanly.
    assert!(inbound.message().await.expect("clean end").is_none());

    let _ = stop_tx.send(());
    server.await.expect("join").expect("server ran");
}
