//! One client connection: frames are read and handled in order (Kafka answers a
//! connection's requests in the order they arrived), and responses are written by a
//! separate task so that reading the next request overlaps with sending the last answer.

use super::{Broker, ListenerKind};
use crate::metadata::quorum::transport::{self, RAFT_API_KEY};
use crate::protocol::{check_frame, decode_request, encode_response, Request};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// Responses queued for writing before the reader waits: bounds memory per connection.
const WRITE_QUEUE: usize = 32;

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let metrics = broker.metrics.clone();
    let write_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if let Err(e) = writer.write_all(&frame).await {
                tracing::debug!(%peer, cause = %e, "write failed; closing");
                return;
            }
            metrics.bytes_out.inc_by(frame.len() as u64);
        }
        let _ = writer.shutdown().await;
    });
    broker.metrics.connections.inc();
    let max = broker.config.socket_request_max_bytes();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'conn: loop {
        // Handle every whole frame already buffered.
        loop {
            match check_frame(&buf, max) {
                Ok(Some(len)) => {
                    let frame = buf.split_to(4 + len).freeze().slice(4..);
                    broker.metrics.bytes_in.inc_by(4 + len as u64);
                    match handle_frame(&broker, frame, peer, kind).await {
                        Ok(Some(resp)) => {
                            if tx.send(resp).await.is_err() {
                                break 'conn;
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            tracing::warn!(%peer, %reason, "closing connection");
                            break 'conn;
                        }
                    }
                }
                Ok(None) => {
                    if buf.len() >= 4 {
                        // Reserve the whole frame once instead of growing piecemeal.
                        let want =
                            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 4;
                        buf.reserve(want.saturating_sub(buf.len()));
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(%peer, cause = %e, "closing connection");
                    break 'conn;
                }
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%peer, cause = %e, "read failed");
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(tx);
    let _ = write_task.await;
    broker.metrics.connections.dec();
}

/// Decodes, handles and encodes one request. `Ok(None)`: nothing to send (acks=0).
/// `Err`: the connection must close.
async fn handle_frame(
    broker: &Broker,
    frame: Bytes,
    peer: SocketAddr,
    kind: ListenerKind,
) -> Result<Option<Bytes>, String> {
    let table = crate::protocol::api_table(kind == ListenerKind::Controller);
    if kind == ListenerKind::Controller
        && frame.len() >= 8
        && i16::from_be_bytes([frame[0], frame[1]]) == RAFT_API_KEY
    {
        // One-way Raft traffic between voters: no response.
        let message = transport::decode_body(&frame[8..]).map_err(|e| e.to_string())?;
        if let Some(q) = broker.controller.quorum() {
            q.deliver(message);
        }
        return Ok(None);
    }
    let request = decode_request(frame, table).map_err(|e| e.to_string())?;
    match request {
        Request::ApiVersionsTooNew { correlation_id } => {
            let body = ResponseKind::ApiVersions(crate::api::api_versions(
                crate::metadata::codes::UNSUPPORTED_VERSION,
                table,
            ));
            encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
                .map(Some)
                .map_err(|e| e.to_string())
        }
        Request::Api {
            header,
            api_key,
            body,
        } => {
            let version = header.request_api_version;
            let started = std::time::Instant::now();
            let span = tracing::debug_span!(
                "request",
                api_key = ?api_key,
                version,
                correlation_id = header.correlation_id
            );
            let response = crate::api::handle(broker, kind, &header, peer, api_key, *body)
                .instrument(span)
                .await;
            broker.metrics.observe(api_key, started.elapsed());
            match response {
                None if api_key == ApiKey::Produce => Ok(None),
                None => Err(format!("no response for {api_key:?}")),
                Some(resp) => encode_response(api_key, version, header.correlation_id, &resp)
                    .map(Some)
                    .map_err(|e| {
                        format!("encoding the {api_key:?} v{version} response failed: {e}")
                    }),
            }
        }
    }
}
