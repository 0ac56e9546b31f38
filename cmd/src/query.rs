//! `kite status`, `kite block`, `kite peers`, `kite tx ...`: talk to a node
//! over JSON-RPC. Human-readable output by default, `--json` for scripts.

use crate::client::Client;
use anyhow::{Context, bail};
use kite_node::rpc::{AccountView, BlockView, BroadcastResult, PeerView, StatusView};
use kite_types::{Hash, NodeKey, Payload, PublicKey, Tx};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// The RPC endpoint and output flags shared by the query commands.
#[derive(clap::Args, Debug, Clone)]
pub struct RpcArgs {
    /// Node RPC URL.
    #[arg(long, env = "KITE_RPC", default_value = "http://127.0.0.1:26657")]
    pub rpc: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl RpcArgs {
    fn client(&self, timeout: Duration) -> anyhow::Result<Client> {
        Client::new(&self.rpc, timeout)
    }
}

/// `kite status`.
pub async fn status(a: &RpcArgs) -> anyhow::Result<()> {
    let s: StatusView = a
        .client(Duration::from_secs(10))?
        .call("status", json!({}))
        .await?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("chain id:    {}", s.chain_id);
    println!("peer id:     {}", s.peer_id);
    println!(
        "role:        {}{}",
        s.role,
        if s.blocks_only { " (blocks-only)" } else { "" }
    );
    println!("height:      {}", s.height);
    println!("block hash:  {}", s.block_hash);
    println!("app hash:    {}", s.app_hash);
    if s.syncing {
        println!("syncing:     yes, to height {}", s.sync_target);
    } else {
        println!("syncing:     no");
    }
    if let Some(l) = s.leader {
        println!(
            "term:        {} (leader {l}{})",
            s.term,
            if s.term_settled {
                ""
            } else {
                ", not settled: the validators are changing terms"
            }
        );
    }
    println!("peers:       {}", s.peers);
    println!(
        "mempool:     {} txs, {} bytes",
        s.mempool.txs, s.mempool.bytes
    );
    Ok(())
}

/// Arguments of `kite block`.
#[derive(clap::Args, Debug)]
pub struct BlockArgs {
    /// Height or block hash (64 hex characters).
    pub id: String,
    #[command(flatten)]
    rpc: RpcArgs,
}

/// `kite block`.
pub async fn block(a: &BlockArgs) -> anyhow::Result<()> {
    let params = if a.id.len() == 64 {
        let h: Hash = a.id.parse()?;
        json!({"hash": h})
    } else {
        let h: u64 =
            a.id.parse()
                .with_context(|| format!("{:?} is neither a height nor a block hash", a.id))?;
        json!({"height": h})
    };
    let b: BlockView = a
        .rpc
        .client(Duration::from_secs(10))?
        .call("block", params)
        .await?;
    if a.rpc.json {
        println!("{}", serde_json::to_string(&b)?);
        return Ok(());
    }
    println!("height:      {}", b.header.height);
    println!("hash:        {}", b.hash);
    println!("prev hash:   {}", b.header.prev_hash);
    println!("time (ms):   {}", b.header.timestamp_ms);
    println!("proposer:    {}", b.header.proposer);
    println!("tx root:     {}", b.header.tx_root);
    println!("app hash:    {}", b.commit_info.app_hash);
    println!("votes:       {}", b.commit_info.votes.len());
    println!("txs:         {}", b.txs.len());
    for t in &b.txs {
        println!("  {t}");
    }
    Ok(())
}

/// `kite peers`.
pub async fn peers(a: &RpcArgs) -> anyhow::Result<()> {
    let p: Vec<PeerView> = a
        .client(Duration::from_secs(10))?
        .call("peers", json!({}))
        .await?;
    if a.json {
        println!("{}", serde_json::to_string(&p)?);
        return Ok(());
    }
    println!("{} peers", p.len());
    for peer in p {
        let h = peer
            .height
            .map(|h| format!(" height {h}"))
            .unwrap_or_default();
        println!("  {}{h} {}", peer.peer_id, peer.addrs.join(" "));
    }
    Ok(())
}

/// Arguments shared by the `kite tx` commands.
#[derive(clap::Args, Debug)]
pub struct TxArgs {
    /// Key file of the sender.
    #[arg(long, env = "KITE_KEY")]
    pub key: PathBuf,
    /// Wait until the tx is committed and print its height.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub rpc: RpcArgs,
}

/// Signs `payload` with the next nonce of the key's account and submits it.
pub async fn submit(a: &TxArgs, payload: Payload) -> anyhow::Result<()> {
    let key = NodeKey::load(&a.key)?;
    let client = a.rpc.client(Duration::from_secs(60))?;
    let status: StatusView = client.call("status", json!({})).await?;
    let acct: AccountView = client.call("account", json!({"id": key.public()})).await?;
    let tx = Tx::sign(&key, &status.chain_id, acct.next_nonce, payload);
    let wait = if a.wait { "commit" } else { "accept" };
    let r: BroadcastResult = client
        .call(
            "broadcast_tx",
            json!({"tx": hex::encode(tx.encode()), "wait": wait}),
        )
        .await?;
    if a.rpc.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if let Some(h) = r.height {
        println!("{} committed at height {h}", r.hash);
    } else if a.wait {
        bail!("{} was accepted but its commit was not seen", r.hash);
    } else {
        println!("{}", r.hash);
    }
    Ok(())
}

/// Parses a public key argument.
pub fn parse_key(s: &str) -> anyhow::Result<PublicKey> {
    Ok(s.parse()?)
}
