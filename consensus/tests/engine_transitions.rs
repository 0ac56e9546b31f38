#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Table-driven tests of the engine's transitions: each row is a step
//! description, an input, the outputs expected (by kind, timers left out)
//! and the engine step expected afterwards.

use kite_consensus::{
    CommittedState, Engine, EngineConfig, ExecError, HandOver, HandOverError, Input, LastCommit,
    Output, ProofChecker, RangeCheck, Role, Target,
};
use kite_types::{
    Acked, BLOCK_VERSION, Block, BlockHeader, CommitInfo, Credential, Hash, LeaderSchedule,
    NodeKey, Payload, Promise, Quorum, TermChange, Tx, Validator, ValidatorSet, Vote, sign,
};

const CHAIN: &str = "kite-test";

fn key(i: u8) -> NodeKey {
    NodeKey::from_seed([i; 32])
}

fn valset() -> ValidatorSet {
    ValidatorSet::new(
        (1..=4)
            .map(|i| Validator {
                pub_key: key(i).public(),
                power: 1,
                name: String::new(),
            })
            .collect(),
    )
}

fn config(role: Role, me: Option<u8>) -> EngineConfig {
    EngineConfig {
        chain_id: CHAIN.into(),
        role,
        key: me.map(key),
        leader: key(1).public(),
        validators: valset(),
        schedule: LeaderSchedule::new(&valset(), key(1).public()),
        quorum: Quorum::default(),
        max_block_bytes: 64 * 1024,
        propose_timeout_ms: 100,
        empty_block_timeout_ms: 0,
        round_timeout_ms: 2000,
        // Failover has tests of its own (`terms_*`).
        leader_timeout_ms: 0,
        leader_timeout_max_ms: 0,
        vote_resend_interval_ms: 250,
        sync_window: 16,
        sync_per_peer: 4,
        sync_buffer_bytes: 1 << 30,
        sync_request_timeout_ms: 1000,
    }
}

fn genesis_app() -> Hash {
    Hash::digest(b"genesis app")
}

fn tx(nonce: u64) -> Tx {
    Tx::sign(
        &key(50),
        CHAIN,
        nonce,
        Payload::Put {
            key: vec![1],
            value: vec![nonce as u8],
        },
    )
}

fn header(height: u64, prev: Hash, prev_app: Hash, ts: u64) -> BlockHeader {
    BlockHeader {
        version: BLOCK_VERSION,
        chain_id: CHAIN.into(),
        height,
        prev_hash: prev,
        prev_app_hash: prev_app,
        timestamp_ms: ts,
        tx_root: Hash::ZERO,
        validator_set_hash: valset().hash(),
        proposer: key(1).public(),
        term: 0,
    }
}

/// A block at height 1 on genesis, signed by `signer`.
fn block1(ts: u64, signer: u8) -> Block {
    Block::new_signed(
        header(1, Hash::ZERO, genesis_app(), ts),
        vec![tx(1)],
        &key(signer),
    )
}

fn app_of(b: &Block) -> Hash {
    Hash::digest_parts(&[b"app", b.hash().as_bytes()])
}

fn ci(b: &Block, voters: &[u8], app: Hash) -> CommitInfo {
    CommitInfo {
        app_hash: app,
        votes: voters
            .iter()
            .map(|i| Vote::ack(&key(*i), CHAIN, b.height(), b.hash(), app))
            .collect(),
    }
}

fn kind(o: &Output) -> Option<String> {
    Some(match o {
        Output::BuildBlock { .. } => "BuildBlock".into(),
        Output::SendProposal { to, block, .. } => {
            format!("SendProposal(h{},to{})", block.height(), to.len())
        }
        Output::ExecuteBlock { block } => format!("ExecuteBlock(h{})", block.height()),
        Output::SendVote {
            vote, best_header, ..
        } => format!(
            "SendVote({} h{}{})",
            if vote.ack { "ack" } else { "nack" },
            vote.height,
            if best_header.is_some() { " +best" } else { "" }
        ),
        Output::Commit { block, .. } => format!("Commit(h{})", block.height()),
        Output::ApplyBlocks { blocks } => format!(
            "ApplyBlocks(h{}..h{})",
            blocks.first().map_or(0, |(b, _)| b.height()),
            blocks.last().map_or(0, |(b, _)| b.height())
        ),
        Output::Announce { header, to, .. } => format!(
            "Announce(h{},{})",
            header.height,
            if *to == Target::All { "all" } else { "some" }
        ),
        Output::SendReset { height, .. } => format!("SendReset(h{height})"),
        Output::SendTermChange { change, .. } => {
            format!("SendTermChange(t{} h{})", change.term, change.height)
        }
        Output::DropTxs { hashes } => format!("DropTxs({})", hashes.len()),
        Output::RequestBlocks {
            from_height,
            to_height,
            ..
        } => {
            format!("RequestBlocks({from_height}..{to_height})")
        }
        Output::ScheduleTimeout { .. } => return None,
        Output::Halt { .. } => "Halt".into(),
        Output::Persist { promise } => format!(
            "Persist(h{}{})",
            promise.height,
            match &promise.vote {
                Some(v) if v.ack => " ack",
                Some(_) => " nack",
                None if promise.proposed.is_empty() => "",
                None => " proposed",
            }
        ),
    })
}

/// One row: what happens, the input, the outputs expected, the step after.
struct Row {
    what: &'static str,
    input: Box<dyn Fn(&Ctx) -> Input>,
    expect: &'static [&'static str],
    step: &'static str,
}

/// What the rows may refer to: the last block the engine proposed or
/// executed.
#[derive(Default)]
struct Ctx {
    block: Option<Block>,
}

impl Ctx {
    fn block(&self) -> Block {
        self.block.clone().expect("no block yet")
    }
}

fn row(
    what: &'static str,
    input: impl Fn(&Ctx) -> Input + 'static,
    expect: &'static [&'static str],
    step: &'static str,
) -> Row {
    Row {
        what,
        input: Box::new(input),
        expect,
        step,
    }
}

fn run(engine: &mut Engine, rows: Vec<Row>) -> Ctx {
    let mut ctx = Ctx::default();
    for (i, r) in rows.iter().enumerate() {
        let out = engine.handle((r.input)(&ctx));
        for o in &out {
            if let Output::SendProposal { block, .. } | Output::ExecuteBlock { block } = o {
                ctx.block = Some(block.clone());
            }
        }
        let kinds: Vec<String> = out.iter().filter_map(kind).collect();
        assert_eq!(kinds, r.expect, "row {i} ({}): outputs", r.what);
        assert_eq!(
            engine.status().step.as_str(),
            r.step,
            "row {i} ({}): step",
            r.what
        );
    }
    ctx
}

fn leader() -> Engine {
    Engine::new(
        config(Role::Leader, Some(1)),
        CommittedState::genesis(1, genesis_app()),
    )
    .unwrap()
}

fn validator(i: u8) -> Engine {
    Engine::new(
        config(Role::Validator, Some(i)),
        CommittedState::genesis(1, genesis_app()),
    )
    .unwrap()
}

fn vote(i: u8, c: &Ctx) -> Input {
    let b = c.block();
    Input::VoteReceived {
        from: None,
        vote: Vote::ack(&key(i), CHAIN, 1, b.hash(), app_of(&b)),
        best_header: None,
    }
}

fn executed_ok(c: &Ctx) -> Input {
    let b = c.block();
    Input::BlockExecuted {
        height: 1,
        block_hash: b.hash(),
        result: Ok(app_of(&b)),
    }
}

#[test]
fn leader_happy_path() {
    let mut e = leader();
    let ctx = run(
        &mut e,
        vec![
            row(
                "start, no txs, no empty blocks",
                |_| Input::Tick { now_ms: 1000 },
                &[],
                "idle",
            ),
            row(
                "txs arrive",
                |_| Input::MempoolStatus { txs: 2, bytes: 300 },
                &[],
                "idle",
            ),
            row(
                "before the propose timeout",
                |_| Input::Tick { now_ms: 1099 },
                &[],
                "idle",
            ),
            row(
                "propose timeout",
                |_| Input::Tick { now_ms: 1100 },
                &["BuildBlock"],
                "building",
            ),
            row(
                "block built: execute and send",
                |_| Input::BlockBuilt {
                    txs: vec![tx(1), tx(2)],
                },
                &[
                    "Persist(h1 proposed)",
                    "ExecuteBlock(h1)",
                    "SendProposal(h1,to3)",
                ],
                "proposed",
            ),
            row(
                "own execution: own ACK (1 of 4)",
                executed_ok,
                &[],
                "proposed",
            ),
            row("ACK from 2 (2 of 4)", |c| vote(2, c), &[], "proposed"),
            row("duplicate ACK from 2", |c| vote(2, c), &[], "proposed"),
            row(
                "ACK from outsider",
                |c| {
                    let b = c.block();
                    Input::VoteReceived {
                        from: None,
                        vote: Vote::ack(&key(9), CHAIN, 1, b.hash(), app_of(&b)),
                        best_header: None,
                    }
                },
                &[],
                "proposed",
            ),
            row(
                "forged ACK (bad signature)",
                |c| {
                    let b = c.block();
                    let mut v = Vote::ack(&key(3), CHAIN, 1, b.hash(), app_of(&b));
                    v.signature.0[0] ^= 1;
                    Input::VoteReceived {
                        from: None,
                        vote: v,
                        best_header: None,
                    }
                },
                &[],
                "proposed",
            ),
            row(
                "ACK from 3: quorum",
                |c| vote(3, c),
                &["Commit(h1)"],
                "committing",
            ),
            row("late ACK from 4", |c| vote(4, c), &[], "committing"),
            row(
                "store committed: announce",
                |c| {
                    let b = c.block();
                    Input::Committed {
                        height: 1,
                        block_hash: b.hash(),
                        app_hash: app_of(&b),
                    }
                },
                &["Persist(h2)", "Announce(h1,all)"],
                "idle",
            ),
        ],
    );
    let st = e.status();
    assert_eq!(st.committed_height, 1);
    assert_eq!(st.committed_hash, ctx.block().hash());
    assert_eq!(st.height, 2);
}

