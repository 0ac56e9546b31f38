//! Writes the starting corpus of every fuzz target into `corpus/<target>/`:
//! real exchanges recorded between each protocol's two sides (what the
//! asking side sent seeds the serving target and the other way round),
//! encoded txs and blocks, a genesis, the default config, JSON-RPC calls,
//! a promise record and a peer store. `scripts/fuzz.sh` runs it before the
//! first run; the seeds are small and deterministic.

use futures::io::{AsyncRead, AsyncWrite};
use kite_fuzz::{ASKS, CHAIN, Everything, block, block_on, key, tx};
use kite_types::promise::Promise;
use kite_types::{Genesis, Hash, Vote};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio_util_compat::Pipe;

/// Records everything written through it.
struct Tap {
    inner: Pipe,
    written: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r
            && let Ok(mut w) = self.written.lock()
        {
            w.extend_from_slice(&buf[..*n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A futures-io pipe over tokio's in-memory duplex.
mod tokio_util_compat {
    use futures::io::{AsyncRead, AsyncWrite};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead as TRead, AsyncWrite as TWrite, DuplexStream, ReadBuf};

    pub struct Pipe(pub DuplexStream);

    impl AsyncRead for Pipe {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut self.0).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}

/// Which protocol serves request number `ask`.
fn served_by(ask: u8) -> u8 {
    match ask {
        0 => 0,
        1 => 1,
        2..=4 => 2,
        5 => 3,
        6 | 7 => 4,
        8 => 5,
        9 => 6,
        10 => 7,
        _ => 8,
    }
}

/// Runs request `ask` against its protocol's handler; returns what each
/// side wrote: (asker, server).
fn exchange(ask: u8) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let a = Tap {
        inner: Pipe(a),
        written: asked.clone(),
    };
    let b = Tap {
        inner: Pipe(b),
        written: answered.clone(),
    };
    let sink = Everything::default();
    block_on(async {
        futures::join!(
            kite_fuzz::ask(ask, a),
            kite_fuzz::serve(served_by(ask), b, &sink)
        );
    });
    let take = |m: Arc<Mutex<Vec<u8>>>| m.lock().map(|v| v.clone()).unwrap_or_default();
    (take(asked), take(answered))
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

fn tagged(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(bytes);
    v
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "corpus".into());
    for ask in 0..ASKS {
        let (asked, answered) = exchange(ask);
        write(
            &dir,
            "p2p_serve",
            &format!("ask-{ask}"),
            &tagged(served_by(ask), &asked),
        )?;
        write(
            &dir,
            "p2p_client",
            &format!("ask-{ask}"),
            &tagged(ask, &answered),
        )?;
    }
    write(&dir, "tx_block", "tx", &tagged(0, &tx(1).encode()))?;
    write(&dir, "tx_block", "block", &tagged(1, &block(2, 3).encode()))?;
    let g = Genesis::single(CHAIN, key(1).public(), key(200).public(), 1_000_000);
    write(
        &dir,
        "genesis_config",
        "genesis",
        &tagged(0, g.to_json().as_bytes()),
    )?;
    let config = kite_node::config::Config::default().to_documented_toml();
    write(
        &dir,
        "genesis_config",
        "config",
        &tagged(1, config.as_bytes()),
    )?;
    let h = tx(1).hash();
    let pk = key(200).public();
    let calls = [
        r#"{"jsonrpc":"2.0","id":1,"method":"status"}"#.to_owned(),
        format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"broadcast_tx","params":{{"tx":"{}","wait":"commit"}}}}"#,
            hex(&tx(1).encode())
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tx_query","params":{{"hash":"{}"}}}}"#,
            hex(&h.0)
        ),
        r#"{"jsonrpc":"2.0","id":4,"method":"block","params":{"height":2}}"#.to_owned(),
        format!(
            r#"{{"jsonrpc":"2.0","id":5,"method":"account","params":{{"id":"{}"}}}}"#,
            hex(pk.as_bytes())
        ),
        format!(
            r#"[{{"jsonrpc":"2.0","id":6,"method":"kv_get","params":{{"owner":"{}","key":"greeting"}}}},{{"jsonrpc":"2.0","method":"peers"}},{{"jsonrpc":"2.0","id":"x","method":"validators","params":{{}}}}]"#,
            hex(pk.as_bytes())
        ),
    ];
    for (i, c) in calls.iter().enumerate() {
        write(&dir, "rpc", &format!("call-{i}"), c.as_bytes())?;
    }
    let b = block(2, 1);
    let promise = Promise {
        height: 2,
        vote: Some(Vote::ack(&key(2), CHAIN, 2, b.hash(), Hash::digest(b"app"))),
        proposed: vec![b.hash()],
        newest_ts: 1_700_000_000_002,
        term: 1,
        block: Some(b.clone()),
        credential: None,
    };
    write(&dir, "node_files", "promise", &tagged(0, &promise.encode()))?;
    let store = format!(
        r#"{{"version":1,"peers":[{{"id":"{}","addrs":["/ip4/127.0.0.1/tcp/26656"],"last_seen_ms":5}}]}}"#,
        key(3).peer_id()
    );
    write(&dir, "node_files", "peers", &tagged(1, store.as_bytes()))?;
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
