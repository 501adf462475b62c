//! strom-admin: cluster administration that Kafka's tools lack. `rebalance` plans a
//! rack-aware, minimal-movement assignment (strom-core) for the live cluster — even
//! spread, draining brokers, new replication factors — prints it with its measures and
//! as kafka-reassign-partitions JSON, and with `--execute` runs it under a throttle until
//! it is done.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use strom_client::admin::{Admin, AdminConfig};
use strom_client::rebalance;
use strom_core::rebalance::{Goals, Plan};

#[derive(Parser)]
#[command(
    name = "strom-admin",
    version,
    about = "Administration of a Strom (or Kafka) cluster"
)]
struct Cli {
    /// Brokers to bootstrap from, host:port separated by commas.
    #[arg(long = "bootstrap-server", default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plan (and with --execute run) a rebalance of every topic's replicas.
    Rebalance(RebalanceArgs),
}

#[derive(clap::Args)]
struct RebalanceArgs {
    /// Print the plan only (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Run the plan: throttle, reassign, follow until done, clear the throttles.
    #[arg(long)]
    execute: bool,
    /// Brokers to empty, separated by commas (before scaling them away).
    #[arg(long, value_delimiter = ',')]
    drain: Vec<i32>,
    /// A topic's new replication factor, TOPIC=N; may be repeated.
    #[arg(long = "replication-factor", value_parser = parse_rf)]
    replication_factor: Vec<(String, i32)>,
    /// Only repair (drains, offline brokers, replication factors, shared racks); do not
    /// even out replicas and leaders.
    #[arg(long)]
    no_balance: bool,
    /// Replication throttle while moving, bytes per second per broker; -1 for none.
    #[arg(long, default_value_t = 50_000_000, allow_negative_numbers = true)]
    throttle: i64,
    /// How long --execute waits for the moves to finish.
    #[arg(long, default_value_t = 3600)]
    timeout_s: u64,
}

fn parse_rf(s: &str) -> Result<(String, i32), String> {
    let (topic, n) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected TOPIC=N, got {s:?}"))?;
    let n: i32 = n
        .parse()
        .map_err(|_| format!("the replication factor in {s:?} is not a number"))?;
    Ok((topic.to_owned(), n))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bootstrap: Vec<String> = cli
        .bootstrap_server
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let admin = Admin::new(bootstrap, AdminConfig::default());
    let result = match cli.command {
        Command::Rebalance(args) => run_rebalance(&admin, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_rebalance(admin: &Admin, args: RebalanceArgs) -> Result<(), String> {
    let goals = Goals {
        balance: !args.no_balance,
        drain: args.drain.iter().copied().collect(),
        replication_factors: args.replication_factor.iter().cloned().collect(),
    };
    let plan = rebalance::plan(admin, &goals)
        .await
        .map_err(|e| e.to_string())?;
    print_plan(&plan);
    if plan.is_empty() {
        println!("Nothing to move: the cluster already meets the goals.");
        return Ok(());
    }
    if !args.execute {
        println!("\nDry run: nothing was changed. Run again with --execute to apply the plan.");
        return Ok(());
    }
    let rate = u64::try_from(args.throttle).ok();
    println!("\nCurrent assignment, to roll back with kafka-reassign-partitions:");
    println!("{}", rollback(&plan).reassignment_json());
    match rate {
        Some(r) => println!(
            "\nStarting {} reassignment(s), throttled at {r} B/s per broker.",
            plan.changes.len()
        ),
        None => println!(
            "\nStarting {} reassignment(s), unthrottled.",
            plan.changes.len()
        ),
    }
    let started = Instant::now();
    let outcome = follow(admin, &plan, rate, Duration::from_secs(args.timeout_s)).await;
    if rate.is_some() {
        if let Err(e) = rebalance::clear_throttles(admin, &plan).await {
            eprintln!("Warning: clearing the throttles failed ({e}); remove {} and {} from the brokers and {} and {} from the topics by hand.",
                rebalance::LEADER_RATE, rebalance::FOLLOWER_RATE, rebalance::LEADER_REPLICAS, rebalance::FOLLOWER_REPLICAS);
        }
    }
    outcome?;
    println!(
        "Rebalance complete in {:.1} s: {} partition(s) reassigned, throttles cleared.",
        started.elapsed().as_secs_f64(),
        plan.changes.len()
    );
    Ok(())
}

async fn follow(
    admin: &Admin,
    plan: &Plan,
    rate: Option<u64>,
    timeout: Duration,
) -> Result<(), String> {
    rebalance::execute(admin, plan, rate)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let (done, total) = rebalance::progress(admin, plan)
            .await
            .map_err(|e| e.to_string())?;
        if last != Some(done) {
            println!("{done}/{total} partition(s) done");
            last = Some(done);
        }
        if done == total {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} partition(s) still moving after {} s; they go on (see kafka-reassign-partitions --list)",
                total - done,
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The plan reversed: every changed partition back on its current replicas.
fn rollback(plan: &Plan) -> Plan {
    let mut back = plan.clone();
    for c in &mut back.changes {
        std::mem::swap(&mut c.current, &mut c.target);
    }
    back
}

fn print_plan(plan: &Plan) {
    println!("Brokers:");
    for b in &plan.brokers {
        println!(
            "  {:>6}  rack {:<12}  {:?}",
            b.id,
            b.rack.as_deref().unwrap_or("-"),
            b.state
        );
    }
    println!(
        "\nPlan: {} partition(s) change, {} replica(s) move, {} byte(s) to copy",
        plan.changes.len(),
        plan.replica_moves(),
        plan.bytes_to_move()
    );
    let width = plan
        .changes
        .iter()
        .map(|c| c.topic.len() + 1 + c.partition.to_string().len())
        .max()
        .unwrap_or(0);
    let ids = |v: &[i32]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    for c in &plan.changes {
        let name = format!("{}-{}", c.topic, c.partition);
        println!(
            "  {name:<width$}  {} -> {}  ({} bytes)",
            ids(&c.current),
            ids(&c.target),
            c.bytes_to_move
        );
    }
    println!("\n{}", plan.measures_table());
    if !plan.is_empty() {
        println!("Reassignment JSON (kafka-reassign-partitions --reassignment-json-file):");
        println!("{}", plan.reassignment_json());
    }
}