#[test]
fn leader_commit_info_holds_the_quorum() {
    let mut e = leader();
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    assert!(
        e.handle(Input::Tick { now_ms: 100 })
            .contains(&Output::BuildBlock {
                max_bytes: 63 * 1024
            })
    );
    let out = e.handle(Input::BlockBuilt { txs: vec![tx(1)] });
    let b = out
        .iter()
        .find_map(|o| match o {
            Output::ExecuteBlock { block } => Some(block.clone()),
            _ => None,
        })
        .expect("the leader executes its block");
    assert!(b.verify_leader(&key(1).public()));
    e.handle(Input::BlockExecuted {
        height: 1,
        block_hash: b.hash(),
        result: Ok(app_of(&b)),
    });
    e.handle(Input::VoteReceived {
        from: None,
        vote: Vote::ack(&key(4), CHAIN, 1, b.hash(), app_of(&b)),
        best_header: None,
    });
    // A divergent ACK does not count for the leader's app hash.
    e.handle(Input::VoteReceived {
        from: None,
        vote: Vote::ack(&key(3), CHAIN, 1, b.hash(), Hash::digest(b"wrong")),
        best_header: None,
    });
    let out = e.handle(Input::VoteReceived {
        from: None,
        vote: Vote::ack(&key(2), CHAIN, 1, b.hash(), app_of(&b)),
        best_header: None,
    });
    let Some(Output::Commit { block, commit_info }) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(block, &b);
    assert_eq!(commit_info.app_hash, app_of(&b));
    assert_eq!(commit_info.votes.len(), 3);
    assert!(
        commit_info
            .verify(CHAIN, 1, &b.hash(), &valset(), Quorum::default())
            .is_ok()
    );
}

#[test]
fn leader_nack_quorum_resets_drops_and_reproposes() {
    let mut e = leader();
    let bad = tx(2);
    let bad_hash = bad.hash();
    run(
        &mut e,
        vec![
            row(
                "txs",
                |_| Input::MempoolStatus { txs: 2, bytes: 300 },
                &[],
                "idle",
            ),
            row(
                "timeout",
                |_| Input::Tick { now_ms: 100 },
                &["BuildBlock"],
                "building",
            ),
            row(
                "built",
                move |_| Input::BlockBuilt {
                    txs: vec![tx(1), tx(2)],
                },
                &[
                    "Persist(h1 proposed)",
                    "ExecuteBlock(h1)",
                    "SendProposal(h1,to3)",
                ],
                "proposed",
            ),
            row("own exec ok", executed_ok, &[], "proposed"),
            row(
                "NACK from 2 naming the bad tx",
                move |c| {
                    let b = c.block();
                    Input::VoteReceived {
                        from: None,
                        vote: Vote::nack(&key(2), CHAIN, 1, b.hash(), "bad nonce", &[bad_hash]),
                        best_header: None,
                    }
                },
                &[],
                "proposed",
            ),
            row(
                "NACK from 3: 3 ACKs impossible",
                |c| Input::VoteReceived {
                    from: None,
                    vote: Vote::nack(&key(3), CHAIN, 1, c.block().hash(), "no", &[]),
                    best_header: None,
                },
                &["DropTxs(1)", "SendReset(h1)", "BuildBlock"],
                "building",
            ),
            row(
                "re-proposal with the good tx only",
                |_| Input::BlockBuilt { txs: vec![tx(1)] },
                &[
                    "Persist(h1 proposed)",
                    "ExecuteBlock(h1)",
                    "SendProposal(h1,to3)",
                ],
                "proposed",
            ),
            row(
                "resend: the reset goes along with the new proposal",
                |_| Input::Tick { now_ms: 600 },
                &["SendReset(h1)", "SendProposal(h1,to3)"],
                "proposed",
            ),
        ],
    );
    assert_eq!(e.status().round, 2);
}

#[test]
fn leader_own_invalid_block_and_round_timeout() {
    let mut e = leader();
    run(
        &mut e,
        vec![
            row(
                "txs",
                |_| Input::MempoolStatus { txs: 1, bytes: 100 },
                &[],
                "idle",
            ),
            row(
                "timeout",
                |_| Input::Tick { now_ms: 100 },
                &["BuildBlock"],
                "building",
            ),
            row(
                "built",
                |_| Input::BlockBuilt { txs: vec![tx(1)] },
                &[
                    "Persist(h1 proposed)",
                    "ExecuteBlock(h1)",
                    "SendProposal(h1,to3)",
                ],
                "proposed",
            ),
            row(
                "own execution fails",
                |c| Input::BlockExecuted {
                    height: 1,
                    block_hash: c.block().hash(),
                    result: Err(ExecError {
                        bad_txs: vec![tx(1).hash()],
                        reason: "nonce".into(),
                    }),
                },
                &["DropTxs(1)", "SendReset(h1)", "BuildBlock"],
                "building",
            ),
            row(
                "mempool now empty: nothing to propose",
                |_| Input::BlockBuilt { txs: vec![] },
                &[],
                "idle",
            ),
            row(
                "new txs",
                |_| Input::MempoolStatus { txs: 1, bytes: 100 },
                &[],
                "idle",
            ),
            row(
                "timeout",
                |_| Input::Tick { now_ms: 300 },
                &["BuildBlock"],
                "building",
            ),
            row(
                "built",
                |_| Input::BlockBuilt { txs: vec![tx(3)] },
                &[
                    "Persist(h1 proposed)",
                    "ExecuteBlock(h1)",
                    "SendProposal(h1,to3)",
                ],
                "proposed",
            ),
            row("own exec", executed_ok, &[], "proposed"),
            row("ACK from 2", |c| vote(2, c), &[], "proposed"),
            row(
                "resend to 3 and 4 (with the earlier reset)",
                |_| Input::Tick { now_ms: 550 },
                &["SendReset(h1)", "SendProposal(h1,to2)"],
                "proposed",
            ),
            row(
                "round timeout",
                |_| Input::Tick { now_ms: 2300 },
                &["SendReset(h1)", "BuildBlock"],
                "building",
            ),
        ],
    );
}

#[test]
fn leader_empty_blocks_only_when_configured() {
    let mut cfg = config(Role::Leader, Some(1));
    cfg.empty_block_timeout_ms = 500;
    let mut e = Engine::new(cfg, CommittedState::genesis(1, genesis_app())).unwrap();
    run(
        &mut e,
        vec![
            row("start", |_| Input::Tick { now_ms: 1000 }, &[], "idle"),
            row("before", |_| Input::Tick { now_ms: 1499 }, &[], "idle"),
            row(
                "empty block timeout",
                |_| Input::Tick { now_ms: 1500 },
                &["BuildBlock"],
                "building",
            ),
            row(
                "empty block",
                |_| Input::BlockBuilt { txs: vec![] },
                &[
                    "Persist(h1 proposed)",
                    "ExecuteBlock(h1)",
                    "SendProposal(h1,to3)",
                ],
                "proposed",
            ),
        ],
    );
    // A full mempool proposes at once.
    let mut e = leader();
    run(
        &mut e,
        vec![
            row("start", |_| Input::Tick { now_ms: 5 }, &[], "idle"),
            row(
                "full block waiting",
                |_| Input::MempoolStatus {
                    txs: 500,
                    bytes: 63 * 1024,
                },
                &["BuildBlock"],
                "building",
            ),
        ],
    );
}

#[test]
fn leader_resets_a_block_voted_before_its_restart() {
    // A block this leader signed before a crash, which validator 2 ACKed;
    // the leader's promise record names it.
    let old = block1(5, 1);
    let mut e = leader();
    e.restore(&Promise {
        height: 1,
        vote: None,
        proposed: vec![old.hash()],
        newest_ts: 0,
        term: 0,
        block: None,
        credential: None,
    })
    .unwrap();
    let (old_a, old_b) = (old.clone(), old.clone());
    run(
        &mut e,
        vec![
            row("start", |_| Input::Tick { now_ms: 10_000 }, &[], "idle"),
            row(
                "txs",
                |_| Input::MempoolStatus { txs: 1, bytes: 100 },
                &[],
                "idle",
            ),
            row(
                "propose timeout",
                |_| Input::Tick { now_ms: 10_100 },
                &["BuildBlock"],
                "building",
            ),
            row(
                "built: the record keeps both proposals",
                |_| Input::BlockBuilt { txs: vec![tx(1)] },
                &[
                    "Persist(h1 proposed)",
                    "ExecuteBlock(h1)",
                    "SendProposal(h1,to3)",
                ],
                "proposed",
            ),
            row(
                "validator 2 is locked on the old block: reset it",
                move |_| Input::VoteReceived {
                    from: None,
                    vote: Vote::ack(&key(2), CHAIN, 1, old_a.hash(), app_of(&old_a)),
                    best_header: None,
                },
                &["SendReset(h1)"],
                "proposed",
            ),
            row(
                "the same vote again at once: one reset per resend interval",
                move |_| Input::VoteReceived {
                    from: None,
                    vote: Vote::ack(&key(2), CHAIN, 1, old_b.hash(), app_of(&old_b)),
                    best_header: None,
                },
                &[],
                "proposed",
            ),
            row(
                "a vote for a block this leader never proposed: no reset signed",
                |_| Input::VoteReceived {
                    from: None,
                    vote: Vote::ack(&key(3), CHAIN, 1, Hash::digest(b"never"), genesis_app()),
                    best_header: None,
                },
                &[],
                "proposed",
            ),
        ],
    );
}

#[test]
fn leader_restart_reannounces_and_catches_up() {
    let b = block1(5, 1);
    let committed = CommittedState {
        height: 1,
        block_hash: b.hash(),
        app_hash: app_of(&b),
        last: Some(LastCommit {
            header: b.header().clone(),
            leader_sig: *b.leader_sig(),
            commit_info: ci(&b, &[1, 2, 3], app_of(&b)),
        }),
    };
    let mut e = Engine::new(config(Role::Leader, Some(1)), committed.clone()).unwrap();
    let out = e.handle(Input::Tick { now_ms: 100 });
    assert_eq!(
        out.iter().filter_map(kind).collect::<Vec<_>>(),
        ["Announce(h1,all)"]
    );
    // A vote for height 1 from a lagging validator: re-announce, rate-limited.
    let v = Vote::ack(&key(3), CHAIN, 1, b.hash(), app_of(&b));
    let out = e.handle(Input::VoteReceived {
        from: None,
        vote: v.clone(),
        best_header: None,
    });
    assert_eq!(
        out.iter().filter_map(kind).collect::<Vec<_>>(),
        ["Announce(h1,some)"]
    );
    assert!(
        e.handle(Input::VoteReceived {
            from: None,
            vote: v,
            best_header: None
        })
        .iter()
        .all(|o| kind(o).is_none())
    );

    // A leader restarted from an older store (a fresh home): a validator
    // NACKs its proposal with its best header, an unsigned hint the leader
    // does not act on; the proven status of a peer makes it reset and sync.
    let mut e = leader();
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    e.handle(Input::Tick { now_ms: 100 });
    let out = e.handle(Input::BlockBuilt { txs: vec![tx(7)] });
    let Some(Output::ExecuteBlock { block: mine }) = out.get(1) else {
        panic!("{out:?}")
    };
    let later = Block::new_signed(
        header(3, Hash::digest(b"x"), Hash::digest(b"y"), 50),
        vec![],
        &key(1),
    );
    let out = e.handle(Input::VoteReceived {
        from: None,
        vote: Vote::nack(
            &key(2),
            CHAIN,
            1,
            mine.hash(),
            "height already committed",
            &[],
        ),
        best_header: Some(later.header().clone()),
    });
    assert_eq!(out.iter().filter_map(kind).count(), 0, "{out:?}");
    assert_eq!(e.status().step.as_str(), "proposed");
    let out = e.handle(Input::PeerStatus {
        peer: key(2).public(),
        height: 3,
        hash: later.hash(),
    });
    assert_eq!(
        out.iter().filter_map(kind).collect::<Vec<_>>(),
        ["SendReset(h1)", "RequestBlocks(1..3)"]
    );
    assert_eq!(e.status().step.as_str(), "syncing");
}

