//! A stand-in Kubernetes API server on loopback, just enough for kube's watcher:
//! lists (with a `metadata.name` field selector) answered from objects the test
//! holds, watches kept open as chunked streams the test pushes events into, 403 for
//! Secrets the "Role" does not grant, and a log of every request's path and query.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A watch in progress: its collection, its name selector, and where its events go.
struct Watch {
    collection: String,
    name: Option<String>,
    tx: mpsc::UnboundedSender<Value>,
}

#[derive(Default)]
struct State {
    /// Objects by collection path (`/api/v1/nodes`, `/apis/GROUP/VERSION/PLURAL`,
    /// `/api/v1/namespaces/NS/secrets`) and name.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// Secrets (by name) the service account may not read.
    forbidden: BTreeSet<String>,
    /// Every request as `PATH?QUERY`, query decoded.
    requests: Vec<String>,
    watches: Vec<Watch>,
    version: u64,
}

#[derive(Clone, Default)]
pub(super) struct ApiServer(Arc<Mutex<State>>);

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().expect("objects have names").to_string()
}

fn decode(query: &str) -> String {
    let mut out = Vec::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ApiServer {
    /// Starts serving on a loopback port; returns a client for it.
    pub(super) async fn start(&self) -> kube::Client {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(me.clone().serve(conn));
            }
        });
        let config = kube::Config::new(url.parse().expect("a URL"));
        kube::Client::try_from(config).expect("a client")
    }

    pub(super) fn forbid_secret(&self, name: &str) {
        self.0.lock().unwrap().forbidden.insert(name.into());
    }

    pub(super) fn requests(&self) -> Vec<String> {
        self.0.lock().unwrap().requests.clone()
    }

    /// Adds or replaces an object, and tells the watches that see it.
    pub(super) fn apply(&self, collection: &str, obj: Value) {
        self.change(collection, obj, "MODIFIED");
    }

    pub(super) fn delete(&self, collection: &str, name: &str) {
        let obj = self.0.lock().unwrap().objects.get(collection).and_then(|m| m.get(name).cloned());
        if let Some(obj) = obj {
            self.change(collection, obj, "DELETED");
        }
    }

    fn change(&self, collection: &str, mut obj: Value, kind: &str) {
        let mut s = self.0.lock().unwrap();
        s.version += 1;
        obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
        let name = name_of(&obj);
        let objects = s.objects.entry(collection.into()).or_default();
        let kind = match (kind, objects.contains_key(&name)) {
            ("DELETED", _) => {
                objects.remove(&name);
                "DELETED"
            }
            (_, false) => {
                objects.insert(name.clone(), obj.clone());
                "ADDED"
            }
            _ => {
                objects.insert(name.clone(), obj.clone());
                "MODIFIED"
            }
        };
        let event = json!({ "type": kind, "object": obj });
        s.watches.retain(|w| {
            if w.collection != collection || w.name.as_ref().is_some_and(|n| *n != name) {
                return !w.tx.is_closed();
            }
            w.tx.send(event.clone()).is_ok()
        });
    }

    async fn serve(self, mut conn: TcpStream) {
        let mut buf = Vec::new();
        loop {
            // One request head (GET requests have no body).
            let head = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    break head;
                }
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let query = decode(query);
            self.0.lock().unwrap().requests.push(format!("{path}?{query}"));
            let params: BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
            let name = params.get("fieldSelector").and_then(|f| f.strip_prefix("metadata.name=")).map(str::to_string);
            let forbidden = path.ends_with("/secrets")
                && name.as_ref().is_none_or(|n| self.0.lock().unwrap().forbidden.contains(n));
            if forbidden {
                let body = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("secrets {:?} is forbidden", name.unwrap_or_default()),
                    "reason": "Forbidden", "code": 403,
                })
                .to_string();
                let resp = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            if params.get("watch") == Some(&"true") {
                let (tx, mut rx) = mpsc::unbounded_channel();
                self.0.lock().unwrap().watches.push(Watch { collection: path.to_string(), name, tx });
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while let Some(event) = rx.recv().await {
                    let line = format!("{event}\n");
                    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                    if conn.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                return;
            }
            let body = {
                let s = self.0.lock().unwrap();
                let items: Vec<Value> = s
                    .objects
                    .get(path)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|o| name.as_ref().is_none_or(|n| name_of(o) == *n))
                    .cloned()
                    .collect();
                json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": { "resourceVersion": s.version.to_string() },
                    "items": items,
                })
                .to_string()
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
