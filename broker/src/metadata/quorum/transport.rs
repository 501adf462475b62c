//! Raft messages between controller voters. Each message travels as one frame on the
//! peer's controller listener, in Kafka's framing (size, api key, version, correlation
//! id) under a private API key that no Kafka client sends, followed by the raft-rs
//! message in protobuf. Messages are one-way: Raft's answers are messages of their own,
//! and a lost message is retried by Raft itself, so a peer that is down or slow costs a
//! bounded queue, never a blocked driver.

use bytes::{BufMut, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::Message;
use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The private API key of Raft frames; Kafka's own keys are far below it.
pub const RAFT_API_KEY: i16 = 32_001;

/// Messages queued per peer before new ones are dropped (Raft resends what matters).
const PEER_QUEUE: usize = 4096;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer that takes longer than this to accept one frame (a snapshot, at worst) is
/// treated as unreachable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

pub struct Transport {
    peers: BTreeMap<u64, mpsc::Sender<Message>>,
}

impl Transport {
    /// Starts one sender task per peer voter. `report` builds the driver input that says
    /// whether a snapshot message reached its peer.
    pub fn start<I: Send + 'static>(
        self_id: i32,
        voters: &BTreeMap<i32, String>,
        driver: std_mpsc::Sender<I>,
        report: fn(u64, bool) -> I,
    ) -> Transport {
        let mut peers = BTreeMap::new();
        for (id, addr) in voters {
            if *id == self_id {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            peers.insert(super::raft_id(*id), tx);
            tokio::spawn(peer_sender(addr.clone(), rx, driver.clone(), report));
        }
        Transport { peers }
    }

    pub fn send_all(&self, messages: Vec<Message>) {
        for m in messages {
            if let Some(tx) = self.peers.get(&m.to) {
                if let Err(e) = tx.try_send(m) {
                    tracing::debug!(cause = %e, "raft message dropped: peer queue full or closed");
                }
            }
        }
    }
}

/// Encodes one Raft frame, size prefix included.
pub fn encode_frame(m: &Message) -> Result<BytesMut, protobuf::ProtobufError> {
    let body = m.write_to_bytes()?;
    let mut out = BytesMut::with_capacity(12 + body.len());
    out.put_u32((8 + body.len()) as u32);
    out.put_i16(RAFT_API_KEY);
    out.put_i16(0);
    out.put_i32(0);
    out.put_slice(&body);
    Ok(out)
}

/// Decodes the body of a Raft frame (what follows the 8-byte header).
pub fn decode_body(body: &[u8]) -> Result<Message, protobuf::ProtobufError> {
    Message::parse_from_bytes(body)
}

async fn peer_sender<I: Send + 'static>(
    addr: String,
    mut rx: mpsc::Receiver<Message>,
    driver: std_mpsc::Sender<I>,
    report: fn(u64, bool) -> I,
) {
    let mut conn: Option<TcpStream> = None;
    while let Some(m) = rx.recv().await {
        let snapshot = super::is_snapshot(&m);
        let frame = match encode_frame(&m) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(cause = %e, "encoding a raft message failed");
                continue;
            }
        };
        if conn.is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, cause = %e, "cannot reach controller peer");
                }
                Err(_) => tracing::debug!(peer = %addr, "connecting to controller peer timed out"),
            }
        }
        let sent = match conn.as_mut() {
            Some(s) => match tokio::time::timeout(WRITE_TIMEOUT, s.write_all(&frame)).await {
                Ok(Ok(())) => true,
                _ => {
                    conn = None;
                    false
                }
            },
            None => false,
        };
        if snapshot {
            let _ = driver.send(report(m.to, sent));
        }
        if !sent {
            // Whatever queued up meanwhile is stale by now; Raft will resend.
            while let Ok(stale) = rx.try_recv() {
                if super::is_snapshot(&stale) {
                    let _ = driver.send(report(stale.to, false));
                }
            }
            tokio::time::sleep(RECONNECT_BACKOFF).await;
        }
    }
}
