//! Message framing: an unsigned-varint length prefix, then that many bytes
//! of protobuf.
//!
//! The prefix is LEB128 (7 bits per byte, low bits first, high bit set on
//! every byte but the last), at most 10 bytes, minimal (no trailing zero
//! byte), exactly what protobuf's length-delimited encoding writes. A reader
//! checks the announced length against the message's cap before allocating
//! anything, and the whole message (prefix and body) must arrive within one
//! deadline, so a peer that drip-feeds bytes still hits it.

use crate::ProtocolError;
use crate::budget::{ByteBudget, Reservation};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use kite_types::DecodeError;
use prost::Message;
use std::time::Duration;

/// Longest length prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 10;

/// Largest buffer allocated up front for a body; larger bodies grow as bytes
/// actually arrive, so a peer announcing a large message it never sends
/// costs little memory.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// Most bytes asked of the stream in one read of a body.
const READ_CHUNK: usize = 64 * 1024;

/// The short name of a message type ("TxResponse"), for errors.
pub fn msg_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Reads one message of at most `max_bytes` (the body, without the prefix),
/// within `deadline`.
///
/// Errors: [`ProtocolError::Closed`] if the stream ends before the first
/// byte, [`ProtocolError::Truncated`] if it ends inside the message,
/// [`ProtocolError::TooLarge`] if the prefix exceeds `max_bytes`,
/// [`ProtocolError::Decode`] for a bad prefix or bad protobuf,
/// [`ProtocolError::Timeout`] if the message is not complete in time.
pub async fn read_msg<M, S>(
    stream: &mut S,
    max_bytes: usize,
    deadline: Duration,
) -> Result<M, ProtocolError>
where
    M: Message + Default,
    S: AsyncRead + Unpin + ?Sized,
{
    let what = msg_name::<M>();
    let body = match tokio::time::timeout(deadline, read_frame(stream, max_bytes, what)).await {
        Ok(r) => r?,
        Err(_) => return Err(ProtocolError::Timeout { what, deadline }),
    };
    Ok(kite_types::codec::decode(what, &body, max_bytes)?)
}

/// Like [`read_msg`], but first reserves from `budget` twice the length
/// the prefix announces (the bytes and their decoded copy), before reading
/// the body; the reservation is returned with the message, to be held while
/// the message is. A spent budget gives [`ProtocolError::Refused`].
pub async fn read_msg_reserved<M, S>(
    stream: &mut S,
    max_bytes: usize,
    deadline: Duration,
    budget: &ByteBudget,
) -> Result<(M, Reservation), ProtocolError>
where
    M: Message + Default,
    S: AsyncRead + Unpin + ?Sized,
{
    let what = msg_name::<M>();
    let read = async {
        let len = checked_prefix(stream, max_bytes, what).await?;
        let reservation = budget.try_reserve(len.saturating_mul(2)).ok_or_else(|| {
            ProtocolError::Refused(format!(
                "busy: no room for a {len}-byte {what} (budget of {} bytes in use)",
                budget.total()
            ))
        })?;
        Ok::<_, ProtocolError>((read_body(stream, len, what).await?, reservation))
    };
    let (body, reservation) = match tokio::time::timeout(deadline, read).await {
        Ok(r) => r?,
        Err(_) => return Err(ProtocolError::Timeout { what, deadline }),
    };
    Ok((
        kite_types::codec::decode(what, &body, max_bytes)?,
        reservation,
    ))
}

/// Reads one frame's body (prefix checked against `max_bytes`).
pub async fn read_frame<S>(
    stream: &mut S,
    max_bytes: usize,
    what: &'static str,
) -> Result<Vec<u8>, ProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let len = checked_prefix(stream, max_bytes, what).await?;
    read_body(stream, len, what).await
}

/// Reads a length prefix of at most `max_bytes`.
async fn checked_prefix<S>(
    stream: &mut S,
    max_bytes: usize,
    what: &'static str,
) -> Result<usize, ProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let len = read_prefix(stream, what).await?;
    usize::try_from(len)
        .ok()
        .filter(|&l| l <= max_bytes)
        .ok_or(ProtocolError::TooLarge {
            what,
            size: len,
            max: max_bytes,
        })
}

/// Reads a body of exactly `len` bytes.
async fn read_body<S>(
    stream: &mut S,
    len: usize,
    what: &'static str,
) -> Result<Vec<u8>, ProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    // Grows as bytes arrive, doubling but never past `len` (reading to
    // the end would double a full buffer once more to probe for the end).
    let mut body = Vec::with_capacity(len.min(INITIAL_CAPACITY));
    while body.len() < len {
        if body.len() == body.capacity() {
            let to = body.capacity().saturating_mul(2).clamp(1, len);
            body.reserve_exact(to - body.len());
        }
        // At most a chunk is zeroed per read: zeroing all the spare room
        // on every read made a large body cost its size squared.
        let start = body.len();
        let room = (body.capacity().min(len) - start).min(READ_CHUNK);
        body.resize(start + room, 0);
        let n = stream.read(&mut body[start..]).await?;
        body.truncate(start + n);
        if n == 0 {
            return Err(ProtocolError::Truncated { what });
        }
    }
    Ok(body)
}

