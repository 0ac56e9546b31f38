//! A seeded, single-threaded, deterministic multi-node simulator for the
//! commit engine: N engines, each with a tiny app, mempool and in-memory
//! store, exchanging messages over a simulated network with per-link delay,
//! jitter, loss, reordering and partitions; crashes restart from the store.
//! Time is simulated (milliseconds), so thousands of heights run in seconds.
//!
//! Safety is checked at every commit (one block hash per height across all
//! nodes, only leader-signed blocks, prev-hash chain); the rest of the
//! invariants at the end of a run ([`Sim::check`]).

use kite_consensus::{
    CommittedState, Engine, EngineConfig, ExecError, Input, LastCommit, Output, Role, Target,
};
use kite_types::{
    BLOCK_VERSION, Block, BlockHeader, CommitInfo, Credential, Hash, LeaderSchedule, NodeKey,
    Payload, Promise, PublicKey, Quorum, Signature, TermChange, Tx, Validator, ValidatorSet, Vote,
    sign,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

pub const CHAIN: &str = "kite-sim";
const MAX_TXS_PER_BLOCK: usize = 16;

/// SplitMix64: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_0000_0000_0000)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

/// A fault injected into a run.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Crash `node` at `at_ms`; restart from its store after `down_ms`
    /// (never when `None`).
    Crash {
        node: usize,
        at_ms: u64,
        down_ms: Option<u64>,
    },
    /// Crash `node` right after it carries out its first output of `step`
    /// (an [`out_name`]) for `height`; restart after `down_ms` ([`NEVER`]:
    /// it stays down).
    CrashAtStep {
        node: usize,
        height: u64,
        step: &'static str,
        down_ms: u64,
    },
    /// Cut every link between `a` and `b` from `at_ms` to `heal_ms`.
    Partition {
        a: Vec<usize>,
        b: Vec<usize>,
        at_ms: u64,
        heal_ms: u64,
    },
    /// At `at_ms`, crash `node`, cut its store back to `keep_height`, and
    /// restart it after `down_ms`. Its promise record survives; when the
    /// engine refuses the older store, the "operator" gives it a store
    /// synced up to the promised height (the leader's blocks) and the same
    /// record, as the error says.
    Rollback {
        node: usize,
        at_ms: u64,
        keep_height: u64,
        down_ms: u64,
    },
    /// Every vote sent from `at_ms` to `heal_ms` is lost (the validators
    /// see proposals and resets; the leader never hears back).
    WithholdVotes { at_ms: u64, heal_ms: u64 },
    /// Crash whichever node leads at `at_ms` (with a proposal out, else
    /// the first validator that leads a term after it); restart it after
    /// `down_ms` (never when `None`).
    CrashLeader { at_ms: u64, down_ms: Option<u64> },
    /// At `at_ms`, an operator asks for validator `to` to lead
    /// ([`Input::HandOver`]): on whichever node leads (retried shortly
    /// while none does), or, when `on_all`, on every live validator (the
    /// way when the leader is down).
    HandOver { at_ms: u64, to: usize, on_all: bool },
}

/// A run's parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub validators: usize,
    pub sentries: usize,
    /// Stop once the leader has committed this many heights and everyone
    /// has caught up (after all faults healed).
    pub heights: u64,
    /// Fail if not done by then (simulated ms).
    pub max_time_ms: u64,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub drop_rate: f64,
    /// Probability of a new tx every 10 ms.
    pub tx_rate: f64,
    /// Share of new txs that are invalid (replayed nonces).
    pub bad_tx_rate: f64,
    pub faults: Vec<Fault>,
    /// A validator whose app computes wrong app hashes.
    pub byzantine_app: Option<usize>,
    /// Inject forged proposals, resets, announces and votes.
    pub forger: bool,
    /// A validator that, besides voting, sends the leader every 10 ms a
    /// signed vote for a far-future height, a NACK carrying a far-future
    /// (unsigned) best header, and signed votes for random blocks at the
    /// open height.
    pub byzantine_voter: Option<usize>,
    pub empty_block_timeout_ms: u64,
    /// Validators' leader timeout (0: never fail over).
    pub leader_timeout_ms: u64,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            validators: 4,
            sentries: 1,
            heights: 25,
            max_time_ms: 120_000,
            delay_ms: 5,
            jitter_ms: 20,
            drop_rate: 0.0,
            tx_rate: 0.4,
            bad_tx_rate: 0.03,
            faults: Vec::new(),
            byzantine_app: None,
            forger: false,
            byzantine_voter: None,
            empty_block_timeout_ms: 100,
            leader_timeout_ms: 600,
        }
    }
}

/// The app: per-sender nonces; app hash chains the tx hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AppState {
    nonces: BTreeMap<PublicKey, u64>,
    app_hash: Hash,
}

fn execute(state: &AppState, block: &Block, byzantine: bool) -> Result<AppState, ExecError> {
    let mut s = state.clone();
    let mut bad = Vec::new();
    let mut parts: Vec<u8> = s.app_hash.0.to_vec();
    for tx in block.txs() {
        let n = s.nonces.entry(tx.sender()).or_insert(0);
        if tx.body().chain_id != CHAIN || tx.nonce() != *n + 1 {
            bad.push(tx.hash());
            continue;
        }
        *n += 1;
        parts.extend_from_slice(tx.hash().as_bytes());
    }
    if !bad.is_empty() {
        return Err(ExecError {
            bad_txs: bad,
            reason: "bad nonce".into(),
        });
    }
    s.app_hash = Hash::digest(&parts);
    if byzantine {
        s.app_hash = Hash::digest_parts(&[b"evil", s.app_hash.as_bytes()]);
    }
    Ok(s)
}

#[derive(Debug, Clone)]
struct Stored {
    block: Block,
    ci: CommitInfo,
    app: AppState,
}

