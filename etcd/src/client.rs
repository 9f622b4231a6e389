//! The connection to etcd and the KV calls.
//!
//! Endpoints: [`Client::connect`] dials every endpoint at once and keeps the
//! first that accepts the connection as the current one; the others get lazy
//! channels (connected on first use). Every request goes to the current endpoint
//! (one at a time, no load balancing: etcd members serve the same data, and one
//! connection keeps the order of a caller's requests). A request that fails
//! because of the endpoint (a broken or refused connection, no answer within the
//! timeout, etcd's `Unavailable`) is returned as an error, not retried (a put or a
//! txn may have been applied), and moves the current endpoint to the next one of
//! the list, so that the caller's next request fails over.
//!
//! Security: `https://` endpoints speak TLS ([`crate::Tls`], its files read
//! and checked at each connect); with [`crate::Credentials`] the client gets a token from
//! `Auth.Authenticate` when it connects and sends it as the `token` metadata of
//! every request. When etcd refuses the token (a simple token expires after
//! `--auth-token-ttl` unused; every token is refused after a change of users or
//! roles), the client authenticates again and sends the request once more: etcd
//! refused it before applying it, so the repeat is safe.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::task::JoinSet;
use tonic::client::Grpc;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint as TonicEndpoint};
use tonic_prost::ProstCodec;
use tracing::{debug, info, warn};

use crate::error::{chain, Call, Error};
use crate::prefix::prefix_range;
use crate::security::{endpoints_scheme, Credentials, Password, Scheme, Tls};
use crate::watch::{Watch, WatchId, WatchSpec};
use crate::wire::{
    AuthAdminResponse, AuthEnableRequest, AuthRoleAddRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    AuthenticateRequest, AuthenticateResponse, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse,
};

/// How to connect: timeouts, HTTP/2 keepalives, the largest answer accepted,
/// TLS and credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// How long a connection to one endpoint may take to set up.
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer (for a watch: for the answer to
    /// opening the stream and to each create).
    pub request_timeout: Duration,
    /// HTTP/2 pings that notice a silently dead connection; `None`: no pings.
    pub keep_alive: Option<KeepAlive>,
    /// The largest answer accepted, in bytes (a get of a big prefix is one
    /// answer); tonic's default, 4 MiB, unless set.
    pub max_response_size: usize,
    /// TLS settings of `https://` endpoints (`None` with `https://`: the
    /// system's CA roots, no client certificate); an error with `http://`
    /// endpoints, which would silently not use them.
    pub tls: Option<Tls>,
    /// The etcd user to authenticate as; `None`: no authentication.
    pub credentials: Option<Credentials>,
}

impl Default for ConnectOptions {
    /// 5 s to connect, 10 s per request, no keepalives, 4 MiB answers, no
    /// TLS settings, no credentials.
    fn default() -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keep_alive: None,
            max_response_size: 4 * 1024 * 1024,
            tls: None,
            credentials: None,
        }
    }
}

/// HTTP/2 keepalive pings on each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// How often a ping is sent.
    pub interval: Duration,
    /// How long the answer to a ping may take before the connection counts as
    /// dead.
    pub timeout: Duration,
    /// Ping even when no request or stream is open.
    pub while_idle: bool,
}

/// An etcd v3 client over one or more endpoints. Cloning is cheap: clones share
/// the connections and the current endpoint.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<Endpoint>,
    /// Index into `endpoints` of the endpoint requests go to.
    current: AtomicUsize,
    request_timeout: Duration,
    max_response_size: usize,
    credentials: Option<Credentials>,
    /// The auth token sent with every request (with credentials, once
    /// authenticated). A lock held across a renewal, so that requests that
    /// fail together renew once.
    token: tokio::sync::Mutex<Option<AsciiMetadataValue>>,
    /// How many tokens etcd gave (the first, then one per renewal).
    authentications: AtomicU64,
}

/// One endpoint: its URL (for messages) and its channel.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    channel: Channel,
}

/// The keys under a prefix as of one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The revision the keys were read at: a watch from `revision + 1` sees every
    /// change after this read.
    pub revision: i64,
    /// The keys, in byte order.
    pub kvs: Vec<KeyValue>,
}