/// Reads past one frame of at most `max_bytes` without keeping it (a few
/// KiB of memory whatever its size), within `deadline`.
pub async fn skip_frame<S>(
    stream: &mut S,
    max_bytes: usize,
    what: &'static str,
    deadline: Duration,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let skip = async {
        let len = checked_prefix(stream, max_bytes, what).await?;
        let skipped = futures::io::copy(
            &mut (&mut *stream).take(len as u64),
            &mut futures::io::sink(),
        )
        .await?;
        if skipped < len as u64 {
            return Err(ProtocolError::Truncated { what });
        }
        Ok(())
    };
    match tokio::time::timeout(deadline, skip).await {
        Ok(r) => r,
        Err(_) => Err(ProtocolError::Timeout { what, deadline }),
    }
}

/// Reads a length prefix.
async fn read_prefix<S>(stream: &mut S, what: &'static str) -> Result<u64, ProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let bad = |detail: &str| {
        ProtocolError::Decode(DecodeError::Malformed {
            what,
            detail: format!("length prefix {detail}"),
        })
    };
    let mut value: u64 = 0;
    for i in 0..MAX_PREFIX_LEN {
        let mut byte = [0u8; 1];
        let n = loop {
            match stream.read(&mut byte).await {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            return Err(if i == 0 {
                ProtocolError::Closed { what }
            } else {
                ProtocolError::Truncated { what }
            });
        }
        let b = byte[0];
        if i == MAX_PREFIX_LEN - 1 && b > 1 {
            return Err(bad("overflows 64 bits"));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(bad("is not minimal"));
            }
            return Ok(value);
        }
    }
    Err(bad("is longer than 10 bytes"))
}

/// Encodes a message with its length prefix.
pub fn encode_frame<M: Message>(msg: &M) -> Vec<u8> {
    msg.encode_length_delimited_to_vec()
}

