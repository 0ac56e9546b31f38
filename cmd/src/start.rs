//! `kite start`: run a node from its home, with every config key also a
//! flag (`--p2p.listen`, `--rpc.listen`, ...) and a `KITE_*` env var
//! (`KITE_P2P_LISTEN`, ...). `kite start --dev` runs a single-node chain in
//! a temporary home.

use crate::home::HomeFiles;
use anyhow::{Context, bail};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use kite_node::config::{Config, KEYS, LogFormat};
use kite_node::node::{NodeOptions, start};
use kite_types::{Genesis, NodeKey};
use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Arguments of `kite start`.
#[derive(Debug, Clone, Default)]
pub struct StartArgs {
    /// The node home.
    pub home: Option<PathBuf>,
    /// Run a throwaway single-node chain.
    pub dev: bool,
    /// `(key, value)` settings from flags and env, in KEYS order.
    pub overrides: Vec<(String, String)>,
}

/// The flag of a config key: `--p2p.listen`, and `--role`,
/// `--blocks-only` for the top-level keys.
pub fn flag_name(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.replace('_', "-")
    } else {
        format!("{section}.{key}")
    }
}

/// The env var of a config key: `KITE_P2P_LISTEN`, `KITE_ROLE`.
pub fn env_name(section: &str, key: &str) -> String {
    let full = if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}_{key}")
    };
    format!("KITE_{}", full.to_uppercase())
}

impl Args for StartArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd
            .arg(
                Arg::new("home")
                    .long("home")
                    .env("KITE_HOME")
                    .value_name("DIR")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("The node's home (config.toml, genesis.json, node_key, data)"),
            )
            .arg(
                Arg::new("dev")
                    .long("dev")
                    .action(ArgAction::SetTrue)
                    .help("Run a single-node dev chain in a temporary home with the defaults"),
            );
        for (section, key, doc) in KEYS {
            let id = if section.is_empty() {
                (*key).to_owned()
            } else {
                format!("{section}.{key}")
            };
            let mut arg = Arg::new(id)
                .long(flag_name(section, key))
                .env(env_name(section, key))
                .help(*doc)
                .help_heading(if section.is_empty() {
                    "Node".to_owned()
                } else {
                    format!("[{section}]")
                });
            arg = if section.is_empty() && *key == "blocks_only" {
                arg.action(ArgAction::SetTrue)
            } else {
                arg.value_name("VALUE").action(ArgAction::Set)
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for StartArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut a = StartArgs {
            home: m.get_one::<PathBuf>("home").cloned(),
            dev: m.get_flag("dev"),
            overrides: Vec::new(),
        };
        for (section, key, _) in KEYS {
            let id = if section.is_empty() {
                (*key).to_owned()
            } else {
                format!("{section}.{key}")
            };
            if section.is_empty() && *key == "blocks_only" {
                if m.get_flag(&id) {
                    a.overrides.push((id, "true".into()));
                }
            } else if let Some(v) = m.get_one::<String>(&id) {
                a.overrides.push((id, v.clone()));
            }
        }
        Ok(a)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// Loads the home (or makes the dev one) and runs the node until Ctrl-C,
/// SIGTERM, or a halt.
pub fn run(a: &StartArgs) -> anyhow::Result<()> {
    let mut dev_home: Option<tempdir::Guard> = None;
    let home = match (&a.home, a.dev) {
        (_, true) => {
            let g = tempdir::Guard::new()?;
            crate::home::init(&crate::home::InitArgs {
                home: g.path.clone(),
                chain_id: "kite-dev".into(),
                force: true,
            })?;
            let home = g.path.clone();
            dev_home = Some(g);
            home
        }
        (Some(h), false) => h.clone(),
        (None, false) => bail!(
            "give the node's home with --home DIR (or KITE_HOME), or run a dev chain with --dev"
        ),
    };
    let files = HomeFiles::of(&home);
    let mut config = Config::load(&files.config)?;
    for (k, v) in &a.overrides {
        config.set(k, v)?;
    }
    let genesis = Genesis::load(&files.genesis)?;
    let key = NodeKey::load(&files.key)?;
    init_logging(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async move {
        let node = start(NodeOptions {
            home: home.clone(),
            config,
            genesis,
            key,
        })
        .await?;
        if let Some(addr) = node.rpc_addr {
            tracing::info!(rpc = %format!("http://{addr}"), home = %home.display(), "ready");
        }
        let stopper = node.stopper();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            stopper.stop(kite_node::node::StopReason::Requested("signal"));
        });
        node.wait().await?;
        anyhow::Ok(())
    });
    drop(dev_home);
    result
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log.level {:?} is not a valid filter", config.log.level))?;
    let colour = use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(colour)
        .with_env_filter(filter);
    let r = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    r.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Whether the log (written to standard output) is coloured: only when that
/// output is a terminal, so a log redirected to a file or a pipe has no
/// escape codes, and never when `NO_COLOR` is set to a non-empty value
/// (the NO_COLOR convention).
fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// A temporary home removed when dropped.
mod tempdir {
    use std::path::PathBuf;

    /// Owns the folder.
    pub struct Guard {
        /// The folder.
        pub path: PathBuf,
    }

    impl Guard {
        /// Creates `$TMPDIR/kite-dev-<pid>-<random>`.
        pub fn new() -> anyhow::Result<Guard> {
            let mut r = [0u8; 4];
            rand::fill(&mut r);
            let path = std::env::temp_dir().join(format!(
                "kite-dev-{}-{}",
                std::process::id(),
                hex::encode(r)
            ));
            std::fs::create_dir_all(&path)?;
            Ok(Guard { path })
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::use_colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        // A terminal, NO_COLOR unset or empty: coloured.
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        // A terminal, NO_COLOR set to anything non-empty: plain.
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(true, Some(OsStr::new("0"))));
        // A file or a pipe: plain, whatever NO_COLOR says.
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new(""))));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }
}
