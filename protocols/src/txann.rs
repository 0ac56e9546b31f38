//! `/kite/txann/1.0.0`: announce tx hashes and push the ones the peer
//! wants.
//!
//! 1. Announcer sends `TxAnnounce{hashes}`: 1 to
//!    [`MAX_ANNOUNCE_HASHES`] distinct 32-byte hashes.
//! 2. Receiver answers `TxWant{want}`: exactly one flag per hash, in order.
//! 3. If no flag is set, both sides are done (the announcer closes).
//!    Otherwise the announcer sends one `TxBatch{txs}`: the wanted txs it
//!    still holds, in announce order, at most [`TX_BATCH_MAX`] bytes (a
//!    wanted tx that is gone or does not fit is left out; the receiver may
//!    fetch it with `/kite/tx`), and closes.
//! 4. The receiver checks every tx decodes and hashes to a wanted hash, in
//!    announce order, each at most once ([`ProtocolError::Invalid`]
//!    otherwise), and hands them to the node.
//!
//! Checked here: counts, hash sizes, duplicates, that the batch holds only
//! wanted txs in order. Checked by the node: tx signatures and admission.
//! A blocks-only node does not serve this protocol (or wants nothing).

use crate::budget::{ByteBudget, Reservation};
use crate::framing::{close, read_msg, read_msg_reserved, write_msg};
use crate::limits::{
    CONTROL_DEADLINE, CONTROL_MAX, MAX_ANNOUNCE_HASHES, TX_ANNOUNCE_MAX, TX_BATCH_MAX,
    TX_RESPONSE_OVERHEAD, transfer_deadline,
};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::codec::hash_field;
use kite_types::{Hash, Tx};
use std::collections::HashSet;

/// The protocol id.
pub const PROTOCOL: &str = "/kite/txann/1.0.0";

/// Bytes a `TxBatch` entry takes beyond the tx (tag and length).
const ENTRY_OVERHEAD: usize = 6;

/// What happened to an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnnounceOutcome {
    /// Hashes announced (the distinct input hashes, cut to
    /// [`MAX_ANNOUNCE_HASHES`]).
    pub announced: usize,
    /// Hashes the peer wanted.
    pub wanted: usize,
    /// Txs sent.
    pub sent: usize,
}

/// What the node provides to receive announcements.
#[async_trait]
pub trait TxSink: Send + Sync {
    /// Which of these hashes the node wants (one flag per hash; missing
    /// flags count as `false`). Typically: not in the mempool, not seen.
    async fn want(&self, hashes: &[Hash]) -> Vec<bool>;
    /// The wanted txs that arrived (hashes checked, signatures not).
    async fn receive(&self, txs: Vec<Tx>);
    /// The bytes a batch may take while it is received and handed on
    /// (a batch that does not fit is declined, no penalty). `None`: only
    /// the message cap bounds it.
    fn budget(&self) -> Option<ByteBudget> {
        None
    }
    /// The largest tx this node accepts: a batch is at most this (plus its
    /// framing) per wanted tx, and a longer one is refused before it is
    /// read.
    fn max_tx_bytes(&self) -> usize {
        TX_BATCH_MAX
    }
}

/// Announces `hashes` (duplicates dropped, then at most
/// [`MAX_ANNOUNCE_HASHES`]; the rest are not announced) and sends the
/// wanted txs, found with `lookup`.
pub async fn announce<S, F>(
    mut stream: S,
    hashes: &[Hash],
    lookup: F,
) -> Result<AnnounceOutcome, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    F: Fn(&Hash) -> Option<Tx> + Send,
{
    let mut seen = HashSet::with_capacity(hashes.len().min(MAX_ANNOUNCE_HASHES));
    let hashes: Vec<Hash> = hashes
        .iter()
        .filter(|h| seen.insert(**h))
        .take(MAX_ANNOUNCE_HASHES)
        .copied()
        .collect();
    let ann = proto::TxAnnounce {
        hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
    };
    write_msg(&mut stream, &ann, CONTROL_DEADLINE).await?;
    let want: proto::TxWant = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    if want.want.len() != hashes.len() {
        return Err(ProtocolError::invalid(
            "TxWant",
            format!("{} flags for {} hashes", want.want.len(), hashes.len()),
        ));
    }
    let mut outcome = AnnounceOutcome {
        announced: hashes.len(),
        wanted: want.want.iter().filter(|&&w| w).count(),
        sent: 0,
    };
    if outcome.wanted > 0 {
        let mut budget = TX_BATCH_MAX - ENTRY_OVERHEAD;
        let mut txs = Vec::new();
        for (h, _) in hashes.iter().zip(&want.want).filter(|(_, w)| **w) {
            let Some(tx) = lookup(h).filter(|t| t.hash() == *h) else {
                continue;
            };
            let cost = tx.size() + ENTRY_OVERHEAD;
            if cost <= budget {
                budget -= cost;
                txs.push(tx.to_proto());
            }
        }
        outcome.sent = txs.len();
        let bytes = TX_BATCH_MAX - budget;
        let batch = proto::TxBatch { txs };
        write_msg(&mut stream, &batch, transfer_deadline(bytes)).await?;
    }
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    Ok(outcome)
}

