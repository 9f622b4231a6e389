//! The Kubernetes store against kube's mock client (`tower-test`): no API
//! server can run on these machines, so a mock service answers the requests
//! kube sends for Calico's CRDs with the API server's conditional-write rules
//! (`resourceVersion` on replace, precondition on delete, 409 on conflict or
//! existing name, 404 when absent). It can also inject a 409 on a chosen
//! request, as a concurrent writer would cause.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use ipam::allocator::{allocated_addresses, check_consistency, AssignRequest};
use ipam::store::kubernetes::KubeStore;
use ipam::store::Store;
use ipam::{affine_blocks, Allocator, Design};
use kube::client::Body;
use serde_json::{json, Value};

#[derive(Default)]
struct ApiState {
    revision: u64,
    /// (plural, name) → object
    objects: BTreeMap<(String, String), Value>,
    /// Fail the n-th PUT (1-based) with 409, once.
    fail_put: Option<usize>,
    puts: usize,
    requests: Vec<String>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .expect("response")
}

fn ok(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string().into_bytes()))
        .expect("response")
}

const PREFIX: &str = "/apis/crd.projectcalico.org/v1/";

fn handle(state: &Mutex<ApiState>, method: &Method, path: &str, body: &[u8]) -> Response<Body> {
    let mut st = state.lock().expect("mock state");
    st.requests.push(format!("{method} {path}"));
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "unknown path");
    };
    let rest = rest.split('?').next().unwrap_or_default();
    let (plural, name) = match rest.split_once('/') {
        Some((p, n)) => (p.to_string(), Some(n.to_string())),
        None => (rest.to_string(), None),
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (method.clone(), name) {
        (Method::GET, None) => {
            let items: Vec<Value> =
                st.objects.iter().filter(|((p, _), _)| *p == plural).map(|(_, v)| v.clone()).collect();
            ok(
                StatusCode::OK,
                &json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "List",
                "metadata": {"resourceVersion": st.revision.to_string()}, "items": items}),
            )
        }
        (Method::GET, Some(n)) => match st.objects.get(&(plural, n)) {
            Some(v) => ok(StatusCode::OK, v),
            None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
        },
        (Method::POST, None) => {
            let n = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if st.objects.contains_key(&(plural.clone(), n.clone())) {
                return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
            }
            st.revision += 1;
            let mut v = body;
            v["metadata"]["resourceVersion"] = json!(st.revision.to_string());
            st.objects.insert((plural, n), v.clone());
            ok(StatusCode::CREATED, &v)
        }
        (Method::PUT, Some(n)) => {
            st.puts += 1;
            if st.fail_put == Some(st.puts) {
                st.fail_put = None;
                // What a concurrent writer causes: the object changed since read.
                st.revision += 1;
                let rev = st.revision.to_string();
                if let Some(o) = st.objects.get_mut(&(plural.clone(), n.clone())) {
                    o["metadata"]["resourceVersion"] = json!(rev);
                }
                return status(StatusCode::CONFLICT, "Conflict", "the object has been modified");
            }
            let key = (plural, n);
            let Some(cur) = st.objects.get(&key) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            };
            if cur["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
                return status(StatusCode::CONFLICT, "Conflict", "the object has been modified");
            }
            st.revision += 1;
            let mut v = body;
            v["metadata"]["resourceVersion"] = json!(st.revision.to_string());
            st.objects.insert(key, v.clone());
            ok(StatusCode::OK, &v)
        }
        (Method::DELETE, Some(n)) => {
            let key = (plural, n);
            let Some(cur) = st.objects.get(&key) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            };
            let want = &body["preconditions"]["resourceVersion"];
            if !want.is_null() && *want != cur["metadata"]["resourceVersion"] {
                return status(StatusCode::CONFLICT, "Conflict", "precondition failed");
            }
            let v = st.objects.remove(&key).unwrap_or(Value::Null);
            st.revision += 1;
            ok(StatusCode::OK, &v)
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "unsupported"),
    }
}

/// A kube client whose requests are answered by the mock above.
fn mock_client(state: Arc<Mutex<ApiState>>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
            send.send_response(handle_req(&state, &parts.method, &path, &bytes));
        }
    });
    kube::Client::new(service, "default")
}

fn handle_req(state: &Mutex<ApiState>, m: &Method, path: &str, body: &[u8]) -> Response<Body> {
    handle(state, m, path, body)
}

fn design() -> Design {
    Design::parse(&[(
        Path::new("k.yaml"),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: kpool}\nspec: {cidr: 10.30.0.0/26, blockSize: 29}\n",
    )])
    .expect("design")
}

fn req(h: &str, node: &str) -> AssignRequest {
    AssignRequest { handle: h.into(), node: node.into(), num_v4: 1, ..AssignRequest::default() }
}

