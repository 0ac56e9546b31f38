#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The libp2p host in one process on 127.0.0.1: connections, custom
//! protocols through open_stream / accept loops, chain separation, bans,
//! discovery toward the peer target, the per-protocol stream bound and the
//! persisted peer store. Every wait is bounded, and a check that something
//! did not happen (a refused peer is not connected) comes after an event that
//! shows the attempt is over, never after a fixed sleep.

use futures::{AsyncReadExt, AsyncWriteExt};
use kite_node::p2p::{
    Host, HostConfig, HostEvent, HostEvents, HostHandle, Multiaddr, PeerId, Stream,
    spawn_accept_loop,
};
use kite_types::NodeKey;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

const CHAIN: &str = "kite-test";
const ECHO: &str = "/kite/test-echo/1.0.0";
const WAIT: Duration = Duration::from_secs(15);

fn config(chain: &str) -> HostConfig {
    let mut c = HostConfig::new(chain);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.allow_private_addrs = true;
    c.maintenance_interval = Duration::from_millis(100);
    c.dial_backoff = Duration::from_millis(200);
    c.max_dial_backoff = Duration::from_secs(2);
    c.open_timeout = Duration::from_secs(5);
    c.target_peers = 0;
    c
}

struct Node {
    handle: HostHandle,
    events: HostEvents,
    addr: Multiaddr,
    id: PeerId,
}

async fn start(seed: u8, cfg: HostConfig) -> Node {
    kite_node::testkit::init_log();
    let key = NodeKey::from_seed([seed; 32]);
    let (handle, events) = Host::spawn(&key, cfg).unwrap();
    let id = handle.local_peer_id();
    let listen = wait_for("listen address", || {
        let h = handle.clone();
        async move { h.listen_addrs().await.unwrap().into_iter().next() }
    })
    .await;
    let addr: Multiaddr = format!("{listen}/p2p/{id}").parse().unwrap();
    Node {
        handle,
        events,
        addr,
        id,
    }
}

/// Polls `f` until it returns `Some`, within [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let poll = async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    match tokio::time::timeout(WAIT, poll).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

async fn wait_connected(a: &HostHandle, b: PeerId) {
    wait_for("connection", || async move {
        a.connected_peers()
            .await
            .unwrap()
            .contains(&b)
            .then_some(())
    })
    .await;
}

async fn wait_disconnected(a: &HostHandle, b: PeerId) {
    wait_for("disconnection", || async move {
        (!a.connected_peers().await.unwrap().contains(&b)).then_some(())
    })
    .await;
}

/// Echo handler: reads everything (at most 64 KiB) then writes it back.
fn echo_loop(h: &HostHandle) -> tokio::task::JoinHandle<()> {
    spawn_accept_loop(h, ECHO, 8, |_peer, mut s: Stream| async move {
        let mut buf = Vec::new();
        (&mut s).take(64 * 1024).read_to_end(&mut buf).await?;
        s.write_all(&buf).await?;
        s.close().await?;
        Ok::<(), std::io::Error>(())
    })
    .unwrap()
}

