//! FIB benchmark: install routes with the fib crate, `ip -batch` and BIRD 2, side by side.
//!
//! `bench fib [--routes N] [--contenders bgpd,ip-batch,bird] [--batch B]` installs N IPv4
//! /24 routes and N/10 IPv6 /64 routes into table 100 of a fresh network namespace per
//! contender, then replaces them all (new gateway) and deletes them all. Completion is
//! counted by the kernel's own table: a listener in the namespace follows every route
//! notification and stops the clock when the table holds exactly the expected routes;
//! a full dump then verifies it (untimed). One line per contender and operation:
//! `contender=bgpd op=add routes=110000 seconds=0.412 routes_per_s=266990`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fib::{Fib, FibConfig, FibMetrics, NextHop, Route, RouteChange};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use testgate::testbed::{fib_links, Netns, Process, ScratchDir};

use super::args::Flags;

const TABLE: u32 = 100;
/// rtnetlink groups `RTNLGRP_IPV4_ROUTE` and `RTNLGRP_IPV6_ROUTE`.
const ROUTE_GROUPS: [u32; 2] = [7, 11];
const GW_A: (Ipv4Addr, Ipv6Addr) = (Ipv4Addr::new(192, 0, 2, 2), Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2));
const GW_B: (Ipv4Addr, Ipv6Addr) = (Ipv4Addr::new(198, 51, 100, 2), Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Bgpd,
    IpBatch,
    Bird,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Bgpd => "bgpd",
            Contender::IpBatch => "ip-batch",
            Contender::Bird => "bird",
        }
    }
}

struct Options {
    routes: usize,
    contenders: Vec<Contender>,
    batch: usize,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts =
        Options { routes: 100_000, contenders: vec![Contender::Bgpd, Contender::IpBatch, Contender::Bird], batch: 256 };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--routes" => opts.routes = flags.number_in(10..=4_000_000)?,
            "--batch" => opts.batch = flags.number()?,
            "--contenders" => {
                opts.contenders = flags
                    .value()?
                    .split(',')
                    .map(|c| match c {
                        "bgpd" => Ok(Contender::Bgpd),
                        "ip-batch" => Ok(Contender::IpBatch),
                        "bird" => Ok(Contender::Bird),
                        other => Err(format!("unknown contender {other:?}; known: bgpd, ip-batch, bird")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => {
                return Err(format!(
                    "{}; usage: fib [--routes N] [--contenders bgpd,ip-batch,bird] [--batch B]",
                    flags.unknown()
                ))
            }
        }
    }
    Ok(opts)
}

/// Runs the FIB benchmark with the arguments after `fib`.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (network namespaces and netlink route writes)".into());
    }
    // Ctrl-C: kill BIRD, delete the namespace and the scratch files, exit.
    testgate::testbed::on_signal("fib bench", testgate::testbed::OnSignal::Exit)?;
    let set = RouteSet::new(opts.routes);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "# fib benchmark: {} IPv4 /24 + {} IPv6 /64 routes into table {TABLE}, kernel {}, {} CPUs",
        set.v4.len(),
        set.v6.len(),
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for c in &opts.contenders {
        let ns = bench_ns(c.name())?;
        let watch = Watch::start(&ns.path())?;
        let result = match c {
            Contender::Bgpd => bench_bgpd(&ns, &watch, &set, opts.batch),
            Contender::IpBatch => bench_ip_batch(&ns, &watch, &set),
            Contender::Bird => bench_bird(&ns, &watch, &set),
        };
        if let Err(e) = result {
            println!("# contender={} failed: {e}", c.name());
        }
    }
    Ok(())
}

/// The routes: N IPv4 /24s from 16.0.0.0 on, N/10 IPv6 /64s in 2001:db8::/32.
struct RouteSet {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

impl RouteSet {
    fn new(n: usize) -> Self {
        let v4 = (0..n as u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0x1000_0000 + (i << 8)), 24).expect("24 is a valid IPv4 length"))
            .collect();
        let v6 = (0..(n / 10) as u128)
            .map(|i| {
                Ipv6Net::new(Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + (i << 64)), 64)
                    .expect("64 is a valid IPv6 length")
            })
            .collect();
        RouteSet { v4, v6 }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn report(c: Contender, op: &str, routes: usize, elapsed: Duration) {
    let s = elapsed.as_secs_f64();
    println!(
        "contender={} op={op} routes={routes} seconds={s:.3} routes_per_s={:.0}",
        c.name(),
        routes as f64 / s.max(1e-9)
    );
}

