//! The strom-broker binary: parse flags and configuration, start the broker, stop it
//! cleanly on SIGTERM or SIGINT.

use clap::Parser;
use std::sync::Arc;
use strom_broker::clock::SystemClock;
use strom_broker::config::BrokerConfig;

/// A Kafka-compatible broker. With no arguments: node 1, listening on 127.0.0.1:9092, data
/// in ./data.
#[derive(Parser, Debug)]
#[command(name = "strom-broker", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A properties file of Kafka broker properties.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// A property that overrides the file, as key=value; repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Checks the partition logs in DIR (a partition directory, or a log directory of them)
    /// without starting a broker: batch framing, offsets, CRCs, records and offset indexes.
    /// Prints every problem with its file and byte position; exits 1 if there is any.
    VerifyLog { dir: std::path::PathBuf },
}

fn verify_log(dir: &std::path::Path) -> std::process::ExitCode {
    match strom_broker::log::verify::verify(dir) {
        Ok(report) => {
            print!("{}", report.summary);
            for f in &report.findings {
                println!(
                    "DAMAGE {} at position {}: {}",
                    f.file.display(),
                    f.position,
                    f.problem
                );
            }
            if report.findings.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "strom-broker verify-log: cannot read {}: {e}",
                dir.display()
            );
            std::process::ExitCode::from(2)
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Command::VerifyLog { dir }) = &args.command {
        return verify_log(dir);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let file_text = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => Some((path.display().to_string(), t)),
            Err(e) => {
                eprintln!(
                    "strom-broker: cannot read config file {}: {e}",
                    path.display()
                );
                return std::process::ExitCode::from(2);
            }
        },
        None => None,
    };
    let config = match BrokerConfig::load(
        file_text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        &args.overrides,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strom-broker: refusing to start: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let fd_limit = strom_broker::server::raise_fd_limit();
    let open_files = config.open_files_max(fd_limit);
    strom_broker::log::files::OpenFiles::global().set_limit(open_files);
    tracing::info!(open_files, fd_limit, "segment files open at most");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strom-broker: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(strom_broker::server::run(
        config,
        Arc::new(SystemClock),
        shutdown_signal(),
    ));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom-broker: refusing to start: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
