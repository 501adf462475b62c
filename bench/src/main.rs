//! strom-bench: drives a running broker with librdkafka (the rdkafka crate) and prints
//! produce and consume throughput and produce latency percentiles.

use anyhow::{bail, Context as _};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "strom-bench",
    about = "Measure a Kafka-compatible broker with librdkafka"
)]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to use; created with --partitions if missing. Default: a fresh topic per run.
    #[arg(long)]
    topic: Option<String>,
    /// Records to produce (and then consume).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Value size of each record, in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Replication factor of the topic the run creates.
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// produce, consume, or both (produce then consume what was produced).
    #[arg(long, default_value = "both")]
    mode: String,
    /// PID of the broker, to report its resident memory after the run.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Extra librdkafka properties for both clients, as key=value; repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    extra: Vec<String>,
}

/// Collects per-record produce latency (send to delivery report) in microseconds. The send
/// time travels as the delivery opaque (microseconds since `origin`), so the send loop
/// allocates nothing per record.
struct LatencyContext {
    origin: Instant,
    latencies_us: Arc<Mutex<Vec<u32>>>,
    failures: Arc<Mutex<u64>>,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                let now_us = self.origin.elapsed().as_micros() as usize;
                let us = now_us.saturating_sub(sent_us).min(u32::MAX as usize) as u32;
                self.latencies_us.lock().expect("latency lock").push(us);
            }
            Err(_) => *self.failures.lock().expect("failure lock") += 1,
        }
    }
}

fn client_config(args: &Args) -> anyhow::Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap);
    for kv in &args.extra {
        let (k, v) = kv.split_once('=').context("-X takes key=value")?;
        c.set(k, v);
    }
    Ok(c)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn ensure_topic(args: &Args, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(args)?.create()?;
    let rt = std::thread::spawn({
        let topic = topic.to_owned();
        let (partitions, rf) = (args.partitions, args.replication_factor);
        move || {
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(rf));
            let fut = admin.create_topics([&new], &AdminOptions::new());
            futures::executor::block_on(fut)
        }
    });
    match rt
        .join()
        .map_err(|_| anyhow::anyhow!("admin thread panicked"))?
    {
        Ok(results) => {
            for r in results {
                if let Err((name, code)) = r {
                    if code != RDKafkaErrorCode::TopicAlreadyExists {
                        bail!("creating topic {name} failed: {code}");
                    }
                }
            }
            Ok(())
        }
        Err(e) => bail!("creating topic failed: {e}"),
    }
}

fn produce(args: &Args, topic: &str) -> anyhow::Result<()> {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.count as usize)));
    let failures = Arc::new(Mutex::new(0u64));
    let mut cfg = client_config(args)?;
    cfg.set("acks", &args.acks)
        .set("compression.codec", &args.compression)
        .set("linger.ms", args.linger_ms.to_string());
    let origin = Instant::now();
    let producer: BaseProducer<LatencyContext> = cfg.create_with_context(LatencyContext {
        origin,
        latencies_us: latencies.clone(),
        failures: failures.clone(),
    })?;
    let payload: Vec<u8> = (0..args.record_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let started = Instant::now();
    for i in 0..args.count {
        let partition = (i % args.partitions as u64) as i32;
        let mut record = BaseRecord::with_opaque_to(topic, origin.elapsed().as_micros() as usize)
            .payload(&payload[..])
            .key(&[])
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("produce failed: {e}"),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().expect("latency lock").clone();
    lat.sort_unstable();
    let failed = *failures.lock().expect("failure lock");
    let mb = args.count as f64 * args.record_size as f64 / (1024.0 * 1024.0);
    println!(
        "produce: {} records of {} B in {:.2} s: {:.0} records/s, {:.1} MB/s; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; failed {}",
        args.count,
        args.record_size,
        elapsed,
        args.count as f64 / elapsed,
        mb / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        percentile(&lat, 1.0),
        failed
    );
    if failed > 0 {
        bail!("{failed} records were not acknowledged");
    }
    Ok(())
}

fn consume(args: &Args, topic: &str) -> anyhow::Result<()> {
    let mut cfg = client_config(args)?;
    cfg.set("group.id", "strom-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while records < args.count {
        if Instant::now() > deadline {
            bail!("consumed only {records} of {} records in 600 s", args.count);
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consume failed: {e}"),
            None => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "consume: {} records in {:.2} s: {:.0} records/s, {:.1} MB/s",
        records,
        elapsed,
        records as f64 / elapsed,
        bytes as f64 / (1024.0 * 1024.0) / elapsed
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = args.topic.clone().unwrap_or_else(|| {
        format!(
            "strom-bench-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        )
    });
    ensure_topic(&args, &topic)?;
    match args.mode.as_str() {
        "produce" => produce(&args, &topic)?,
        "consume" => consume(&args, &topic)?,
        "both" => {
            produce(&args, &topic)?;
            consume(&args, &topic)?;
        }
        other => bail!("--mode must be produce, consume or both, not {other}"),
    }
    if let Some(pid) = args.broker_pid {
        match rss_mb(pid) {
            Some(mb) => println!("broker RSS: {mb:.1} MB"),
            None => println!("broker RSS: unknown (no process {pid})"),
        }
    }
    Ok(())
}