impl Client {
    /// Connects to `endpoints` (`http://HOST:PORT`, or `HOST:PORT` for http;
    /// or all `https://HOST:PORT`), then, with credentials, authenticates:
    /// fails when no endpoint accepts a connection within
    /// `opts.connect_timeout` (naming each endpoint's failure, a TLS handshake
    /// failure among them), when a TLS file is bad, or when etcd refuses the
    /// user or password.
    pub async fn connect(endpoints: &[impl AsRef<str>], opts: ConnectOptions) -> Result<Client, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let all = || endpoints.iter().map(|e| e.as_ref()).collect::<Vec<_>>().join(",");
        let scheme = endpoints_scheme(endpoints).map_err(|reason| Error::Endpoint { endpoint: all(), reason })?;
        let tls = match (scheme, &opts.tls) {
            (Scheme::Https, tls) => Some(crate::tls::load(&tls.clone().unwrap_or_default())?),
            (Scheme::Http, Some(_)) => {
                let reason = "TLS settings are given but the endpoints are http://: TLS needs https:// endpoints";
                return Err(Error::Endpoint { endpoint: all(), reason: reason.into() });
            }
            (Scheme::Http, None) => None,
        };
        let tonic_endpoints = endpoints
            .iter()
            .map(|e| tonic_endpoint(e.as_ref(), &opts, tls.as_ref().map(|t| &t.tonic)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut attempts = JoinSet::new();
        for (i, endpoint) in tonic_endpoints.iter().enumerate() {
            let (endpoint, limit) = (endpoint.clone(), opts.connect_timeout);
            attempts.spawn(async move { (i, tokio::time::timeout(limit, endpoint.connect()).await) });
        }
        // Indexed by the endpoint's position, which each task carries back.
        let mut failures = vec![String::new(); tonic_endpoints.len()];
        while let Some(joined) = attempts.join_next().await {
            let Ok((i, attempt)) = joined else {
                // A connect task that panicked or was aborted: counts as a failure
                // of an endpoint we cannot name, which the list below still shows.
                continue;
            };
            match attempt {
                Ok(Ok(channel)) => {
                    debug!(endpoint = tonic_endpoints[i].uri().to_string(), "etcd connected");
                    let client = Client::with_channel(&tonic_endpoints, i, channel, &opts);
                    return client.checked(tls.as_ref(), tonic_endpoints[i].uri(), opts.connect_timeout).await;
                }
                Ok(Err(e)) => failures[i] = chain(&e),
                Err(_) => failures[i] = format!("no connection within {:?}", opts.connect_timeout),
            }
        }
        let endpoint = tonic_endpoints.iter().map(|e| e.uri().to_string()).collect::<Vec<_>>().join(", ");
        let reason = tonic_endpoints
            .iter()
            .zip(&failures)
            .map(|(e, f)| format!("{}: {}", e.uri(), if f.is_empty() { "connect task failed" } else { f }))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::Transport { call: Call::Connect, endpoint, reason })
    }

    /// The client once it has made sure its connection is usable: with
    /// credentials, by authenticating; over TLS, by a first request (see
    /// [`Client::probe`]). When that fails over TLS, the error says why as
    /// rustls sees it ([`crate::tls::diagnose`] on `uri` within `limit`).
    async fn checked(
        self,
        tls: Option<&crate::tls::Loaded>,
        uri: &http::Uri,
        limit: Duration,
    ) -> Result<Client, Error> {
        let checked = match (&self.inner.credentials, tls) {
            (Some(_), _) => self.renew_token(None).await,
            (None, Some(_)) => self.probe().await,
            (None, None) => Ok(()),
        };
        match (checked, tls) {
            (Ok(()), _) => Ok(self),
            (Err(Error::Transport { endpoint, reason, .. }), Some(tls)) => {
                let reason = match crate::tls::diagnose(uri, tls, limit).await {
                    Some(why) => format!("{why} (then: {reason})"),
                    None => reason,
                };
                Err(Error::Transport { call: Call::Connect, endpoint, reason })
            }
            (Err(e), _) => Err(e),
        }
    }

