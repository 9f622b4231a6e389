//! The client against a real etcd (Debian's `etcd-server`, 3.4 on Debian 12),
//! started per test by `common::Etcd`. Without the `etcd` binary each test is
//! skipped through `testgate` (a failure when `CI` is set; CI installs it:
//! `.ci/install-deps`).

mod common;

use std::time::Duration;

use bgpd_etcd::wire::response_op::Response;
use bgpd_etcd::{
    Call, Client, Compare, CompareResult, ConnectOptions, Error, RequestOp, WatchEvent, WatchMessage, WatchSpec,
};
use common::{Etcd, PATIENCE};
use testgate::testbed::free_port;

/// The next message of `watch`; fails the test when none comes.
async fn next(watch: &mut bgpd_etcd::Watch) -> WatchMessage {
    match tokio::time::timeout(PATIENCE, watch.next()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => panic!("the watch stream ended"),
        Ok(Err(e)) => panic!("watch: {e}"),
        Err(_) => panic!("no watch message within {PATIENCE:?}"),
    }
}

fn keys(m: &WatchMessage) -> Vec<(&'static str, String)> {
    let WatchMessage::Events { events, .. } = m else { panic!("not events: {m:?}") };
    events
        .iter()
        .map(|e| {
            let kind = if matches!(e, WatchEvent::Put(_)) { "put" } else { "delete" };
            (kind, String::from_utf8_lossy(&e.kv().key).into_owned())
        })
        .collect()
}

#[tokio::test]
async fn put_get_prefix_get_and_delete() {
    let Some(etcd) = Etcd::start("put_get_prefix_get_and_delete").await else { return };
    let c = etcd.client().await;
    let r1 = c.put("/t/a", "1").await.unwrap();
    let r2 = c.put("/t/b", "2").await.unwrap();
    c.put("/u/c", "3").await.unwrap();
    assert_eq!(r2, r1 + 1);

    let a = c.get("/t/a").await.unwrap().expect("/t/a exists");
    assert_eq!((a.key.as_slice(), a.value.as_slice()), (&b"/t/a"[..], &b"1"[..]));
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r1, r1, 1));
    assert_eq!(c.get("/t/none").await.unwrap(), None);

    let all = c.get_prefix("/t/", None).await.unwrap();
    assert_eq!(all.kvs.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(), [&b"/t/a"[..], &b"/t/b"[..]]);
    assert_eq!(all.revision, r2 + 1, "the revision of the read is the store's");
    let then = c.get_prefix("/t/", Some(r1)).await.unwrap();
    assert_eq!(then.kvs.len(), 1, "at r1 only /t/a existed: {then:?}");
    assert_eq!(c.get_prefix("/t/", None).await.unwrap().kvs, all.kvs);

    assert_eq!(c.delete("/t/a").await.unwrap(), 1);
    assert_eq!(c.delete("/t/a").await.unwrap(), 0);
    assert_eq!(c.get("/t/a").await.unwrap(), None);
    assert_eq!(c.get_prefix("/t/", None).await.unwrap().kvs.len(), 1);
}

