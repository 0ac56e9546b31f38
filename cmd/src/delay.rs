//! A user-space delay line for `kite bench net --delay`: a TCP proxy in
//! front of a node's p2p port that holds every byte it forwards, each way,
//! for a fixed time before passing it on.
//!
//! It stands in for `tc qdisc ... netem delay`, which needs the kernel's
//! `sch_netem` module (not present on every machine). The difference: the
//! proxy ends TCP on each side, so TCP's own acknowledgements are not
//! delayed and its window does not shrink the throughput of a link with
//! a long round trip. What a node sees (a message takes `delay` to reach
//! the other side, an answer `delay` to come back) is the same.
//!
//! Bounds: at most [`MAX_CONNS`] connections at once (more are closed at
//! once), and at most [`IN_FLIGHT_BYTES`] held per direction of a
//! connection; a full line stops reading from that side, as a full socket
//! buffer would. The bound is in bytes, not chunks: a peer that writes
//! many small frames must not be held to a few of them per delay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most connections one proxy carries at once.
pub const MAX_CONNS: usize = 64;
/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Bytes held per direction of a connection (a bandwidth-delay product
/// of 640 Mbit/s at 50 ms).
const IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// Chunks held per direction of a connection, whatever their size.
const IN_FLIGHT_CHUNKS: usize = 16 * 1024;

/// A running proxy; it stops, with every connection it carries, when
/// dropped.
pub struct DelayProxy {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    _tasks: JoinSet<()>,
}

impl DelayProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection
    /// to `target`, `delay` late each way.
    pub async fn start(target: SocketAddr, delay: Duration) -> std::io::Result<DelayProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(listener, target, delay, Arc::clone(&bytes)));
        Ok(DelayProxy {
            addr,
            bytes,
            _tasks: tasks,
        })
    }

    /// Bytes forwarded so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    delay: Duration,
    bytes: Arc<AtomicU64>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    // Connection tasks end with the accept loop (when the proxy drops).
    let mut conns = JoinSet::new();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of file descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while conns.try_join_next().is_some() {}
        if open.load(Ordering::SeqCst) >= MAX_CONNS {
            drop(inbound);
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (open, bytes) = (Arc::clone(&open), Arc::clone(&bytes));
        conns.spawn(async move {
            if let Ok(outbound) = TcpStream::connect(target).await {
                carry(inbound, outbound, delay, &bytes).await;
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Forwards both ways until both sides have ended.
async fn carry(a: TcpStream, b: TcpStream, delay: Duration, bytes: &AtomicU64) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::join!(line(ar, bw, delay, bytes), line(br, aw, delay, bytes));
}

/// One direction: reads chunks as they come and writes each `delay` after
/// it was read; ends the write side when the read side ends.
async fn line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    bytes: &AtomicU64,
) {
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>, OwnedSemaphorePermit)>(IN_FLIGHT_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            // Room for a whole chunk before reading one.
            let Ok(mut permit) = Arc::clone(&budget).acquire_many_owned(CHUNK as u32).await else {
                break;
            };
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Give back what the chunk does not use.
                    if let Some(rest) = permit.split(CHUNK - n) {
                        drop(rest);
                    }
                    let due = Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec(), permit)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk, permit)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            drop(permit);
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte sent through the line arrives no sooner than the delay, and
    /// the answer takes the delay again.
    #[tokio::test]
    async fn bytes_arrive_a_delay_late_each_way_and_in_order() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let delay = Duration::from_millis(60);
        let proxy = DelayProxy::start(target, delay).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let t0 = std::time::Instant::now();
        let msg: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        c.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).await.unwrap();
        let rtt = t0.elapsed();
        assert_eq!(back, msg);
        assert!(rtt >= 2 * delay, "round trip {rtt:?} under twice {delay:?}");
        assert_eq!(proxy.bytes(), 2 * msg.len() as u64);
        // The far side ends: so does the near side.
        drop(c);
    }
}
