//! A small network of Linux network namespaces for the chaos harness
//! (`kite testnet chaos --netns`): one namespace per node, each with one
//! address on a shared subnet, joined by a bridge in a namespace of its own
//! where the harness itself runs. Nothing is added to the machine's own
//! network namespace: no interface, address or route.
//!
//! ```text
//!   ns TAG-n0 (eth0 10.213.0.1) ──veth──┐
//!   ns TAG-n1 (eth0 10.213.0.2) ──veth──┤ ns TAG-br: br0 10.213.0.254 (the harness)
//!   ...                                 │           br1 (an island, no address)
//! ```
//!
//! A partition moves the bridge ports of an island of nodes from `br0` to
//! `br1`: the island's nodes reach each other, the others reach each
//! other, and no packet crosses (nor reaches the harness, which sees the
//! island as unreachable). Healing moves the ports back. This needs only
//! veth and bridge support (no tc qdisc or firewall module), and root.
//!
//! The namespaces are removed when the [`Lab`] is dropped; processes
//! started in them must be stopped by whoever started them.

use anyhow::{Context, bail};
use std::process::Command;

/// The subnet of the nodes (a /24; node `i` is `.i+1`, the harness `.254`).
pub const SUBNET: &str = "10.213.0";
/// The most nodes a lab holds.
pub const MAX_NODES: usize = 200;

/// Namespaces, veth pairs and bridges of one run.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    nodes: usize,
    /// Whether dropping it removes the namespaces (the process that made
    /// them), or only uses them ([`Lab::attach`]).
    owned: bool,
}

/// Runs `ip` with `args`; an error names the command and what it printed.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    /// Whether this machine lets us build a lab: root and `ip netns`. The
    /// error says what is missing.
    pub fn available() -> anyhow::Result<()> {
        let probe = format!("kcp{}", std::process::id());
        ip(&["netns", "add", &probe]).context(
            "network namespaces are not available here (run as root on Linux with iproute2)",
        )?;
        ip(&["netns", "del", &probe])
    }

    /// Builds the namespaces of `nodes` nodes and the harness's, named
    /// after this process (so runs side by side do not meet).
    pub fn create(nodes: usize) -> anyhow::Result<Lab> {
        if nodes == 0 || nodes > MAX_NODES {
            bail!("a lab holds 1 to {MAX_NODES} nodes, not {nodes}");
        }
        let lab = Lab {
            tag: format!("kc{}", std::process::id()),
            nodes,
            owned: true,
        };
        // On error, Drop removes what was made.
        lab.build()?;
        Ok(lab)
    }

    fn build(&self) -> anyhow::Result<()> {
        let br = self.harness_ns();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        for bridge in ["br0", "br1"] {
            ip(&["-n", &br, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", &br, "link", "set", bridge, "up"])?;
        }
        ip(&[
            "-n",
            &br,
            "addr",
            "add",
            &format!("{SUBNET}.254/24"),
            "dev",
            "br0",
        ])?;
        for i in 0..self.nodes {
            let ns = self.node_ns(i);
            let outer = self.port(i);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &outer, "netns",
                &br,
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &br, "link", "set", &outer, "master", "br0", "up"])?;
        }
        Ok(())
    }

    /// The lab `tag` of `nodes` nodes that another process made (it
    /// removes it).
    pub fn attach(tag: &str, nodes: usize) -> Lab {
        Lab {
            tag: tag.to_owned(),
            nodes,
            owned: false,
        }
    }

    /// Its name, for [`Lab::attach`].
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The namespace the harness runs in (it holds the bridges).
    pub fn harness_ns(&self) -> String {
        format!("{}-br", self.tag)
    }

    /// Node `i`'s namespace.
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Node `i`'s bridge port (in the harness namespace).
    fn port(&self, i: usize) -> String {
        format!("{}b{i}", self.tag)
    }

    /// Cuts `island` off from the other nodes (and from the harness).
    pub fn partition(&self, island: &[usize]) -> anyhow::Result<()> {
        for i in island {
            ip(&[
                "-n",
                &self.harness_ns(),
                "link",
                "set",
                &self.port(*i),
                "master",
                "br1",
            ])?;
        }
        Ok(())
    }

    /// Joins every node again.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.nodes {
            ip(&[
                "-n",
                &self.harness_ns(),
                "link",
                "set",
                &self.port(i),
                "master",
                "br0",
            ])?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    /// Removes the namespaces (their veths and bridges go with them).
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.node_ns(i)]);
        }
        let _ = ip(&["netns", "del", &self.harness_ns()]);
    }
}