#[tokio::test]
async fn txn_success_and_failure() {
    let Some(etcd) = Etcd::start("txn_success_and_failure").await else { return };
    let c = etcd.client().await;
    let create = || Compare::create_revision("k", CompareResult::Equal, 0);

    // Create if absent: succeeds once.
    let t = c.txn(vec![create()], vec![RequestOp::put("k", "v1")], vec![RequestOp::get("k")]).await.unwrap();
    assert!(t.succeeded);
    assert!(matches!(t.responses.as_slice(), [r] if matches!(r.response, Some(Response::ResponsePut(_)))));
    let t = c.txn(vec![create()], vec![RequestOp::put("k", "v2")], vec![RequestOp::get("k")]).await.unwrap();
    assert!(!t.succeeded, "k exists");
    let Some(Response::ResponseRange(range)) = t.responses.first().and_then(|r| r.response.clone()) else {
        panic!("the failure branch's get: {t:?}")
    };
    assert_eq!(range.kvs[0].value, b"v1");

    // Compare-and-swap on the mod revision.
    let rev = c.get("k").await.unwrap().expect("k").mod_revision;
    let swap = |r| Compare::mod_revision("k", CompareResult::Equal, r);
    let t = c.txn(vec![swap(rev)], vec![RequestOp::put("k", "v3")], vec![]).await.unwrap();
    assert!(t.succeeded);
    let t = c.txn(vec![swap(rev)], vec![RequestOp::delete("k")], vec![]).await.unwrap();
    assert!(!t.succeeded, "k changed since {rev}");
    assert_eq!(c.get("k").await.unwrap().expect("k").value, b"v3");
    let t = c.txn(vec![swap(rev + 1)], vec![RequestOp::delete("k")], vec![]).await.unwrap();
    assert!(t.succeeded);
    assert_eq!(c.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn a_watch_sees_a_put_and_a_delete_from_its_start_revision() {
    let Some(etcd) = Etcd::start("a_watch_sees_a_put_and_a_delete_from_its_start_revision").await else { return };
    let c = etcd.client().await;
    c.put("/w/old", "x").await.unwrap();
    let r1 = c.put("/w/a", "1").await.unwrap();
    c.delete("/w/a").await.unwrap();
    c.put("/other", "x").await.unwrap();

    let (mut w, id) = c.watch(WatchSpec::prefix("/w/").from_revision(r1)).await.unwrap();
    // etcd may send the past changes in one message or in several.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = next(&mut w).await;
        let WatchMessage::Events { watch_id, events, .. } = m else { panic!("not events: {m:?}") };
        assert_eq!(watch_id, id);
        seen.extend(events);
    }
    let seen: Vec<_> =
        seen.iter().map(|e| (matches!(e, WatchEvent::Put(_)), e.kv().key.as_slice(), e.kv().mod_revision)).collect();
    assert_eq!(seen, [(true, &b"/w/a"[..], r1), (false, &b"/w/a"[..], r1 + 1)]);

    // And changes made after the watch was created.
    let r = c.put("/w/b", "2").await.unwrap();
    let m = next(&mut w).await;
    assert_eq!(keys(&m), [("put", "/w/b".to_string())]);
    assert!(matches!(m, WatchMessage::Events { revision, .. } if revision == r));

    w.request_progress().await.unwrap();
    assert_eq!(next(&mut w).await, WatchMessage::Progress { watch_id: None, revision: r });
}

#[tokio::test]
async fn two_watches_on_one_stream() {
    let Some(etcd) = Etcd::start("two_watches_on_one_stream").await else { return };
    let c = etcd.client().await;
    let (mut w, x) = c.watch(WatchSpec::prefix("/x/")).await.unwrap();
    c.put("/x/1", "a").await.unwrap();
    // The event of /x/1 may arrive while the second create waits for its
    // answer: it is kept for next().
    let y = w.create(WatchSpec::prefix("/y/")).await.unwrap();
    assert_ne!(x, y);
    c.put("/y/1", "b").await.unwrap();
    for (id, key) in [(x, "/x/1"), (y, "/y/1")] {
        let m = next(&mut w).await;
        assert!(matches!(m, WatchMessage::Events { watch_id, .. } if watch_id == id), "{m:?}");
        assert_eq!(keys(&m), [("put", key.to_string())]);
    }

    w.cancel(x).await.unwrap();
    let m = next(&mut w).await;
    let WatchMessage::Cancelled(c1) = m else { panic!("not a cancellation: {m:?}") };
    assert_eq!((c1.watch_id, c1.compact_revision), (x, None));
    c.put("/x/2", "a").await.unwrap();
    c.put("/y/2", "b").await.unwrap();
    let m = next(&mut w).await;
    assert!(
        matches!(m, WatchMessage::Events { watch_id, .. } if watch_id == y),
        "the cancelled watch is silent: {m:?}"
    );
    assert_eq!(keys(&m), [("put", "/y/2".to_string())]);
}

#[tokio::test]
async fn a_compacted_start_revision_cancels_the_watch() {
    let Some(etcd) = Etcd::start("a_compacted_start_revision_cancels_the_watch").await else { return };
    let c = etcd.client().await;
    let first = c.put("/c/k", "1").await.unwrap();
    c.put("/c/k", "2").await.unwrap();
    let compacted = c.put("/c/k", "3").await.unwrap();
    c.compact(compacted).await.unwrap();

    // etcd accepts the watch, then cancels it; an etcd that refused the create
    // outright would say the same through the error.
    let cancellation = match c.watch(WatchSpec::prefix("/c/").from_revision(first)).await {
        Ok((mut w, id)) => match next(&mut w).await {
            WatchMessage::Cancelled(cancellation) => {
                assert_eq!(cancellation.watch_id, id);
                cancellation
            }
            m => panic!("not a cancellation: {m:?}"),
        },
        Err(Error::WatchCancelled(cancellation)) => cancellation,
        Err(e) => panic!("watch: {e}"),
    };
    assert_eq!(cancellation.compact_revision, Some(compacted), "{cancellation:?}");
    let text = Error::from(cancellation).to_string();
    assert!(text.contains(&format!("compacted at revision {compacted}")), "{text}");

    // A read at a compacted revision is etcd's OutOfRange status, named.
    let e = c.get_prefix("/c/", Some(first)).await.unwrap_err();
    assert!(matches!(e, Error::Status { call: Call::Range, code: bgpd_etcd::Code::OutOfRange, .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("etcd KV.Range via {}", etcd.url)), "{e}");
}

#[tokio::test]
async fn requests_fail_over_to_the_next_endpoint() {
    let Some(a) = Etcd::start("requests_fail_over_to_the_next_endpoint").await else { return };
    let Some(b) = Etcd::start("requests_fail_over_to_the_next_endpoint").await else { return };
    // Two separate one-member clusters, told apart by a key.
    for (etcd, name) in [(&a, "a"), (&b, "b")] {
        etcd.client().await.put("who", name).await.unwrap();
    }
    let opts = ConnectOptions { request_timeout: Duration::from_secs(5), ..ConnectOptions::default() };
    let c = Client::connect(&[&a.url, &b.url], opts).await.unwrap();
    let who = c.get("who").await.unwrap().expect("who").value;
    let (mut current, other) = if who == b"a" { (a, b) } else { (b, a) };

    current.kill();
    let e = c.get("who").await.unwrap_err();
    assert!(matches!(e, Error::Transport { call: Call::Range, .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("etcd KV.Range via {}", current.url)), "{e}");
    let again = c.get("who").await.unwrap().expect("who");
    assert_ne!(again.value, who, "the next request went to {}", other.url);
}

#[tokio::test]
async fn connect_skips_an_endpoint_that_is_down() {
    let Some(etcd) = Etcd::start("connect_skips_an_endpoint_that_is_down").await else { return };
    let down = format!("http://127.0.0.1:{}", free_port().unwrap());
    let c = Client::connect(&[&down, &etcd.url], ConnectOptions::default()).await.unwrap();
    c.put("k", "v").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().expect("k").value, b"v");
}
