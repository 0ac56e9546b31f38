//! `/kite/txpush/1.0.0`: push new txs straight to the peer that will put
//! them in a block (the leader), without the announce round trip.
//!
//! `/kite/txann` takes three flights before a tx reaches its receiver
//! (announce, want, batch); a push takes one. A node pushes only the txs
//! its own clients submitted, and only to the leader of its term: every
//! other peer still gets announces, so most txs cross the wire once.
//!
//! 1. Pusher sends one `TxBatch{txs}`: 1 to [`MAX_PUSH_TXS`] distinct txs,
//!    at most [`TX_BATCH_MAX`] bytes ([`push`] sends the longest prefix of
//!    its input that fits, a repeated tx once, and says how much of its
//!    input it consumed).
//! 2. Receiver checks the count and that every tx decodes
//!    ([`ProtocolError::Invalid`] / `Decode` otherwise), answers
//!    `TxPushReceipt{received}` (the number of txs in the batch) and hands
//!    the txs to the node, a repeated one once (no blame: a mempool may
//!    hand the same tx out twice). Both close.
//!
//! Checked here: counts, decoding, the receipt's count. Checked by the
//! node: signatures and admission. Honest nodes push only txs they
//! admitted, so a tx whose signature does not verify is the pusher's
//! forgery (the node reports it). The batch is read against the protocol
//! cap, not this node's `max_tx_bytes` (which a node may set below the
//! genesis's: an honest pusher cannot know it); larger txs are refused at
//! admission, without blame. A receiver with no room for the batch in its
//! byte budget declines it before reading it (no penalty); the pusher then
//! announces those txs instead. A blocks-only node takes no push (the
//! stream is refused before anything is read).

use crate::framing::{close, read_msg, write_msg};
use crate::limits::{CONTROL_DEADLINE, CONTROL_MAX, TX_BATCH_MAX, transfer_deadline};
use crate::txann::{TxSink, read_batch};
use crate::{ProtocolError, proto};
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::{Hash, Tx};
use std::collections::HashSet;

/// The protocol id.
pub const PROTOCOL: &str = "/kite/txpush/1.0.0";

/// Most txs in one push (as many as one announce names).
pub const MAX_PUSH_TXS: usize = crate::limits::MAX_ANNOUNCE_HASHES;

/// Bytes a `TxBatch` entry takes beyond the tx (tag and length).
const ENTRY_OVERHEAD: usize = 6;

/// Pushes the longest prefix of `txs` that fits one push (at most
/// [`MAX_PUSH_TXS`] distinct txs and [`TX_BATCH_MAX`] bytes; a tx repeated
/// in the prefix goes once) and returns the prefix's length once the
/// receiver's receipt confirms it took the batch. The caller announces
/// the rest. Nothing is sent for an empty `txs` (`Ok(0)`).
pub async fn push<S>(mut stream: S, txs: &[Tx]) -> Result<usize, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut room = TX_BATCH_MAX;
    let mut batch = Vec::new();
    let mut seen = HashSet::new();
    let mut consumed = 0;
    for tx in txs {
        if !seen.insert(tx.hash()) {
            consumed += 1;
            continue;
        }
        let cost = tx.size() + ENTRY_OVERHEAD;
        if batch.len() >= MAX_PUSH_TXS || cost > room {
            break;
        }
        room -= cost;
        batch.push(tx.to_proto());
        consumed += 1;
    }
    if batch.is_empty() {
        return Ok(0);
    }
    let sent = batch.len();
    let bytes = TX_BATCH_MAX - room;
    write_msg(
        &mut stream,
        &proto::TxBatch { txs: batch },
        transfer_deadline(bytes),
    )
    .await?;
    let receipt: proto::TxPushReceipt =
        read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    if usize::try_from(receipt.received).ok() != Some(sent) {
        return Err(ProtocolError::invalid(
            "TxPushReceipt",
            format!("{} txs received, {sent} sent", receipt.received),
        ));
    }
    Ok(consumed)
}

