//! One client connection: frames are read and handled in order (Kafka answers a
//! connection's requests in the order they arrived), and responses are written by a
//! separate task so that reading the next request overlaps with sending the last answer.

use super::{Broker, ListenerKind};
use crate::metadata::quorum::transport::{self, RAFT_API_KEY};
use crate::protocol::{check_frame, decode_request, encode_response, Request};
use crate::quota::QuotaKind;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// Responses queued for writing before the reader waits: bounds memory per connection.
const WRITE_QUEUE: usize = 32;

/// Memory for requests being received or handled, shared by every connection of a listener
/// (`queued.max.request.bytes`): a connection that starts receiving a frame takes the frame's
/// size from it, so half-sent frames from many clients cannot hold more than the bound.
#[derive(Clone)]
pub struct RequestMemory {
    budget: Option<(Arc<tokio::sync::Semaphore>, usize)>,
    read_timeout: Duration,
    /// `connections.max.idle.ms`: a connection with no request for this long is closed.
    max_idle: Option<Duration>,
}

impl RequestMemory {
    pub fn new(config: &crate::config::BrokerConfig) -> RequestMemory {
        let budget = config
            .queued_max_request_bytes()
            .map(|b| b.clamp(1, tokio::sync::Semaphore::MAX_PERMITS));
        RequestMemory {
            budget: budget.map(|b| (Arc::new(tokio::sync::Semaphore::new(b)), b)),
            read_timeout: Duration::from_millis(config.request_read_timeout_ms()),
            max_idle: config.connections_max_idle(),
        }
    }
}

/// Most bytes the receive buffer grows by at once: the buffer follows the bytes that really
/// arrive, never the size a frame claims.
const READ_CHUNK: usize = 1024 * 1024;

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    mut stop: watch::Receiver<bool>,
    memory: RequestMemory,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<(Bytes, tokio::sync::OwnedSemaphorePermit)>(WRITE_QUEUE);
    // Bytes of responses queued for a client that does not read them: bounded, so that
    // pipelined Fetch requests whose answers are never read cannot pile up WRITE_QUEUE
    // responses of fetch.max.bytes each. The reader waits for room (backpressure).
    let response_budget = broker
        .config
        .fetch_max_bytes()
        .max(1 << 20)
        .min(u32::MAX as usize);
    let unsent = Arc::new(tokio::sync::Semaphore::new(response_budget));
    let metrics = broker.metrics.clone();
    let write_task = tokio::spawn(async move {
        while let Some((frame, permit)) = rx.recv().await {
            if let Err(e) = writer.write_all(&frame).await {
                tracing::debug!(%peer, cause = %e, "write failed; closing");
                return;
            }
            drop(permit);
            metrics.bytes_out.inc_by(frame.len() as u64);
        }
        let _ = writer.shutdown().await;
    });
    broker.metrics.connections.inc();
    let max = broker.config.socket_request_max_bytes();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // The budget taken for the frame being received, and when its first bytes arrived.
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    // When the last request was answered (or the connection opened).
    let mut idle_since = tokio::time::Instant::now();
    'conn: loop {
        // Handle every whole frame already buffered.
        loop {
            match check_frame(&buf, max) {
                Ok(Some(len)) => {
                    let frame = buf.split_to(4 + len).freeze().slice(4..);
                    broker.metrics.bytes_in.inc_by(4 + len as u64);
                    // The frame's budget is held until it has been handled.
                    let held = permit.take();
                    deadline = None;
                    let handled = handle_frame(&broker, frame, peer, &kind).await;
                    drop(held);
                    let throttle_ms = match handled {
                        Ok(Handled {
                            response,
                            throttle_ms,
                        }) => {
                            if let Some(resp) = response {
                                let want = resp.len().clamp(1, response_budget) as u32;
                                let room = tokio::select! {
                                    p = unsent.clone().acquire_many_owned(want) => p,
                                    _ = stop.changed() => break 'conn,
                                };
                                let Ok(room) = room else { break 'conn };
                                if tx.send((resp, room)).await.is_err() {
                                    break 'conn;
                                }
                            }
                            throttle_ms
                        }
                        Err(reason) => {
                            tracing::warn!(%peer, %reason, "closing connection");
                            break 'conn;
                        }
                    };
                    if throttle_ms > 0 {
                        // Over a client quota: the answer (which says how long) is sent at
                        // once, and nothing more is read from this client until the
                        // throttle ends (Kafka mutes the channel; KIP-219).
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(throttle_ms as u64)) => {}
                            _ = stop.changed() => break 'conn,
                        }
                    }
                    idle_since = tokio::time::Instant::now();
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, cause = %e, "closing connection");
                    break 'conn;
                }
            }
        }
        if !buf.is_empty() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + memory.read_timeout);
        }
        if buf.len() >= 4 && permit.is_none() {
            if let Some((sem, total)) = &memory.budget {
                // check_frame accepted the size: 0..=socket.request.max.bytes.
                let want = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 4;
                let want = want.min(*total).min(u32::MAX as usize) as u32;
                let until = deadline.unwrap_or_else(tokio::time::Instant::now);
                let acquired = tokio::select! {
                    p = sem.clone().acquire_many_owned(want) => p.ok(),
                    _ = tokio::time::sleep_until(until) => None,
                    _ = stop.changed() => break 'conn,
                };
                match acquired {
                    Some(p) => permit = Some(p),
                    None => {
                        broker.metrics.requests_refused("queued.max.request.bytes");
                        tracing::warn!(%peer, frame_bytes = want, "no room in queued.max.request.bytes within strom.request.read.timeout.ms; closing connection");
                        break 'conn;
                    }
                }
            }
        }
        if buf.capacity() == buf.len() {
            let missing = if buf.len() >= 4 {
                (u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 4)
                    .saturating_sub(buf.len())
            } else {
                4
            };
            buf.reserve(missing.clamp(4096, READ_CHUNK));
        }
        // A frame under way must complete within the read timeout; between requests, the
        // connection may idle for connections.max.idle.ms.
        let idle_until = match (deadline, memory.max_idle) {
            (None, Some(idle)) => Some(idle_since + idle),
            _ => None,
        };
        let timeout = async {
            match deadline.or(idle_until) {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%peer, cause = %e, "read failed");
                    break;
                }
            },
            _ = timeout => {
                if deadline.is_none() {
                    // As Kafka, quietly: idle clients reconnect when they need to.
                    broker.metrics.requests_refused("connections.max.idle.ms");
                    tracing::debug!(%peer, "idle for connections.max.idle.ms; closing connection");
                    break;
                }
                broker.metrics.requests_refused("strom.request.read.timeout.ms");
                tracing::warn!(%peer, buffered = buf.len(), "request incomplete after strom.request.read.timeout.ms; closing connection");
                break;
            }
            _ = stop.changed() => break,
        }
    }
    drop(permit);
    drop(tx);
    let _ = write_task.await;
    broker.metrics.connections.dec();
}