#[derive(Debug, Clone)]
enum Msg {
    Proposal {
        block: Block,
        term: u64,
        cred: Option<Credential>,
    },
    TermChange {
        change: TermChange,
        block: Option<Block>,
    },
    Reset {
        term: u64,
        height: u64,
        hash: Hash,
        sig: Signature,
    },
    Vote {
        vote: Vote,
        best: Option<BlockHeader>,
    },
    Announce {
        header: BlockHeader,
        sig: Signature,
        ci: CommitInfo,
    },
    BlockReq {
        height: u64,
    },
    BlockResp {
        block: Block,
        ci: CommitInfo,
    },
    NotFound {
        height: u64,
    },
    Status {
        height: u64,
        hash: Hash,
    },
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        msg: Box<Msg>,
    },
    Tick {
        node: usize,
    },
    TxGen,
    Status,
    Forge,
    ByzVote,
    Fault(usize),
    Heal(usize),
    Restart {
        node: usize,
    },
    /// An answer the node's store gives a little later (a commit is
    /// durable at once, but the engine hears of it after other inputs, as
    /// in the node's driver queue).
    Feed {
        node: usize,
        input: Box<Input>,
    },
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Node {
    key: NodeKey,
    pk: PublicKey,
    role: Role,
    engine: Option<Engine>,
    store: Vec<Stored>,
    app: AppState,
    staged: BTreeMap<Hash, AppState>,
    mempool: Vec<Tx>,
    halted: Option<String>,
    byzantine: bool,
    down_forever: bool,
    ticks: BTreeSet<u64>,
    /// The last promise record written (survives crashes and rollbacks).
    promise: Option<Promise>,
}

impl Node {
    fn height(&self) -> u64 {
        self.store.len() as u64
    }
    fn committed_state(&self, genesis_app: Hash) -> CommittedState {
        match self.store.last() {
            None => CommittedState::genesis(1, genesis_app),
            Some(s) => CommittedState {
                height: s.block.height(),
                block_hash: s.block.hash(),
                app_hash: s.app.app_hash,
                last: Some(LastCommit {
                    header: s.block.header().clone(),
                    leader_sig: *s.block.leader_sig(),
                    commit_info: s.ci.clone(),
                }),
            },
        }
    }
}

thread_local! {
    /// Signed client txs by (client, nonce): signing is the costliest part of
    /// generating load, and the same txs serve every seed.
    static TXS: std::cell::RefCell<BTreeMap<(usize, u64), Tx>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

fn signed_tx(client: usize, key: &NodeKey, nonce: u64) -> Tx {
    TXS.with(|m| {
        m.borrow_mut()
            .entry((client, nonce))
            .or_insert_with(|| {
                let value = nonce.to_le_bytes().to_vec();
                Tx::sign(
                    key,
                    CHAIN,
                    nonce,
                    Payload::Put {
                        key: vec![client as u8],
                        value,
                    },
                )
            })
            .clone()
    })
}

/// Counters of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub sent: u64,
    pub dropped: u64,
    pub commits: u64,
    pub resets: u64,
    pub drops: u64,
    pub crashes: u64,
    pub forged: u64,
    /// Batches applied through the sync fast path.
    pub batch_applies: u64,
    /// Fetched blocks the proof checker refused.
    pub bad_ranges: u64,
    /// Starts the engine refused (store older than the promise record).
    pub refused: u64,
    /// Votes lost to a [`Fault::WithholdVotes`].
    pub withheld: u64,
    /// Messages the byzantine voter sent.
    pub byz_votes: u64,
    /// Term changes sent.
    pub term_changes: u64,
    /// Per leader crash ([`Fault::CrashLeader`]): ms to the next commit.
    pub failovers_ms: Vec<u64>,
    /// Per [`Fault::HandOver`]: ms from the request to the first commit
    /// of a block the named validator proposed in a term it leads.
    pub handovers_ms: Vec<u64>,
}

/// What a run ended with; two runs of one seed must give equal outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub time_ms: u64,
    pub heights: Vec<u64>,
    pub tip: Hash,
    pub trace: u64,
    pub stats: Stats,
    pub halted: Vec<Option<String>>,
}

pub struct Sim {
    pub cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Node>,
    genesis_app: Hash,
    valset: ValidatorSet,
    partitions: BTreeMap<usize, (Vec<usize>, Vec<usize>)>,
    fired: BTreeSet<usize>,
    canon: BTreeMap<u64, Hash>,
    ever_committed: BTreeSet<Hash>,
    clients: Vec<(NodeKey, u64)>,
    /// Every block a scheduled leader signed that some node executed.
    leader_blocks: BTreeSet<Hash>,
    schedule: LeaderSchedule,
    /// The crash of a leader not followed yet by a commit of a later term:
    /// when, and the term it led.
    pending_kill: Option<(u64, u64)>,
    /// A hand-over not followed yet by a commit of the named validator's
    /// block: when it was asked for, and who.
    pending_handover: Option<(u64, PublicKey)>,
    trace: u64,
    pub stats: Stats,
}

pub fn out_name(o: &Output) -> &'static str {
    match o {
        Output::BuildBlock { .. } => "build",
        Output::SendProposal { .. } => "propose",
        Output::ExecuteBlock { .. } => "execute",
        Output::SendVote { .. } => "vote",
        Output::Commit { .. } => "commit",
        Output::ApplyBlocks { .. } => "apply",
        Output::Announce { .. } => "announce",
        Output::SendReset { .. } => "reset",
        Output::DropTxs { .. } => "drop",
        Output::RequestBlocks { .. } => "request",
        Output::ScheduleTimeout { .. } => "timeout",
        Output::Halt { .. } => "halt",
        Output::Persist { .. } => "persist",
        Output::SendTermChange { .. } => "term",
    }
}

/// A `down_ms` of [`Fault::CrashAtStep`] that means for good.
pub const NEVER: u64 = u64::MAX;

