//! 429 Too Many Requests with `Retry-After` from the API server, as API priority and fairness answers.
//!
//! The datastore under throttling keeps the last good model, asks again no
//! sooner than the API server said (`Retry-After`) nor than its own backoff, and
//! catches up once the API server answers. The spacing asserted is a lower bound
//! between the requests the stand-in received (a slow machine only widens it).

use std::time::{Duration, Instant};

use super::api_server::ApiServer;
use super::{block, has_key, json, keys, one_block_watched, peer, published, running, watching, NODES};
use super::{NODE_RR, V1};
use super::{V1_BLOCKS, V1_PEERS, WATCHES};

/// The requests to `collection` that `pick` selects (by `PATH?QUERY`), in
/// order, as the times they came.
fn times(server: &ApiServer, collection: &str, pick: impl Fn(&str) -> bool) -> Vec<Instant> {
    let path = |r: &str| r.split_once('?').map_or(r.to_string(), |(p, _)| p.to_string());
    server.timed_requests().into_iter().filter(|(_, r)| path(r) == collection && pick(r)).map(|(t, _)| t).collect()
}

fn is_list(r: &str) -> bool {
    !r.contains("watch=true")
}

fn is_watch(r: &str) -> bool {
    r.contains("watch=true")
}

/// Asserts that each of the first `refused` requests of `at` is followed by
/// the next no sooner than `retry_after`.
fn spaced(at: &[Instant], refused: usize, retry_after: Duration, what: &str) {
    assert!(at.len() > refused, "{what}: {} requests, not {refused} refused and one answered", at.len());
    for (i, pair) in at.windows(2).take(refused).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(gap >= retry_after, "{what}: request {} came {gap:?} after a 429 asking for {retry_after:?}", i + 2);
    }
}

/// The first list of a collection is refused twice with `Retry-After: 2`: no
/// content is published before every kind is read, the list is asked again no
/// sooner than 2 s each time, and the content comes once it is answered.
#[tokio::test]
async fn a_429_on_the_initial_list_is_retried_after_retry_after_and_converges() {
    let server = ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_RR));
    server.apply(V1_PEERS, peer("tor", None));
    server.throttle(Some(V1_PEERS), 2, 2);
    let mut run = running(&server).await;
    let f = published(&mut run.rx, "the peer after the throttled lists", |f| has_key(f, "bgppeers/tor")).await;
    assert!(f.unreachable.is_none(), "{:?}", f.unreachable);
    spaced(&times(&server, V1_PEERS, is_list), 2, Duration::from_secs(2), "BGPPeer lists");
    assert_eq!(server.traffic().throttled, 2);
    let seen = run.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|f| f.sources.is_none() || has_key(f, "bgppeers/tor")), "content published without it");
    assert!(
        seen.iter().any(|f| f
            .unreachable
            .as_ref()
            .is_some_and(|u| u.reason.contains("429") || u.reason.contains("Too many requests"))),
        "the throttling is not reported: {:?}",
        seen.iter().map(|f| &f.unreachable).collect::<Vec<_>>()
    );
}

/// A relist (after 410 Gone) refused twice with `Retry-After: 2`: the last good
/// blocks stay in every publication, the relist waits as asked, and the block
/// added meanwhile arrives.
#[tokio::test]
async fn a_429_on_relist_keeps_the_last_good_model_and_waits_as_asked() {
    let server = ApiServer::default();
    let mut run = one_block_watched(&server).await;
    let before = times(&server, V1_BLOCKS, |_| true).len();
    server.throttle(Some(V1_BLOCKS), 2, 2);
    server.expire_watches();
    server.apply(V1_BLOCKS, block("b2", "10.244.9.0/26", "worker-9"));
    let f = published(&mut run.rx, "the second block after the throttled relists", |f| {
        has_key(f, "ipamblocks/b2") && f.unreachable.is_none()
    })
    .await;
    assert!(has_key(&f, "ipamblocks/b1"), "{:?}", keys(&f));
    let relists: Vec<Instant> = times(&server, V1_BLOCKS, |_| true).into_iter().skip(before).collect();
    spaced(&relists, 2, Duration::from_secs(2), "IPAMBlock relists");
    for f in run.seen.lock().unwrap().iter().filter(|f| f.sources.is_some()) {
        assert!(has_key(f, "ipamblocks/b1"), "published without the block: {:?}", keys(f));
    }
}

/// Every watch reconnecting after a reset is refused three times with
/// `Retry-After: 1` (kube does not hand the header of a watch over: the
/// datastore waits at least 1 s after a 429, and its backoff doubles): no kind
/// asks again sooner, the last good model stays, and later changes arrive.
#[tokio::test]
async fn a_429_on_watch_is_not_retried_sooner_than_retry_after() {
    let server = ApiServer::default();
    server.serve_calico(V1);
    server.apply(NODES, json(NODE_RR));
    server.apply(V1_PEERS, peer("tor", None));
    let mut run = running(&server).await;
    published(&mut run.rx, "the first content", |f| has_key(f, "bgppeers/tor") && f.unreachable.is_none()).await;
    watching(&server, WATCHES).await;
    // Watches open for over a second count as healthy: the reconnection is
    // immediate, then throttled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = times(&server, V1_PEERS, is_watch).len();
    server.throttle(Some(V1_PEERS), 1, 3);
    server.reset_watches();
    published(&mut run.rx, "unreachable while throttled", |f| f.unreachable.is_some()).await;
    let f = published(&mut run.rx, "reachable again", |f| f.unreachable.is_none()).await;
    assert!(has_key(&f, "bgppeers/tor"));
    server.apply(V1_PEERS, peer("later", None));
    published(&mut run.rx, "a change after the throttling", |f| has_key(f, "bgppeers/later")).await;
    let watches: Vec<Instant> = times(&server, V1_PEERS, is_watch).into_iter().skip(before).collect();
    spaced(&watches, 3, Duration::from_secs(1), "BGPPeer watches");
    for f in run.seen.lock().unwrap().iter().filter(|f| f.sources.is_some()) {
        assert!(has_key(f, "bgppeers/tor"), "published without the peer: {:?}", keys(f));
    }
}

/// The stand-in itself: a throttled request of any kind (a get, a write) is
/// answered 429 with the header and a Status saying the same, then served.
#[tokio::test]
async fn the_stand_in_answers_429_with_retry_after_and_a_status() {
    let server = ApiServer::default();
    server.serve_calico(V1);
    server.apply(V1_PEERS, peer("tor", None));
    let url = server.start_at().await;
    server.throttle(None, 7, 2);
    let addr = url.trim_start_matches("http://").to_string();
    let ask = |request: String| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            conn.write_all(request.as_bytes()).await.unwrap();
            let mut answer = vec![0u8; 4096];
            let n = conn.read(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer[..n]).into_owned()
        }
    };
    let get = format!("GET {V1_PEERS}/tor HTTP/1.1\r\nHost: x\r\n\r\n");
    let put = format!("PUT {V1_PEERS}/tor HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}");
    for request in [get.clone(), put] {
        let answer = ask(request).await;
        assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
        assert!(answer.contains("\r\nRetry-After: 7\r\n"), "{answer}");
        let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!((body["reason"].as_str(), body["code"].as_u64()), (Some("TooManyRequests"), Some(429)));
        assert_eq!(body["details"]["retryAfterSeconds"], 7);
    }
    assert!(ask(get).await.starts_with("HTTP/1.1 200 "), "served once the throttle is spent");
}