/// What handling one request came to: the encoded response (`None`: nothing to send, as
/// for acks=0), and how long the client must not be read from (a client quota's throttle).
struct Handled {
    response: Option<Bytes>,
    throttle_ms: u32,
}

impl Handled {
    fn answer(response: Bytes) -> Handled {
        Handled {
            response: Some(response),
            throttle_ms: 0,
        }
    }
}

/// Decodes, handles and encodes one request. `Err`: the connection must close.
async fn handle_frame(
    broker: &Broker,
    frame: Bytes,
    peer: SocketAddr,
    kind: &ListenerKind,
) -> Result<Handled, String> {
    let table = crate::protocol::api_table(*kind == ListenerKind::Controller);
    if *kind == ListenerKind::Controller
        && frame.len() >= 8
        && i16::from_be_bytes([frame[0], frame[1]]) == RAFT_API_KEY
    {
        // One-way Raft traffic between voters: no response.
        let message = transport::decode_body(&frame[8..]).map_err(|e| e.to_string())?;
        if let Some(q) = broker.controller.quorum() {
            q.deliver(message);
        }
        return Ok(Handled {
            response: None,
            throttle_ms: 0,
        });
    }
    let frame_len = frame.len();
    let request = decode_request(frame, table).map_err(|e| e.to_string())?;
    match request {
        Request::ApiVersionsTooNew { correlation_id } => {
            let body = ResponseKind::ApiVersions(crate::api::api_versions(
                crate::protocol::codes::UNSUPPORTED_VERSION,
                table,
            ));
            encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
                .map(Handled::answer)
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
            // Replication and the controller's own traffic are not client requests: no
            // client quota applies to them (Kafka exempts cluster actions).
            let client_id = header.client_id.as_deref().unwrap_or("");
            let now_ms = broker.replicas.now_ms();
            let request_quota = if *kind == ListenerKind::Controller
                || matches!(&*body, RequestKind::Fetch(f) if f.replica_id.0 >= 0 || f.replica_state.replica_id.0 >= 0)
            {
                None
            } else {
                broker.quotas.sensor(QuotaKind::Request, client_id, now_ms)
            };
            let produce_quota = if api_key == ApiKey::Produce {
                broker.quotas.sensor(QuotaKind::Produce, client_id, now_ms)
            } else {
                None
            };
            // The time spent in the handler itself (polls), not its waits: what a
            // request_percentage quota counts, as Kafka counts request-handler thread time.
            let mut busy = Duration::ZERO;
            let timed = request_quota.is_some();
            let mut handling = std::pin::pin!(crate::api::handle(
                broker, kind, &header, peer, api_key, *body
            )
            .instrument(span));
            let mut response = std::future::poll_fn(|cx| {
                if !timed {
                    return handling.as_mut().poll(cx);
                }
                let at = std::time::Instant::now();
                let polled = handling.as_mut().poll(cx);
                busy += at.elapsed();
                polled
            })
            .await;
            broker.metrics.observe(api_key, started.elapsed());
            let mut throttle_ms = response
                .as_mut()
                .and_then(crate::protocol::throttle_time_ms)
                .map_or(0, |t| (*t).max(0) as u32);
            if let Some(q) = produce_quota {
                let t = q.record(frame_len as f64, broker.replicas.now_ms());
                throttle_ms = throttle_ms.max(t);
            }
            if let Some(q) = request_quota {
                // In percent of one thread: a second of handling is 100.
                let t = q.record(
                    busy.as_nanos() as f64 * 100.0 / 1e9,
                    broker.replicas.now_ms(),
                );
                throttle_ms = throttle_ms.max(t);
            }
            let encoded = match &mut response {
                None if api_key == ApiKey::Produce => None,
                None => return Err(format!("no response for {api_key:?}")),
                Some(resp) => {
                    if let Some(t) = crate::protocol::throttle_time_ms(resp) {
                        *t = throttle_ms.min(i32::MAX as u32) as i32;
                    }
                    Some(
                        encode_response(api_key, version, header.correlation_id, resp).map_err(
                            |e| format!("encoding the {api_key:?} v{version} response failed: {e}"),
                        )?,
                    )
                }
            };
            Ok(Handled {
                response: encoded,
                throttle_ms,
            })
        }
    }
}
