//! `kite init` and `kite key`: node homes and key files.

use anyhow::bail;
use kite_node::config::Role;
use kite_types::{Genesis, NodeKey};
use std::path::{Path, PathBuf};

/// Balance of the account funded by `kite init`.
pub const DEV_BALANCE: u64 = 1_000_000_000_000;

/// Arguments of `kite init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The node's home folder.
    #[arg(long, env = "KITE_HOME")]
    pub home: PathBuf,
    /// Chain id of the new chain.
    #[arg(long, env = "KITE_CHAIN_ID", default_value = "kite-dev")]
    pub chain_id: String,
    /// Overwrite an existing node key, config and genesis.
    #[arg(long)]
    pub force: bool,
}

/// The files of a home.
pub struct HomeFiles {
    /// config.toml
    pub config: PathBuf,
    /// genesis.json
    pub genesis: PathBuf,
    /// node_key
    pub key: PathBuf,
}

impl HomeFiles {
    /// The files under `home`.
    pub fn of(home: &Path) -> HomeFiles {
        HomeFiles {
            config: home.join("config.toml"),
            genesis: home.join("genesis.json"),
            key: home.join("node_key"),
        }
    }
}

/// `kite init`: a single-node chain where this node is leader and only
/// validator, and its own key is funded.
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    kite_types::validate_chain_id(&args.chain_id).map_err(anyhow::Error::msg)?;
    let files = HomeFiles::of(&args.home);
    if !args.force {
        let existing: Vec<String> = [&files.key, &files.config, &files.genesis]
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); refusing to overwrite (use --force)",
                existing.join(", ")
            );
        }
    }
    let key = NodeKey::generate();
    let mut genesis = Genesis::single(&args.chain_id, key.public(), key.public(), DEV_BALANCE);
    genesis.genesis_time_ms = crate::testnet::now_ms();
    crate::testnet::write_home(&args.home, &key, &genesis, |c| c.role = Role::Leader)?;
    println!("initialised {}", args.home.display());
    println!("  chain id:   {}", args.chain_id);
    println!("  public key: {}", key.public());
    println!("  peer id:    {}", key.peer_id());
    println!("  funded:     {} with {DEV_BALANCE}", key.public());
    Ok(())
}

/// `kite key gen`.
pub fn key_gen(out: &Path, force: bool) -> anyhow::Result<()> {
    let key = NodeKey::generate();
    key.save(out, force)?;
    println!("{}", key.public());
    Ok(())
}

/// `kite key show`.
pub fn key_show(path: &Path, json: bool) -> anyhow::Result<()> {
    let key = NodeKey::load(path)?;
    if json {
        let v = serde_json::json!({
            "public_key": key.public().to_string(),
            "peer_id": key.peer_id().to_string(),
        });
        println!("{v}");
    } else {
        println!("public key: {}", key.public());
        println!("peer id:    {}", key.peer_id());
    }
    Ok(())
}