fn deadline_for(set: &RouteSet) -> Duration {
    // Generous: ascending deletes of a large table take the kernel minutes.
    Duration::from_secs(120 + (set.len() / 1_000) as u64)
}

// ----- contenders ----------------------------------------------------------------------

fn bench_bgpd(ns: &Netns, watch: &Watch, set: &RouteSet, batch: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let config = FibConfig { table: TABLE, netns: Some(ns.path()), batch_size: batch, ..FibConfig::default() };
        let fib = Fib::spawn(config, FibMetrics::unregistered()).map_err(|e| e.to_string())?;
        let h = fib.handle.clone();
        h.settled().await.map_err(|e| e.to_string())?;
        // Each operation is one `apply`, as a daemon submits the diff of one RIB run; the
        // FIB then writes the whole set in descending order, the kernel's fastest.
        let upserts = |gw: (Ipv4Addr, Ipv6Addr)| -> Vec<RouteChange> {
            let v4 = set
                .v4
                .iter()
                .map(|p| RouteChange::Upsert(Route::unicast(IpNet::V4(*p), vec![NextHop::via(IpAddr::V4(gw.0))])));
            let v6 = set
                .v6
                .iter()
                .map(|p| RouteChange::Upsert(Route::unicast(IpNet::V6(*p), vec![NextHop::via(IpAddr::V6(gw.1))])));
            v4.chain(v6).collect()
        };
        let removes = || -> Vec<RouteChange> {
            let all = set.v4.iter().map(|p| IpNet::V4(*p)).chain(set.v6.iter().map(|p| IpNet::V6(*p)));
            all.map(RouteChange::Remove).collect()
        };
        let ops = [
            ("add", upserts(GW_A), Goal::AllVia(GW_A, set.len())),
            ("replace", upserts(GW_B), Goal::AllVia(GW_B, set.len())),
            ("delete", removes(), Goal::Empty),
        ];
        for (op, changes, goal) in ops {
            let done = watch.wait(goal, deadline_for(set));
            let t0 = Instant::now();
            h.apply(changes).await.map_err(|e| e.to_string())?;
            let failures = h.settled().await.map_err(|e| e.to_string())?;
            let acked = t0.elapsed();
            let t1 = done.recv().map_err(|_| "watch thread ended".to_string())??;
            println!(
                "# bgpd op={op}: every write acknowledged after {:.3} s, table complete after {:.3} s",
                acked.as_secs_f64(),
                (t1 - t0).as_secs_f64()
            );
            if !failures.is_empty() {
                return Err(format!("{} routes failed, first: {}", failures.len(), failures[0]));
            }
            watch.verify(goal)?;
            report(Contender::Bgpd, op, set.len(), t1 - t0);
        }
        h.shutdown().await.map_err(|e| e.to_string())
    })
}

