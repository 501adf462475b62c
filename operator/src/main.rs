//! `strom-operator`: runs the Strom controllers in a Kubernetes cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kube::runtime::events::Reporter;
use kube::Client;
use strom_operator::cluster::desired::{Defaults, MANAGER};
use strom_operator::cluster::reconcile::Context;
use strom_operator::events::Events;
use strom_operator::kafka::{AdminConfig, Admins};
use strom_operator::metrics::{self, Metrics};
use strom_operator::run::{json_logs, run, LeaderElection, Stopped};
use tokio::sync::watch;
use tracing::info;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// The Strom Kubernetes operator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Namespaces to watch (comma-separated or repeated); every namespace when empty.
    #[arg(
        long = "namespace",
        env = "STROM_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "STROM_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Elect one active replica through a Lease, so several replicas are safe.
    #[arg(long, env = "STROM_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(long, env = "STROM_LEASE_NAME", default_value = "strom-operator")]
    lease_name: String,

    /// Namespace of the Lease; the operator's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// This replica's identity in the Lease and in events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Seconds a Lease holds without renewal.
    #[arg(long, env = "STROM_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Broker image for clusters that do not name one.
    #[arg(long, env = "STROM_DEFAULT_IMAGE", default_value = "strom:latest")]
    default_image: String,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "STROM_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Log format: one JSON object per line, or human-readable text.
    #[arg(long, env = "STROM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log_level).context("parsing --log-level")?;
    match args.log_format {
        LogFormat::Json => {
            tracing::subscriber::set_global_default(json_logs(filter, std::io::stdout))
                .context("installing the log subscriber")?
        }
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }

    let metrics = Arc::new(Metrics::new());
    let listener = metrics::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));
    info!(addr = %args.http_addr, "serving /metrics, /healthz and /readyz");

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{MANAGER}-{}", std::process::id()));
    let recorder = Events::new(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(identity.clone()),
        },
    );
    let ctx = Arc::new(Context {
        client,
        recorder: Arc::new(recorder),
        defaults: Defaults {
            image: args.default_image.clone(),
        },
        metrics: metrics.clone(),
        now: k8s_openapi::jiff::Timestamp::now,
        // Shorter than the client's defaults: a reconcile waits on these, and an
        // unreachable cluster is better reported (and retried by requeue) than waited on.
        kafka: Arc::new(Admins::new(AdminConfig {
            client_id: MANAGER.to_owned(),
            request_timeout: Duration::from_secs(10),
            retries: 3,
            ..AdminConfig::default()
        })),
    });
    metrics.set_ready(true);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        let _ = shutdown_tx.send(true);
    });

    let election = args.leader_election.then(|| LeaderElection {
        lease_name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity,
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
    });
    match run(ctx, args.namespaces, election, shutdown_rx).await? {
        Stopped::Shutdown => Ok(()),
        // Exit non-zero so the pod restarts and stands by for the lease again.
        Stopped::LostLeadership => anyhow::bail!("lost leadership"),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = ctrl_c => {}
            _ = async {
                match term.as_mut() {
                    Some(term) => { term.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