#[tokio::test(flavor = "current_thread")]
async fn kube_store_assigns_retries_conflicts_and_releases() {
    let state = Arc::new(Mutex::new(ApiState::default()));
    let store = KubeStore::new(mock_client(state.clone()));
    let alloc = Allocator::new(store.clone(), design());

    let first = alloc.auto_assign(&req("pod-a", "n1")).await.expect("assign");
    assert_eq!(first[0].pool, "kpool");
    {
        let st = state.lock().expect("state");
        let names: BTreeSet<String> = st.objects.keys().map(|(p, n)| format!("{p}/{n}")).collect();
        assert!(names.contains("ipamblocks/10-30-0-0-29"), "{names:?}");
        assert!(names.contains("blockaffinities/n1-10-30-0-0-29"), "{names:?}");
        assert!(names.contains("ipamhandles/pod-a"), "{names:?}");
        let aff = &st.objects[&("blockaffinities".to_string(), "n1-10-30-0-0-29".to_string())];
        assert_eq!(aff["spec"]["state"], "confirmed");
        assert_eq!(aff["apiVersion"], "crd.projectcalico.org/v1");
        assert_eq!(aff["kind"], "BlockAffinity");
    }

    // The next assignment replaces the block; the API server answers the
    // first PUT with 409 (someone else wrote the block): the allocator
    // re-reads and retries.
    let puts_before = state.lock().expect("state").puts;
    state.lock().expect("state").fail_put = Some(puts_before + 1);
    let second = alloc.auto_assign(&req("pod-b", "n1")).await.expect("assign after 409");
    assert_ne!(first[0].ip, second[0].ip);
    assert!(alloc.stats.conflicts.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // Concurrent allocators on two nodes through the same API.
    let other = Allocator::new(store.clone(), design());
    let (a, b) = tokio::join!(
        async {
            let mut v = Vec::new();
            for i in 0..10 {
                v.push(alloc.auto_assign(&req(&format!("x{i}"), "n1")).await.expect("n1").remove(0).ip);
            }
            v
        },
        async {
            let mut v = Vec::new();
            for i in 0..10 {
                v.push(other.auto_assign(&req(&format!("y{i}"), "n2")).await.expect("n2").remove(0).ip);
            }
            v
        }
    );
    let all: BTreeSet<_> = a.iter().chain(b.iter()).chain([first[0].ip, second[0].ip].iter()).copied().collect();
    assert_eq!(all.len(), 22, "duplicate addresses");
    assert!(check_consistency(&store).await.expect("check").is_empty());
    assert!(!affine_blocks(&store, "n2").await.expect("blocks").is_empty());

    // Release everything; blocks go back to the pool.
    for h in
        ["pod-a", "pod-b"].into_iter().map(String::from).chain((0..10).flat_map(|i| [format!("x{i}"), format!("y{i}")]))
    {
        alloc.release_handle(&h).await.expect("release");
    }
    assert!(allocated_addresses(&store).await.expect("list").is_empty());
    alloc.release_empty_blocks(None).await.expect("release blocks");
    assert!(store.list(&ipam::store::Scope::Blocks).await.expect("list").is_empty());
    assert!(store.list(&ipam::store::Scope::Affinities(None)).await.expect("list").is_empty());
    let st = state.lock().expect("state");
    assert!(st.requests.iter().any(|r| r.starts_with("DELETE /apis/crd.projectcalico.org/v1/ipamblocks/")));
}

#[tokio::test(flavor = "current_thread")]
async fn kube_commit_undoes_partial_writes() {
    use ipam::block::IpamHandle;
    use ipam::store::{Expect, Key, Object, Write};
    let state = Arc::new(Mutex::new(ApiState::default()));
    let store = KubeStore::new(mock_client(state.clone()));
    let h = |id: &str, n: u32| {
        let mut v = IpamHandle { handle_id: id.into(), ..IpamHandle::default() };
        v.block.insert("10.30.0.0/29".into(), n);
        Object::Handle(v)
    };
    store.commit(vec![Write::put(Expect::Absent, h("one", 1))]).await.expect("create one");
    store.commit(vec![Write::put(Expect::Absent, h("two", 1))]).await.expect("create two");
    let r1 = store.get(&Key::Handle("one".into())).await.expect("get").expect("one").revision;
    let r2 = store.get(&Key::Handle("two".into())).await.expect("get").expect("two").revision;
    // The second replace is refused (409) after the first went through:
    // the first is undone, so the commit changes nothing.
    let puts = state.lock().expect("state").puts;
    state.lock().expect("state").fail_put = Some(puts + 2);
    let err = store
        .commit(vec![Write::put(Expect::Revision(r1), h("one", 5)), Write::put(Expect::Revision(r2), h("two", 5))])
        .await
        .expect_err("conflict");
    assert!(matches!(err, ipam::store::StoreError::Conflict(_)), "{err}");
    let one = store.get(&Key::Handle("one".into())).await.expect("get").expect("one");
    assert_eq!(one.value, h("one", 1), "partial write not undone");
    // Stale revisions are refused before anything is written.
    let err = store.commit(vec![Write::put(Expect::Revision(r1), h("one", 7))]).await.expect_err("stale");
    assert!(matches!(err, ipam::store::StoreError::Conflict(_)));
}