    /// A client whose current endpoint is `endpoints[index]`, connected as
    /// `channel`; the others connect on first use.
    fn with_channel(endpoints: &[TonicEndpoint], index: usize, channel: Channel, opts: &ConnectOptions) -> Client {
        let mut channel = Some(channel);
        let endpoints = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Endpoint {
                url: e.uri().to_string(),
                channel: match channel.take_if(|_| i == index) {
                    Some(c) => c,
                    None => e.connect_lazy(),
                },
            })
            .collect();
        Client {
            inner: Arc::new(Inner {
                endpoints,
                current: AtomicUsize::new(index),
                request_timeout: opts.request_timeout,
                max_response_size: opts.max_response_size,
                credentials: opts.credentials.clone(),
                token: tokio::sync::Mutex::new(None),
                authentications: AtomicU64::new(0),
            }),
        }
    }

    /// The value of `key`, `None` when it does not exist.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, Error> {
        let request = RangeRequest { key: key.into(), ..RangeRequest::default() };
        let resp: RangeResponse = self.unary(Call::Range, request).await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Every key under `prefix`, as of `revision` (`None`: the latest; an old
    /// revision fails with etcd's `OutOfRange` status once it is compacted).
    pub async fn get_prefix(&self, prefix: impl Into<Vec<u8>>, revision: Option<i64>) -> Result<Snapshot, Error> {
        let (key, range_end) = prefix_range(prefix);
        let request = RangeRequest { key, range_end, revision: revision.unwrap_or(0), ..RangeRequest::default() };
        let (endpoint, resp): (_, RangeResponse) = self.unary_from(Call::Range, request).await?;
        let revision = self.header(Call::Range, &endpoint, resp.header)?.revision;
        Ok(Snapshot { revision, kvs: resp.kvs })
    }

    /// Writes `value` at `key`; returns the revision of the write.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<i64, Error> {
        let request = PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() };
        let (endpoint, resp): (_, PutResponse) = self.unary_from(Call::Put, request).await?;
        Ok(self.header(Call::Put, &endpoint, resp.header)?.revision)
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<i64, Error> {
        let request = DeleteRangeRequest { key: key.into(), ..DeleteRangeRequest::default() };
        let resp: DeleteRangeResponse = self.unary(Call::DeleteRange, request).await?;
        Ok(resp.deleted)
    }

    /// Applies `success` if every one of `compares` holds, `failure` otherwise,
    /// atomically; the answer says which (`succeeded`) with one answer per
    /// operation applied.
    pub async fn txn(
        &self,
        compares: Vec<Compare>,
        success: Vec<RequestOp>,
        failure: Vec<RequestOp>,
    ) -> Result<TxnResponse, Error> {
        self.unary(Call::Txn, TxnRequest { compare: compares, success, failure }).await
    }

    /// Drops the history before `revision`: a watch or a read at an older
    /// revision fails from then on.
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        let _: CompactionResponse = self.unary(Call::Compact, CompactionRequest { revision, physical: true }).await?;
        Ok(())
    }

    /// Opens a Watch stream with its first watch; more are created on the
    /// stream with [`Watch::create`] (with credentials, while the stream's
    /// token is valid: etcd checks it at each create).
    pub async fn watch(&self, first: WatchSpec) -> Result<(Watch, WatchId), Error> {
        let token = self.token().await;
        match Watch::open(self.clone(), first.clone(), token.clone()).await {
            // etcd checks a watch's token when the watch is created, and
            // cancels the watch when the token is stale (etcd 3.4: "invalid
            // auth token", or "permission denied"): a new token tells that
            // apart from a real denial.
            Err(e) if self.inner.credentials.is_some() && (e.is_stale_token() || is_refused_watch(&e)) => {
                self.renew_token(token.as_ref()).await?;
                Watch::open(self.clone(), first, self.token().await).await
            }
            answer => answer,
        }
    }

    /// How many auth tokens etcd gave this client: 1 after connecting with
    /// credentials, one more per renewal (0 without credentials).
    pub fn authentications(&self) -> u64 {
        self.inner.authentications.load(Ordering::Relaxed)
    }

    /// Creates the etcd user `name` (`Auth.UserAdd`).
    pub async fn user_add(&self, name: &str, password: &Password) -> Result<(), Error> {
        let request = AuthUserAddRequest { name: name.into(), password: password.expose().into() };
        let _: AuthAdminResponse = self.unary(Call::UserAdd, request).await?;
        Ok(())
    }

    /// Creates the role `name` (`Auth.RoleAdd`; `root` is the role with every
    /// right).
    pub async fn role_add(&self, name: &str) -> Result<(), Error> {
        let _: AuthAdminResponse = self.unary(Call::RoleAdd, AuthRoleAddRequest { name: name.into() }).await?;
        Ok(())
    }

    /// Gives `user` the role `role` (`Auth.UserGrantRole`).
    pub async fn user_grant_role(&self, user: &str, role: &str) -> Result<(), Error> {
        let request = AuthUserGrantRoleRequest { user: user.into(), role: role.into() };
        let _: AuthAdminResponse = self.unary(Call::UserGrantRole, request).await?;
        Ok(())
    }

    /// Turns etcd's authentication on (`Auth.AuthEnable`): from then on every
    /// request needs a token. etcd requires a `root` user with the `root` role
    /// first.
    pub async fn auth_enable(&self) -> Result<(), Error> {
        let _: AuthAdminResponse = self.unary(Call::AuthEnable, AuthEnableRequest {}).await?;
        Ok(())
    }

    /// Makes sure a TLS connection is usable: TLS 1.3 lets the client's
    /// handshake end before etcd has checked the client certificate, so a
    /// refused certificate shows only at the first request. Any answer of etcd,
    /// an error status included (no token), means the connection works.
    async fn probe(&self) -> Result<(), Error> {
        let request = RangeRequest { key: vec![0], count_only: true, ..RangeRequest::default() };
        match self.unary_once::<_, RangeResponse>(Call::Range, request, None).await {
            Ok(_) | Err(Error::Status { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The current auth token, if any.
    pub(crate) async fn token(&self) -> Option<AsciiMetadataValue> {
        self.inner.token.lock().await.clone()
    }

    /// Gets a new token from etcd unless the current one is no longer `stale`
    /// (another request renewed it meanwhile). Needs credentials.
    async fn renew_token(&self, stale: Option<&AsciiMetadataValue>) -> Result<(), Error> {
        let Some(credentials) = &self.inner.credentials else { return Ok(()) };
        let mut token = self.inner.token.lock().await;
        if token.as_ref() != stale {
            return Ok(());
        }
        let request =
            AuthenticateRequest { name: credentials.username.clone(), password: credentials.password.expose().into() };
        let (url, resp): (_, AuthenticateResponse) = self.unary_once(Call::Authenticate, request, None).await?;
        let value = AsciiMetadataValue::try_from(resp.token).map_err(|_| Error::Malformed {
            call: Call::Authenticate,
            endpoint: url.clone(),
            what: "a token that cannot be sent as gRPC metadata".into(),
        })?;
        *token = Some(value);
        let n = self.inner.authentications.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            debug!(user = credentials.username, endpoint = url, "etcd authenticated");
        } else {
            info!(user = credentials.username, endpoint = url, "etcd refused the auth token; authenticated again");
        }
        Ok(())
    }

    /// The current endpoint's index and the endpoint.
    pub(crate) fn endpoint(&self) -> (usize, &Endpoint) {
        let endpoints = &self.inner.endpoints;
        // `connect` builds no client without endpoints, so the modulo is defined
        // and `i` in range.
        let i = self.inner.current.load(Ordering::Relaxed) % endpoints.len();
        (i, &endpoints[i])
    }

    /// A gRPC client on `endpoint`'s channel.
    pub(crate) fn grpc(&self, endpoint: &Endpoint) -> Grpc<Channel> {
        Grpc::new(endpoint.channel.clone()).max_decoding_message_size(self.inner.max_response_size)
    }

    /// The request timeout.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Notes that `error` happened on endpoint `index`: when it is the
    /// endpoint's fault, the next requests go to the next endpoint. Returns
    /// `error`.
    pub(crate) fn failed(&self, index: usize, error: Error) -> Error {
        let endpoints = &self.inner.endpoints;
        if error.is_endpoint_failure() && endpoints.len() > 1 {
            let next = (index + 1) % endpoints.len();
            // Only the first of several requests failing together moves on.
            if self.inner.current.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                warn!("{error}; the next etcd requests go to {}", endpoints[next].url);
            }
        }
        error
    }

    async fn unary<Q, A>(&self, call: Call, request: Q) -> Result<A, Error>
    where
        Q: prost::Message + Clone + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        Ok(self.unary_from(call, request).await?.1)
    }

    /// Sends `request` with the auth token to the current endpoint, once more
    /// with a new token when etcd refuses the token; returns the endpoint's URL
    /// (for messages about the answer) and the answer.
    async fn unary_from<Q, A>(&self, call: Call, request: Q) -> Result<(String, A), Error>
    where
        Q: prost::Message + Clone + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let token = self.token().await;
        match self.unary_once(call, request.clone(), token.as_ref()).await {
            Err(e) if e.is_stale_token() && self.inner.credentials.is_some() => {
                self.renew_token(token.as_ref()).await?;
                self.unary_once(call, request, self.token().await.as_ref()).await
            }
            answer => answer,
        }
    }

    /// Sends `request` with `token` to the current endpoint.
    async fn unary_once<Q, A>(
        &self,
        call: Call,
        request: Q,
        token: Option<&AsciiMetadataValue>,
    ) -> Result<(String, A), Error>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let (index, endpoint) = self.endpoint();
        let url = endpoint.url.clone();
        // Every call but Connect has a path; "/" is never sent.
        let path = PathAndQuery::from_static(call.path().unwrap_or("/"));
        let mut grpc = self.grpc(endpoint);
        let limit = self.inner.request_timeout;
        let answer = tokio::time::timeout(limit, async {
            grpc.ready().await.map_err(|e| Error::Transport { call, endpoint: url.clone(), reason: chain(&e) })?;
            let mut request = tonic::Request::new(request);
            // etcd gives up on the request too once it is late.
            request.set_timeout(limit);
            with_token(request.metadata_mut(), token);
            let codec = ProstCodec::<Q, A>::default();
            grpc.unary(request, path, codec).await.map_err(|s| Error::from_status(call, &url, &s))
        })
        .await;
        match answer {
            Ok(Ok(resp)) => Ok((url, resp.into_inner())),
            Ok(Err(e)) => Err(self.failed(index, e)),
            Err(_) => Err(self.failed(index, Error::Timeout { call, endpoint: url, after: limit })),
        }
    }

    /// The header of an answer, which etcd always sends.
    fn header(&self, call: Call, endpoint: &str, header: Option<ResponseHeader>) -> Result<ResponseHeader, Error> {
        header.ok_or_else(|| Error::Malformed {
            call,
            endpoint: endpoint.to_string(),
            what: "no response header".into(),
        })
    }
}