#[test]
fn validator_votes_locks_and_commits() {
    let mut e = validator(2);
    let b1 = block1(10, 1);
    let b2 = block1(11, 1);
    let (b1a, b1b, b1c, b1d) = (b1.clone(), b1.clone(), b1.clone(), b1.clone());
    let (b2a, b2b, b2c, b2d) = (b2.clone(), b2.clone(), b2.clone(), b2.clone());
    run(
        &mut e,
        vec![
            row("start", |_| Input::Tick { now_ms: 1000 }, &[], "idle"),
            row(
                "forged proposal (signed by validator 3)",
                |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(3).public(),
                    block: block1(10, 3),
                },
                &[],
                "idle",
            ),
            row(
                "proposal",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: b1a.clone(),
                },
                &["ExecuteBlock(h1)"],
                "idle",
            ),
            row(
                "executed: ACK, recorded before it is sent",
                executed_ok,
                &["Persist(h1 ack)", "SendVote(ack h1)"],
                "voted",
            ),
            row(
                "same proposal again: vote re-sent",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: b1b.clone(),
                },
                &["SendVote(ack h1)"],
                "voted",
            ),
            row(
                "vote resend timer",
                |_| Input::Tick { now_ms: 1300 },
                &["SendVote(ack h1)"],
                "voted",
            ),
            row(
                "another block, no reset: answer with the locked vote",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: b2a.clone(),
                },
                &["SendVote(ack h1)"],
                "voted",
            ),
            row(
                "forged reset",
                move |_| Input::ResetReceived {
                    term: 0,
                    height: 1,
                    block_hash: b1c.hash(),
                    leader_sig: key(3).sign_digest(&sign::reset_digest(CHAIN, 0, 1, &b1c.hash())),
                },
                &[],
                "voted",
            ),
            row(
                "leader's reset of the first block: unlocked, the newest proposal is taken up",
                move |_| Input::ResetReceived {
                    term: 0,
                    height: 1,
                    block_hash: b1d.hash(),
                    leader_sig: key(1).sign_digest(&sign::reset_digest(CHAIN, 0, 1, &b1d.hash())),
                },
                &["ExecuteBlock(h1)"],
                "idle",
            ),
            row(
                "second block re-sent: already being executed",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: b2b.clone(),
                },
                &[],
                "idle",
            ),
            row(
                "executed: ACK, recorded before it is sent",
                executed_ok,
                &["Persist(h1 ack)", "SendVote(ack h1)"],
                "voted",
            ),
            row(
                "announce with only 2 votes: ignored",
                move |_| Input::CommitAnnounced {
                    from: Some(key(1).public()),
                    header: b2c.header().clone(),
                    leader_sig: *b2c.leader_sig(),
                    commit_info: ci(&b2c, &[1, 2], app_of(&b2c)),
                },
                &[],
                "voted",
            ),
            row(
                "announce with a quorum: commit the staged state",
                move |_| Input::CommitAnnounced {
                    from: Some(key(1).public()),
                    header: b2d.header().clone(),
                    leader_sig: *b2d.leader_sig(),
                    commit_info: ci(&b2d, &[1, 3, 4], app_of(&b2d)),
                },
                &["Commit(h1)"],
                "committing",
            ),
            row(
                "store committed",
                move |c| Input::Committed {
                    height: 1,
                    block_hash: c.block().hash(),
                    app_hash: app_of(&c.block()),
                },
                &[],
                "idle",
            ),
            row(
                "the reset block again (height committed): NACK with best header",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: b1.clone(),
                },
                &["SendVote(nack h1 +best)"],
                "idle",
            ),
        ],
    );
    assert_eq!(e.status().committed_hash, b2.hash());
}

#[test]
fn validator_nacks_bad_blocks() {
    let bad_prev = Block::new_signed(
        header(1, Hash::digest(b"other"), genesis_app(), 1),
        vec![],
        &key(1),
    );
    let bad_root = Block::from_parts(
        block1(3, 1).header().clone(),
        vec![],
        *block1(3, 1).leader_sig(),
    );
    let mut e = validator(3);
    run(
        &mut e,
        vec![
            row(
                "wrong prev hash",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: bad_prev.clone(),
                },
                &["Persist(h1 nack)", "SendVote(nack h1)"],
                "voted",
            ),
            // The tx root is outside the signed hash? No: it is in the header,
            // but these txs do not match it.
            row(
                "txs do not match the tx root",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: bad_root.clone(),
                },
                &["Persist(h1 nack)", "SendVote(nack h1)"],
                "voted",
            ),
            row(
                "good block after NACKs (a NACK does not lock)",
                |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: block1(4, 1),
                },
                &["ExecuteBlock(h1)"],
                "voted",
            ),
            row(
                "invalid tx found by the app",
                |c| Input::BlockExecuted {
                    height: 1,
                    block_hash: c.block().hash(),
                    result: Err(ExecError {
                        bad_txs: vec![tx(1).hash()],
                        reason: "bad nonce".into(),
                    }),
                },
                &["Persist(h1 nack)", "SendVote(nack h1)"],
                "voted",
            ),
        ],
    );
}

#[test]
fn validator_halts_on_app_hash_mismatch_and_stays_halted() {
    let b = block1(10, 1);
    let (ba, bb) = (b.clone(), b.clone());
    let mut e = validator(4);
    run(
        &mut e,
        vec![
            row(
                "proposal",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: ba.clone(),
                },
                &["ExecuteBlock(h1)"],
                "idle",
            ),
            row(
                "executed to a different app hash",
                |c| Input::BlockExecuted {
                    height: 1,
                    block_hash: c.block().hash(),
                    result: Ok(Hash::digest(b"mine")),
                },
                &["Persist(h1 ack)", "SendVote(ack h1)"],
                "voted",
            ),
            row(
                "the quorum committed another app hash",
                move |_| Input::CommitAnnounced {
                    from: None,
                    header: bb.header().clone(),
                    leader_sig: *bb.leader_sig(),
                    commit_info: ci(&bb, &[1, 2, 3], app_of(&bb)),
                },
                &["Halt"],
                "halted",
            ),
            row(
                "halted: nothing more",
                |_| Input::Tick { now_ms: 99_999 },
                &[],
                "halted",
            ),
        ],
    );
    assert!(e.halted().unwrap().contains("app hash mismatch"));
}

#[test]
fn sentry_follows_announces_through_block_sync() {
    let b = block1(10, 1);
    let (ba, bb) = (b.clone(), b.clone());
    let mut e = Engine::new(
        config(Role::Sentry, None),
        CommittedState::genesis(1, genesis_app()),
    )
    .unwrap();
    run(
        &mut e,
        vec![
            row(
                "proposals are not for sentries",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: ba.clone(),
                },
                &[],
                "idle",
            ),
            row(
                "announce: fetch the block",
                move |_| Input::CommitAnnounced {
                    from: Some(key(2).public()),
                    header: bb.header().clone(),
                    leader_sig: *bb.leader_sig(),
                    commit_info: ci(&bb, &[1, 2, 3], app_of(&bb)),
                },
                &["RequestBlocks(1..1)"],
                "syncing",
            ),
            row(
                "fetched, but its txs do not match the header: refused",
                |_| {
                    let b = block1(10, 1);
                    let cut = Block::from_parts(b.header().clone(), vec![], *b.leader_sig());
                    Input::BlockFetched {
                        from: Some(key(2).public()),
                        block: cut,
                        commit_info: ci(&b, &[1, 2, 4], app_of(&b)),
                    }
                },
                &[],
                "syncing",
            ),
            row(
                "asked again once peer 2's penalty is over",
                |_| Input::Tick { now_ms: 1000 },
                &["RequestBlocks(1..1)"],
                "syncing",
            ),
            row(
                "fetched (its commit info is ignored: the announce's was verified)",
                |_| {
                    let b = block1(10, 1);
                    Input::BlockFetched {
                        from: Some(key(2).public()),
                        block: b.clone(),
                        commit_info: ci(&b, &[2], app_of(&b)),
                    }
                },
                &["ExecuteBlock(h1)"],
                "syncing",
            ),
            row(
                "executed to the quorum's app hash",
                executed_ok,
                &["Commit(h1)"],
                "committing",
            ),
            row(
                "committed",
                |c| Input::Committed {
                    height: 1,
                    block_hash: c.block().hash(),
                    app_hash: app_of(&c.block()),
                },
                &[],
                "idle",
            ),
        ],
    );
    assert_eq!(e.status().committed_height, 1);
}

#[test]
fn sync_refuses_blocks_without_a_valid_commit() {
    let mut e = Engine::new(
        config(Role::Sentry, None),
        CommittedState::genesis(1, genesis_app()),
    )
    .unwrap();
    let forged = block1(10, 3);
    run(
        &mut e,
        vec![
            row(
                "a peer claims height 1",
                |_| Input::PeerStatus {
                    peer: key(2).public(),
                    height: 1,
                    hash: Hash::ZERO,
                },
                &["RequestBlocks(1..1)"],
                "syncing",
            ),
            row(
                "served with 2 of 4 votes: refused",
                |_| {
                    let b = block1(10, 1);
                    Input::BlockFetched {
                        from: Some(key(2).public()),
                        block: b.clone(),
                        commit_info: ci(&b, &[1, 2], app_of(&b)),
                    }
                },
                &[],
                "syncing",
            ),
            row(
                "peer 2 is penalised",
                |_| Input::Tick { now_ms: 999 },
                &[],
                "syncing",
            ),
            row(
                "asked again",
                |_| Input::Tick { now_ms: 1000 },
                &["RequestBlocks(1..1)"],
                "syncing",
            ),
            row(
                "served a block signed by a validator, not the leader: refused",
                move |_| Input::BlockFetched {
                    from: Some(key(2).public()),
                    block: forged.clone(),
                    commit_info: ci(&forged, &[1, 2, 3], app_of(&forged)),
                },
                &[],
                "syncing",
            ),
            row(
                "a failure while it backs off (until 3000) is the same incident",
                |_| Input::FetchFailed {
                    from: Some(key(2).public()),
                    height: 1,
                },
                &[],
                "syncing",
            ),
            row(
                "asked again after the longer back-off",
                |_| Input::Tick { now_ms: 3000 },
                &["RequestBlocks(1..1)"],
                "syncing",
            ),
            row(
                "not found, the third failure: peer 2's claim is forgotten",
                |_| Input::FetchFailed {
                    from: Some(key(2).public()),
                    height: 1,
                },
                &[],
                "idle",
            ),
        ],
    );
    assert_eq!(e.status().committed_height, 0);
}