/// Reads one `TxBatch` of at most `max` bytes within its transfer
/// deadline, reserved from the sink's byte budget when it has one (the
/// reservation is returned, to be held while the txs are handed on).
pub(crate) async fn read_batch<S>(
    stream: &mut S,
    sink: &impl TxSink,
    max: usize,
) -> Result<(proto::TxBatch, Option<Reservation>), ProtocolError>
where
    S: AsyncRead + Unpin + Send,
{
    let deadline = transfer_deadline(max);
    Ok(match sink.budget() {
        Some(b) => {
            let (m, r) = read_msg_reserved(stream, max, deadline, &b).await?;
            (m, Some(r))
        }
        None => (read_msg(stream, max, deadline).await?, None),
    })
}

/// Receives one announcement.
pub async fn serve<S>(mut stream: S, sink: &impl TxSink) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    const W: &str = "TxAnnounce";
    let ann: proto::TxAnnounce = read_msg(&mut stream, TX_ANNOUNCE_MAX, CONTROL_DEADLINE).await?;
    if ann.hashes.len() > MAX_ANNOUNCE_HASHES {
        return Err(ProtocolError::invalid(
            W,
            format!("{} hashes, at most {MAX_ANNOUNCE_HASHES}", ann.hashes.len()),
        ));
    }
    let hashes = ann
        .hashes
        .iter()
        .map(|h| hash_field(W, "hash", h))
        .collect::<Result<Vec<Hash>, _>>()?;
    let mut seen = HashSet::with_capacity(hashes.len());
    if let Some(dup) = hashes.iter().find(|h| !seen.insert(**h)) {
        return Err(ProtocolError::invalid(
            W,
            format!("hash {} announced twice", dup.short()),
        ));
    }
    let mut want = sink.want(&hashes).await;
    want.resize(hashes.len(), false);
    write_msg(
        &mut stream,
        &proto::TxWant { want: want.clone() },
        CONTROL_DEADLINE,
    )
    .await?;
    let wanted: Vec<Hash> = hashes
        .iter()
        .zip(&want)
        .filter(|(_, w)| **w)
        .map(|(h, _)| *h)
        .collect();
    if wanted.is_empty() {
        return close(&mut stream, CONTROL_DEADLINE).await;
    }
    // At most the wanted txs at their largest, each with its framing.
    let per_tx = sink.max_tx_bytes().saturating_add(TX_RESPONSE_OVERHEAD);
    let max = TX_BATCH_MAX.min(wanted.len().saturating_mul(per_tx));
    let (batch, _held) = read_batch(&mut stream, sink, max).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    if batch.txs.len() > wanted.len() {
        return Err(ProtocolError::invalid(
            "TxBatch",
            format!("{} txs, {} wanted", batch.txs.len(), wanted.len()),
        ));
    }
    let mut txs = Vec::with_capacity(batch.txs.len());
    let mut next = wanted.iter();
    for p in batch.txs {
        let tx = Tx::from_proto(p)?;
        let h = tx.hash();
        if !next.any(|w| *w == h) {
            return Err(ProtocolError::invalid(
                "TxBatch",
                format!(
                    "tx {} was not wanted, or is out of order or repeated",
                    h.short()
                ),
            ));
        }
        txs.push(tx);
    }
    if !txs.is_empty() {
        sink.receive(txs).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::collections::HashMap;

    fn txs(n: u64) -> Vec<Tx> {
        (1..=n).map(tx).collect()
    }

    fn lookup_in(txs: &[Tx]) -> impl Fn(&Hash) -> Option<Tx> + Send + use<> {
        let m: HashMap<Hash, Tx> = txs.iter().map(|t| (t.hash(), t.clone())).collect();
        move |h| m.get(h).cloned()
    }

    #[tokio::test]
    async fn pushes_only_wanted_txs() {
        let all = txs(5);
        let hashes: Vec<Hash> = all.iter().map(Tx::hash).collect();
        let sink = Sink {
            have: [hashes[1], hashes[3]].into_iter().collect(),
            ..Default::default()
        };
        let (a, b) = pipe();
        let (out, served) = tokio::join!(announce(a, &hashes, lookup_in(&all)), serve(b, &sink));
        served.unwrap();
        assert_eq!(
            out.unwrap(),
            AnnounceOutcome {
                announced: 5,
                wanted: 3,
                sent: 3
            }
        );
        let got = sink.got.lock().unwrap().clone();
        assert_eq!(got, vec![all[0].clone(), all[2].clone(), all[4].clone()]);
    }

    #[tokio::test]
    async fn nothing_wanted_and_lost_txs() {
        let all = txs(3);
        let hashes: Vec<Hash> = all.iter().map(Tx::hash).collect();
        let sink = Sink {
            have: hashes.iter().copied().collect(),
            ..Default::default()
        };
        let (a, b) = pipe();
        let (out, served) = tokio::join!(announce(a, &hashes, lookup_in(&all)), serve(b, &sink));
        served.unwrap();
        assert_eq!(
            out.unwrap(),
            AnnounceOutcome {
                announced: 3,
                wanted: 0,
                sent: 0
            }
        );
        // The announcer lost tx 2 meanwhile: the batch skips it.
        let sink = Sink::default();
        let (a, b) = pipe();
        let lookup = lookup_in(&[all[0].clone(), all[2].clone()]);
        let (out, served) = tokio::join!(announce(a, &hashes, lookup), serve(b, &sink));
        served.unwrap();
        assert_eq!(
            out.unwrap(),
            AnnounceOutcome {
                announced: 3,
                wanted: 3,
                sent: 2
            }
        );
        assert_eq!(sink.got.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn announce_is_capped() {
        let hashes: Vec<Hash> = (0..300u32)
            .map(|i| Hash::digest(&i.to_be_bytes()))
            .collect();
        let sink = Sink {
            have: hashes.iter().copied().collect(),
            ..Default::default()
        };
        let (a, b) = pipe();
        let (out, served) = tokio::join!(announce(a, &hashes, |_: &Hash| None), serve(b, &sink));
        served.unwrap();
        assert_eq!(out.unwrap().announced, MAX_ANNOUNCE_HASHES);
        // Duplicates are dropped before announcing (the receiver refuses them).
        let dup = vec![hashes[0], hashes[1], hashes[0]];
        let (a, b) = pipe();
        let (out, served) = tokio::join!(announce(a, &dup, |_: &Hash| None), serve(b, &sink));
        served.unwrap();
        assert_eq!(out.unwrap().announced, 2);
    }

    fn ann(txs: &[Tx]) -> Vec<u8> {
        frame(&proto::TxAnnounce {
            hashes: txs.iter().map(|t| t.hash().0.to_vec()).collect(),
        })
    }

    fn batch(txs: &[Tx]) -> Vec<u8> {
        frame(&proto::TxBatch {
            txs: txs.iter().map(Tx::to_proto).collect(),
        })
    }

    async fn serve_script(script: Vec<u8>, close: bool) -> Result<Vec<Tx>, ProtocolError> {
        let sink = Sink::default();
        with_script(script, close, |s| async { serve(s, &sink).await }).await?;
        Ok(sink.got.into_inner().unwrap())
    }

    /// A batch is read only when the budget has room for it (twice its
    /// announced length: the bytes and the decoded txs); otherwise it is
    /// declined before its body is read, without blame.
    #[tokio::test]
    async fn a_batch_waits_for_no_budget_and_takes_none_when_declined() {
        let all = txs(3);
        let script = frames(&[ann(&all), batch(&all)]);
        let budget = ByteBudget::new(4096);
        let sink = Sink {
            budget: Some(budget.clone()),
            ..Sink::default()
        };
        with_script(script.clone(), true, |s| async { serve(s, &sink).await })
            .await
            .unwrap();
        assert_eq!(sink.got.lock().unwrap().len(), 3);
        assert_eq!(budget.in_use(), 0, "given back once handed on");
        assert!(budget.peak() > 0);

        let full = ByteBudget::new(100);
        let sink = Sink {
            budget: Some(full.clone()),
            ..Sink::default()
        };
        let e = with_script(script, true, |s| async { serve(s, &sink).await })
            .await
            .unwrap_err();
        assert!(matches!(e, ProtocolError::Refused(_)), "{e:?}");
        assert_eq!(e.misbehaviour(), None);
        assert!(sink.got.lock().unwrap().is_empty());
        assert_eq!((full.in_use(), full.refused()), (0, 1));
    }

    /// A batch longer than the wanted txs at their largest is refused from
    /// its length prefix, before its body is read or reserved.
    #[tokio::test]
    async fn a_batch_longer_than_its_wanted_txs_can_be_is_too_large() {
        let all = txs(2);
        let sink = Sink {
            max_tx: Some(all[0].size() - 100),
            budget: Some(ByteBudget::new(1 << 20)),
            ..Sink::default()
        };
        let script = frames(&[ann(&all), batch(&all)]);
        let e = with_script(script, true, |s| async { serve(s, &sink).await })
            .await
            .unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e:?}");
        assert_eq!(sink.budget.as_ref().unwrap().peak(), 0);
    }

    #[tokio::test]
    async fn forged_batches_are_invalid() {
        let all = txs(4);
        // Honest script first: it works.
        let ok = serve_script(frames(&[ann(&all[..2]), batch(&all[..2])]), true).await;
        assert_eq!(ok.unwrap().len(), 2);
        // A tx that was not announced.
        let r = serve_script(frames(&[ann(&all[..2]), batch(&[all[3].clone()])]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Out of order.
        let r = serve_script(
            frames(&[ann(&all[..2]), batch(&[all[1].clone(), all[0].clone()])]),
            true,
        )
        .await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Repeated.
        let r = serve_script(
            frames(&[ann(&all[..2]), batch(&[all[0].clone(), all[0].clone()])]),
            true,
        )
        .await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // More txs than wanted.
        let r = serve_script(frames(&[ann(&all[..1]), batch(&all[..3])]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Duplicate hashes in the announcement.
        let r = serve_script(ann(&[all[0].clone(), all[0].clone()]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Too many hashes (fits the byte cap, breaks the count cap).
        let many = proto::TxAnnounce {
            hashes: (0..300u32)
                .map(|i| Hash::digest(&i.to_be_bytes()).0.to_vec())
                .collect(),
        };
        let r = serve_script(frame(&many), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // A hash of the wrong size.
        let r = serve_script(
            frame(&proto::TxAnnounce {
                hashes: vec![vec![1; 5]],
            }),
            true,
        )
        .await;
        assert_err!(r, ProtocolError::Decode(_));
    }

    #[tokio::test]
    async fn bad_bytes_to_the_receiver() {
        let all = txs(2);
        let r = serve_script(prefix(TX_ANNOUNCE_MAX as u64 + 1), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = serve_script(frames(&[ann(&all), prefix(TX_BATCH_MAX as u64 + 1)]), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = serve_script(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = serve_script(frames(&[ann(&all), garbage_frame()]), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let b = batch(&all);
        let n = b.len() - 5;
        let r = serve_script(frames(&[ann(&all), cut(b, n)]), true).await;
        assert_err!(r, ProtocolError::Truncated { .. });
        // The announcer leaves after the want without sending the batch.
        let r = serve_script(ann(&all), true).await;
        assert_err!(r, ProtocolError::Closed { .. });
    }

    #[tokio::test]
    async fn bad_bytes_to_the_announcer() {
        let all = txs(2);
        let hashes: Vec<Hash> = all.iter().map(Tx::hash).collect();
        let run = |script: Vec<u8>, close: bool| {
            let hashes = hashes.clone();
            let lookup = lookup_in(&all);
            async move {
                with_script(script, close, |s| async move {
                    announce(s, &hashes, lookup).await
                })
                .await
            }
        };
        let r = run(frame(&proto::TxWant { want: vec![true] }), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        let r = run(prefix(CONTROL_MAX as u64 + 1), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = run(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = run(
            cut(
                frame(&proto::TxWant {
                    want: vec![true, true],
                }),
                2,
            ),
            true,
        )
        .await;
        assert_err!(r, ProtocolError::Truncated { .. });
        let r = run(
            frame(&proto::TxWant {
                want: vec![true, false],
            }),
            true,
        )
        .await;
        assert_eq!(
            r.unwrap(),
            AnnounceOutcome {
                announced: 2,
                wanted: 1,
                sent: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drip_fed_batch_times_out() {
        let all = txs(3);
        let sink = Sink::default();
        let r = with_drip(ann(&all), batch(&all), |s| async { serve(s, &sink).await }).await;
        assert_err!(r, ProtocolError::Timeout { .. });
        let hashes: Vec<Hash> = all.iter().map(Tx::hash).collect();
        let r = with_drip(
            Vec::new(),
            frame(&proto::TxWant {
                want: vec![true; 300],
            }),
            |s| async move { announce(s, &hashes, |_: &Hash| None).await },
        )
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }
}
