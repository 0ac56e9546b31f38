//! The node side of the JSON-RPC: answers each method from the store, the
//! mempool and the node state.

use crate::admission::Admission;
use crate::context::Shared;
use crate::mailbox::CommitWaiters;
use crate::peers::Peers;
use crate::rpc::*;
use crate::state::StateRx;
use async_trait::async_trait;
use kite_mempool::MempoolError;
use kite_types::{Hash, PublicKey};
use std::sync::Arc;

/// The RPC backend of a running node.
#[derive(Clone)]
pub struct Backend {
    /// The node.
    pub shared: Arc<Shared>,
    /// Its published state.
    pub state: StateRx,
    /// The peers task.
    pub peers: Peers,
    /// Commit waiters, answered by the driver.
    pub waiters: CommitWaiters,
    /// Tx admission in groups (None on a blocks-only node).
    pub admission: Option<Admission>,
}

fn store_err(e: kite_blockstore::StoreError) -> RpcError {
    RpcError::internal(e.to_string())
}

fn refused(e: &MempoolError) -> RpcError {
    RpcError::tx_refused(e.code(), e.to_string())
}

#[async_trait]
impl RpcBackend for Backend {
    async fn broadcast_tx(&self, tx: Vec<u8>, wait: WaitFor) -> Result<BroadcastResult, RpcError> {
        let ctx = &self.shared;
        let (Some(mempool), Some(admission)) = (ctx.mempool.clone(), self.admission.as_ref())
        else {
            return Err(RpcError::new(
                UNSUPPORTED,
                "blocks_only",
                "this node runs in blocks-only (archival) mode and has no mempool: submit txs to a validator or sentry",
            ));
        };
        let decoded = kite_types::Tx::decode(&tx, mempool.config().max_tx_bytes)
            .map_err(|e| refused(&MempoolError::Decode(e.to_string())))?;
        let hash = decoded.hash();
        // Register before admitting, so a fast commit is not missed.
        let waiter = if wait == WaitFor::Commit {
            let rx = self
                .waiters
                .wait_for(hash)
                .map_err(|e| RpcError::busy(e.to_string()))?;
            Some(rx)
        } else {
            None
        };
        match admission.admit(decoded).await {
            Ok(_) => {}
            // Already pending: wait for it like the first caller.
            Err(MempoolError::AlreadyKnown) if mempool.contains(&hash) => {}
            Err(e) => {
                // Dropping the waiter cancels it.
                drop(waiter);
                // Already committed? Then say so rather than refuse.
                if let Ok(Some(loc)) = ctx.store.tx_location(hash).await {
                    return Ok(BroadcastResult {
                        hash,
                        height: Some(loc.height),
                    });
                }
                return Err(refused(&e));
            }
        }
        let Some(rx) = waiter else {
            return Ok(BroadcastResult { hash, height: None });
        };
        match tokio::time::timeout(ctx.config.rpc.commit_timeout, rx).await {
            Ok(Ok(height)) => Ok(BroadcastResult {
                hash,
                height: Some(height),
            }),
            Ok(Err(_)) if ctx.stop.is_stopping() => Err(RpcError::new(
                BUSY,
                "stopping",
                format!(
                    "tx {hash} was accepted, but the node is stopping; query it with tx_query later"
                ),
            )),
            // The driver's table is full.
            Ok(Err(_)) => Err(RpcError::busy(
                "too many broadcast_tx calls waiting for a commit",
            )),
            Err(_) => Err(RpcError::new(
                TIMEOUT,
                "commit_timeout",
                format!(
                    "tx {hash} was accepted but not committed within {:?}; query it with tx_query",
                    ctx.config.rpc.commit_timeout
                ),
            )),
        }
    }

    async fn tx_query(&self, hash: Hash) -> Result<TxStatus, RpcError> {
        let ctx = &self.shared;
        if let Some(loc) = ctx.store.tx_location(hash).await.map_err(store_err)? {
            return Ok(TxStatus {
                status: "committed".into(),
                height: Some(loc.height),
                index: Some(loc.index),
            });
        }
        let pending = ctx.mempool.as_ref().is_some_and(|m| m.contains(&hash));
        let indexing = ctx.store.tx_indexed() < self.state.borrow().height;
        Ok(TxStatus {
            status: match (pending, indexing) {
                (true, _) => "pending",
                (false, true) => "indexing",
                (false, false) => "unknown",
            }
            .into(),
            height: None,
            index: None,
        })
    }

    async fn block(&self, query: BlockQuery) -> Result<BlockView, RpcError> {
        let store = &self.shared.store;
        let block = match query {
            BlockQuery::Height(h) => store.block_by_height(h).await,
            BlockQuery::Hash(h) => store.block_by_hash(h).await,
        }
        .map_err(store_err)?
        .ok_or_else(|| RpcError::not_found(format!("no committed block {query:?}")))?;
        let ci = store
            .commit_info(block.height())
            .await
            .map_err(store_err)?
            .ok_or_else(|| RpcError::internal("block without commit info"))?;
        Ok(BlockView::of(&block, &ci))
    }