#[test]
fn validator_ahead_proposal_triggers_sync_then_votes() {
    // Chain: b1 <- b2; the validator is at genesis and gets the proposal of 2.
    let b1 = block1(10, 1);
    let b2 = Block::new_signed(header(2, b1.hash(), app_of(&b1), 20), vec![], &key(1));
    let (b1a, b2a) = (b1.clone(), b2.clone());
    let mut e = validator(2);
    run(
        &mut e,
        vec![
            row(
                "proposal for height 2",
                move |_| Input::ProposalReceived {
                    term: 0,
                    credential: None,
                    from: key(1).public(),
                    block: b2a.clone(),
                },
                &["RequestBlocks(1..1)"],
                "syncing",
            ),
            row(
                "block 1 fetched",
                move |_| Input::BlockFetched {
                    from: Some(key(1).public()),
                    block: b1a.clone(),
                    commit_info: ci(&b1a, &[1, 3, 4], app_of(&b1a)),
                },
                &["ExecuteBlock(h1)"],
                "syncing",
            ),
            row("executed", executed_ok, &["Commit(h1)"], "committing"),
            row(
                "committed: the kept proposal is processed",
                |c| Input::Committed {
                    height: 1,
                    block_hash: c.block().hash(),
                    app_hash: app_of(&c.block()),
                },
                &["ExecuteBlock(h2)"],
                "idle",
            ),
        ],
    );
}

#[test]
fn engine_refuses_bad_configs() {
    let g = CommittedState::genesis(1, genesis_app());
    assert!(Engine::new(config(Role::Leader, Some(2)), g.clone()).is_err());
    assert!(Engine::new(config(Role::Leader, None), g.clone()).is_err());
    assert!(Engine::new(config(Role::Validator, Some(9)), g.clone()).is_err());
    assert!(Engine::new(config(Role::Validator, Some(1)), g.clone()).is_err());
    assert!(Engine::new(config(Role::Sentry, None), g).is_ok());
}

/// A chain of `n` blocks from genesis, leader-signed, each with the commit
/// info of validators 1, 2 and 3.
fn chain(n: u64) -> Vec<(Block, CommitInfo)> {
    let mut out: Vec<(Block, CommitInfo)> = Vec::new();
    let (mut prev, mut prev_app) = (Hash::ZERO, genesis_app());
    for h in 1..=n {
        let b = Block::new_signed(header(h, prev, prev_app, 10 * h), vec![tx(h)], &key(1));
        let c = ci(&b, &[1, 2, 3], app_of(&b));
        (prev, prev_app) = (b.hash(), c.app_hash);
        out.push((b, c));
    }
    out
}

#[test]
fn proof_checker_finds_the_first_bad_block_of_a_range() {
    let checker = ProofChecker::new(&config(Role::Sentry, None));
    let good = chain(5);
    assert_eq!(
        checker.check_range(1, &good),
        RangeCheck { good: 5, bad: None }
    );
    assert_eq!(checker.check_range(1, &[]).good, 0);
    // Asked from height 2, got 1.
    assert_eq!(checker.check_range(2, &good).good, 0);
    let bad_at = |i: usize, r: Vec<(Block, CommitInfo)>| {
        let c = checker.check_range(1, &r);
        assert_eq!(c.good, i, "{c:?}");
        assert!(c.bad.is_some());
    };
    // A forged vote signature in block 4.
    let mut r = good.clone();
    r[3].1.votes[1].signature.0[10] ^= 1;
    bad_at(3, r);
    // Block 3 short of the quorum.
    let mut r = good.clone();
    r[2].1 = ci(&r[2].0, &[1, 2], app_of(&r[2].0));
    bad_at(2, r);
    // Block 2 signed by a validator, not the leader.
    let mut r = good.clone();
    let hd = r[1].0.header().clone();
    r[1].0 = Block::new_signed(hd, r[1].0.txs().to_vec(), &key(2));
    bad_at(1, r);
    // Block 5 does not extend block 4.
    let mut r = good.clone();
    r[4] = chain(5)[4].clone();
    let mut hd = r[4].0.header().clone();
    hd.prev_hash = Hash::digest(b"elsewhere");
    let b = Block::new_signed(hd, r[4].0.txs().to_vec(), &key(1));
    r[4] = (b.clone(), ci(&b, &[1, 2, 3], app_of(&b)));
    bad_at(4, r);
    // Block 1's txs do not match its tx root.
    let mut r = good.clone();
    r[0].0 = Block::from_parts(r[0].0.header().clone(), vec![], *r[0].0.leader_sig());
    bad_at(0, r);
    // A forged tx signature in block 3.
    let mut r = good;
    let mut p = r[2].0.txs()[0].to_proto();
    p.signature[5] ^= 1;
    let forged = kite_types::Tx::from_proto(p).unwrap();
    r[2].0 = Block::from_parts(r[2].0.header().clone(), vec![forged], *r[2].0.leader_sig());
    bad_at(2, r);
}

#[test]
fn sync_fast_path_applies_checked_ranges_in_batches() {
    let mut e = Engine::new(
        config(Role::Sentry, None),
        CommittedState::genesis(1, genesis_app()),
    )
    .unwrap();
    let c = chain(3);
    let (first, rest) = (c[..1].to_vec(), c[1..].to_vec());
    let hashes: Vec<(u64, Hash, Hash)> = c
        .iter()
        .map(|(b, ci)| (b.height(), b.hash(), ci.app_hash))
        .collect();
    let (h1, h23) = (hashes[..1].to_vec(), hashes[1..].to_vec());
    run(
        &mut e,
        vec![
            row(
                "a peer claims height 3",
                |_| Input::PeerStatus {
                    peer: key(2).public(),
                    height: 3,
                    hash: Hash::ZERO,
                },
                &["RequestBlocks(1..3)"],
                "syncing",
            ),
            row(
                "block 1 checked: applied at once",
                move |_| Input::RangeFetched {
                    from: Some(key(2).public()),
                    blocks: first.clone(),
                },
                &["ApplyBlocks(h1..h1)"],
                "committing",
            ),
            row(
                "blocks 2 and 3 checked while 1 is applied: they follow it",
                move |_| Input::RangeFetched {
                    from: Some(key(2).public()),
                    blocks: rest.clone(),
                },
                &["ApplyBlocks(h2..h3)"],
                "committing",
            ),
            row(
                "block 1 applied",
                move |_| Input::BlocksApplied {
                    applied: h1.clone(),
                    failed: None,
                },
                &[],
                "committing",
            ),
            row(
                "blocks 2 and 3 applied",
                move |_| Input::BlocksApplied {
                    applied: h23.clone(),
                    failed: None,
                },
                &[],
                "idle",
            ),
        ],
    );
    assert_eq!(e.status().committed_height, 3);
    assert_eq!(e.status().committed_hash, c[2].0.hash());
}

#[test]
fn sync_fast_path_halts_on_a_block_invalid_here_or_on_another_chain() {
    let c = chain(2);
    let sentry = || {
        Engine::new(
            config(Role::Sentry, None),
            CommittedState::genesis(1, genesis_app()),
        )
        .unwrap()
    };
    // The store could not apply block 2 (another app hash here).
    let mut e = sentry();
    e.handle(Input::RangeFetched {
        from: Some(key(2).public()),
        blocks: c.clone(),
    });
    let out = e.handle(Input::BlocksApplied {
        applied: vec![(1, c[0].0.hash(), c[0].1.app_hash)],
        failed: Some((2, c[1].0.hash(), "app hash mismatch".into())),
    });
    assert!(matches!(out.last(), Some(Output::Halt { .. })), "{out:?}");
    assert_eq!(e.status().committed_height, 1);
    assert!(e.halted().unwrap().contains("invalid here"));
    assert!(
        !e.halted().unwrap().contains("  "),
        "one line, single spaces"
    );
    // A checked block 1 that does not extend this node's genesis.
    let mut e = Engine::new(
        config(Role::Sentry, None),
        CommittedState::genesis(1, Hash::digest(b"another genesis state")),
    )
    .unwrap();
    let out = e.handle(Input::RangeFetched {
        from: Some(key(2).public()),
        blocks: c[..1].to_vec(),
    });
    assert!(matches!(out.last(), Some(Output::Halt { .. })), "{out:?}");
    assert!(e.halted().unwrap().contains("another chain"));
    assert!(
        !e.halted().unwrap().contains("  "),
        "one line, single spaces"
    );
}

/// The leader's signed reset of `b` at height 1.
fn reset_of(b: &Block) -> Input {
    Input::ResetReceived {
        term: 0,
        height: 1,
        block_hash: b.hash(),
        leader_sig: key(1).sign_digest(&sign::reset_digest(CHAIN, 0, 1, &b.hash())),
    }
}

fn proposal(b: &Block) -> Input {
    Input::ProposalReceived {
        term: 0,
        credential: None,
        from: key(1).public(),
        block: b.clone(),
    }
}

fn executed(b: &Block) -> Input {
    Input::BlockExecuted {
        height: 1,
        block_hash: b.hash(),
        result: Ok(app_of(b)),
    }
}

fn kinds(out: &[Output]) -> Vec<String> {
    out.iter().filter_map(kind).collect()
}