/// Writes one message and flushes, within `deadline`.
pub async fn write_msg<M, S>(
    stream: &mut S,
    msg: &M,
    deadline: Duration,
) -> Result<(), ProtocolError>
where
    M: Message,
    S: AsyncWrite + Unpin + ?Sized,
{
    let frame = encode_frame(msg);
    let what = msg_name::<M>();
    match tokio::time::timeout(deadline, async {
        stream.write_all(&frame).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => Ok(r?),
        Err(_) => Err(ProtocolError::Timeout { what, deadline }),
    }
}

/// Flushes and closes the write side of the stream, within `deadline`.
pub async fn close<S>(stream: &mut S, deadline: Duration) -> Result<(), ProtocolError>
where
    S: AsyncWrite + Unpin + ?Sized,
{
    match tokio::time::timeout(deadline, stream.close()).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ProtocolError::Timeout {
            what: "closing the stream",
            deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use crate::testutil::{drip, pipe};
    use futures::io::Cursor;

    const D: Duration = Duration::from_secs(10);

    async fn read_bytes<M: Message + Default>(
        bytes: Vec<u8>,
        max: usize,
    ) -> Result<M, ProtocolError> {
        let mut c = Cursor::new(bytes);
        read_msg::<M, _>(&mut c, max, D).await
    }

    fn status() -> proto::Status {
        proto::Status {
            chain_id: "kite-test".into(),
            best_height: 300,
            best_hash: vec![7; 32],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn round_trip_and_empty_message() {
        let mut c = Cursor::new(Vec::new());
        write_msg(&mut c, &status(), D).await.unwrap();
        write_msg(&mut c, &proto::StatusRequest {}, D)
            .await
            .unwrap();
        let bytes = c.into_inner();
        // The empty message is a lone zero prefix.
        assert_eq!(bytes.last(), Some(&0));
        let mut r = Cursor::new(bytes);
        let s: proto::Status = read_msg(&mut r, 4096, D).await.unwrap();
        assert_eq!(s, status());
        let _: proto::StatusRequest = read_msg(&mut r, 4096, D).await.unwrap();
        let end = read_msg::<proto::Status, _>(&mut r, 4096, D).await;
        assert!(
            matches!(end, Err(ProtocolError::Closed { what: "Status" })),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn prefix_rules() {
        // Over the cap: refused from the prefix alone.
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(5000, &mut bytes);
        let r = read_bytes::<proto::Status>(bytes, 4096).await;
        assert!(
            matches!(
                r,
                Err(ProtocolError::TooLarge {
                    size: 5000,
                    max: 4096,
                    ..
                })
            ),
            "{r:?}"
        );
        // Huge prefix.
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(u64::MAX, &mut bytes);
        assert_eq!(bytes.len(), 10);
        let r = read_bytes::<proto::Status>(bytes, 4096).await;
        assert!(matches!(r, Err(ProtocolError::TooLarge { .. })), "{r:?}");
        // Eleven continuation bytes.
        let r = read_bytes::<proto::Status>(vec![0x80; 11], 4096).await;
        assert!(matches!(r, Err(ProtocolError::Decode(_))), "{r:?}");
        // 10th byte overflowing 64 bits.
        let mut bytes = vec![0xff; 9];
        bytes.push(0x02);
        let r = read_bytes::<proto::Status>(bytes, 4096).await;
        assert!(matches!(r, Err(ProtocolError::Decode(_))), "{r:?}");
        // Non-minimal zero.
        let r = read_bytes::<proto::StatusRequest>(vec![0x80, 0x00], 4096).await;
        assert!(matches!(r, Err(ProtocolError::Decode(_))), "{r:?}");
        // Prefix cut short.
        let r = read_bytes::<proto::Status>(vec![0x80], 4096).await;
        assert!(matches!(r, Err(ProtocolError::Truncated { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn truncated_and_garbage_bodies() {
        let mut frame = encode_frame(&status());
        frame.truncate(frame.len() - 3);
        let r = read_bytes::<proto::Status>(frame, 4096).await;
        assert!(
            matches!(r, Err(ProtocolError::Truncated { what: "Status" })),
            "{r:?}"
        );
        let r = read_bytes::<proto::Status>(vec![4, 0xff, 0xff, 0xff, 0xff], 4096).await;
        assert!(matches!(r, Err(ProtocolError::Decode(_))), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn drip_feed_hits_the_deadline() {
        let (mut a, b) = pipe();
        // A valid 200-byte message, one byte per second: 10 s is not enough.
        let frame = encode_frame(&proto::TxRequest { hash: vec![1; 198] });
        let feeder = tokio::spawn(drip(b, frame, Duration::from_secs(1)));
        let r = read_msg::<proto::TxRequest, _>(&mut a, 4096, D).await;
        assert!(
            matches!(
                r,
                Err(ProtocolError::Timeout {
                    what: "TxRequest",
                    ..
                })
            ),
            "{r:?}"
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn slow_but_within_deadline_is_fine() {
        let (mut a, b) = pipe();
        let frame = encode_frame(&proto::TxRequest { hash: vec![1; 8] });
        let feeder = tokio::spawn(drip(b, frame, Duration::from_millis(500)));
        let r = read_msg::<proto::TxRequest, _>(&mut a, 4096, D)
            .await
            .unwrap();
        assert_eq!(r.hash, vec![1; 8]);
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn write_to_a_peer_that_never_reads_times_out() {
        let (mut a, _b) = crate::testutil::pipe_with_buffer(1024);
        let big = proto::TxRequest {
            hash: vec![0; 100_000],
        };
        let r = write_msg(&mut a, &big, D).await;
        assert!(matches!(r, Err(ProtocolError::Timeout { .. })), "{r:?}");
    }

    /// A large body takes exactly its own length: reading to the end used
    /// to double a full buffer once more to find the end (8 MiB for a
    /// 4 MiB block).
    #[tokio::test]
    async fn a_body_takes_its_length_not_twice_it() {
        for len in [
            1usize,
            INITIAL_CAPACITY,
            INITIAL_CAPACITY + 1,
            1 << 20,
            3 << 19,
        ] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut bytes = Vec::new();
            prost::encoding::encode_varint(len as u64, &mut bytes);
            bytes.extend_from_slice(&body);
            let got = read_frame(&mut Cursor::new(bytes), len, "Block")
                .await
                .unwrap();
            assert_eq!(got, body);
            assert_eq!(got.capacity(), len, "len {len}");
        }
    }

    #[tokio::test]
    async fn skip_frame_reads_past_a_frame_and_keeps_in_step() {
        let big = vec![7u8; 300_000];
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(big.len() as u64, &mut bytes);
        bytes.extend_from_slice(&big);
        bytes.extend_from_slice(&encode_frame(&status()));
        let mut c = Cursor::new(bytes.clone());
        skip_frame(&mut c, big.len(), "Block", D).await.unwrap();
        let s: proto::Status = read_msg(&mut c, 4096, D).await.unwrap();
        assert_eq!(s, status());
        // Over the cap: refused from the prefix; cut short: truncated.
        let r = skip_frame(&mut Cursor::new(bytes.clone()), 1000, "Block", D).await;
        assert!(matches!(r, Err(ProtocolError::TooLarge { .. })), "{r:?}");
        let r = skip_frame(
            &mut Cursor::new(bytes[..1000].to_vec()),
            big.len(),
            "Block",
            D,
        )
        .await;
        assert!(matches!(r, Err(ProtocolError::Truncated { .. })), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn skip_frame_has_a_deadline() {
        let (a, b) = pipe();
        let mut bytes = Vec::new();
        prost::encoding::encode_varint(100, &mut bytes);
        bytes.extend_from_slice(&[1; 100]);
        let dripping = tokio::spawn(drip(b, bytes, Duration::from_secs(1)));
        let mut a = a;
        let r = skip_frame(&mut a, 1000, "Block", D).await;
        assert!(matches!(r, Err(ProtocolError::Timeout { .. })), "{r:?}");
        dripping.abort();
    }

    #[test]
    fn names() {
        assert_eq!(msg_name::<proto::TxResponse>(), "TxResponse");
    }
}
