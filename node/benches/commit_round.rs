#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Commit round time (the leader's proposal -> quorum of ACKs -> commit)
//! of a 4-node network (leader + 3 validators) in this process on
//! 127.0.0.1, for empty blocks and for 1,000-tx blocks. Prints figures,
//! asserts no timing.
//!
//! The round times are the `round_ms` the driver logs on every commit of
//! the leader (collected by a tracing layer); the mean comes from the
//! `commit_round_seconds` histogram of the leader's metrics.
//!
//! `cargo bench -p kite-node --bench commit_round`
//! (`KITE_BENCH_ROUNDS=N` changes the number of rounds per case.)

use kite_node::testkit::{NetSpec, TestNet, wait_for};
use kite_types::{NodeKey, Payload, Tx};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One commit the leader logged: (round ms, txs).
type Rounds = Arc<Mutex<Vec<(u64, u64)>>>;

struct RoundLayer(Rounds);

#[derive(Default)]
struct RoundVisitor {
    round_ms: Option<u64>,
    txs: u64,
}

impl Visit for RoundVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "round_ms" => self.round_ms = Some(value),
            "txs" => self.txs = value,
            _ => {}
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RoundLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("kite_node::driver") {
            return;
        }
        let mut v = RoundVisitor::default();
        event.record(&mut v);
        if let Some(ms) = v.round_ms {
            self.0.lock().push((ms, v.txs));
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn histogram_mean_ms(metrics: &str) -> Option<(f64, u64)> {
    let field = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let sum =
        field("kite_commit_round_seconds_sum").or_else(|| field("commit_round_seconds_sum"))?;
    let count =
        field("kite_commit_round_seconds_count").or_else(|| field("commit_round_seconds_count"))?;
    (count > 0.0).then(|| (sum / count * 1000.0, count as u64))
}

fn report(case: &str, rounds: &[(u64, u64)], wall: Duration) {
    let mut ms: Vec<u64> = rounds.iter().map(|(m, _)| *m).collect();
    ms.sort_unstable();
    let txs: u64 = rounds.iter().map(|(_, t)| *t).sum();
    println!(
        "{case:<16} rounds {:>4}  round p50 {:>4} ms  p90 {:>4} ms  max {:>4} ms  ({} txs, {:.1} blocks/s over {:.1} s)",
        ms.len(),
        pct(&ms, 0.5),
        pct(&ms, 0.9),
        ms.last().copied().unwrap_or(0),
        txs,
        ms.len() as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too:
    // keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("KITE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5 } else { 100 });
    let collected: Rounds = Arc::new(Mutex::new(Vec::new()));
    // KITE_BENCH_LOG=<filter> also prints the nodes' logs.
    let log = std::env::var("KITE_BENCH_LOG").ok().map(|f| {
        tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::EnvFilter::new(f))
    });
    let subscriber = tracing_subscriber::registry()
        .with(
            RoundLayer(collected.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(log);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(rounds, collected));
}

async fn run(rounds: usize, collected: Rounds) {
    const SENDERS: usize = 10;
    const PER_BLOCK: u64 = 1000;
    let mut spec = NetSpec::new(4);
    spec.chain_id = "kite-bench-round".into();
    spec.seed = 100;
    spec.funded = SENDERS;
    spec.propose_timeout = Duration::from_millis(20);
    spec.empty_block_timeout = Duration::from_millis(5);
    let net = TestNet::start(spec).await.unwrap();
    println!(
        "4 nodes (leader + 3 validators) in one process, 2 tokio workers, {} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    net.wait_height(3, Duration::from_secs(30)).await.unwrap();

    // Empty blocks: the leader proposes 5 ms after each commit.
    collected.lock().clear();
    let t = Instant::now();
    wait_for("empty rounds", Duration::from_secs(600), || async {
        (collected.lock().len() >= rounds).then_some(())
    })
    .await
    .unwrap();
    let empty: Vec<(u64, u64)> = collected
        .lock()
        .iter()
        .copied()
        .filter(|(_, t)| *t == 0)
        .collect();
    report("empty blocks", &empty, t.elapsed());

    // 1,000-tx blocks: each round admits 1,000 transfers (10 senders x 100)
    // at the leader in one batch, then waits for their commit everywhere.
    let chain = net.genesis.chain_id.clone();
    let to = NodeKey::from_seed([0xdd; 32]).public();
    let per_sender = PER_BLOCK / SENDERS as u64;
    let batches: Vec<Vec<Tx>> = (0..rounds as u64)
        .map(|r| {
            net.accounts
                .iter()
                .flat_map(|k| (1..=per_sender).map(move |i| (k, r * per_sender + i)))
                .map(|(k, nonce)| Tx::sign(k, &chain, nonce, Payload::Transfer { to, amount: 1 }))
                .collect()
        })
        .collect();
    let leader = net.shared(0).unwrap().clone();
    let before = leader.metrics.encode();
    collected.lock().clear();
    let t = Instant::now();
    let (mut admit_ms, mut leader_ms, mut all_ms) = (Vec::new(), Vec::new(), Vec::new());
    for (r, batch) in batches.into_iter().enumerate() {
        let t0 = Instant::now();
        net.admit(0, batch, None).await.unwrap();
        admit_ms.push(t0.elapsed().as_millis() as u64);
        let want = (r as u64 + 1) * per_sender;
        for i in 0..net.len() {
            wait_for("a 1,000-tx round", Duration::from_secs(120), || async {
                for k in &net.accounts {
                    if net.nonce(i, &k.public()).await.unwrap() < want {
                        return None;
                    }
                }
                Some(())
            })
            .await
            .unwrap();
            if i == 0 {
                leader_ms.push(t0.elapsed().as_millis() as u64);
            }
        }
        all_ms.push(t0.elapsed().as_millis() as u64);
    }
    let wall = t.elapsed();
    let all: Vec<(u64, u64)> = collected.lock().clone();
    let full: Vec<(u64, u64)> = all
        .iter()
        .copied()
        .filter(|(_, t)| *t == PER_BLOCK)
        .collect();
    let partial = all
        .iter()
        .filter(|(_, t)| *t > 0 && *t != PER_BLOCK)
        .count();
    report("1,000-tx blocks", &full, wall);
    if partial > 0 {
        println!("  ({partial} blocks held another number of txs and are left out)");
    }
    for (what, mut v) in [
        ("admission of 1,000 txs at the leader", admit_ms),
        ("admission -> leader commit", leader_ms),
        ("admission -> every node committed", all_ms),
    ] {
        v.sort_unstable();
        println!(
            "  {what:<38} p50 {:>5} ms  max {:>5} ms",
            pct(&v, 0.5),
            v.last().copied().unwrap_or(0)
        );
    }
    if let Some((mean, n)) = histogram_mean_ms(&leader.metrics.encode()) {
        let (m0, n0) = histogram_mean_ms(&before).unwrap_or((0.0, 0));
        println!(
            "  leader histogram: mean over all {n} rounds {mean:.1} ms (before the tx phase: {m0:.1} ms over {n0})"
        );
    }
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}