/// Votes withheld from the leader for many rounds: the leader resets and
/// re-proposes every round; a validator must keep taking the newest
/// proposal (the per-height maps once filled up after 16 and it ignored the
/// leader for the rest of the height).
#[test]
fn validator_follows_twenty_reproposals_and_commits() {
    let mut e = validator(2);
    e.handle(Input::Tick { now_ms: 1000 });
    let rounds: Vec<Block> = (1..=21).map(|r| block1(100 * r, 1)).collect();
    for (r, b) in rounds.iter().enumerate() {
        assert_eq!(
            kinds(&e.handle(proposal(b))),
            ["ExecuteBlock(h1)"],
            "round {}",
            r + 1
        );
        assert_eq!(
            kinds(&e.handle(executed(b))),
            ["Persist(h1 ack)", "SendVote(ack h1)"],
            "round {}",
            r + 1
        );
        if r + 1 < rounds.len() {
            // The leader heard nothing: round timeout, reset.
            assert!(kinds(&e.handle(reset_of(b))).is_empty());
            assert_eq!(
                e.status().step.as_str(),
                "idle",
                "round {}: unlocked",
                r + 1
            );
        }
    }
    // A replay of an abandoned proposal is ignored, reset or not.
    assert!(kinds(&e.handle(proposal(&rounds[3]))).is_empty());
    let last = rounds.last().unwrap();
    let out = e.handle(Input::CommitAnnounced {
        from: Some(key(1).public()),
        header: last.header().clone(),
        leader_sig: *last.leader_sig(),
        commit_info: ci(last, &[1, 2, 3], app_of(last)),
    });
    assert_eq!(kinds(&out), ["Commit(h1)"]);
}

/// The same from the leader's side: 20 round timeouts with no vote, then
/// the votes come and the height commits.
#[test]
fn leader_commits_after_twenty_round_timeouts() {
    let mut e = leader();
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    let mut now = 100;
    let mut block = None;
    for round in 1..=21 {
        let out = e.handle(Input::Tick { now_ms: now });
        assert!(
            kinds(&out).contains(&"BuildBlock".to_string()),
            "round {round}: {out:?}"
        );
        let out = e.handle(Input::BlockBuilt { txs: vec![tx(1)] });
        let b = out
            .iter()
            .find_map(|o| match o {
                Output::SendProposal { block, .. } => Some(block.clone()),
                _ => None,
            })
            .expect("proposed");
        e.handle(Input::BlockExecuted {
            height: 1,
            block_hash: b.hash(),
            result: Ok(app_of(&b)),
        });
        block = Some(b);
        // Nothing heard until the round times out.
        now += 2000;
    }
    let b = block.unwrap();
    for v in [2, 3] {
        e.handle(Input::VoteReceived {
            from: None,
            vote: Vote::ack(&key(v), CHAIN, 1, b.hash(), app_of(&b)),
            best_header: None,
        });
    }
    assert_eq!(e.status().step.as_str(), "committing");
    assert_eq!(e.status().round, 21);
}

/// One validator's votes cost the leader bounded work and never stop it
/// proposing: a signed vote for a far-future height, a NACK with an
/// unsigned far-future best header, votes for blocks it never proposed.
#[test]
fn a_byzantine_validator_cannot_stop_the_leader() {
    let mut e = leader();
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    let far = Block::new_signed(
        header(5000, Hash::digest(b"x"), Hash::digest(b"y"), 50),
        vec![],
        &key(1),
    );
    let spam = |i: u64| -> Vec<Input> {
        let random = Hash::digest(&i.to_le_bytes());
        vec![
            Input::VoteReceived {
                from: None,
                vote: Vote::ack(&key(4), CHAIN, 5000 + i, random, random),
                best_header: None,
            },
            Input::VoteReceived {
                from: None,
                vote: Vote::nack(&key(4), CHAIN, 1, random, "height already committed", &[]),
                best_header: Some(far.header().clone()),
            },
            Input::VoteReceived {
                from: None,
                vote: Vote::ack(&key(4), CHAIN, 1, random, random),
                best_header: None,
            },
        ]
    };
    for i in 0..40 {
        for input in spam(i) {
            assert!(kinds(&e.handle(input)).is_empty(), "spam {i}");
        }
    }
    assert_eq!(e.status().sync_target, 0, "no claimed height was believed");
    let out = e.handle(Input::Tick { now_ms: 100 });
    assert_eq!(kinds(&out), ["BuildBlock"]);
    let out = e.handle(Input::BlockBuilt { txs: vec![tx(1)] });
    assert!(kinds(&out).contains(&"SendProposal(h1,to3)".to_string()));
    for i in 40..80 {
        for input in spam(i) {
            assert!(kinds(&e.handle(input)).is_empty(), "spam {i}");
        }
    }
    assert_eq!(e.status().step.as_str(), "proposed");
}

/// A validator that ACKed a block and restarted is still locked on it: it
/// answers another proposal at that height with the same vote until the
/// leader's reset releases it.
#[test]
fn validator_restarted_mid_height_does_not_vote_for_a_second_block() {
    let b1 = block1(10, 1);
    let b2 = block1(20, 1);
    let mut e = validator(2);
    e.handle(Input::Tick { now_ms: 1000 });
    e.handle(proposal(&b1));
    let out = e.handle(executed(&b1));
    let promise = out
        .iter()
        .find_map(|o| match o {
            Output::Persist { promise } => Some(promise.clone()),
            _ => None,
        })
        .expect("the vote is recorded");
    let sent = out
        .iter()
        .find_map(|o| match o {
            Output::SendVote { vote, .. } => Some(vote.clone()),
            _ => None,
        })
        .expect("the vote is sent");
    assert_eq!(promise.vote.as_ref(), Some(&sent));

    // Restart: a new engine on the same store, given the record back.
    let mut e = validator(2);
    e.restore(&promise).unwrap();
    assert_eq!(e.status().locked_on, Some(b1.hash()));
    let out = e.handle(Input::Tick { now_ms: 5000 });
    assert_eq!(kinds(&out), ["SendVote(ack h1)"], "the vote is re-sent");
    let out = e.handle(proposal(&b2));
    assert_eq!(
        kinds(&out),
        ["SendVote(ack h1)"],
        "answered with the old vote"
    );
    let again = out.iter().find_map(|o| match o {
        Output::SendVote { vote, .. } => Some(vote.clone()),
        _ => None,
    });
    assert_eq!(again, Some(sent));
    // The leader's reset releases it; it takes the newest proposal up.
    assert_eq!(kinds(&e.handle(reset_of(&b1))), ["ExecuteBlock(h1)"]);
    assert_eq!(
        kinds(&e.handle(executed(&b2))),
        ["Persist(h1 ack)", "SendVote(ack h1)"]
    );
}

/// A store older than the promise record is refused, naming the way out;
/// a record of a committed height is fulfilled; another key's record is
/// refused.
#[test]
fn restore_refuses_a_store_older_than_the_promise() {
    let mut e = leader();
    let err = e
        .restore(&Promise {
            height: 7,
            vote: None,
            proposed: vec![Hash::digest(b"p")],
            newest_ts: 0,
            term: 0,
            block: None,
            credential: None,
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(
        err,
        kite_consensus::EngineError::StoreBehind {
            tip: 0,
            promised: 7,
            ..
        }
    ));
    assert!(
        msg.contains("fresh home") && msg.contains("height 7"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));

    let b = block1(5, 1);
    let committed = CommittedState {
        height: 1,
        block_hash: b.hash(),
        app_hash: app_of(&b),
        last: Some(LastCommit {
            header: b.header().clone(),
            leader_sig: *b.leader_sig(),
            commit_info: ci(&b, &[1, 2, 3], app_of(&b)),
        }),
    };
    let mut v = Engine::new(config(Role::Validator, Some(3)), committed).unwrap();
    let fulfilled = Promise {
        height: 1,
        vote: Some(Vote::ack(&key(3), CHAIN, 1, b.hash(), app_of(&b))),
        proposed: vec![],
        newest_ts: 0,
        term: 0,
        block: None,
        credential: None,
    };
    v.restore(&fulfilled).unwrap();
    assert_eq!(v.status().locked_on, None);
    let foreign = Promise {
        height: 2,
        vote: Some(Vote::ack(&key(4), CHAIN, 2, b.hash(), app_of(&b))),
        proposed: vec![],
        newest_ts: 0,
        term: 0,
        block: None,
        credential: None,
    };
    assert!(matches!(
        v.restore(&foreign),
        Err(kite_consensus::EngineError::ForeignPromise { .. })
    ));
}

/// A validator's votes cost the leader bounded signature checks: a vote
/// relayed by another peer than its signer is not checked at all, and after
/// four bad signatures at a height a validator's votes are ignored there.
#[test]
fn leader_checks_a_bounded_number_of_bad_votes() {
    let mut e = leader();
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    e.handle(Input::Tick { now_ms: 100 });
    let out = e.handle(Input::BlockBuilt { txs: vec![tx(1)] });
    let b = out
        .iter()
        .find_map(|o| match o {
            Output::ExecuteBlock { block } => Some(block.clone()),
            _ => None,
        })
        .unwrap();
    e.handle(executed(&b));
    let good = |i: u8| Vote::ack(&key(i), CHAIN, 1, b.hash(), app_of(&b));
    let feed = |e: &mut Engine, from: u8, vote: Vote| {
        e.handle(Input::VoteReceived {
            from: Some(key(from).public()),
            vote,
            best_header: None,
        })
    };
    // Validator 3's vote relayed by 4: ignored.
    assert!(kinds(&feed(&mut e, 4, good(3))).is_empty());
    for _ in 0..4 {
        let mut forged = good(2);
        forged.signature.0[7] ^= 1;
        assert!(kinds(&feed(&mut e, 2, forged)).is_empty());
    }
    // Validator 2 used up its checks at this height: even its good vote is
    // ignored; 3 (from itself) counts; 4 makes the quorum.
    assert!(kinds(&feed(&mut e, 2, good(2))).is_empty());
    assert!(kinds(&feed(&mut e, 3, good(3))).is_empty());
    assert_eq!(e.status().step.as_str(), "proposed");
    assert_eq!(kinds(&feed(&mut e, 4, good(4))), ["Commit(h1)"]);
}

/// A restarted leader proposes later than its proposals before the restart,
/// even when its clock went back: validators ignore older proposals.
#[test]
fn restarted_leader_proposes_later_than_before_its_restart() {
    let mut e = leader();
    e.restore(&Promise {
        height: 1,
        vote: None,
        proposed: vec![Hash::digest(b"before")],
        newest_ts: 50_000,
        term: 0,
        block: None,
        credential: None,
    })
    .unwrap();
    e.handle(Input::Tick { now_ms: 10_000 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    e.handle(Input::Tick { now_ms: 10_100 });
    let out = e.handle(Input::BlockBuilt { txs: vec![tx(1)] });
    let (b, p) = (
        out.iter()
            .find_map(|o| match o {
                Output::SendProposal { block, .. } => Some(block.clone()),
                _ => None,
            })
            .unwrap(),
        out.iter()
            .find_map(|o| match o {
                Output::Persist { promise } => Some(promise.clone()),
                _ => None,
            })
            .unwrap(),
    );
    assert!(b.header().timestamp_ms > 50_000);
    assert_eq!(p.newest_ts, b.header().timestamp_ms);
    assert_eq!(p.proposed, vec![Hash::digest(b"before"), b.hash()]);
}

/// A newer proposal executed while the validator was locked on an older
/// one (both arrived before the lock) is voted on as soon as the leader's
/// reset releases the lock, not after the leader's next re-send.
#[test]
fn validator_votes_the_newer_block_executed_while_locked_once_released() {
    let b1 = block1(10, 1);
    let b2 = block1(20, 1);
    let mut e = validator(3);
    e.handle(Input::Tick { now_ms: 1000 });
    assert_eq!(kinds(&e.handle(proposal(&b1))), ["ExecuteBlock(h1)"]);
    assert_eq!(kinds(&e.handle(proposal(&b2))), ["ExecuteBlock(h1)"]);
    assert_eq!(
        kinds(&e.handle(executed(&b1))),
        ["Persist(h1 ack)", "SendVote(ack h1)"]
    );
    // Locked on b1: b2's result does not make a vote.
    assert!(kinds(&e.handle(executed(&b2))).is_empty());
    assert_eq!(e.status().locked_on, Some(b1.hash()));
    let out = e.handle(reset_of(&b1));
    assert_eq!(kinds(&out), ["Persist(h1 ack)", "SendVote(ack h1)"]);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::SendVote { vote, .. } if vote.block_hash == b2.hash()))
    );
    // A reset of a block kept aside drops it: it is never taken up.
    let b3 = block1(30, 1);
    let b4 = block1(40, 1);
    let mut e = validator(4);
    e.handle(Input::Tick { now_ms: 1000 });
    e.handle(proposal(&b3));
    e.handle(executed(&b3));
    assert_eq!(kinds(&e.handle(proposal(&b4))), ["SendVote(ack h1)"]);
    assert!(kinds(&e.handle(reset_of(&b4))).is_empty());
    assert!(kinds(&e.handle(reset_of(&b3))).is_empty());
    assert_eq!(e.status().step.as_str(), "idle");
}

