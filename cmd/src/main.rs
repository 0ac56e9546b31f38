//! `kite`: the command-line front of a Kite node.
//!
//! `kite init` prepares a home, `kite key` manages keys, `kite start` runs a
//! node, `kite testnet init` lays out a local network, `kite tx`/`status`/
//! `block`/`peers` talk to a node over JSON-RPC, `kite bench load` drives
//! load. User mistakes end with one clear line on stderr and exit code 1.

#![forbid(unsafe_code)]

mod home;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    Start,
    /// Lay out a local multi-node network.
    #[command(subcommand)]
    Testnet(TestnetCommand),
    /// Sign and submit a transaction through a node's RPC.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Show a node's status.
    Status,
    /// Show a block by height or hash.
    Block,
    /// Show a node's peers.
    Peers,
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
    /// Write the homes of a local network.
    Init,
}

#[derive(Subcommand, Debug)]
enum TxCommand {
    /// Transfer funds.
    Transfer,
    /// Put a key-value pair in the sender's namespace.
    Put,
    /// Delete a key from the sender's namespace.
    Delete,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Drive signed transfers and report tx/s and latency.
    Load,
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
        other => anyhow::bail!("`{}` is not available in this build yet", name_of(&other)),
    }
}

fn name_of(c: &Command) -> &'static str {
    match c {
        Command::Init(_) => "init",
        Command::Key(_) => "key",
        Command::Start => "start",
        Command::Testnet(_) => "testnet",
        Command::Tx(_) => "tx",
        Command::Status => "status",
        Command::Block => "block",
        Command::Peers => "peers",
        Command::Bench(_) => "bench",
    }
}