    async fn status(&self) -> Result<StatusView, RpcError> {
        let ctx = &self.shared;
        let s = self.state.borrow().clone();
        Ok(StatusView {
            chain_id: ctx.genesis.chain_id.clone(),
            peer_id: ctx.peer_id.to_string(),
            role: ctx.config.role.to_string(),
            blocks_only: ctx.config.blocks_only,
            height: s.height,
            block_hash: s.block_hash,
            app_hash: s.app_hash,
            syncing: s.syncing,
            sync_target: s.sync_target,
            tx_indexed: ctx.store.tx_indexed(),
            peers: self.peers.len() as u64,
            mempool: ctx
                .mempool
                .as_ref()
                .map(|m| MempoolView {
                    txs: m.len() as u64,
                    bytes: m.bytes() as u64,
                })
                .unwrap_or_default(),
            term: s.term,
            leader: Some(s.leader),
            term_settled: s.term_settled,
        })
    }

    async fn peers(&self) -> Result<Vec<PeerView>, RpcError> {
        let table = self.peers.table();
        let table = table.borrow();
        let mut out: Vec<PeerView> = table
            .iter()
            .map(|(id, s)| PeerView {
                peer_id: id.to_string(),
                addrs: s.listen_addrs.iter().map(|a| a.to_string()).collect(),
                height: s.height,
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Ok(out)
    }

    async fn validators(&self) -> Result<ValidatorsView, RpcError> {
        let g = &self.shared.genesis;
        let leader = self.state.borrow().leader;
        let set = g.validator_set();
        Ok(ValidatorsView {
            validators: set
                .validators()
                .iter()
                .map(|v| ValidatorView {
                    pub_key: v.pub_key,
                    power: v.power,
                    name: v.name.clone(),
                    leader: v.pub_key == leader,
                })
                .collect(),
            total_power: set.total_power(),
            quorum: g.quorum.to_string(),
        })
    }

    async fn account(&self, id: PublicKey) -> Result<AccountView, RpcError> {
        let ctx = &self.shared;
        let a = ctx.store.account(id).await.map_err(store_err)?;
        let pending = ctx.mempool.as_ref().and_then(|m| m.pending_nonce(&id));
        Ok(AccountView {
            balance: a.balance,
            nonce: a.nonce,
            next_nonce: pending.unwrap_or(a.nonce).max(a.nonce) + 1,
        })
    }

    async fn kv_get(&self, owner: PublicKey, key: Vec<u8>) -> Result<KvView, RpcError> {
        if key.len() > kite_types::MAX_KEY_LEN {
            return Err(RpcError::invalid_params(format!(
                "key is {} bytes, the maximum is {}",
                key.len(),
                kite_types::MAX_KEY_LEN
            )));
        }
        let v = self
            .shared
            .store
            .kv_get(owner, key)
            .await
            .map_err(store_err)?;
        Ok(match v {
            Some(v) => KvView {
                found: true,
                value: Some(String::from_utf8_lossy(&v).into_owned()),
                value_hex: Some(hex::encode(&v)),
            },
            None => KvView {
                found: false,
                value: None,
                value_hex: None,
            },
        })
    }

    async fn health(&self) -> HealthView {
        let s = self.state.borrow().clone();
        let (healthy, reason) = if let Some(h) = &s.halted {
            (false, format!("halted: {h}"))
        } else if s.syncing {
            (false, format!("syncing to height {}", s.sync_target))
        } else {
            (true, String::new())
        };
        HealthView {
            healthy,
            reason,
            height: s.height,
        }
    }

    fn metrics_text(&self) -> String {
        let ctx = &self.shared;
        if let Some(m) = &ctx.mempool {
            ctx.metrics.mempool_txs.set(m.len() as i64);
            ctx.metrics.mempool_bytes.set(m.bytes() as i64);
        }
        ctx.metrics.peers.set(self.peers.len() as i64);
        let (blocks, txs) = (ctx.budgets.all(), ctx.tx_budgets.all());
        let m = &ctx.metrics;
        let sum = |f: fn(&kite_protocols::budget::ByteBudget) -> u64| {
            crate::context::to_i64(f(blocks).saturating_add(f(txs)))
        };
        m.peer_buffer_bytes.set(sum(|b| b.in_use() as u64));
        m.peer_buffer_peak_bytes.set(sum(|b| b.peak() as u64));
        m.peer_buffer_refused.set(sum(|b| b.refused()));
        m.sig_checks_limited
            .set(crate::context::to_i64(ctx.sig_checks.limited()));
        m.tx_checks_limited
            .set(crate::context::to_i64(ctx.tx_checks.limited()));
        m.sample_memory();
        ctx.metrics.encode()
    }
}