// ---- Terms: leader failover ----------------------------------------------

/// The schedule of these tests (term 0: key 1).
fn schedule() -> LeaderSchedule {
    LeaderSchedule::new(&valset(), key(1).public())
}

/// The key number (1..=4) of the leader of `term`.
fn leader_of(term: u64) -> u8 {
    let l = schedule().leader(term);
    (1..=4).find(|i| key(*i).public() == l).unwrap()
}

/// A validator `i` whose leader timeout is 1 s (propose timeout 100 ms,
/// no empty blocks).
fn failover_validator(i: u8) -> Engine {
    let mut cfg = config(Role::Validator, Some(i));
    cfg.leader_timeout_ms = 1_000;
    cfg.leader_timeout_max_ms = 8_000;
    Engine::new(cfg, CommittedState::genesis(1, genesis_app())).unwrap()
}

/// Validator `i`'s term change to `term` at height 1, with its ACK of `b`
/// in `ack_term`.
fn change(i: u8, term: u64, acked: Option<(&Block, u64)>) -> TermChange {
    let acked = acked.map(|(b, t)| Acked {
        block_hash: b.hash(),
        term: t,
        timestamp_ms: b.header().timestamp_ms,
    });
    TermChange::new(&key(i), CHAIN, term, 1, acked)
}

fn change_input(c: TermChange, block: Option<&Block>) -> Input {
    Input::TermChangeReceived {
        from: Some(c.validator),
        change: c,
        block: block.cloned(),
    }
}

/// A block at height 1 proposed fresh in `term` by its leader.
fn block_in_term(term: u64, ts: u64) -> Block {
    let mut h = header(1, Hash::ZERO, genesis_app(), ts);
    h.term = term;
    Block::new_signed(h, vec![tx(1)], &key(leader_of(term)))
}

fn proposal_in(term: u64, b: &Block, cred: &Credential) -> Input {
    Input::ProposalReceived {
        from: key(leader_of(term)).public(),
        block: b.clone(),
        term,
        credential: Some(cred.clone()),
    }
}

fn term_of_persist(out: &[Output]) -> Option<u64> {
    out.iter().find_map(|o| match o {
        Output::Persist { promise } => Some(promise.term),
        _ => None,
    })
}

/// A validator that expects a block (its mempool holds txs) and hears
/// nothing for the leader timeout moves to the next term: it records the
/// term before it says so, and does not vote in it until a leader shows a
/// quorum's credential. An idle chain without empty blocks expects nothing.
#[test]
fn terms_a_silent_leader_is_left_and_the_term_recorded_first() {
    let mut idle = failover_validator(2);
    idle.handle(Input::Tick { now_ms: 0 });
    assert!(idle.handle(Input::Tick { now_ms: 100_000 }).is_empty());
    assert_eq!(idle.status().term, 0);

    let mut e = failover_validator(2);
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    // The leader has the propose timeout (100 ms) plus the leader timeout.
    assert!(kinds(&e.handle(Input::Tick { now_ms: 1_099 })).is_empty());
    let out = e.handle(Input::Tick { now_ms: 1_101 });
    let k = kinds(&out);
    assert_eq!(k[0], "Persist(h1)");
    assert_eq!(term_of_persist(&out), Some(1));
    assert!(k[1..].iter().all(|x| x == "SendTermChange(t1 h1)"), "{k:?}");
    assert!(k.len() >= 2);
    let st = e.status();
    assert_eq!((st.term, st.leader), (1, schedule().leader(1)));
    assert!(!st.term_settled);
    // The change is sent again every resend interval until a leader
    // settles the term; the next term comes after a doubled timeout.
    let again = kinds(&e.handle(Input::Tick { now_ms: 1_400 }));
    assert!(again.iter().all(|x| x == "SendTermChange(t1 h1)") && !again.is_empty());
    assert_eq!(e.status().term, 1);
    e.handle(Input::Tick { now_ms: 3_050 });
    assert_eq!(e.status().term, 1, "the second timeout is doubled");
    let out = e.handle(Input::Tick { now_ms: 3_200 });
    assert_eq!(term_of_persist(&out), Some(2));
}

/// Validators that leave the term, enough that the old term can no longer
/// reach a quorum, take the others along; the leader of the new term takes
/// over with a quorum of changes and proposes, unchanged, the block their
/// newest ACK is for; the commit holds votes of the new term.
#[test]
fn terms_the_next_leader_takes_over_and_proposes_the_acked_block_again() {
    let l1 = leader_of(1);
    let others: Vec<u8> = (2..=4).filter(|i| *i != l1).collect();
    let b = block1(10, 1);
    let mut e = failover_validator(l1);
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(proposal(&b));
    assert_eq!(
        kinds(&e.handle(executed(&b))),
        ["Persist(h1 ack)", "SendVote(ack h1)"]
    );
    // One change: not enough to leave term 0 (three of four can still
    // commit there).
    assert!(kinds(&e.handle(change_input(change(others[0], 1, None), None))).is_empty());
    assert_eq!(e.status().term, 0);
    // A second: term 0 can no longer commit; this node joins term 1 (it
    // leads it), sends its own change, and, holding three changes, takes
    // over with the block it ACKed itself (the newest ACK among them).
    let out = e.handle(change_input(change(others[1], 1, Some((&b, 0))), None));
    let k = kinds(&out);
    assert_eq!(k[0], "Persist(h1 ack)", "{k:?}");
    assert_eq!(term_of_persist(&out), Some(1));
    let sent = out
        .iter()
        .find_map(|o| match o {
            Output::SendProposal {
                block,
                term,
                credential,
                ..
            } => Some((block.clone(), *term, credential.clone())),
            _ => None,
        })
        .expect("the new leader proposes");
    assert_eq!(sent.0.hash(), b.hash(), "the ACKed block, unchanged");
    assert_eq!(sent.1, 1);
    let cred = sent.2.expect("with its credential");
    cred.verify(CHAIN, &valset(), Quorum::default()).unwrap();
    assert_eq!(cred.carried().map(|a| a.block_hash), Some(b.hash()));
    let st = e.status();
    assert!(st.term_settled && st.leader == key(l1).public());
    assert_eq!(st.proposal, Some(b.hash()));
    // Votes of term 0 no longer count; votes of term 1 commit it.
    let app = app_of(&b);
    let old = Vote::ack(&key(others[0]), CHAIN, 1, b.hash(), app);
    assert!(
        kinds(&e.handle(Input::VoteReceived {
            from: None,
            vote: old,
            best_header: None
        }))
        .is_empty()
    );
    let mut commit = None;
    for i in &others {
        let v = Vote::ack_in(&key(*i), CHAIN, 1, 1, b.hash(), app);
        for o in e.handle(Input::VoteReceived {
            from: None,
            vote: v,
            best_header: None,
        }) {
            if let Output::Commit { commit_info, .. } = o {
                commit = Some(commit_info);
            }
        }
    }
    let ci = commit.expect("a quorum of term 1 commits");
    assert_eq!(ci.term(), 1);
    ci.verify(CHAIN, 1, &b.hash(), &valset(), Quorum::default())
        .unwrap();
}