/// Puts the auth token, if any, in a request's metadata, where etcd looks for
/// it.
pub(crate) fn with_token(metadata: &mut MetadataMap, token: Option<&AsciiMetadataValue>) {
    if let Some(t) = token {
        metadata.insert("token", t.clone());
    }
}

/// Whether `e` is a watch that etcd cancelled for its token: as not permitted
/// (etcd 3.4 when the token has expired) or for the token itself.
fn is_refused_watch(e: &Error) -> bool {
    matches!(e, Error::WatchCancelled(c) if c.reason.as_deref().is_some_and(|r| {
        r.contains("permission denied") || r.contains("invalid auth token")
    }))
}

/// The tonic endpoint of `url` with the options applied; `tls` for an
/// `https://` URL (the caller checked that the URLs are all of one scheme).
fn tonic_endpoint(url: &str, opts: &ConnectOptions, tls: Option<&ClientTlsConfig>) -> Result<TonicEndpoint, Error> {
    let invalid = |reason: &str| Error::Endpoint { endpoint: url.to_string(), reason: reason.to_string() };
    let full = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    let uri: http::Uri = full.parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("not an http:// or https:// URL")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    let mut endpoint = TonicEndpoint::from(uri).connect_timeout(opts.connect_timeout);
    match (https, tls) {
        (true, Some(tls)) => {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| Error::Tls(chain(&e)))?;
        }
        (true, None) => return Err(invalid("an https:// endpoint without TLS settings")),
        (false, _) => {}
    }
    if let Some(k) = opts.keep_alive {
        endpoint = endpoint
            .http2_keep_alive_interval(k.interval)
            .keep_alive_timeout(k.timeout)
            .keep_alive_while_idle(k.while_idle);
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls() {
        let o = ConnectOptions::default();
        assert_eq!(
            tonic_endpoint("http://127.0.0.1:2379", &o, None).unwrap().uri().to_string(),
            "http://127.0.0.1:2379/"
        );
        assert_eq!(tonic_endpoint("127.0.0.1:2379", &o, None).unwrap().uri().to_string(), "http://127.0.0.1:2379/");
        for (bad, why) in [
            ("https://e:2379", "TLS"),
            ("ftp://etcd:2379", "http://"),
            ("unix:///run/etcd", ""),
            ("http://", ""),
            ("a b", ""),
        ] {
            match tonic_endpoint(bad, &o, None) {
                Err(Error::Endpoint { endpoint, reason }) => {
                    assert_eq!(endpoint, bad);
                    assert!(reason.contains(why), "{bad}: {reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn connect_without_endpoints_fails() {
        let none: [&str; 0] = [];
        assert!(matches!(Client::connect(&none, ConnectOptions::default()).await, Err(Error::NoEndpoints)));
    }

    #[tokio::test]
    async fn connect_names_every_endpoint_that_failed() {
        // Two loopback ports nobody listens on: bound, then closed.
        let closed = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let (a, b) = (closed().unwrap(), closed().unwrap());
        let urls = [format!("http://127.0.0.1:{a}"), format!("http://127.0.0.1:{b}")];
        let e = Client::connect(&urls, ConnectOptions::default()).await.unwrap_err();
        assert!(matches!(e, Error::Transport { call: Call::Connect, .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("etcd connect via "), "{text}");
        assert!(text.contains(&format!(":{a}/: ")) && text.contains(&format!(":{b}/: ")), "{text}");
    }
}
