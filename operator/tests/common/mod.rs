//! What the tests that run a real `strom-broker` share: finding the binary, free
//! loopback ports, starting a process with its output in a log file, and producing and
//! consuming with librdkafka.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

/// How long a broker may take to start answering.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a consumer may take to receive what a test expects.
pub const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker binary named by `STROM_BROKER_BIN`. Without it the tests fail and say how
/// to build it, rather than skip.
pub fn broker_bin() -> PathBuf {
    let binary = std::env::var_os("STROM_BROKER_BIN")
        .map(PathBuf::from)
        .expect(
            "STROM_BROKER_BIN must name a strom-broker binary: \
         cargo build --release -p strom-broker && \
         export STROM_BROKER_BIN=$CARGO_TARGET_DIR/release/strom-broker (scripts/test does this)",
        );
    assert!(
        binary.is_file(),
        "STROM_BROKER_BIN={} is not a file",
        binary.display()
    );
    binary
}

/// A loopback port nothing listens on now and that this test process has not handed out
/// before. The kernel may offer a port again once its probe listener is dropped, and a
/// broker given the port another broker of the same cluster was given fails to start
/// (seen in CI: one broker's HTTP port was the next broker's Kafka listener).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no loopback port left that this test process has not used")
}

/// Starts `command` with stdout and stderr appended to `log`.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"))
}

/// The last 40 lines of a log file, for failure messages.
pub fn log_tail(log: &Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Produces `count` records to each listed partition and waits for every ack.
pub fn produce(producer: &BaseProducer, topic: &str, counts: &[(i32, usize)]) {
    for &(partition, count) in counts {
        for i in 0..count {
            let payload = format!("record {i}");
            producer
                .send(
                    BaseRecord::<(), _>::to(topic)
                        .partition(partition)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("enqueue");
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("every record acknowledged");
}

/// One record as a consumer received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
}

/// Polls until `want` records came in (or panics).
pub fn receive(consumer: &BaseConsumer, want: usize) -> Vec<Received> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < want {
        assert!(
            started.elapsed() < CONSUME_TIMEOUT,
            "received {} of {want} records: {seen:?}",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => seen.push(Received {
                partition: message.partition(),
                offset: message.offset(),
                payload: message.payload().map(<[u8]>::to_vec),
            }),
            Some(Err(err)) => panic!("consumer error: {err}"),
            None => {}
        }
    }
    seen
}

/// Polls until `want` records came in (or panics); returns (partition, offset) of each.
pub fn consume(consumer: &BaseConsumer, want: usize) -> Vec<(i32, i64)> {
    receive(consumer, want)
        .into_iter()
        .map(|r| (r.partition, r.offset))
        .collect()
}