/// A validator locked on a block checks the credential: when it carries a
/// block, only that block may be proposed at that height (a new one is
/// ignored); when it carries none, the lock is released and a new block
/// gets the vote. Votes are cast in the new term.
#[test]
fn terms_the_credential_decides_what_may_be_proposed() {
    let l1 = leader_of(1);
    let voter = (2..=4).find(|i| *i != l1).unwrap();
    let third = (2..=4).find(|i| *i != l1 && *i != voter).unwrap();
    let b = block1(10, 1);
    let fresh = block_in_term(1, 20);
    let locked = || {
        let mut e = failover_validator(voter);
        e.handle(Input::Tick { now_ms: 0 });
        e.handle(proposal(&b));
        e.handle(executed(&b));
        assert_eq!(e.status().locked_on, Some(b.hash()));
        e
    };
    // Carries b: the fresh block is ignored, b gets a vote of term 1.
    let carrying = Credential {
        term: 1,
        height: 1,
        changes: vec![
            change(l1, 1, None),
            change(third, 1, Some((&b, 0))),
            change(1, 1, None),
        ],
    };
    let mut e = locked();
    let out = e.handle(proposal_in(1, &fresh, &carrying));
    assert_eq!(term_of_persist(&out), Some(1), "joined term 1 first");
    assert!(!kinds(&out).iter().any(|k| k.starts_with("ExecuteBlock")));
    assert_eq!(e.status().term, 1);
    let out = e.handle(proposal_in(1, &b, &carrying));
    let vote = out
        .iter()
        .find_map(|o| match o {
            Output::SendVote { vote, to, .. } => Some((vote.clone(), *to)),
            _ => None,
        })
        .expect("votes for the carried block");
    assert!(vote.0.ack && vote.0.block_hash == b.hash() && vote.0.term == 1);
    assert_eq!(vote.1, key(l1).public(), "to the leader of term 1");
    // Carries nothing: the lock on b is released, the fresh block runs.
    let empty = Credential {
        term: 1,
        height: 1,
        changes: vec![
            change(l1, 1, None),
            change(third, 1, None),
            change(1, 1, None),
        ],
    };
    let mut e = locked();
    let out = e.handle(proposal_in(1, &fresh, &empty));
    assert!(kinds(&out).contains(&"ExecuteBlock(h1)".to_string()));
    assert_eq!(e.status().locked_on, None);
    let out = e.handle(executed(&fresh));
    assert!(out.iter().any(|o| matches!(o,
        Output::SendVote { vote, .. } if vote.ack && vote.term == 1 && vote.block_hash == fresh.hash())));
}

/// The leader at height 1 with its proposal of `tx(1)` executed.
fn leader_with_executed_proposal() -> (Engine, Block) {
    with_executed_proposal(leader())
}

/// Leader `l` with its first proposal (one tx, built at 200 ms) executed.
fn with_executed_proposal(mut l: Engine) -> (Engine, Block) {
    l.handle(Input::Tick { now_ms: 0 });
    l.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    l.handle(Input::Tick { now_ms: 200 });
    let out = l.handle(Input::BlockBuilt { txs: vec![tx(1)] });
    let b = out
        .iter()
        .find_map(|o| match o {
            Output::SendProposal { block, .. } => Some(block.clone()),
            _ => None,
        })
        .unwrap();
    l.handle(executed(&b));
    (l, b)
}

/// What a validator refuses: a credential short of the quorum, one with a
/// forged change, one for another term; a reset or a proposal of a term it
/// left; a vote of another term at the leader.
#[test]
fn terms_bad_credentials_and_other_terms_are_ignored() {
    let l1 = leader_of(1);
    let voter = (2..=4).find(|i| *i != l1).unwrap();
    let third = (2..=4).find(|i| *i != l1 && *i != voter).unwrap();
    let fresh = block_in_term(1, 20);
    let good = Credential {
        term: 1,
        height: 1,
        changes: vec![
            change(l1, 1, None),
            change(third, 1, None),
            change(1, 1, None),
        ],
    };
    let mut short = good.clone();
    short.changes.pop();
    let mut forged = good.clone();
    forged.changes[2].signature = key(9).sign_digest(&Hash::digest(b"x"));
    let mut other = good.clone();
    other.term = 2;
    for (what, cred) in [("short", short), ("forged", forged), ("other term", other)] {
        let mut e = failover_validator(voter);
        e.handle(Input::Tick { now_ms: 0 });
        let out = e.handle(proposal_in(1, &fresh, &cred));
        assert!(kinds(&out).is_empty(), "{what}: {:?}", kinds(&out));
        assert_eq!(e.status().term, 0, "{what}");
    }
    // In term 1: term-0 proposals and resets are ignored.
    let mut e = failover_validator(voter);
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(proposal_in(1, &fresh, &good));
    assert_eq!(e.status().term, 1);
    let old = block1(30, 1);
    assert!(kinds(&e.handle(proposal(&old))).is_empty());
    assert!(kinds(&e.handle(reset_of(&fresh))).is_empty());
    // The leader of term 0 ignores votes of term 1.
    let (mut l, b) = leader_with_executed_proposal();
    for i in 2..=4 {
        let v = Vote::ack_in(&key(i), CHAIN, 1, 1, b.hash(), app_of(&b));
        let out = l.handle(Input::VoteReceived {
            from: None,
            vote: v,
            best_header: None,
        });
        assert!(!kinds(&out).iter().any(|k| k.starts_with("Commit")));
    }
}

/// A proven commit of a later term moves a node to that term (recorded);
/// a restarted node takes its term back from its promise record and never
/// goes back to an earlier one.
#[test]
fn terms_are_learned_from_commits_and_kept_across_restarts() {
    let l2 = leader_of(2);
    let b = block_in_term(2, 10);
    let voters: Vec<u8> = (1..=4).filter(|i| *i != l2).collect();
    let app = app_of(&b);
    let ci = CommitInfo {
        app_hash: app,
        votes: voters
            .iter()
            .map(|i| Vote::ack_in(&key(*i), CHAIN, 2, 1, b.hash(), app))
            .collect(),
    };
    let v = (1..=4).find(|i| *i != l2 && *i != 1).unwrap();
    let mut e = failover_validator(v);
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::CommitAnnounced {
        from: None,
        header: b.header().clone(),
        leader_sig: *b.leader_sig(),
        commit_info: ci.clone(),
    });
    assert_eq!(e.status().term, 2);
    // A commit whose votes are of an earlier term than its block is no
    // proof.
    let mut early = ci.clone();
    early.votes = voters
        .iter()
        .map(|i| Vote::ack_in(&key(*i), CHAIN, 1, 1, b.hash(), app))
        .collect();
    let mut f = failover_validator(v);
    f.handle(Input::Tick { now_ms: 0 });
    f.handle(Input::CommitAnnounced {
        from: None,
        header: b.header().clone(),
        leader_sig: *b.leader_sig(),
        commit_info: early,
    });
    assert_eq!(f.status().term, 0);
    // Restart with a record of term 5 at an earlier height: term 5 holds.
    let mut r = failover_validator(v);
    r.restore(&Promise {
        height: 0,
        vote: None,
        proposed: Vec::new(),
        newest_ts: 0,
        term: 5,
        block: None,
        credential: None,
    })
    .unwrap();
    let st = r.status();
    assert_eq!((st.term, st.term_settled), (5, false));
    // A proposal of term 3 (below) is not taken.
    let low = Credential {
        term: 3,
        height: 1,
        changes: (1..=3).map(|i| change(i, 3, None)).collect(),
    };
    r.handle(Input::Tick { now_ms: 0 });
    assert!(kinds(&r.handle(proposal_in(3, &block_in_term(3, 5), &low))).is_empty());
    assert_eq!(r.status().term, 5);
}

/// A leader whose commit is being written does not leave its term at that
/// height, whatever term changes arrive meanwhile (its own ACK is part of
/// the quorum it commits with, and a term change of its would not report
/// it); after the commit the changes of the old height do not count.
#[test]
fn terms_a_committing_leader_does_not_leave_its_term() {
    let (mut l, b) = leader_with_executed_proposal();
    let mut committing = false;
    for i in 2..=3 {
        let v = Vote::ack(&key(i), CHAIN, 1, b.hash(), app_of(&b));
        let out = l.handle(Input::VoteReceived {
            from: None,
            vote: v,
            best_header: None,
        });
        committing |= kinds(&out).contains(&"Commit(h1)".to_string());
    }
    assert!(committing);
    // Changes of the other three arrive before the store answers.
    for i in 2..=4 {
        let out = l.handle(change_input(change(i, 1, None), None));
        assert!(
            !kinds(&out)
                .iter()
                .any(|k| k.starts_with("SendTermChange") || k.starts_with("Persist")),
            "{:?}",
            kinds(&out)
        );
    }
    assert_eq!(l.status().term, 0);
    let out = l.handle(Input::Committed {
        height: 1,
        block_hash: b.hash(),
        app_hash: app_of(&b),
    });
    assert!(kinds(&out).iter().any(|k| k.starts_with("Announce(h1")));
    assert_eq!((l.status().term, l.status().committed_height), (0, 1));
}

/// A validator restarted in a term above 0 takes back the credential it
/// recorded (it votes on the term's proposals at once); the leader of that
/// term does not lead it again after a restart.
#[test]
fn terms_after_a_restart_validators_keep_the_credential_and_the_leader_resigns() {
    let l1 = leader_of(1);
    let voter = (2..=4).find(|i| *i != l1).unwrap();
    let third = (2..=4).find(|i| *i != l1 && *i != voter).unwrap();
    let cred = Credential {
        term: 1,
        height: 1,
        changes: vec![
            change(l1, 1, None),
            change(third, 1, None),
            change(1, 1, None),
        ],
    };
    let record = Promise {
        height: 1,
        vote: None,
        proposed: Vec::new(),
        newest_ts: 0,
        term: 1,
        block: None,
        credential: Some(cred.clone()),
    };
    let mut v = failover_validator(voter);
    v.restore(&record).unwrap();
    assert!(v.status().term_settled);
    v.handle(Input::Tick { now_ms: 0 });
    let fresh = block_in_term(1, 20);
    let out = v.handle(Input::ProposalReceived {
        from: key(l1).public(),
        block: fresh.clone(),
        term: 1,
        credential: None,
    });
    assert_eq!(kinds(&out), ["ExecuteBlock(h1)"]);
    // The leader of term 1, restarted with the same record, does not lead.
    let mut l = failover_validator(l1);
    l.restore(&record).unwrap();
    let st = l.status();
    assert_eq!((st.term, st.term_settled), (1, false));
    // It moves on to the next term at once, recorded before it says so;
    // the validators of term 1 follow it without waiting for a timeout.
    let out = l.handle(Input::Tick { now_ms: 0 });
    assert_eq!(term_of_persist(&out), Some(2));
    let resign = change_in(&out);
    assert_eq!((resign.term, resign.height), (2, 1));
    l.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    for i in [voter, third, 1] {
        let out = l.handle(change_input(change(i, 1, None), None));
        assert!(!kinds(&out).iter().any(|k| k.starts_with("SendProposal")));
    }
    let out = l.handle(Input::Tick { now_ms: 150 });
    assert!(!kinds(&out).iter().any(|k| k == "BuildBlock"));
    assert_eq!(l.status().term, 2);
    let out = v.handle(change_input(resign, None));
    assert_eq!(term_of_persist(&out), Some(2));
    assert_eq!(v.status().term, 2);
}

// ---- Operator hand-over (`kite admin leader --to`) -------------------

/// The genesis leader with a leader timeout of 1 s.
fn failover_leader() -> Engine {
    let mut cfg = config(Role::Leader, Some(1));
    cfg.leader_timeout_ms = 1_000;
    cfg.leader_timeout_max_ms = 8_000;
    Engine::new(cfg, CommittedState::genesis(1, genesis_app())).unwrap()
}