fn bench_ip_batch(ns: &Netns, watch: &Watch, set: &RouteSet) -> Result<(), String> {
    let dir = ScratchDir::new("fibbench-ip-batch")?;
    let render = |verb: &str, gw: Option<(Ipv4Addr, Ipv6Addr)>| -> String {
        let mut s = String::with_capacity(set.len() * 64);
        for p in &set.v4 {
            match gw {
                Some(gw) => writeln!(s, "route {verb} {p} via {} table {TABLE} proto 186", gw.0),
                None => writeln!(s, "route {verb} {p} table {TABLE}"),
            }
            .expect("writing to a String cannot fail");
        }
        for p in &set.v6 {
            match gw {
                Some(gw) => writeln!(s, "route {verb} {p} via {} table {TABLE} proto 186", gw.1),
                None => writeln!(s, "route {verb} {p} table {TABLE}"),
            }
            .expect("writing to a String cannot fail");
        }
        s
    };
    let ops = [
        ("add", render("add", Some(GW_A)), Goal::AllVia(GW_A, set.len())),
        ("replace", render("replace", Some(GW_B)), Goal::AllVia(GW_B, set.len())),
        ("delete", render("del", None), Goal::Empty),
    ];
    for (op, text, goal) in ops {
        let file = dir.path().join(format!("{op}.batch"));
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        let done = watch.wait(goal, deadline_for(set));
        let t0 = Instant::now();
        let out = Command::new("ip")
            .args(["-n", ns.name(), "-batch"])
            .arg(&file)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!("ip -batch {op}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let t1 = done.recv().map_err(|_| "watch thread ended".to_string())??;
        watch.verify(goal)?;
        report(Contender::IpBatch, op, set.len(), t1 - t0);
    }
    Ok(())
}

/// BIRD 2 with static routes exported by its kernel protocols into table 100. Every
/// operation is a `birdc configure` with a new config (BIRD parses it, diffs the static
/// routes and writes the changes to the kernel), timed from the `configure` command.
fn bench_bird(ns: &Netns, watch: &Watch, set: &RouteSet) -> Result<(), String> {
    let bird = ["/usr/sbin/bird", "/usr/bin/bird"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("BIRD 2 is not installed (Debian package bird2)")?;
    let dir = ScratchDir::new("fibbench-bird")?;
    let sock = dir.path().join("bird.ctl");
    let render = |gw: Option<(Ipv4Addr, Ipv6Addr)>| -> String {
        let mut s = String::with_capacity(set.len() * 48 + 1024);
        s.push_str(
            "router id 192.0.2.1;\n\
             protocol device { }\n\
             protocol kernel k4 { ipv4 { import none; export all; }; kernel table 100; }\n\
             protocol kernel k6 { ipv6 { import none; export all; }; kernel table 100; }\n",
        );
        s.push_str("protocol static s4 {\n  ipv4;\n");
        if let Some(gw) = gw {
            for p in &set.v4 {
                writeln!(s, "  route {p} via {};", gw.0).expect("writing to a String cannot fail");
            }
        }
        s.push_str("}\nprotocol static s6 {\n  ipv6;\n");
        if let Some(gw) = gw {
            for p in &set.v6 {
                writeln!(s, "  route {p} via {};", gw.1).expect("writing to a String cannot fail");
            }
        }
        s.push_str("}\n");
        s
    };
    let write = |name: &str, text: String| -> Result<PathBuf, String> {
        let p = dir.path().join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    let empty = write("empty.conf", render(None))?;
    let add = write("add.conf", render(Some(GW_A)))?;
    let replace = write("replace.conf", render(Some(GW_B)))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name(), bird, "-f", "-c"])
        .arg(&empty)
        .arg("-s")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start bird: {e}"))?;
    let _bird = Process::adopt("bird", child).with_grace(Duration::ZERO);
    let birdc = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run birdc: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("birdc {}: {text}{}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
        }
    };
    // Wait (bounded) until BIRD answers and its device and kernel protocols are up.
    let start = Instant::now();
    loop {
        if let Ok(text) = birdc(&["show", "protocols"]) {
            let up = text.lines().filter(|l| l.split_whitespace().nth(3) == Some("up")).count();
            if up >= 5 {
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err("BIRD did not come up within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ops = [
        ("add", &add, Goal::AllVia(GW_A, set.len())),
        ("replace", &replace, Goal::AllVia(GW_B, set.len())),
        ("delete", &empty, Goal::Empty),
    ];
    for (op, conf, goal) in ops {
        let done = watch.wait(goal, deadline_for(set));
        let t0 = Instant::now();
        let conf = conf.to_string_lossy();
        let text = birdc(&["configure", &format!("\"{conf}\"")])?;
        if !text.contains("Reconfigur") {
            return Err(format!("birdc configure {op}: {text}"));
        }
        let t1 = done.recv().map_err(|_| "watch thread ended".to_string())??;
        watch.verify(goal)?;
        report(Contender::Bird, op, set.len(), t1 - t0);
    }
    Ok(())
}

// ----- the kernel's table, watched -------------------------------------------------------

/// What the table must hold for an operation to be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Exactly this many routes, each through this family's gateway.
    AllVia((Ipv4Addr, Ipv6Addr), usize),
    /// No route at all.
    Empty,
}

/// Where the instant of completion (or why it never came) is sent.
type Done = mpsc::Sender<Result<Instant, String>>;

enum Request {
    Wait(Goal, Instant, Done),
    Verify(Goal, mpsc::Sender<Result<(), String>>),
}

/// A thread in the namespace following every route notification of table 100.
struct Watch {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(netns: &Path) -> Result<Watch, String> {
        let open = || -> std::io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            Ok(s)
        };
        let (listener, dumper) = fib::netns::run_in_netns(netns, || Ok::<_, std::io::Error>((open()?, open()?)))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("netlink socket: {e}"))?;
        // A deep queue: the listener must not lose notifications while routes pour in.
        setsockopt(&listener, sockopt::RcvBufForce, &(512 << 20)).map_err(|e| format!("SO_RCVBUFFORCE: {e}"))?;
        setsockopt(&listener, sockopt::ReceiveTimeout, &TimeVal::new(0, 20_000))
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        for g in ROUTE_GROUPS {
            listener.add_membership(g).map_err(|e| format!("join group {g}: {e}"))?;
        }
        dumper.set_netlink_get_strict_chk(true).map_err(|e| format!("strict check: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || watch_loop(listener, dumper, rx));
        Ok(Watch { requests: Some(tx), thread: Some(thread) })
    }

    /// Asks to be told when the table reaches `goal`; the answer is the instant it did.
    fn wait(&self, goal: Goal, limit: Duration) -> mpsc::Receiver<Result<Instant, String>> {
        let (tx, rx) = mpsc::channel();
        if let Some(r) = &self.requests {
            let _ = r.send(Request::Wait(goal, Instant::now() + limit, tx));
        }
        rx
    }

    /// Dumps the table and checks it against `goal`.
    fn verify(&self, goal: Goal) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        if let Some(r) = &self.requests {
            let _ = r.send(Request::Verify(goal, tx));
        }
        rx.recv().map_err(|_| "watch thread ended".to_string())?
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Table 100 as seen: prefix → first gateway (unspecified when none).
#[derive(Default)]
struct TableView {
    routes: HashMap<IpNet, IpAddr, foldhash::fast::RandomState>,
}

impl TableView {
    fn apply(&mut self, route: SeenRoute) {
        if route.table != TABLE {
            return;
        }
        if route.deleted {
            self.routes.remove(&route.prefix);
        } else {
            self.routes.insert(route.prefix, route.gateway);
        }
    }

    fn meets(&self, goal: Goal) -> bool {
        match goal {
            Goal::Empty => self.routes.is_empty(),
            Goal::AllVia((g4, g6), n) => {
                self.routes.len() == n
                    && self.routes.iter().all(|(p, gw)| match p {
                        IpNet::V4(_) => *gw == IpAddr::V4(g4),
                        IpNet::V6(_) => *gw == IpAddr::V6(g6),
                    })
            }
        }
    }

    /// Cheap pre-check so that `meets` (a full scan) runs only near completion.
    fn could_meet(&self, goal: Goal) -> bool {
        match goal {
            Goal::Empty => self.routes.is_empty(),
            Goal::AllVia(_, n) => self.routes.len() == n,
        }
    }
}

/// One route message as the watcher needs it.
struct SeenRoute {
    prefix: IpNet,
    gateway: IpAddr,
    table: u32,
    deleted: bool,
}

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
/// `struct rtmsg` and `struct rtnexthop` sizes.
const RTMSG_LEN: usize = 12;
const RTNH_LEN: usize = 8;

/// Reads the route messages of a datagram straight from the bytes (the watcher must keep
/// up with the fastest writer on the other core, so no full decode). Returns false at the
/// end of a dump.
fn each_route(bytes: &[u8], mut f: impl FnMut(SeenRoute)) -> bool {
    let mut rest = bytes;
    while let Ok(nl) = NetlinkBuffer::new_checked(rest) {
        let len = (nl.length() as usize).min(rest.len());
        let kind = nl.message_type();
        let payload = &rest[16.min(len)..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        match kind {
            RTM_NEWROUTE | RTM_DELROUTE => {
                if let Some(r) = read_route(payload, kind == RTM_DELROUTE) {
                    f(r);
                }
            }
            NLMSG_DONE | NLMSG_ERROR => return false,
            _ => {}
        }
    }
    true
}

fn read_route(payload: &[u8], deleted: bool) -> Option<SeenRoute> {
    let hdr = payload.get(..RTMSG_LEN)?;
    let (family, dst_len, mut table) = (hdr[0], hdr[1], u32::from(hdr[4]));
    let addr = |v: &[u8]| -> Option<IpAddr> {
        match (family, v.len()) {
            (2, 4) => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            (10, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
            _ => None,
        }
    };
    let unspec = match family {
        2 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        10 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let (mut dst, mut gateway) = (unspec, None);
    for nla in NlasIterator::new(&payload[RTMSG_LEN..]) {
        let nla = nla.ok()?;
        match nla.kind() & 0x3fff {
            RTA_DST => dst = addr(nla.value())?,
            RTA_GATEWAY => gateway = addr(nla.value()),
            RTA_TABLE => table = u32::from_ne_bytes(nla.value().get(..4)?.try_into().ok()?),
            RTA_MULTIPATH if gateway.is_none() => {
                // The first next hop's attributes follow its `struct rtnexthop`.
                let v = nla.value();
                let nh_len = usize::from(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?));
                let attrs = v.get(RTNH_LEN..nh_len.min(v.len()))?;
                for a in NlasIterator::new(attrs).flatten() {
                    if a.kind() == RTA_GATEWAY {
                        gateway = addr(a.value());
                    }
                }
            }
            _ => {}
        }
    }
    Some(SeenRoute { prefix: IpNet::new(dst, dst_len).ok()?, gateway: gateway.unwrap_or(unspec), table, deleted })
}

/// Reads table 100 of both families with a dump.
fn dump(socket: &Socket) -> Result<TableView, String> {
    let mut view = TableView::default();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    for (seq, family) in [(1u32, AddressFamily::Inet), (2, AddressFamily::Inet6)] {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        req.header.table = TABLE as u8;
        req.attributes.push(RouteAttribute::Table(TABLE));
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetRoute(req)));
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        socket.send(&out, 0).map_err(|e| format!("dump request: {e}"))?;
        loop {
            buf.clear();
            socket.recv(&mut buf, 0).map_err(|e| format!("dump: {e}"))?;
            if !each_route(&buf, |r| view.apply(r)) {
                break;
            }
        }
    }
    Ok(view)
}

fn watch_loop(listener: Socket, dumper: Socket, requests: mpsc::Receiver<Request>) {
    let mut view = TableView::default();
    let mut waiting: Option<(Goal, Instant, Done)> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut open = true;
    while open || waiting.is_some() {
        loop {
            match requests.try_recv() {
                Ok(Request::Wait(goal, deadline, reply)) => waiting = Some((goal, deadline, reply)),
                Ok(Request::Verify(goal, reply)) => {
                    let result = dump(&dumper).and_then(|v| {
                        if v.meets(goal) {
                            Ok(())
                        } else {
                            Err(format!("the table dump does not match {goal:?}: {} routes", v.routes.len()))
                        }
                    });
                    let _ = reply.send(result);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if let Some((goal, deadline, _)) = &waiting {
            if view.could_meet(*goal) && view.meets(*goal) {
                let (_, _, reply) = waiting.take().expect("checked just above");
                let _ = reply.send(Ok(Instant::now()));
                continue;
            }
            if Instant::now() > *deadline {
                let (goal, _, reply) = waiting.take().expect("checked just above");
                let _ = reply.send(Err(format!("table did not reach {goal:?}; it holds {} routes", view.routes.len())));
                continue;
            }
        }
        buf.clear();
        match listener.recv(&mut buf, 0) {
            Ok(_) => {
                each_route(&buf, |r| view.apply(r));
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                // Lost notifications: re-read the table (the clock keeps running).
                eprintln!("# watch: notification overrun, re-reading the table");
                match dump(&dumper) {
                    Ok(v) => view = v,
                    Err(e) => eprintln!("# watch: {e}"),
                }
            }
            Err(_) => {} // receive timeout: look at requests and deadlines again
        }
    }
}

/// A fresh namespace `fibbench-<tag>-<pid>-<n>` with the FIB's two links (veth0
/// 192.0.2.1/24, 2001:db8:1::1/64 and veth2 198.51.100.1/24, 2001:db8:2::1/64); deleted on
/// drop, and on Ctrl-C by the test bed's signal cleanup.
fn bench_ns(tag: &str) -> Result<Netns, String> {
    let ns = Netns::unique(&format!("fibbench-{tag}"))?;
    fib_links(&ns)?;
    Ok(ns)
}