/// Steps of a height at which the leader can crash.
pub const LEADER_STEPS: [&str; 5] = ["build", "execute", "propose", "commit", "announce"];

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let n = cfg.validators + cfg.sentries;
        let keys: Vec<NodeKey> = (0..n)
            .map(|i| NodeKey::from_seed([i as u8 + 1; 32]))
            .collect();
        let valset = ValidatorSet::new(
            keys[..cfg.validators]
                .iter()
                .map(|k| Validator {
                    pub_key: k.public(),
                    power: 1,
                    name: String::new(),
                })
                .collect(),
        );
        let genesis_app = Hash::digest(b"sim genesis");
        let valset_for_schedule = valset.clone();
        let first = keys[0].public();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| Node {
                pk: key.public(),
                key,
                role: if i == 0 {
                    Role::Leader
                } else if i < cfg.validators {
                    Role::Validator
                } else {
                    Role::Sentry
                },
                engine: None,
                store: Vec::new(),
                app: AppState {
                    nonces: BTreeMap::new(),
                    app_hash: genesis_app,
                },
                staged: BTreeMap::new(),
                mempool: Vec::new(),
                halted: None,
                byzantine: cfg.byzantine_app == Some(i),
                down_forever: false,
                ticks: BTreeSet::new(),
                promise: None,
            })
            .collect();
        let clients = (0..8u8)
            .map(|i| (NodeKey::from_seed([100 + i; 32]), 0))
            .collect();
        Sim {
            rng: Rng::new(cfg.seed),
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            genesis_app,
            valset,
            partitions: BTreeMap::new(),
            fired: BTreeSet::new(),
            canon: BTreeMap::new(),
            ever_committed: BTreeSet::new(),
            clients,
            leader_blocks: BTreeSet::new(),
            schedule: LeaderSchedule::new(&valset_for_schedule, first),
            pending_kill: None,
            pending_handover: None,
            trace: 0xcbf2_9ce4_8422_2325,
            stats: Stats::default(),
        }
    }

    fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(7);
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn engine_config(&self, i: usize) -> EngineConfig {
        let node = &self.nodes[i];
        EngineConfig {
            chain_id: CHAIN.into(),
            role: node.role,
            key: (node.role != Role::Sentry).then(|| node.key.clone()),
            leader: self.nodes[0].pk,
            validators: self.valset.clone(),
            schedule: self.schedule.clone(),
            quorum: Quorum::default(),
            max_block_bytes: 1024 + MAX_TXS_PER_BLOCK as u64 * 200,
            propose_timeout_ms: 30,
            empty_block_timeout_ms: self.cfg.empty_block_timeout_ms,
            round_timeout_ms: 1_000,
            leader_timeout_ms: self.cfg.leader_timeout_ms,
            leader_timeout_max_ms: self.cfg.leader_timeout_ms * 8,
            vote_resend_interval_ms: 150,
            sync_window: 16,
            sync_per_peer: 4,
            sync_buffer_bytes: 1 << 30,
            sync_request_timeout_ms: 400,
        }
    }

    fn start(&mut self, i: usize) {
        let cfg = self.engine_config(i);
        let node = &mut self.nodes[i];
        node.app = match node.store.last() {
            Some(s) => s.app.clone(),
            None => AppState {
                nonces: BTreeMap::new(),
                app_hash: self.genesis_app,
            },
        };
        node.staged.clear();
        node.ticks.clear();
        let cs = node.committed_state(self.genesis_app);
        let mut engine = Engine::new(cfg.clone(), cs).expect("engine config");
        if let Some(p) = node.promise.clone()
            && let Err(e) = engine.restore(&p)
        {
            let kite_consensus::EngineError::StoreBehind { need, .. } = e else {
                panic!("seed {}: node {i}: {e}", self.cfg.seed);
            };
            // The operator's way out, as the error says: a store synced
            // from the network up to `need` (here the leader's blocks), and
            // the same promise record.
            self.stats.refused += 1;
            let longest = self.longest();
            let synced: Vec<Stored> = self.nodes[longest].store[..need as usize].to_vec();
            let node = &mut self.nodes[i];
            node.store = synced;
            node.app = node.store.last().map_or_else(
                || AppState {
                    nonces: BTreeMap::new(),
                    app_hash: self.genesis_app,
                },
                |s| s.app.clone(),
            );
            engine =
                Engine::new(cfg, node.committed_state(self.genesis_app)).expect("engine config");
            engine
                .restore(&p)
                .expect("the store now reaches the promise");
        }
        self.nodes[i].engine = Some(engine);
        self.feed(i, Input::Tick { now_ms: self.now });
        self.mempool_status(i);
    }

    /// Marks the crash for good of node `i`, if it leads, as a failover to
    /// time (and wait for: the run is not done before a later term commits).
    fn kill_mark(&mut self, i: usize) {
        if self.leads(i)
            && let Some(e) = self.nodes[i].engine.as_ref()
        {
            self.pending_kill = Some((self.now, e.status().term));
        }
    }

    /// The node holding the most blocks (the lowest index among equals).
    fn longest(&self) -> usize {
        (0..self.nodes.len())
            .max_by_key(|i| (self.nodes[*i].height(), std::cmp::Reverse(*i)))
            .unwrap_or(0)
    }

    /// Whether node `i` leads now (per its own engine).
    fn leads(&self, i: usize) -> bool {
        self.nodes[i].engine.as_ref().is_some_and(|e| {
            let st = e.status();
            st.leader == self.nodes[i].pk && st.term_settled && self.nodes[i].role != Role::Sentry
        })
    }

    fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        let node = &mut self.nodes[i];
        node.engine = None;
        node.staged.clear();
        node.ticks.clear();
    }

    fn is_up(&self, i: usize) -> bool {
        self.nodes[i].engine.is_some()
    }

    fn idx(&self, pk: &PublicKey) -> Option<usize> {
        self.nodes.iter().position(|n| n.pk == *pk)
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.partitions
            .values()
            .any(|(x, y)| (x.contains(&a) && y.contains(&b)) || (x.contains(&b) && y.contains(&a)))
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to {
            return;
        }
        self.stats.sent += 1;
        if self.cut(from, to) || self.rng.chance(self.cfg.drop_rate) {
            self.stats.dropped += 1;
            return;
        }
        if matches!(msg, Msg::Vote { .. }) && self.withholding() {
            self.stats.withheld += 1;
            return;
        }
        let at = self.now + self.cfg.delay_ms + self.rng.below(self.cfg.jitter_ms + 1);
        self.push(
            at,
            Ev::Deliver {
                from,
                to,
                msg: Box::new(msg),
            },
        );
    }

    fn withholding(&self) -> bool {
        self.cfg.faults.iter().any(|f| {
            matches!(f, Fault::WithholdVotes { at_ms, heal_ms } if (*at_ms..*heal_ms).contains(&self.now))
        })
    }

    fn targets(&self, from: usize, t: &Target) -> Vec<usize> {
        match t {
            Target::All => (0..self.nodes.len()).filter(|i| *i != from).collect(),
            Target::Peers(ps) => ps.iter().filter_map(|p| self.idx(p)).collect(),
        }
    }

    fn mempool_status(&mut self, i: usize) {
        if self.nodes[i].role == Role::Sentry || !self.is_up(i) {
            return;
        }
        let (txs, bytes) = self.pool(i);
        self.feed(i, Input::MempoolStatus { txs, bytes });
    }

    fn pool(&self, i: usize) -> (usize, u64) {
        let m = &self.nodes[i].mempool;
        (m.len(), m.iter().map(|t| t.size() as u64).sum())
    }

    /// Feeds one input (after a tick to the current time) and carries out
    /// the outputs, feeding back the node's synchronous answers.
    fn feed(&mut self, i: usize, input: Input) {
        let mut work = VecDeque::from([Input::Tick { now_ms: self.now }, input]);
        while let Some(inp) = work.pop_front() {
            let Some(engine) = self.nodes[i].engine.as_mut() else {
                return;
            };
            let outs = engine.handle(inp);
            for o in outs {
                if !self.apply(i, o, &mut work) {
                    return;
                }
            }
        }
    }

    fn output_height(&self, i: usize, o: &Output) -> u64 {
        match o {
            Output::SendProposal { block, .. }
            | Output::ExecuteBlock { block }
            | Output::Commit { block, .. } => block.height(),
            Output::Announce { header, .. } => header.height,
            Output::SendReset { height, .. } => *height,
            _ => self.nodes[i]
                .engine
                .as_ref()
                .map_or(0, |e| e.status().height),
        }
    }

    /// Carries out one output; false when the node crashed doing it.
    fn apply(&mut self, i: usize, o: Output, work: &mut VecDeque<Input>) -> bool {
        let name = out_name(&o);
        let height = self.output_height(i, &o);
        self.mix(name.len() as u64 * 31 + i as u64 + (height << 8));
        match o {
            Output::BuildBlock { max_bytes } => {
                let mut used = 0u64;
                let txs: Vec<Tx> = self.nodes[i]
                    .mempool
                    .iter()
                    .take(MAX_TXS_PER_BLOCK)
                    .take_while(|t| {
                        used += t.size() as u64;
                        used <= max_bytes
                    })
                    .cloned()
                    .collect();
                work.push_back(Input::BlockBuilt { txs });
            }
            Output::SendProposal {
                to,
                block,
                term,
                credential,
            } => {
                assert!(
                    self.leads(i),
                    "seed {}: node {i} proposes without leading",
                    self.cfg.seed
                );
                for p in to {
                    if let Some(j) = self.idx(&p) {
                        let m = Msg::Proposal {
                            block: block.clone(),
                            term,
                            cred: credential.clone(),
                        };
                        self.send(i, j, m);
                    }
                }
            }
            Output::SendTermChange { to, change, block } => {
                self.stats.term_changes += 1;
                // Promised before sent.
                assert!(
                    self.nodes[i]
                        .promise
                        .as_ref()
                        .is_some_and(|p| p.term >= change.term),
                    "seed {}: node {i} sends a term change it did not record",
                    self.cfg.seed
                );
                for p in to {
                    if let Some(j) = self.idx(&p) {
                        let m = Msg::TermChange {
                            change: change.clone(),
                            block: block.clone(),
                        };
                        self.send(i, j, m);
                    }
                }
            }
            Output::ExecuteBlock { block } => {
                assert!(
                    block.verify_leader(&self.schedule.leader(block.header().term)),
                    "seed {}: node {i} executes a block no scheduled leader signed",
                    self.cfg.seed
                );
                self.leader_blocks.insert(block.hash());
                let node = &mut self.nodes[i];
                let result = match execute(&node.app, &block, node.byzantine) {
                    Ok(s) => {
                        let h = s.app_hash;
                        node.staged.insert(block.hash(), s);
                        Ok(h)
                    }
                    Err(e) => Err(e),
                };
                work.push_back(Input::BlockExecuted {
                    height: block.height(),
                    block_hash: block.hash(),
                    result,
                });
            }
            Output::SendVote {
                to,
                vote,
                best_header,
            } => {
                assert!(
                    self.leader_blocks.contains(&vote.block_hash),
                    "seed {}: node {i} votes for a block the leader never proposed",
                    self.cfg.seed
                );
                if vote.ack && vote.height == self.nodes[i].height() + 1 {
                    // Promised before sent.
                    assert_eq!(
                        self.nodes[i].promise.as_ref().and_then(|p| p.vote.as_ref()),
                        Some(&vote),
                        "seed {}: node {i} sends a vote it did not record",
                        self.cfg.seed
                    );
                }
                if let Some(j) = self.idx(&to) {
                    self.send(
                        i,
                        j,
                        Msg::Vote {
                            vote,
                            best: best_header,
                        },
                    );
                }
            }
            Output::Commit { block, commit_info } => {
                let app = self.commit(i, block.clone(), commit_info, work);
                let input = Box::new(Input::Committed {
                    height: block.height(),
                    block_hash: block.hash(),
                    app_hash: app,
                });
                let at = self.now + self.rng.below(4);
                self.push(at, Ev::Feed { node: i, input });
            }
            Output::ApplyBlocks { blocks } => {
                // As the node's store does: execute, check the app hash
                // against the commit info, commit; stop at the first that
                // fails.
                let mut applied = Vec::new();
                let mut failed = None;
                for (block, ci) in blocks {
                    let (height, hash) = (block.height(), block.hash());
                    let node = &mut self.nodes[i];
                    match execute(&node.app, &block, node.byzantine) {
                        Ok(s) if s.app_hash == ci.app_hash => {
                            node.staged.insert(hash, s);
                            let app = self.commit(i, block, ci, work);
                            applied.push((height, hash, app));
                        }
                        Ok(s) => {
                            failed = Some((height, hash, format!("app hash {}", s.app_hash)));
                            break;
                        }
                        Err(e) => {
                            failed = Some((height, hash, e.reason));
                            break;
                        }
                    }
                }
                self.stats.batch_applies += 1;
                work.push_back(Input::BlocksApplied { applied, failed });
            }
            Output::Announce {
                header,
                leader_sig,
                commit_info,
                to,
            } => {
                for j in self.targets(i, &to) {
                    let m = Msg::Announce {
                        header: header.clone(),
                        sig: leader_sig,
                        ci: commit_info.clone(),
                    };
                    self.send(i, j, m);
                }
            }
            Output::SendReset {
                term,
                height,
                block_hash,
                leader_sig,
                to,
                ..
            } => {
                self.stats.resets += 1;
                for j in self.targets(i, &to) {
                    self.send(
                        i,
                        j,
                        Msg::Reset {
                            term,
                            height,
                            hash: block_hash,
                            sig: leader_sig,
                        },
                    );
                }
            }
            Output::DropTxs { hashes } => {
                self.stats.drops += hashes.len() as u64;
                self.nodes[i]
                    .mempool
                    .retain(|t| !hashes.contains(&t.hash()));
                let (txs, bytes) = self.pool(i);
                work.push_back(Input::MempoolStatus { txs, bytes });
            }
            Output::RequestBlocks {
                from_height,
                to_height,
                peer,
            } => {
                assert!(to_height - from_height < 64, "unbounded sync request");
                for h in from_height..=to_height {
                    let j = match peer.and_then(|p| self.idx(&p)) {
                        Some(j) => j,
                        None => {
                            let n = self.nodes.len() as u64;
                            let mut j = self.rng.below(n) as usize;
                            if j == i {
                                j = (j + 1) % n as usize;
                            }
                            j
                        }
                    };
                    self.send(i, j, Msg::BlockReq { height: h });
                }
            }
            Output::ScheduleTimeout { at_ms, .. } => {
                if self.nodes[i].ticks.insert(at_ms) {
                    self.push(at_ms, Ev::Tick { node: i });
                }
            }
            Output::Halt { reason } => {
                self.nodes[i].halted = Some(reason);
            }
            Output::Persist { promise } => {
                assert!(
                    self.nodes[i].role != Role::Sentry,
                    "seed {}: a sentry promised something",
                    self.cfg.seed
                );
                self.nodes[i].promise = Some(promise);
            }
        }
        // Crash faults keyed on a step of a height.
        let hit = self
            .cfg
            .faults
            .iter()
            .enumerate()
            .find_map(|(k, f)| match f {
                Fault::CrashAtStep {
                    node,
                    height: h,
                    step,
                    down_ms,
                } if *node == i && *h == height && *step == name && !self.fired.contains(&k) => {
                    Some((k, *down_ms))
                }
                _ => None,
            });
        if let Some((k, down)) = hit {
            self.fired.insert(k);
            if down == NEVER {
                self.kill_mark(i);
            }
            self.crash(i);
            if down == NEVER {
                self.nodes[i].down_forever = true;
            } else {
                self.push(self.now + down, Ev::Restart { node: i });
            }
            return false;
        }
        true
    }

    /// Commits an executed block on node `i`; returns the app hash after it.
    fn commit(
        &mut self,
        i: usize,
        block: Block,
        ci: CommitInfo,
        work: &mut VecDeque<Input>,
    ) -> Hash {
        let seed = self.cfg.seed;
        let leader = self.schedule.leader(block.header().term);
        let height = block.height();
        let hash = block.hash();
        assert!(
            block.verify_leader(&leader),
            "seed {seed}: node {i} commits a block the leader of its term did not sign"
        );
        assert!(
            ci.term() >= block.header().term,
            "seed {seed}: node {i} commits a block with a commit of an earlier term"
        );
        assert!(
            ci.verify(CHAIN, height, &hash, &self.valset, Quorum::default())
                .is_ok(),
            "seed {seed}: node {i} commits without a valid quorum"
        );
        let node = &mut self.nodes[i];
        assert_eq!(
            height,
            node.height() + 1,
            "seed {seed}: node {i} commits out of order"
        );
        if let Some(prev) = node.store.last() {
            assert_eq!(
                block.header().prev_hash,
                prev.block.hash(),
                "seed {seed}: broken chain"
            );
        }
        let staged = node.staged.remove(&hash).unwrap_or_else(|| {
            panic!("seed {seed}: node {i} commits block {hash} it never executed")
        });
        assert_eq!(
            staged.app_hash, ci.app_hash,
            "seed {seed}: node {i} commits a state the quorum did not"
        );
        node.staged.clear();
        node.app = staged.clone();
        let tx_hashes: Vec<Hash> = block.txs().iter().map(Tx::hash).collect();
        node.mempool.retain(|t| !tx_hashes.contains(&t.hash()));
        let ci_term = ci.term();
        let proposer = (block.header().term > 0).then_some(block.header().proposer);
        node.store.push(Stored {
            block,
            ci,
            app: staged.clone(),
        });
        self.stats.commits += 1;
        match self.canon.get(&height) {
            Some(h) => assert_eq!(
                *h, hash,
                "seed {seed}: FORK at height {height}: node {i} committed {hash}, another node {h}"
            ),
            None => {
                self.canon.insert(height, hash);
            }
        }
        self.ever_committed.extend(tx_hashes);
        self.mix(u64::from_le_bytes(hash.0[..8].try_into().unwrap()));
        if let Some((at, term)) = self.pending_kill
            && ci_term > term
        {
            self.pending_kill = None;
            self.stats.failovers_ms.push(self.now - at);
        }
        if let Some((at, who)) = self.pending_handover
            && proposer == Some(who)
        {
            self.pending_handover = None;
            self.stats.handovers_ms.push(self.now - at);
        }
        if self.nodes[i].role != Role::Sentry {
            let (txs, bytes) = self.pool(i);
            work.push_back(Input::MempoolStatus { txs, bytes });
        }
        staged.app_hash
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if !self.is_up(to) {
            return;
        }
        let from_pk = self.nodes[from].pk;
        let input = match msg {
            Msg::Proposal { block, term, cred } => Input::ProposalReceived {
                from: from_pk,
                block,
                term,
                credential: cred,
            },
            Msg::TermChange { change, block } => Input::TermChangeReceived {
                from: Some(from_pk),
                change,
                block,
            },
            Msg::Reset {
                term,
                height,
                hash,
                sig,
            } => Input::ResetReceived {
                term,
                height,
                block_hash: hash,
                leader_sig: sig,
            },
            Msg::Vote { vote, best } => Input::VoteReceived {
                from: Some(from_pk),
                vote,
                best_header: best,
            },
            Msg::Announce { header, sig, ci } => Input::CommitAnnounced {
                from: Some(from_pk),
                header,
                leader_sig: sig,
                commit_info: ci,
            },
            Msg::BlockReq { height } => {
                let node = &self.nodes[to];
                let reply = match node.store.get((height as usize).wrapping_sub(1)) {
                    Some(s) if height >= 1 => Msg::BlockResp {
                        block: s.block.clone(),
                        ci: s.ci.clone(),
                    },
                    _ => Msg::NotFound { height },
                };
                self.send(to, from, reply);
                return;
            }
            // Half the fetched blocks take the node's fast path: proofs
            // checked off the engine, then batch applies.
            Msg::BlockResp { block, ci } if self.rng.chance(0.5) => {
                let Some(engine) = self.nodes[to].engine.as_ref() else {
                    return;
                };
                let checker = kite_consensus::ProofChecker::new(engine.config());
                let height = block.height();
                let blocks = vec![(block, ci)];
                if checker.check_range(height, &blocks).good == 1 {
                    Input::RangeFetched {
                        from: Some(from_pk),
                        blocks,
                    }
                } else {
                    self.stats.bad_ranges += 1;
                    Input::FetchFailed {
                        from: Some(from_pk),
                        height,
                    }
                }
            }
            Msg::BlockResp { block, ci } => Input::BlockFetched {
                from: Some(from_pk),
                block,
                commit_info: ci,
            },
            Msg::NotFound { height } => Input::FetchFailed {
                from: Some(from_pk),
                height,
            },
            Msg::Status { height, hash } => Input::PeerStatus {
                peer: from_pk,
                height,
                hash,
            },
        };
        self.feed(to, input);
    }

    fn gen_tx(&mut self) {
        if !self.rng.chance(self.cfg.tx_rate) {
            return;
        }
        let c = self.rng.below(self.clients.len() as u64) as usize;
        let bad = self.clients[c].1 > 0 && self.rng.chance(self.cfg.bad_tx_rate);
        let nonce = if bad {
            1 + self.rng.below(self.clients[c].1)
        } else {
            self.clients[c].1 + 1
        };
        if !bad {
            self.clients[c].1 = nonce;
        }
        let tx = signed_tx(c, &self.clients[c].0, nonce);
        // Txs reach every validator's mempool (gossip; clients retry while
        // a node is down).
        for i in 0..self.cfg.validators {
            if bad && self.nodes[i].mempool.iter().any(|t| t.hash() == tx.hash()) {
                continue;
            }
            self.nodes[i].mempool.push(tx.clone());
            self.mempool_status(i);
        }
    }

    fn forge(&mut self) {
        // An outsider and validator 1 (not the leader) forge messages.
        let next = self.nodes[0].height() + 1;
        let prev = self.nodes[0]
            .store
            .last()
            .map(|s| (s.block.hash(), s.app.app_hash));
        let (prev_hash, prev_app) = prev.unwrap_or((Hash::ZERO, self.genesis_app));
        let outsider = NodeKey::from_seed([250; 32]);
        let v1 = self.nodes[1].key.clone();
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain_id: CHAIN.into(),
            height: next,
            prev_hash,
            prev_app_hash: prev_app,
            timestamp_ms: self.now,
            tx_root: Hash::ZERO,
            validator_set_hash: self.valset.hash(),
            proposer: self.nodes[0].pk,
            term: 0,
        };
        // 1. Signed by a validator that is not the leader.
        let by_v1 = Block::new_signed(header.clone(), vec![], &v1);
        // 2. Claims the leader as proposer, signed by an outsider.
        let mut h2 = header.clone();
        h2.tx_root = Block::tx_root_of(&[]);
        let sig = outsider.sign_digest(&sign::block_digest(&h2.hash()));
        let claims_leader = Block::from_parts(h2.clone(), vec![], sig);
        // 3. A fake commit of it: votes of one real validator plus forged ones.
        let fake_app = Hash::digest(b"fake");
        let mut votes = vec![Vote::ack(&v1, CHAIN, next, claims_leader.hash(), fake_app)];
        for j in 2..self.cfg.validators {
            let mut v = Vote::ack(&outsider, CHAIN, next, claims_leader.hash(), fake_app);
            v.validator = self.nodes[j].pk;
            votes.push(v);
        }
        let ci = CommitInfo {
            app_hash: fake_app,
            votes,
        };
        // 4. A reset signed by a validator for the leader's likely proposal.
        let reset_hash = Hash::digest(&self.rng.next_u64().to_le_bytes());
        let reset_sig = v1.sign_digest(&sign::reset_digest(CHAIN, 0, next, &reset_hash));
        for to in 2..self.nodes.len() {
            self.stats.forged += 4;
            for block in [by_v1.clone(), claims_leader.clone()] {
                let m = Msg::Proposal {
                    block,
                    term: 0,
                    cred: None,
                };
                self.send(1, to, m);
            }
            self.send(
                1,
                to,
                Msg::Announce {
                    header: h2.clone(),
                    sig,
                    ci: ci.clone(),
                },
            );
            self.send(
                1,
                to,
                Msg::Reset {
                    term: 0,
                    height: next,
                    hash: reset_hash,
                    sig: reset_sig,
                },
            );
        }
        // 5. A vote forged in validator 2's name to the leader.
        let mut fv = Vote::ack(&outsider, CHAIN, next, claims_leader.hash(), fake_app);
        fv.validator = self.nodes[2].pk;
        self.send(
            1,
            0,
            Msg::Vote {
                vote: fv,
                best: None,
            },
        );
    }

    /// The byzantine voter's messages to the leader (see
    /// [`SimConfig::byzantine_voter`]).
    fn byz_vote(&mut self) {
        let Some(b) = self.cfg.byzantine_voter else {
            return;
        };
        if !self.is_up(b) {
            return;
        }
        let key = self.nodes[b].key.clone();
        let open = self.nodes[b].height() + 1;
        let far = open + 1_000 + self.rng.below(1_000);
        let random = Hash::digest(&self.rng.next_u64().to_le_bytes());
        let app = Hash::digest(b"byzantine");
        // A signed vote for a far-future height.
        let future = Vote::ack(&key, CHAIN, far, random, app);
        // A NACK at the open height with a far-future best header (unsigned).
        let mut best = self.nodes[0]
            .store
            .last()
            .map(|s| s.block.header().clone())
            .unwrap_or(BlockHeader {
                version: BLOCK_VERSION,
                chain_id: CHAIN.into(),
                height: 0,
                prev_hash: Hash::ZERO,
                prev_app_hash: self.genesis_app,
                timestamp_ms: 0,
                tx_root: Hash::ZERO,
                validator_set_hash: self.valset.hash(),
                proposer: self.nodes[0].pk,
                term: 0,
            });
        best.height = far;
        let hint = Vote::nack(&key, CHAIN, open, random, "height already committed", &[]);
        // Signed votes for random blocks at the open height.
        let other = Vote::ack(&key, CHAIN, open, Hash::digest(random.as_bytes()), app);
        for (vote, best) in [(future, None), (hint, Some(best)), (other, None)] {
            self.stats.byz_votes += 1;
            self.send(b, 0, Msg::Vote { vote, best });
        }
    }

    fn honest_live(&self, i: usize) -> bool {
        !self.nodes[i].byzantine && !self.nodes[i].down_forever
    }

    fn all_faults_over(&self) -> bool {
        self.cfg.faults.iter().enumerate().all(|(k, f)| match f {
            Fault::Crash { at_ms, down_ms, .. } => self.now >= at_ms + down_ms.unwrap_or(0),
            Fault::Partition { heal_ms, .. } => self.now >= *heal_ms,
            Fault::Rollback { at_ms, down_ms, .. } => self.now >= at_ms + down_ms,
            Fault::CrashAtStep { height, .. } => {
                self.fired.contains(&k) || self.nodes[0].height() > *height
            }
            Fault::WithholdVotes { heal_ms, .. } => self.now >= *heal_ms,
            Fault::CrashLeader { at_ms, down_ms } => {
                self.fired.contains(&k) && self.now >= at_ms + down_ms.unwrap_or(0)
            }
            Fault::HandOver { .. } => self.fired.contains(&k),
        })
    }

    fn done(&self) -> bool {
        let lh = self.nodes[self.longest()].height();
        lh >= self.cfg.heights
            && self.pending_kill.is_none()
            && self.pending_handover.is_none()
            && self.all_faults_over()
            && (0..self.nodes.len())
                .all(|i| !self.honest_live(i) || (self.is_up(i) && self.nodes[i].height() == lh))
    }

    /// Runs to completion (or `max_time_ms`) and returns the outcome.
    pub fn run(&mut self) -> Outcome {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        self.push(10, Ev::TxGen);
        self.push(300, Ev::Status);
        if self.cfg.forger {
            self.push(77, Ev::Forge);
        }
        if self.cfg.byzantine_voter.is_some() {
            self.push(13, Ev::ByzVote);
        }
        let faults = self.cfg.faults.clone();
        for (k, f) in faults.iter().enumerate() {
            match f {
                Fault::Crash { at_ms, .. }
                | Fault::Rollback { at_ms, .. }
                | Fault::Partition { at_ms, .. } => self.push(*at_ms, Ev::Fault(k)),
                Fault::CrashLeader { at_ms, .. } | Fault::HandOver { at_ms, .. } => {
                    self.push(*at_ms, Ev::Fault(k))
                }
                Fault::CrashAtStep { .. } | Fault::WithholdVotes { .. } => {}
            }
        }
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > self.cfg.max_time_ms {
                break;
            }
            self.now = q.at;
            self.stats.events += 1;
            match q.ev {
                Ev::Deliver { from, to, msg } => self.deliver(from, to, *msg),
                Ev::Tick { node } => {
                    self.nodes[node].ticks.remove(&q.at);
                    if self.is_up(node) {
                        self.feed(node, Input::Tick { now_ms: self.now });
                    }
                }
                Ev::TxGen => {
                    self.gen_tx();
                    self.push(self.now + 10, Ev::TxGen);
                }
                Ev::Status => {
                    for i in 0..self.nodes.len() {
                        if self.is_up(i) {
                            let (height, hash) = (
                                self.nodes[i].height(),
                                self.nodes[i]
                                    .store
                                    .last()
                                    .map_or(Hash::ZERO, |s| s.block.hash()),
                            );
                            for j in 0..self.nodes.len() {
                                self.send(i, j, Msg::Status { height, hash });
                            }
                        }
                    }
                    self.push(self.now + 300, Ev::Status);
                }
                Ev::Forge => {
                    self.forge();
                    self.push(self.now + 197, Ev::Forge);
                }
                Ev::ByzVote => {
                    self.byz_vote();
                    self.push(self.now + 10, Ev::ByzVote);
                }
                Ev::Fault(k) => match faults[k].clone() {
                    Fault::Crash { node, down_ms, .. } => {
                        self.crash(node);
                        match down_ms {
                            Some(d) => self.push(self.now + d, Ev::Restart { node }),
                            None => self.nodes[node].down_forever = true,
                        }
                    }
                    Fault::Partition { a, b, heal_ms, .. } => {
                        self.partitions.insert(k, (a, b));
                        self.push(heal_ms, Ev::Heal(k));
                    }
                    Fault::Rollback {
                        node,
                        keep_height,
                        down_ms,
                        ..
                    } => {
                        self.crash(node);
                        self.nodes[node].store.truncate(keep_height as usize);
                        self.push(self.now + down_ms, Ev::Restart { node });
                    }
                    Fault::CrashLeader { down_ms, .. } => {
                        match (0..self.cfg.validators).find(|i| self.leads(*i)) {
                            Some(node) => {
                                self.fired.insert(k);
                                if down_ms.is_none() {
                                    self.kill_mark(node);
                                }
                                self.crash(node);
                                match down_ms {
                                    Some(d) => self.push(self.now + d, Ev::Restart { node }),
                                    None => self.nodes[node].down_forever = true,
                                }
                            }
                            // Nobody leads right now: try again shortly.
                            None => self.push(self.now + 20, Ev::Fault(k)),
                        }
                    }
                    Fault::HandOver { to, on_all, .. } => {
                        let pk = self.nodes[to].pk;
                        let asked: Vec<usize> = if on_all {
                            (0..self.cfg.validators)
                                .filter(|i| self.is_up(*i))
                                .collect()
                        } else {
                            (0..self.cfg.validators)
                                .filter(|i| self.leads(*i))
                                .collect()
                        };
                        if asked.is_empty() || self.pending_handover.is_some() {
                            // Nobody leads right now, or the last hand-over
                            // is under way: try again shortly.
                            self.push(self.now + 20, Ev::Fault(k));
                        } else if self.leads(to) {
                            self.fired.insert(k);
                        } else {
                            self.fired.insert(k);
                            self.pending_handover = Some((self.now, pk));
                            for i in asked {
                                // On every validator: the operator knows
                                // the leader is down.
                                self.feed(
                                    i,
                                    Input::HandOver {
                                        to: pk,
                                        force: on_all,
                                    },
                                );
                            }
                        }
                    }
                    Fault::CrashAtStep { .. } | Fault::WithholdVotes { .. } => {}
                },
                Ev::Heal(k) => {
                    self.partitions.remove(&k);
                }
                Ev::Restart { node } => {
                    if !self.is_up(node) {
                        self.start(node);
                    }
                }
                Ev::Feed { node, input } => {
                    if self.is_up(node) {
                        self.feed(node, *input);
                    }
                }
            }
            if self.done() {
                break;
            }
        }
        self.outcome()
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            time_ms: self.now,
            heights: self.nodes.iter().map(Node::height).collect(),
            tip: self.nodes[self.longest()]
                .store
                .last()
                .map_or(Hash::ZERO, |s| s.block.hash()),
            trace: self.trace,
            stats: self.stats.clone(),
            halted: self.nodes.iter().map(|n| n.halted.clone()).collect(),
        }
    }

    fn describe(&self) -> String {
        let mut s = format!("seed {} at {} ms: ", self.cfg.seed, self.now);
        for (i, n) in self.nodes.iter().enumerate() {
            let st = n.engine.as_ref().map(|e| format!("{:?}", e.status()));
            s += &format!(
                "\n  node {i} h{} up={} halted={:?} {}",
                n.height(),
                n.engine.is_some(),
                n.halted,
                st.unwrap_or_default()
            );
        }
        s
    }

    /// Checks the end-of-run invariants; panics naming the seed.
    pub fn check(&self) {
        let seed = self.cfg.seed;
        assert!(
            self.done(),
            "liveness: not done by {} ms: {}",
            self.cfg.max_time_ms,
            self.describe()
        );
        let leader = &self.nodes[self.longest()];
        // Same block hash at every height every node holds.
        for (i, n) in self.nodes.iter().enumerate() {
            for (k, s) in n.store.iter().enumerate() {
                let h = k as u64 + 1;
                assert_eq!(
                    Some(&s.block.hash()),
                    self.canon.get(&h),
                    "seed {seed}: node {i} holds another block at {h}"
                );
                if k < leader.store.len() {
                    assert_eq!(s.block.hash(), leader.store[k].block.hash());
                }
            }
            if self.honest_live(i) {
                assert!(
                    n.halted.is_none(),
                    "seed {seed}: honest node {i} halted: {:?}",
                    n.halted
                );
            }
        }
        // No committed tx disappears, none is committed twice.
        let mut seen = BTreeSet::new();
        for s in &leader.store {
            for t in s.block.txs() {
                assert!(
                    seen.insert(t.hash()),
                    "seed {seed}: tx {} committed twice",
                    t.hash()
                );
            }
        }
        assert!(
            self.ever_committed.is_subset(&seen),
            "seed {seed}: a committed tx disappeared"
        );
        assert!(leader.height() >= self.cfg.heights);
    }

    pub fn node_halted(&self, i: usize) -> Option<&str> {
        self.nodes[i].halted.as_deref()
    }

    pub fn height_of(&self, i: usize) -> u64 {
        self.nodes[i].height()
    }
}

/// Runs a configuration, checks the invariants, and returns the outcome.
pub fn run_checked(cfg: SimConfig) -> (Sim, Outcome) {
    let mut sim = Sim::new(cfg);
    let out = sim.run();
    sim.check();
    (sim, out)
}

/// Runs a configuration twice and checks both runs are identical.
pub fn run_twice(cfg: SimConfig) -> Outcome {
    let (_, a) = run_checked(cfg.clone());
    let (_, b) = run_checked(cfg);
    assert_eq!(a, b, "same seed, different runs");
    a
}
