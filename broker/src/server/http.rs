//! The HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (the broker has opened its logs and serves clients). A deliberately tiny
//! HTTP/1.1 responder: one GET per connection, then close.

use super::Broker;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let broker = broker.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), respond(stream, &broker)).await;
                    });
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn respond(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let partitions = broker.replicas.all();
            let now = broker.replicas.now_ms();
            for p in partitions.iter().filter(|p| p.log_config().compact) {
                broker.metrics.set_dirty_ratio(p, p.dirty_ratio(now));
            }
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                broker.metrics.render(
                    &partitions,
                    broker.replicas.replication_counts(),
                    broker.replicas.quotas(),
                ),
            )
        }
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if broker.is_ready() => (
            "200 OK",
            "text/plain",
            match super::accept::fd_shortfall(broker) {
                Some(short) => format!("ready\nwarning: {short}\n"),
                None => "ready\n".to_string(),
            },
        ),
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