/// Receives one push and hands its txs to `sink` (after the receipt is
/// sent).
pub async fn serve<S>(mut stream: S, sink: &impl TxSink) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    const W: &str = "TxBatch";
    let (batch, _held) = read_batch(&mut stream, sink, TX_BATCH_MAX).await?;
    if batch.txs.is_empty() || batch.txs.len() > MAX_PUSH_TXS {
        return Err(ProtocolError::invalid(
            W,
            format!("{} txs, 1 to {MAX_PUSH_TXS} allowed", batch.txs.len()),
        ));
    }
    let received = u32::try_from(batch.txs.len()).unwrap_or(u32::MAX);
    let mut seen: HashSet<Hash> = HashSet::with_capacity(batch.txs.len());
    let mut txs = Vec::with_capacity(batch.txs.len());
    for p in batch.txs {
        let tx = Tx::from_proto(p)?;
        if seen.insert(tx.hash()) {
            txs.push(tx);
        }
    }
    write_msg(
        &mut stream,
        &proto::TxPushReceipt { received },
        CONTROL_DEADLINE,
    )
    .await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    sink.receive(txs).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ByteBudget;
    use crate::limits::MAX_ANNOUNCE_HASHES;
    use crate::testutil::*;

    fn txs(n: u64) -> Vec<Tx> {
        (1..=n).map(tx).collect()
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

    #[tokio::test]
    async fn pushed_txs_arrive_in_one_flight_and_the_receipt_counts_them() {
        let all = txs(5);
        let sink = Sink::default();
        let (a, b) = pipe();
        let (sent, served) = tokio::join!(push(a, &all), serve(b, &sink));
        served.unwrap();
        assert_eq!(sent.unwrap(), 5);
        assert_eq!(*sink.got.lock().unwrap(), all);
        // Nothing to push: no stream traffic, nothing received.
        let (a, _b) = pipe();
        assert_eq!(push(a, &[]).await.unwrap(), 0);
        // A repeated tx goes once, and counts as consumed.
        let twice = vec![all[0].clone(), all[1].clone(), all[0].clone()];
        let sink = Sink::default();
        let (a, b) = pipe();
        let (sent, served) = tokio::join!(push(a, &twice), serve(b, &sink));
        served.unwrap();
        assert_eq!(sent.unwrap(), 3);
        assert_eq!(*sink.got.lock().unwrap(), all[..2].to_vec());
    }

    #[tokio::test]
    async fn a_push_sends_at_most_its_cap_and_says_how_many() {
        let all = txs(MAX_PUSH_TXS as u64 + 10);
        let sink = Sink::default();
        let (a, b) = pipe();
        let (sent, served) = tokio::join!(push(a, &all), serve(b, &sink));
        served.unwrap();
        assert_eq!(sent.unwrap(), MAX_PUSH_TXS);
        assert_eq!(sink.got.lock().unwrap().len(), MAX_PUSH_TXS);
        assert_eq!(MAX_PUSH_TXS, MAX_ANNOUNCE_HASHES);
    }

    #[tokio::test]
    async fn a_push_without_budget_room_is_declined_unread_and_unblamed() {
        let all = txs(3);
        let full = ByteBudget::new(100);
        let sink = Sink {
            budget: Some(full.clone()),
            ..Sink::default()
        };
        let e = with_script(batch(&all), true, |s| async { serve(s, &sink).await })
            .await
            .unwrap_err();
        assert!(matches!(e, ProtocolError::Refused(_)), "{e:?}");
        assert_eq!(e.misbehaviour(), None);
        assert!(sink.got.lock().unwrap().is_empty());
        assert_eq!((full.in_use(), full.refused()), (0, 1));
    }

    #[tokio::test]
    async fn forged_and_malformed_pushes_are_refused_and_nothing_is_taken() {
        let all = txs(3);
        assert_eq!(serve_script(batch(&all), true).await.unwrap(), all);
        // A tx twice: taken once, without blame.
        let r = serve_script(batch(&[all[0].clone(), all[0].clone()]), true).await;
        assert_eq!(r.unwrap(), vec![all[0].clone()]);
        // No tx at all.
        let r = serve_script(batch(&[]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Too many txs.
        let r = serve_script(batch(&txs(MAX_PUSH_TXS as u64 + 1)), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        let r = serve_script(prefix(TX_BATCH_MAX as u64 + 1), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = serve_script(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let b = batch(&all);
        let n = b.len() - 5;
        let r = serve_script(cut(b, n), true).await;
        assert_err!(r, ProtocolError::Truncated { .. });
        let r = serve_script(Vec::new(), true).await;
        assert_err!(r, ProtocolError::Closed { .. });
    }

    #[tokio::test]
    async fn a_wrong_or_missing_receipt_fails_the_push() {
        let all = txs(2);
        let run = |script: Vec<u8>, close: bool| {
            let all = all.clone();
            async move { with_script(script, close, |s| async move { push(s, &all).await }).await }
        };
        let r = run(frame(&proto::TxPushReceipt { received: 1 }), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        let r = run(Vec::new(), true).await;
        assert_err!(r, ProtocolError::Closed { .. });
        let r = run(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = run(frame(&proto::TxPushReceipt { received: 2 }), true).await;
        assert_eq!(r.unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drip_fed_push_times_out() {
        let all = txs(3);
        let sink = Sink::default();
        let r = with_drip(Vec::new(), batch(&all), |s| async { serve(s, &sink).await }).await;
        assert_err!(r, ProtocolError::Timeout { .. });
        assert!(sink.got.lock().unwrap().is_empty());
    }
}
