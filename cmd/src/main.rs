//! `kite`: the command-line front of a Kite node.
//!
//! `kite init` prepares a home, `kite key` manages keys, `kite start` runs a
//! node, `kite testnet init` lays out a local network, `kite tx`/`status`/
//! `block`/`peers` talk to a node over JSON-RPC, `kite peers ban|...` and
//! `kite admin leader` go to its admin listener, `kite bench load` drives
//! load. User mistakes end with one clear line on stderr and exit code 1.

#![forbid(unsafe_code)]

mod admin;
mod bench;
mod benchnet;
mod chaos;
mod client;
mod delay;
mod home;
mod limits;
mod netns;
mod query;
mod start;
mod testnet;

use clap::{Parser, Subcommand};
use kite_types::Payload;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of the system allocator: under load glibc's malloc kept
/// 60-110 MiB per node that the node had freed (fragmented arenas), so the
/// resident memory stayed near its peak after the load ended. jemalloc's
/// background thread returns freed pages to the system within seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's figures for the node's metrics (`kite_allocator_*`).
fn jemalloc_stats() -> Option<kite_node::metrics::AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot taken when the epoch advances.
    epoch::advance().ok()?;
    let bytes = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    Some(kite_node::metrics::AllocatorStats {
        allocated: bytes(stats::allocated::read().ok()?),
        resident: bytes(stats::resident::read().ok()?),
    })
}

/// Kite: a leader-based blockchain node.
#[derive(Parser, Debug)]
#[command(name = "kite", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a node home: config.toml, genesis.json (this node leads), node_key.
    Init(home::InitArgs),
    /// Manage ed25519 node keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run a node (leader, validator, sentry or blocks-only archive).
    Start(start::StartArgs),
    /// Lay out a local multi-node network.
    #[command(subcommand)]
    Testnet(TestnetCommand),
    /// Sign and submit a transaction through a node's RPC.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Show a node's status.
    Status(query::RpcArgs),
    /// Show a block by height or hash.
    Block(query::BlockArgs),
    /// Show a node's peers; ban, unban, add or remove one (admin listener).
    Peers(PeersArgs),
    /// Operator commands on consensus (admin listener).
    #[command(subcommand)]
    Admin(admin::AdminOp),
    /// Benchmarks against a running network.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Generate a key file (hex seed, mode 0600).
    Gen {
        /// Where to write the key.
        #[arg(long, env = "KITE_KEY_OUT")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print a key file's public key and libp2p peer id.
    Show {
        /// The key file.
        #[arg(long, env = "KITE_KEY")]
        key: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TestnetCommand {
    /// Write the homes of a local network (node0 leads).
    Init(testnet::TestnetInitArgs),
    /// Show every node's height and endpoints.
    Status(testnet::NetArgs),
    /// Wait until every node holds the same block at a height.
    Wait(testnet::NetArgs),
    /// Apply faults (kill the leader, kill or pause validators) under load,
    /// then check every node holds the same chain with every committed tx.
    Chaos(chaos::ChaosArgs),
}

#[derive(Subcommand, Debug)]
enum TxCommand {
    /// Transfer funds.
    Transfer {
        /// Receiver's public key (hex).
        #[arg(long, value_parser = query::parse_key)]
        to: kite_types::PublicKey,
        /// Amount.
        #[arg(long)]
        amount: u64,
        #[command(flatten)]
        tx: query::TxArgs,
    },
    /// Put a key-value pair in the sender's namespace.
    Put {
        /// The key.
        #[arg(id = "kv_key", value_name = "KEY")]
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        tx: query::TxArgs,
    },
    /// Delete a key from the sender's namespace.
    Delete {
        /// The key.
        #[arg(id = "kv_key", value_name = "KEY")]
        key: String,
        #[command(flatten)]
        tx: query::TxArgs,
    },
}

/// `kite peers`: with no subcommand, lists the connected peers (public
/// RPC); with one, asks the admin listener.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct PeersArgs {
    #[command(subcommand)]
    op: Option<admin::PeersOp>,
    #[command(flatten)]
    list: query::RpcArgs,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Drive signed transfers and report tx/s and latency.
    Load(bench::LoadArgs),
    /// Measure this machine's limits: ed25519 verify (single, batch),
    /// sha256, durable writes, on 1 and 2 threads.
    Limits(limits::LimitsArgs),
    /// The limits, then Kite on a fresh local network: committed tx/s at
    /// saturation, latency at fixed rates, CPU per tx and RSS per node.
    Net(benchnet::NetBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => home::init(&args),
        Command::Key(KeyCommand::Gen { out, force }) => home::key_gen(&out, force),
        Command::Key(KeyCommand::Show { key, json }) => home::key_show(&key, json),
        Command::Testnet(TestnetCommand::Init(args)) => testnet::init(&args),
        Command::Testnet(TestnetCommand::Status(a)) => block_on(testnet::status(&a)),
        Command::Testnet(TestnetCommand::Wait(a)) => block_on(testnet::wait(&a)),
        Command::Testnet(TestnetCommand::Chaos(a)) => block_on(chaos::chaos(&a)),
        Command::Start(a) => {
            kite_node::metrics::set_allocator_probe(jemalloc_stats);
            start::run(&a)
        }
        Command::Status(a) => block_on(query::status(&a)),
        Command::Block(a) => block_on(query::block(&a)),
        Command::Peers(PeersArgs { op: None, list }) => block_on(query::peers(&list)),
        Command::Peers(PeersArgs { op: Some(op), .. }) => block_on(admin::run(&op)),
        Command::Admin(op) => block_on(admin::run_admin(&op)),
        Command::Tx(TxCommand::Transfer { to, amount, tx }) => {
            block_on(query::submit(&tx, Payload::Transfer { to, amount }))
        }
        Command::Tx(TxCommand::Put { key, value, tx }) => block_on(query::submit(
            &tx,
            Payload::Put {
                key: key.into_bytes(),
                value: value.into_bytes(),
            },
        )),
        Command::Tx(TxCommand::Delete { key, tx }) => block_on(query::submit(
            &tx,
            Payload::Delete {
                key: key.into_bytes(),
            },
        )),
        Command::Bench(BenchCommand::Load(a)) => block_on(bench::load(&a)),
        Command::Bench(BenchCommand::Limits(a)) => limits::limits(&a),
        Command::Bench(BenchCommand::Net(a)) => block_on(benchnet::bench_net(&a)),
    }
}

/// Runs a future on a fresh tokio runtime (the RPC commands).
fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks of every subcommand (unique ids, ...).
    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