/// The term change in `out`.
fn change_in(out: &[Output]) -> TermChange {
    out.iter()
        .find_map(|o| match o {
            Output::SendTermChange { change, .. } => Some(change.clone()),
            _ => None,
        })
        .expect("a term change is sent")
}

/// What a hand-over would do, and what is refused: a key outside the set,
/// the validator that leads already (or is about to), a sentry.
#[test]
fn handover_plans_and_refusals() {
    let v = leader_of(2);
    let to = key(v).public();
    let mut l = failover_leader();
    l.handle(Input::Tick { now_ms: 0 });
    assert_eq!(
        l.plan_hand_over(&to, false),
        Ok(HandOver::Leader { from: 0, to: 2 }),
        "the first term the named validator leads"
    );
    assert_eq!(
        l.plan_hand_over(&key(9).public(), false),
        Err(HandOverError::NotValidator(key(9).public()))
    );
    assert_eq!(
        l.plan_hand_over(&key(1).public(), false),
        Err(HandOverError::AlreadyLeads {
            who: key(1).public(),
            term: 0
        })
    );
    let mut w = failover_validator(v);
    w.handle(Input::Tick { now_ms: 0 });
    // A validator does not leave a live leader (it made progress less than
    // a leader timeout, 1 s, ago: here, the start), unless forced.
    assert!(matches!(
        w.plan_hand_over(&to, false),
        Err(HandOverError::LeaderAlive {
            term: 0,
            wait_ms: 1_000,
            ..
        })
    ));
    assert_eq!(
        w.plan_hand_over(&to, true),
        Ok(HandOver::Validator { from: 0, to: 2 })
    );
    assert!(w.handle(Input::HandOver { to, force: false }).is_empty());
    w.handle(Input::Tick { now_ms: 999 });
    assert_eq!(w.status().term, 0);
    w.handle(Input::Tick { now_ms: 1_000 });
    assert_eq!(
        w.plan_hand_over(&to, false),
        Ok(HandOver::Validator { from: 0, to: 2 })
    );
    w.handle(Input::HandOver { to, force: false });
    assert_eq!(
        w.plan_hand_over(&to, false),
        Err(HandOverError::Underway { who: to, term: 2 })
    );
    let s = Engine::new(
        config(Role::Sentry, None),
        CommittedState::genesis(1, genesis_app()),
    )
    .unwrap();
    assert_eq!(s.plan_hand_over(&to, false), Err(HandOverError::NotMember));
    // A refused hand-over changes nothing.
    let mut l = failover_leader();
    l.handle(Input::Tick { now_ms: 0 });
    assert!(
        l.handle(Input::HandOver {
            to: key(9).public(),
            force: false
        })
        .is_empty()
    );
    assert_eq!(l.status().term, 0);
}

/// Asked while its proposal is out, the leader finishes the height first:
/// it commits, then, instead of building the next block, records the new
/// term and sends its term change.
#[test]
fn handover_the_leader_finishes_its_height_first() {
    let v = leader_of(2);
    let (mut l, b) = with_executed_proposal(failover_leader());
    let out = l.handle(Input::HandOver {
        to: key(v).public(),
        force: false,
    });
    assert!(out.is_empty(), "{:?}", kinds(&out));
    assert_eq!(l.status().term, 0);
    let mut k = Vec::new();
    for i in 2..=3 {
        let vote = Vote::ack(&key(i), CHAIN, 1, b.hash(), app_of(&b));
        k.extend(kinds(&l.handle(Input::VoteReceived {
            from: None,
            vote,
            best_header: None,
        })));
    }
    assert!(k.contains(&"Commit(h1)".to_string()), "{k:?}");
    assert_eq!(l.status().term, 0, "not while the commit is written");
    let out = l.handle(Input::Committed {
        height: 1,
        block_hash: b.hash(),
        app_hash: app_of(&b),
    });
    let k = kinds(&out);
    assert!(k.iter().any(|x| x.starts_with("Announce(h1")), "{k:?}");
    assert!(!k.contains(&"BuildBlock".to_string()), "{k:?}");
    let p = out
        .iter()
        .position(|o| matches!(o, Output::Persist { promise } if promise.term == 2))
        .expect("the new term is recorded");
    let s = k.iter().position(|x| x == "SendTermChange(t2 h2)").unwrap();
    assert!(p < s, "recorded before it is said: {k:?}");
    let st = l.status();
    assert_eq!((st.term, st.leader), (2, key(v).public()));
    assert!(!st.term_settled);
}

/// A leader stuck with a proposal that does not commit hands over after
/// one leader timeout anyway (the failover path).
#[test]
fn handover_a_stuck_leader_leaves_after_a_leader_timeout() {
    let v = leader_of(1);
    let (mut l, _) = with_executed_proposal(failover_leader());
    let out = l.handle(Input::HandOver {
        to: key(v).public(),
        force: false,
    });
    assert!(kinds(&out).is_empty(), "{:?}", kinds(&out));
    assert_eq!(l.status().term, 0);
    // It waits the longer of the leader and round timeouts (2 s).
    l.handle(Input::Tick { now_ms: 2_199 });
    assert_eq!(l.status().term, 0);
    let out = l.handle(Input::Tick { now_ms: 2_200 });
    assert_eq!(term_of_persist(&out), Some(1));
    assert_eq!(l.status().term, 1);

    // With failover off (leader timeout 0) too: the round timeout holds.
    let (mut l, _) = leader_with_executed_proposal();
    l.handle(Input::HandOver {
        to: key(v).public(),
        force: false,
    });
    l.handle(Input::Tick { now_ms: 300 });
    assert_eq!(l.status().term, 0, "not before its proposal had its time");
}

/// A hand-over asked in one term is dropped when the node moves to another
/// term first (here the validators fail over while the leader is busy): it
/// does not then leave the new term.
#[test]
fn handover_a_request_of_a_term_left_is_dropped() {
    let v = leader_of(2);
    let l1 = leader_of(1);
    let (mut l, _) = with_executed_proposal(failover_leader());
    l.handle(Input::HandOver {
        to: key(v).public(),
        force: false,
    });
    // Two validators moved to term 1: term 0 can no longer commit.
    let others: Vec<u8> = (2..=4).filter(|i| *i != l1).collect();
    l.handle(change_input(change(others[0], 1, None), None));
    l.handle(change_input(change(others[1], 1, None), None));
    assert_eq!(l.status().term, 1, "the old request is gone");
    // (Its own leader timeout in term 1 runs out at 2.2 s.)
    l.handle(Input::Tick { now_ms: 2_100 });
    assert_eq!(l.status().term, 1);
}

/// The limits of the follow rule: a validator does not follow its leader to
/// a term that leader leads again (it would keep everyone moving), and
/// following does not restart its leader timeout. A single validator's
/// change to a far term does not drag a timed-out validator there either.
#[test]
fn handover_follow_limits_and_far_terms() {
    let w = (2..=4).find(|i| *i != leader_of(2)).unwrap();
    // To a term the leader leads itself: not followed.
    let mut e = failover_validator(w);
    e.handle(Input::Tick { now_ms: 0 });
    let own = (1..=8u64).find(|t| leader_of(*t) == 1).unwrap();
    let out = e.handle(change_input(
        TermChange::new(&key(1), CHAIN, own, 1, None),
        None,
    ));
    assert!(kinds(&out).is_empty(), "{:?}", kinds(&out));
    assert_eq!(e.status().term, 0);

    // Followed at 900 ms: the timeout still counts from the start, doubled
    // for the new term (2 s), not from 900 ms.
    let mut e = failover_validator(w);
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    e.handle(Input::Tick { now_ms: 900 });
    e.handle(change_input(
        TermChange::new(&key(1), CHAIN, 2, 1, None),
        None,
    ));
    assert_eq!(e.status().term, 2);
    e.handle(Input::Tick { now_ms: 2_001 });
    assert_eq!(e.status().term, 3, "timed out 2 s after the start");

    // A validator's change to term u64::MAX: a timed-out validator moves
    // to the next term, not there.
    let mut e = failover_validator(w);
    e.handle(Input::Tick { now_ms: 0 });
    e.handle(Input::MempoolStatus { txs: 1, bytes: 100 });
    let far = (2..=4).find(|i| *i != w).unwrap();
    e.handle(change_input(
        TermChange::new(&key(far), CHAIN, u64::MAX, 1, None),
        None,
    ));
    assert_eq!(e.status().term, 0);
    e.handle(Input::Tick { now_ms: 1_101 });
    assert_eq!(e.status().term, 1);
}

/// An idle leader hands over at once; the validators follow its term
/// change without waiting for a timeout, and the named validator takes over
/// with their quorum. A leader's change to a term beyond one turn of the
/// schedule is not followed.
#[test]
fn handover_validators_follow_their_leader_and_the_named_one_takes_over() {
    let v = leader_of(2);
    let w = (2..=4).find(|i| *i != v).unwrap();
    let mut l = failover_leader();
    l.handle(Input::Tick { now_ms: 0 });
    let out = l.handle(Input::HandOver {
        to: key(v).public(),
        force: false,
    });
    assert_eq!(term_of_persist(&out), Some(2));
    let from_leader = change_in(&out);
    assert_eq!((from_leader.term, from_leader.height), (2, 1));
    assert_eq!(from_leader.acked, None);

    let mut e = failover_validator(w);
    e.handle(Input::Tick { now_ms: 0 });
    let out = e.handle(change_input(from_leader.clone(), None));
    assert_eq!(term_of_persist(&out), Some(2), "{:?}", kinds(&out));
    let from_w = change_in(&out);
    assert_eq!(e.status().term, 2);

    let mut n = failover_validator(v);
    n.handle(Input::Tick { now_ms: 0 });
    let out = n.handle(change_input(from_leader, None));
    assert_eq!(term_of_persist(&out), Some(2));
    assert!(
        !n.status().term_settled,
        "two changes of four: no quorum yet"
    );
    let out = n.handle(change_input(from_w, None));
    assert!(
        kinds(&out).contains(&"BuildBlock".to_string()),
        "{:?}",
        kinds(&out)
    );
    let st = n.status();
    assert!(st.term_settled && st.term == 2 && st.leader == key(v).public());

    // Far ahead: not followed.
    let mut f = failover_validator(w);
    f.handle(Input::Tick { now_ms: 0 });
    let far = TermChange::new(&key(1), CHAIN, 2 + 4, 1, None);
    let out = f.handle(change_input(far, None));
    assert!(kinds(&out).is_empty(), "{:?}", kinds(&out));
    assert_eq!(f.status().term, 0);
}