async fn echo(h: &HostHandle, peer: PeerId, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = h
        .open_stream(peer, ECHO)
        .await
        .map_err(std::io::Error::other)?;
    s.write_all(msg).await?;
    s.close().await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

async fn next_event(ev: &mut HostEvents, want: impl Fn(&HostEvent) -> bool) -> HostEvent {
    let fut = async {
        loop {
            let e = ev.recv().await.expect("event channel closed");
            if want(&e) {
                return e;
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("no such event")
}

fn is_connected(e: &HostEvent, to: PeerId) -> bool {
    matches!(e, HostEvent::PeerConnected { peer, .. } if *peer == to)
}

fn is_disconnected(e: &HostEvent, from: PeerId) -> bool {
    matches!(e, HostEvent::PeerDisconnected { peer } if *peer == from)
}

/// Waits, within [`WAIT`], until a dial toward `to` is over with the
/// connection refused by `to` once it knew who dialed (its gate or its
/// connection limit): the dialer sees the connection come up, then `to`
/// closes it. The dialer's events must hold nothing older about `to`.
async fn wait_refused_by(dialer: &mut HostEvents, to: PeerId) {
    next_event(dialer, |e| is_connected(e, to)).await;
    next_event(dialer, |e| is_disconnected(e, to)).await;
}

/// Takes the events received so far (the channel is empty afterwards).
fn drain(ev: &mut HostEvents) -> Vec<HostEvent> {
    let mut out = Vec::new();
    while let Ok(e) = ev.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_connect_and_echo_both_ways() {
    let mut a = start(1, config(CHAIN)).await;
    let b = start(2, config(CHAIN)).await;
    let c = start(3, config(CHAIN)).await;
    let loops: Vec<_> = [&a, &b, &c].iter().map(|n| echo_loop(&n.handle)).collect();
    // One accept loop per protocol.
    assert!(spawn_accept_loop(&a.handle, ECHO, 1, |_, _| async { Ok::<(), String>(()) }).is_err());
    b.handle.dial(a.addr.clone()).await.unwrap();
    c.handle.dial(a.addr.clone()).await.unwrap();
    c.handle.dial(b.addr.clone()).await.unwrap();
    for (x, y) in [(&a, &b), (&a, &c), (&b, &a), (&b, &c), (&c, &a), (&c, &b)] {
        wait_connected(&x.handle, y.id).await;
    }
    assert_eq!(a.handle.connected_peers().await.unwrap().len(), 2);

    // A saw B connect and identify with our chain's protocol version.
    let ev = next_event(
        &mut a.events,
        |e| matches!(e, HostEvent::PeerIdentified { peer, .. } if *peer == b.id),
    )
    .await;
    let HostEvent::PeerIdentified {
        protocol_version,
        listen_addrs,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(protocol_version, format!("/kite/{CHAIN}"));
    assert!(!listen_addrs.is_empty());

    // The echo protocol works in both directions.
    assert_eq!(
        echo(&a.handle, b.id, b"ping a->b").await.unwrap(),
        b"ping a->b"
    );
    assert_eq!(
        echo(&b.handle, a.id, b"ping b->a").await.unwrap(),
        b"ping b->a"
    );
    assert_eq!(
        echo(&c.handle, a.id, &[7u8; 10_000]).await.unwrap(),
        vec![7u8; 10_000]
    );
    let sa = a.handle.protocol_stats(ECHO);
    assert_eq!((sa.opened, sa.accepted), (1, 2));

    // Peer info for the RPC.
    let info = a.handle.peer_info().await.unwrap();
    assert_eq!(info.len(), 2);
    let ib = info.iter().find(|p| p.peer == b.id).unwrap();
    assert_eq!(ib.direction, kite_node::p2p::Direction::Inbound);
    assert!(ib.agent.as_deref().unwrap().starts_with("kite/"));
    assert_eq!(ib.score, 0);

    // An unknown protocol: the opener is lazy (the protocol is proposed
    // with the first bytes, no round trip before them), so the refusal shows
    // when the stream is read, as an error rather than as an answer.
    let refused = async {
        let mut s = a
            .handle
            .open_stream(b.id, "/kite/nope/1.0.0")
            .await
            .map_err(std::io::Error::other)?;
        s.write_all(b"anyone?").await?;
        s.close().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let res = tokio::time::timeout(WAIT, refused).await.unwrap();
    assert!(res.is_err(), "{res:?}");
    // A bad protocol id is an error, not a panic.
    assert!(a.handle.open_stream(b.id, "no-slash").await.is_err());

    for n in [&a, &b, &c] {
        n.handle.shutdown().await.unwrap();
    }
    assert!(a.handle.connected_peers().await.is_err());
    assert!(a.handle.open_stream(b.id, ECHO).await.is_err());
    // The accept loops end with their host.
    for l in loops {
        tokio::time::timeout(WAIT, l).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_of_another_chain_is_dropped() {
    let mut a = start(10, config(CHAIN)).await;
    let mut x = start(11, config("some-other-chain")).await;
    x.handle.dial(a.addr.clone()).await.unwrap();
    // The connection comes up, identify tells the chains apart, both drop it.
    next_event(&mut x.events, |e| is_connected(e, a.id)).await;
    let mut x_read_a = false;
    loop {
        match next_event(&mut x.events, |_| true).await {
            HostEvent::OtherChain { peer, .. } if peer == a.id => x_read_a = true,
            e if is_disconnected(&e, a.id) => break,
            _ => {}
        }
    }
    wait_disconnected(&a.handle, x.id).await;
    let a_read_x = drain(&mut a.events)
        .iter()
        .any(|e| matches!(e, HostEvent::OtherChain { peer, .. } if *peer == x.id));
    // A side that read the other's identify bans it, at the latest on its
    // first maintenance tick after the disconnection.
    if a_read_x {
        wait_for("A bans X", || async {
            a.handle.is_banned(x.id).await.unwrap().then_some(())
        })
        .await;
    }
    if x_read_a {
        wait_for("X bans A", || async {
            x.handle.is_banned(a.id).await.unwrap().then_some(())
        })
        .await;
    }
    // Whichever side read the other's identify first banned it (usually both).
    let banned = [
        a.handle.is_banned(x.id).await.unwrap(),
        x.handle.is_banned(a.id).await.unwrap(),
    ];
    assert!(banned.contains(&true), "{banned:?}");
    // X cannot come back: either X refuses to dial A at all, or the
    // connection comes up on X's side and A closes it as soon as it knows X.
    drain(&mut x.events);
    if x.handle.dial(a.addr.clone()).await.is_ok() {
        wait_refused_by(&mut x.events, a.id).await;
    }
    assert!(!a.handle.connected_peers().await.unwrap().contains(&x.id));
    assert!(
        !drain(&mut a.events).iter().any(|e| is_connected(e, x.id)),
        "X connected to A again"
    );
    // Banned peers are never handed out.
    assert!(
        a.handle
            .known_peers(100, true)
            .await
            .unwrap()
            .iter()
            .all(|(p, _)| *p != x.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peer_is_banned_and_cannot_reconnect() {
    let mut cfg = config(CHAIN);
    cfg.ban_threshold = 100;
    let mut a = start(20, cfg).await;
    let mut b = start(21, config(CHAIN)).await;
    b.handle.dial(a.addr.clone()).await.unwrap();
    wait_connected(&a.handle, b.id).await;

    a.handle.report(b.id, 60, "sent garbage");
    // Once A counted the report, below the threshold B stays connected.
    let score = wait_for("the report counted", || async {
        let info = a.handle.peer_info().await.unwrap();
        let score = info.iter().find(|p| p.peer == b.id).map_or(0, |p| p.score);
        (score > 0).then_some(score)
    })
    .await;
    assert_eq!(score, 60);
    assert!(a.handle.connected_peers().await.unwrap().contains(&b.id));
    assert!(!a.handle.is_banned(b.id).await.unwrap());

    a.handle.report(b.id, 60, "sent garbage again");
    wait_disconnected(&a.handle, b.id).await;
    wait_disconnected(&b.handle, a.id).await;
    assert!(a.handle.is_banned(b.id).await.unwrap());

    // Drain what A and B said so far, then B tries again: each time the
    // connection reaches A, and A closes it as soon as it knows B.
    drain(&mut a.events);
    drain(&mut b.events);
    for _ in 0..3 {
        b.handle.dial(a.addr.clone()).await.unwrap();
        wait_refused_by(&mut b.events, a.id).await;
    }
    assert!(!a.handle.connected_peers().await.unwrap().contains(&b.id));
    for e in drain(&mut a.events) {
        assert!(!is_connected(&e, b.id), "banned peer connected again");
    }
    // A cannot reach B either.
    let err = a.handle.open_stream(b.id, ECHO).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(a.handle.dial(b.addr.clone()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_peers_are_dialed_up_to_the_target() {
    let a = start(30, config(CHAIN)).await;
    let b = start(31, config(CHAIN)).await;
    let c = start(32, config(CHAIN)).await;
    b.handle.dial(a.addr.clone()).await.unwrap();
    c.handle.dial(a.addr.clone()).await.unwrap();
    // A learns B's and C's listen addresses through identify.
    let known = wait_for("A knows B and C", || {
        let h = a.handle.clone();
        async move {
            let k = h.known_peers(10, true).await.unwrap();
            (k.len() >= 2).then_some(k)
        }
    })
    .await;
    assert!(known.iter().any(|(p, _)| *p == b.id));
    assert!(known.iter().any(|(p, _)| *p == c.id));
    // Private addresses are not handed out unless asked for.
    assert!(a.handle.known_peers(10, false).await.unwrap().is_empty());

    let mut dc = config(CHAIN);
    dc.bootstrap = vec![a.addr.clone()];
    dc.target_peers = 3;
    let d = start(33, dc).await;
    wait_connected(&d.handle, a.id).await;
    // What the discover exchange would carry (plus D itself and junk, which are skipped).
    let mut list = known.clone();
    list.push((d.id, vec![d.addr.clone()]));
    list.push((b.id, vec!["/memory/1".parse().unwrap()]));
    let added = d.handle.add_discovered(list).await.unwrap();
    assert_eq!(added, 2);
    wait_connected(&d.handle, b.id).await;
    wait_connected(&d.handle, c.id).await;
    assert_eq!(d.handle.connected_peers().await.unwrap().len(), 3);

    // With PEX off, nothing is handed out or taken in.
    let mut ec = config(CHAIN);
    ec.pex = false;
    let e = start(34, ec).await;
    e.handle.dial(a.addr.clone()).await.unwrap();
    wait_connected(&e.handle, a.id).await;
    assert_eq!(e.handle.add_discovered(known).await.unwrap(), 0);
    assert!(e.handle.known_peers(10, true).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_bound_refuses_excess_without_stalling() {
    let a = start(40, config(CHAIN)).await;
    let b = start(41, config(CHAIN)).await;
    a.handle.dial(b.addr.clone()).await.unwrap();
    wait_connected(&a.handle, b.id).await;

    // B's handlers wait for a permit from `gate` before echoing.
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    spawn_accept_loop(&b.handle, ECHO, 2, move |_peer, mut s: Stream| {
        let g = g.clone();
        async move {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await?;
            let _p = g.acquire().await.map_err(std::io::Error::other)?;
            s.write_all(&byte).await?;
            s.close().await?;
            Ok::<(), std::io::Error>(())
        }
    })
    .unwrap();

    // Streams are opened one at a time, each once the previous one reached
    // the loop, so which ones the loop takes is known.
    let mut open = Vec::new();
    for i in 0..2u8 {
        let mut s = a.handle.open_stream(b.id, ECHO).await.unwrap();
        s.write_all(&[i]).await.unwrap();
        s.flush().await.unwrap();
        open.push(s);
        wait_for("accepted", || async {
            (b.handle.protocol_stats(ECHO).accepted == u64::from(i) + 1).then_some(())
        })
        .await;
    }
    // Two more while both handlers are busy: refused (reset), counted.
    let mut refused = Vec::new();
    for i in 2..4u8 {
        if let Ok(mut s) = a.handle.open_stream(b.id, ECHO).await {
            let _ = s.write_all(&[i]).await;
            let _ = s.flush().await;
            refused.push(s);
        }
        wait_for("refused", || async {
            (b.handle.protocol_stats(ECHO).refused == u64::from(i) - 1).then_some(())
        })
        .await;
    }
    for mut s in refused {
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out).await;
        assert!(
            r.is_err() || out.is_empty(),
            "a refused stream got an answer"
        );
    }
    // Release the busy handlers: their streams complete.
    gate.add_permits(10);
    for (i, mut s) in open.into_iter().enumerate() {
        s.close().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, vec![i as u8]);
    }
    // The loop is not stalled: a new stream is served.
    let mut s = a.handle.open_stream(b.id, ECHO).await.unwrap();
    s.write_all(&[9]).await.unwrap();
    s.close().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, vec![9]);
    let st = b.handle.protocol_stats(ECHO);
    assert_eq!((st.accepted, st.refused), (3, 2));
}

/// A burst of streams opened at the same instant is served whole: inbound
/// streams wait in their protocol's buffer for the accept loop. With the
/// first wave's stream layer (one stream held, the rest of a burst
/// dropped) and the lazy opener, most of such a burst failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_streams_opened_at_once_is_served_whole() {
    const BURST: usize = 48;
    let a = start(42, config(CHAIN)).await;
    let b = start(43, config(CHAIN)).await;
    // Room for the whole burst in the loop: per peer a quarter of it.
    spawn_accept_loop(
        &b.handle,
        ECHO,
        4 * BURST,
        |_peer, mut s: Stream| async move {
            let mut buf = Vec::new();
            (&mut s).take(16).read_to_end(&mut buf).await?;
            s.write_all(&buf).await?;
            s.close().await?;
            Ok::<(), std::io::Error>(())
        },
    )
    .unwrap();
    a.handle.dial(b.addr.clone()).await.unwrap();
    wait_connected(&a.handle, b.id).await;
    let h = &a.handle;
    let burst = (0..BURST).map(|i| async move { echo(h, b.id, &[i as u8]).await });
    let answers = futures::future::join_all(burst).await;
    let failed: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(i, r)| r.as_ref().ok() != Some(&vec![*i as u8]))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {BURST} failed: {failed:?}",
        failed.len()
    );
    let st = b.handle.protocol_stats(ECHO);
    assert_eq!((st.accepted, st.refused), (BURST as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_store_persists_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers.json");
    let b = start(51, config(CHAIN)).await;

    let mut ac = config(CHAIN);
    ac.peer_store_path = Some(path.clone());
    let a = start(50, ac.clone()).await;
    a.handle.dial(b.addr.clone()).await.unwrap();
    wait_connected(&a.handle, b.id).await;
    a.handle.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&b.id.to_string()), "{text}");
    wait_disconnected(&b.handle, a.id).await;

    // Restarted with only the store to go by, A finds B again.
    ac.target_peers = 4;
    let a2 = start(50, ac).await;
    wait_connected(&a2.handle, b.id).await;
    a2.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_mode_accepts_only_allowed_peers() {
    let friend_key = NodeKey::from_seed([61; 32]);
    let friend_id = kite_node::p2p::keys::local_peer_id(&friend_key).unwrap();
    let mut pc = config(CHAIN);
    pc.private_mode = true;
    pc.whitelist = vec![friend_id];
    let mut p = start(60, pc).await;
    let friend = start(61, config(CHAIN)).await;
    let mut stranger = start(62, config(CHAIN)).await;
    assert_eq!(friend.id, friend_id);
    friend.handle.dial(p.addr.clone()).await.unwrap();
    stranger.handle.dial(p.addr.clone()).await.unwrap();
    wait_connected(&p.handle, friend.id).await;
    // The stranger's connection reaches P, which closes it once it knows who.
    wait_refused_by(&mut stranger.events, p.id).await;
    assert_eq!(p.handle.connected_peers().await.unwrap(), vec![friend.id]);
    assert!(
        !drain(&mut p.events)
            .iter()
            .any(|e| is_connected(e, stranger.id)),
        "the stranger connected"
    );
    assert!(p.handle.known_peers(10, true).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_transport_connects() {
    let mut qc = config(CHAIN);
    qc.enable_quic = true;
    let a = start(70, qc.clone()).await;
    let b = start(71, qc).await;
    let _echo = echo_loop(&a.handle);
    let quic = wait_for("a QUIC listen address", || {
        let h = a.handle.clone();
        async move {
            h.listen_addrs()
                .await
                .unwrap()
                .into_iter()
                .find(|a| a.to_string().contains("/quic-v1"))
        }
    })
    .await;
    let addr: Multiaddr = format!("{quic}/p2p/{}", a.id).parse().unwrap();
    b.handle.dial(addr).await.unwrap();
    wait_connected(&b.handle, a.id).await;
    let info = b.handle.peer_info().await.unwrap();
    assert!(
        info[0].addrs[0].to_string().contains("/quic-v1"),
        "{info:?}"
    );
    assert_eq!(
        echo(&b.handle, a.id, b"over quic").await.unwrap(),
        b"over quic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_enforced() {
    let mut lc = config(CHAIN);
    lc.max_connections = 1;
    let mut a = start(80, lc).await;
    let b = start(81, config(CHAIN)).await;
    let mut c = start(82, config(CHAIN)).await;
    b.handle.dial(a.addr.clone()).await.unwrap();
    wait_connected(&a.handle, b.id).await;
    c.handle.dial(a.addr.clone()).await.unwrap();
    // C's connection reaches A, which closes it: A is at its limit.
    wait_refused_by(&mut c.events, a.id).await;
    assert_eq!(a.handle.connected_peers().await.unwrap(), vec![b.id]);
    assert!(
        !drain(&mut a.events).iter().any(|e| is_connected(e, c.id)),
        "C connected to A"
    );
}

/// Inbound peers cannot take the slots kept for this host's own dials: with
/// 3 connections of which 1 is outbound-only, a third inbound peer is
/// refused, and the host still dials out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_peers_cannot_take_the_outbound_slots() {
    let mut lc = config(CHAIN);
    lc.max_connections = 3;
    lc.outbound_slots = 1;
    let a = start(90, lc).await;
    let e = start(94, config(CHAIN)).await;
    let _strangers = two_inbound_then_refused(&a, 91).await;
    // A's own dial still gets a slot.
    a.handle.dial(e.addr.clone()).await.unwrap();
    wait_connected(&a.handle, e.id).await;
    assert_eq!(a.handle.connected_peers().await.unwrap().len(), 3);
}

/// Two strangers (seeds `seed`, `seed + 1`) connect to `a`; a third
/// (`seed + 2`) is refused. Returns them (alive).
async fn two_inbound_then_refused(a: &Node, seed: u8) -> Vec<Node> {
    let mut peers = Vec::new();
    for s in seed..seed + 3 {
        peers.push(start(s, config(CHAIN)).await);
    }
    for x in &peers[..2] {
        x.handle.dial(a.addr.clone()).await.unwrap();
        wait_connected(&a.handle, x.id).await;
    }
    let d = &mut peers[2];
    d.handle.dial(a.addr.clone()).await.unwrap();
    wait_refused_by(&mut d.events, a.id).await;
    let up = a.handle.connected_peers().await.unwrap();
    assert!(!up.contains(&d.id), "{up:?}");
    peers
}

/// One address cannot take every inbound slot: with 2 inbound
/// connections per IP, a third stranger from 127.0.0.1 is refused, while
/// a validator of the genesis from the same address is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_inbound_slot() {
    let validator_seed = 104;
    let mut lc = config(CHAIN);
    lc.max_inbound_per_ip = 2;
    lc.validators = vec![
        kite_node::p2p::keys::peer_id_of(&NodeKey::from_seed([validator_seed; 32]).public())
            .unwrap(),
    ];
    let a = start(100, lc).await;
    let v = start(validator_seed, config(CHAIN)).await;
    let _strangers = two_inbound_then_refused(&a, 101).await;
    // A validator of the genesis is not counted.
    v.handle.dial(a.addr.clone()).await.unwrap();
    wait_connected(&a.handle, v.id).await;
    assert_eq!(a.handle.connected_peers().await.unwrap().len(), 3);
}

/// Over its memory limit, a host makes no new connection (its dial is
/// refused at once) and takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_memory_limit_a_host_makes_and_takes_no_connection() {
    let mut lc = config(CHAIN);
    // Any process is over one byte.
    lc.max_memory = Some(1);
    let a = start(110, lc).await;
    let b = start(111, config(CHAIN)).await;
    let e = a.handle.dial(b.addr.clone()).await.unwrap_err();
    assert!(e.to_string().contains("memory"), "{e}");
    // The same host without the limit dials fine.
    let c = start(112, config(CHAIN)).await;
    c.handle.dial(b.addr.clone()).await.unwrap();
    wait_connected(&b.handle, c.id).await;
    assert_eq!(b.handle.connected_peers().await.unwrap(), vec![c.id]);
}

/// A peer of `p2p.peers` is dialed again when it goes, even while the host
/// has all the connections it wants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_is_always_dialed_again() {
    let b = start(121, config(CHAIN)).await;
    let c = start(122, config(CHAIN)).await;
    let mut lc = config(CHAIN);
    lc.bootstrap = vec![b.addr.clone()];
    lc.target_peers = 1;
    let a = start(120, lc).await;
    wait_connected(&a.handle, b.id).await;
    a.handle.dial(c.addr.clone()).await.unwrap();
    wait_connected(&a.handle, c.id).await;
    // B drops A; A, at its target with C, dials B again.
    b.handle.disconnect(a.id).await.unwrap();
    wait_for("A without B", || {
        let h = a.handle.clone();
        async move { (!h.connected_peers().await.unwrap().contains(&b.id)).then_some(()) }
    })
    .await;
    wait_connected(&a.handle, b.id).await;
}

/// One peer holding idle streams gets at most its share of a protocol's
/// handlers; another peer is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_handler() {
    let a = start(50, config(CHAIN)).await;
    let b = start(51, config(CHAIN)).await;
    let c = start(52, config(CHAIN)).await;
    a.handle.dial(b.addr.clone()).await.unwrap();
    c.handle.dial(b.addr.clone()).await.unwrap();
    wait_connected(&a.handle, b.id).await;
    wait_connected(&c.handle, b.id).await;

    // A's streams stay idle (their handlers wait forever); others echo.
    let a_id = a.id;
    spawn_accept_loop(&b.handle, ECHO, 8, move |peer, mut s: Stream| async move {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await?;
        if peer == a_id {
            std::future::pending::<()>().await;
        }
        s.write_all(&byte).await?;
        s.close().await?;
        Ok::<(), std::io::Error>(())
    })
    .unwrap();
    // 8 handlers: a peer's share is 2. A's third stream is refused.
    let mut held = Vec::new();
    for i in 0..3u8 {
        if let Ok(mut s) = a.handle.open_stream(b.id, ECHO).await {
            let _ = s.write_all(&[i]).await;
            let _ = s.flush().await;
            held.push(s);
        }
        wait_for("taken", || async {
            let st = b.handle.protocol_stats(ECHO);
            (st.accepted + st.refused == u64::from(i) + 1).then_some(())
        })
        .await;
    }
    let st = b.handle.protocol_stats(ECHO);
    assert_eq!((st.accepted, st.refused), (2, 1));
    // C is served while A holds its share.
    let mut s = c.handle.open_stream(b.id, ECHO).await.unwrap();
    s.write_all(&[7]).await.unwrap();
    s.close().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, vec![7]);
    drop(held);
}

/// An operator bans, unbans, adds and removes peers through the admin
/// listener on a unix socket, as `kite peers ...` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_bans_unbans_adds_and_removes_peers() {
    use kite_node::admin::{AddParams, AdminClient, AdminListen, BanParams, PeerParams};
    let mut a = start(91, config(CHAIN)).await;
    let b = start(92, config(CHAIN)).await;
    let dir = tempfile::tempdir().unwrap();
    let at = AdminListen::Unix(dir.path().join("admin.sock"));
    let (bound, _server) = kite_node::admin::serve(&at, a.handle.clone(), std::future::pending())
        .await
        .unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("admin.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the node's user may use the socket"
    );
    let admin = AdminClient::new(bound, WAIT);
    let peer = |p: PeerId| PeerParams {
        peer: p.to_string(),
    };

    // Add: A dials B and keeps it.
    let add = AddParams {
        addr: b.addr.to_string(),
    };
    let r = admin.call("peers_add", &add).await.unwrap();
    assert!(r.changed && !r.was_connected, "{r:?}");
    next_event(&mut a.events, |e| is_connected(e, b.id)).await;

    // Ban: B is cut off and cannot be dialed again.
    let ban = BanParams {
        peer: b.id.to_string(),
        duration: Some("1h".into()),
    };
    let r = admin.call("peers_ban", &ban).await.unwrap();
    assert!(r.changed && r.was_connected, "{r:?}");
    next_event(&mut a.events, |e| is_disconnected(e, b.id)).await;
    assert!(a.handle.is_banned(b.id).await.unwrap());
    let e = admin.call("peers_add", &add).await.unwrap_err().to_string();
    assert!(e.contains("banned"), "{e}");

    // Unban: once, then nothing to change.
    assert!(admin.call("peers_unban", peer(b.id)).await.unwrap().changed);
    assert!(!a.handle.is_banned(b.id).await.unwrap());
    assert!(!admin.call("peers_unban", peer(b.id)).await.unwrap().changed);

    // Add again, then remove: disconnected and forgotten.
    admin.call("peers_add", &add).await.unwrap();
    next_event(&mut a.events, |e| is_connected(e, b.id)).await;
    let r = admin.call("peers_remove", peer(b.id)).await.unwrap();
    assert!(r.changed && r.was_connected, "{r:?}");
    next_event(&mut a.events, |e| is_disconnected(e, b.id)).await;
    let known = a.handle.known_peers(100, true).await.unwrap();
    assert!(known.iter().all(|(p, _)| *p != b.id), "{known:?}");
    assert!(
        !admin
            .call("peers_remove", peer(b.id))
            .await
            .unwrap()
            .changed
    );

    // Bad input gets a clear error, and the node keeps serving.
    let bad = |s: &str| PeerParams { peer: s.into() };
    let e = admin
        .call("peers_ban", bad("nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a peer id"), "{e}");
    let forever = BanParams {
        peer: b.id.to_string(),
        duration: Some("100years".into()),
    };
    let e = admin
        .call("peers_ban", &forever)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 10 years"), "{e}");
    let no_id = AddParams {
        addr: "/ip4/127.0.0.1/tcp/1".into(),
    };
    let e = admin
        .call("peers_add", &no_id)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("/p2p/"), "{e}");
    let e = admin
        .call("peers_ban", peer(a.id))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("this node"), "{e}");
    let e = admin
        .call("shutdown", peer(b.id))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no admin method"), "{e}");
    b.handle.shutdown().await.unwrap();
    a.handle.shutdown().await.unwrap();
}

/// Over TCP the admin listener answers only JSON posted to a localhost
/// `Host` (no browser page, no DNS rebinding), and only on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_refuses_foreign_hosts_and_non_json() {
    use kite_node::admin::{AdminListen, router};
    use tower::ServiceExt;
    let a = start(93, config(CHAIN)).await;
    let app = router(a.handle.clone(), true);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"peers_unban","params":{"peer":"x"}}"#;
    let post = |host: &str, ctype: &str| {
        axum::http::Request::post("/")
            .header("host", host)
            .header("content-type", ctype)
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let status = |r: axum::response::Response| r.status().as_u16();
    let r = app
        .clone()
        .oneshot(post("evil.example:26659", "application/json"));
    assert_eq!(status(r.await.unwrap()), 403);
    let r = app.clone().oneshot(post("127.0.0.1:26659", "text/plain"));
    assert_eq!(status(r.await.unwrap()), 415);
    let r = app
        .clone()
        .oneshot(post("localhost:26659", "application/json"));
    assert_eq!(status(r.await.unwrap()), 200);

    let home = std::path::Path::new("/home");
    for addr in [
        "0.0.0.0:26659",
        "10.0.0.5:26659",
        "[::]:26659",
        "example.com:1",
    ] {
        assert!(AdminListen::parse(addr, home).is_err(), "{addr} accepted");
    }
    assert_eq!(AdminListen::parse("", home).unwrap(), None);
    assert_eq!(
        AdminListen::parse("unix:admin.sock", home).unwrap(),
        Some(AdminListen::Unix("/home/admin.sock".into()))
    );
    assert_eq!(
        AdminListen::parse("127.0.0.1:26659", home).unwrap(),
        Some(AdminListen::Tcp("127.0.0.1:26659".parse().unwrap()))
    );
    a.handle.shutdown().await.unwrap();
}

/// One network cannot take every inbound slot either: with no per-IP
/// limit but 2 inbound connections per /24, a third stranger from
/// 127.0.0.0/24 is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subnet_cannot_take_every_inbound_slot() {
    let mut lc = config(CHAIN);
    lc.max_inbound_per_ip = 0;
    lc.max_inbound_per_subnet = 2;
    let a = start(110, lc).await;
    let _strangers = two_inbound_then_refused(&a, 111).await;
}
