//! `kite peers ban|unban|add|remove` and `kite admin leader`: operator
//! commands sent to a node's admin listener (`admin.listen`), never to its
//! public RPC.

use anyhow::Context;
use kite_node::admin::{
    ActingAs, AddParams, AdminClient, AdminListen, BanParams, PeerOpResult, PeerParams,
};
use kite_node::config::Config;
use std::path::PathBuf;
use std::time::Duration;

/// Where the admin listener is.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// The node's admin listener: unix:PATH or 127.0.0.1:PORT. Default: the
    /// `admin.listen` of the home's config.toml.
    #[arg(long, env = "KITE_ADMIN")]
    pub admin: Option<String>,
    /// The node's home (to find admin.listen when --admin is not given).
    #[arg(long, env = "KITE_HOME")]
    pub home: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// An operator command on peers.
#[derive(clap::Subcommand, Debug)]
pub enum PeersOp {
    /// Disconnect a peer and refuse it for a while (default 24h).
    Ban {
        /// Its peer id (12D3KooW...).
        peer: String,
        /// How long: 30m, 1h, 7days (at most 10 years).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift a ban.
    Unban {
        /// Its peer id.
        peer: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Connect to a peer and keep it connected (until the node restarts;
    /// add it to p2p.peers to keep it for good).
    Add {
        /// Its address, ending in /p2p/<peer id>.
        addr: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop keeping a peer connected, forget it and disconnect it.
    Remove {
        /// Its peer id.
        peer: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// An operator command on consensus.
#[derive(clap::Subcommand, Debug)]
pub enum AdminOp {
    /// Hand leadership to a validator. Run it on the leader for a clean
    /// hand-over at the next height; when the leader is down, run it on
    /// the validators: each leaves the dead leader's term at once, and the
    /// named one leads once validators holding a quorum have (the others
    /// do when their leader timeout passes).
    Leader {
        /// The validator to lead: its public key (hex) or genesis name.
        #[arg(long)]
        to: String,
        /// On a validator: leave the current term even though its leader
        /// made progress within a leader timeout (you know it is down).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Runs one `kite admin` command.
pub async fn run_admin(op: &AdminOp) -> anyhow::Result<()> {
    match op {
        AdminOp::Leader { to, force, admin } => {
            let r = admin.client()?.leader_handover(to, *force).await?;
            if admin.json {
                println!("{}", serde_json::to_string(&r)?);
                return Ok(());
            }
            let who = if r.name.is_empty() {
                r.to.to_string()
            } else {
                format!("{} ({})", r.name, r.to)
            };
            if r.acting_as == ActingAs::Leader {
                println!(
                    "this node leads term {}: it hands over to {who}, which leads term {}, once \
                     its current height is done; watch `kite status` for term {} and its leader",
                    r.from_term, r.to_term, r.to_term
                );
            } else {
                println!(
                    "this validator left term {} for term {}, led by {who}; it takes over once \
                     validators holding a quorum have left (run this on them too, or they do \
                     when their leader timeout passes)",
                    r.from_term, r.to_term
                );
            }
            Ok(())
        }
    }
}

impl AdminArgs {
    fn client(&self) -> anyhow::Result<AdminClient> {
        let (text, home) = match (&self.admin, &self.home) {
            (Some(a), home) => (a.clone(), home.clone().unwrap_or_else(|| ".".into())),
            (None, Some(home)) => {
                let path = home.join("config.toml");
                let config = Config::load(&path)?;
                (config.admin.listen, home.clone())
            }
            (None, None) => anyhow::bail!(
                "say where the node's admin listener is: --admin unix:PATH|127.0.0.1:PORT, \
                 or --home DIR of a node whose config sets admin.listen"
            ),
        };
        let at = AdminListen::parse(&text, &home)
            .map_err(|e| anyhow::anyhow!("admin.listen: {e}"))?
            .context(
                "the node's admin listener is off: set admin.listen in its config.toml \
                 (e.g. \"unix:admin.sock\") and restart it",
            )?;
        Ok(AdminClient::new(at, Duration::from_secs(15)))
    }
}

/// Runs one operator command.
pub async fn run(op: &PeersOp) -> anyhow::Result<()> {
    let (args, what, result) = match op {
        PeersOp::Ban {
            peer,
            duration,
            admin,
        } => {
            let params = BanParams {
                peer: peer.clone(),
                duration: duration.clone(),
            };
            let r = admin.client()?.call("peers_ban", params).await?;
            (admin, format!("banned {peer}"), r)
        }
        PeersOp::Unban { peer, admin } => {
            let params = PeerParams { peer: peer.clone() };
            let r = admin.client()?.call("peers_unban", params).await?;
            (admin, format!("unbanned {peer}"), r)
        }
        PeersOp::Add { addr, admin } => {
            let params = AddParams { addr: addr.clone() };
            let r = admin.client()?.call("peers_add", params).await?;
            (admin, format!("added {addr}"), r)
        }
        PeersOp::Remove { peer, admin } => {
            let params = PeerParams { peer: peer.clone() };
            let r = admin.client()?.call("peers_remove", params).await?;
            (admin, format!("removed {peer}"), r)
        }
    };
    print(args, &what, result)
}

fn print(args: &AdminArgs, what: &str, r: PeerOpResult) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if r.changed {
        println!(
            "{what}{}",
            if r.was_connected {
                " (it was connected)"
            } else {
                ""
            }
        );
    } else {
        println!("{what}: nothing to change");
    }
    Ok(())
}
