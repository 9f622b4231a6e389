//! Slow reader: the DUT has three eBGP peers. Peer A (10.77.0.12, AS 65002) completes the
//! OPEN exchange and then never reads its socket again (it keeps the connection open and
//! sends a KEEPALIVE every 10 s from a writer thread), while peer B (the route-server bench's
//! tester, 10.77.0.11) sends `--slow-routes` /24s in `--slow-sets` attribute sets and
//! peer C (the monitor, 10.77.0.100) keeps the table the DUT sends it.
//!
//! Measured over the `--slow-secs` window from B's first UPDATE: the DUT's VmRSS every
//! 100 ms (peak) and VmHWM, against its RSS before the load; whether and when C held
//! every route of B; what became of A at the end of the window (the DUT's view of the
//! session, whether A's TCP connection is still there, and how many bytes wait for A in
//! the kernel: the DUT's Send-Q plus A's Recv-Q). RFC 9687's send hold timer would close
//! A only once nothing could be sent to it for that long: bgpd's is max(8 min, 2 × hold
//! time), so within a 60 s window A stays.
//!
//! Then A reads again: the figures say how long until it held every route of B (bgpd
//! paused its export to A once 8 MiB waited for it, and resumes from its Loc-RIB once A
//! has taken what was queued), and bgpd's view of A at the end of the window (bytes
//! queued, export paused).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::routeserver::dut::{self, DutKind};
use crate::bench::routeserver::{tester_addr, tester_as, DUT_ADDR};
use crate::lab::Ns;

use super::{
    dut_peer_state, good_load, good_peer, mib, monitor_peer, peer, sampled, sleep_until, Bed, Figures, Options,
    Speakers, QUIET, SETUP,
};

/// How often A sends a KEEPALIVE (the hold time it proposes is 240 s).
const A_KEEPALIVE_EVERY: Duration = Duration::from_secs(10);

/// Runs the scenario against `kind`.
pub fn run(kind: DutKind, bgpd: Option<&Path>, o: &Options) -> Result<Figures, String> {
    let load = good_load(o.slow_routes, o.slow_sets)?;
    let window = Duration::from_secs(o.slow_secs);
    let (a_addr, a_as) = (tester_addr(1), tester_as(1));
    let peers = [good_peer(), dut::Peer { name: "t2".into(), addr: a_addr, asn: a_as }, monitor_peer()];
    let bed = Bed::new("slow-reader", kind, &peers, &[], bgpd, window)?;
    let speakers = Speakers::connect(&bed, &load)?;
    let mut a = establish(&bed.peers_ns, a_addr, a_as)?;
    let a_writer = KeepaliveWriter::spawn(&mut a)?;
    std::thread::sleep(QUIET);
    let dut = bed.dut()?;
    let (rss_before, _) = dut.memory_kib()?;
    let cpu_before = dut.cpu_seconds()?;
    let control = &bed.control;
    let (c_done, samples) = sampled(dut, control, || {
        let t0 = control.open_gate();
        let done = control.wait_done(t0 + window);
        sleep_until(t0 + window);
        done.map(|d| d.saturating_duration_since(t0).as_secs_f64())
    });
    let cpu = dut.cpu_seconds()? - cpu_before;
    let (rss_end, hwm) = dut.memory_kib()?;
    let held = control.progress.load(Ordering::Relaxed);
    let a_dut_view = dut_peer_state(&bed, kind, bgpd, "t2");
    let a_conn = bed.peers_ns.established_tcp(179).map_err(|e| format!("ss: {e}"))?;
    let a_open = a_conn.iter().any(|(local, _)| local.starts_with(&format!("{a_addr}:")));
    let queued =
        queue_bytes(&bed.dut_ns, a_addr, true).unwrap_or(0) + queue_bytes(&bed.peers_ns, a_addr, false).unwrap_or(0);
    let a_export = match (kind, bgpd) {
        (DutKind::Bgpd, Some(bin)) => bgpd_export_view(bin, &bed.lab.dir().join("bgpd.sock"), "t2"),
        _ => "—".into(),
    };
    let catch_up = catch_up(&mut a, load.routes as usize, CATCH_UP_LIMIT);
    let a_write_error = a_writer.stop();
    let speaker_error = bed.speaker_error();
    let alive = bed.alive();
    speakers.finish(control);
    drop(a);

    let mut f = Figures::default();
    f.num("routes B sent", load.routes as f64, 0);
    f.num("B's routes at C at the end of the window", held as f64, 0);
    f.text(
        "C held every route of B after",
        c_done.map_or_else(|| format!("not within {} s", window.as_secs()), |s| format!("{s:.2} s")),
    );
    f.num("DUT RSS before the load, MiB", mib(rss_before), 1);
    f.num("DUT peak VmRSS in the window (100 ms samples), MiB", mib(samples.peak_rss_kib), 1);
    f.num("DUT VmHWM, MiB", mib(hwm), 1);
    f.num("RSS bound observed: peak − before, MiB", mib(hwm.max(samples.peak_rss_kib).saturating_sub(rss_before)), 1);
    f.num("DUT RSS at the end of the window, MiB", mib(rss_end), 1);
    f.num("DUT CPU s in the window", cpu, 2);
    f.text(
        format!("peer A after {} s: DUT's view", window.as_secs()),
        if a_dut_view.is_empty() { "?".into() } else { a_dut_view },
    );
    f.text(
        "peer A's TCP connection",
        match (a_open, &a_write_error) {
            (true, None) => "open (kept)".to_string(),
            (_, Some(e)) => format!("closed by the DUT ({e})"),
            (false, None) => "gone".to_string(),
        },
    );
    f.num("bytes waiting for A in the kernel (DUT Send-Q + A Recv-Q)", queued as f64, 0);
    f.text("the DUT's export to A at the end of the window", a_export);
    f.text(
        "A reads again: it held every route of B after",
        match catch_up {
            Ok(t) => format!("{:.2} s", t.as_secs_f64()),
            Err(e) => e,
        },
    );
    f.text("sessions B and C", speaker_error.unwrap_or_else(|| "up throughout".into()));
    f.text("DUT process", if alive { "running" } else { "exited" });
    Ok(f)
}

/// How long A may take to catch up once it reads again.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// bgpd's view of the export to `name`: the bytes queued towards it and whether
/// export is paused (`bgpd show peers --json`).
fn bgpd_export_view(bin: &Path, control: &Path, name: &str) -> String {
    match crate::bench::sessions::bgpd_show_json(bin, control, "peers") {
        Ok(v) => match v["peers"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name)) {
            Some(p) => format!(
                "{} MiB queued, export {}",
                p["queued_bytes"].as_u64().unwrap_or(0) >> 20,
                if p["export_paused"].as_bool() == Some(true) { "paused" } else { "running" }
            ),
            None => "? (no such peer)".into(),
        },
        Err(e) => format!("? ({e})"),
    }
}

/// A reads its socket again and keeps the table it is sent until it holds
/// `routes` prefixes: how long that took, or why it did not.
fn catch_up(a: &mut std::net::TcpStream, routes: usize, limit: Duration) -> Result<Duration, String> {
    use std::io::Read;
    let t0 = Instant::now();
    a.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| format!("read timeout: {e}"))?;
    let ctx = bgpd_proto::WireContext::new(true);
    let mut table = std::collections::HashSet::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    while t0.elapsed() < limit {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match a.read(&mut buf[filled..]) {
            Ok(0) => return Err(format!("the DUT closed A's connection with {} routes held", table.len())),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("reading: {e}")),
        }
        let mut at = 0;
        loop {
            let frame =
                bgpd_proto::wire::Message::decode(&buf[at..filled], &ctx).map_err(|e| format!("decoding: {e}"))?;
            let Some(frame) = frame else { break };
            at += frame.len;
            if let bgpd_proto::wire::Message::Update(u) = frame.message {
                u.withdrawn.iter().for_each(|n| {
                    table.remove(&n.prefix);
                });
                table.extend(u.nlri.iter().map(|n| n.prefix));
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if table.len() >= routes {
            return Ok(t0.elapsed());
        }
    }
    Err(format!("not within {} s ({} of {routes} routes)", limit.as_secs(), table.len()))
}

/// Connects A and exchanges OPENs, retrying until the setup deadline.
fn establish(ns: &Ns, addr: Ipv4Addr, asn: u32) -> Result<std::net::TcpStream, String> {
    let deadline = Instant::now() + SETUP;
    let mut last = String::new();
    while Instant::now() < deadline {
        match peer::connect_from(ns, addr, DUT_ADDR, Duration::from_secs(2))
            .and_then(|mut s| peer::handshake(&mut s, asn, addr, deadline).map(|()| s))
        {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("peer A: no session ({last})"))
}

/// A's writer: a KEEPALIVE every [`A_KEEPALIVE_EVERY`]; notes the first failed write.
struct KeepaliveWriter {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<String>>,
}

impl KeepaliveWriter {
    fn spawn(stream: &mut std::net::TcpStream) -> Result<KeepaliveWriter, String> {
        let mut w = stream.try_clone().map_err(|e| format!("peer A: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("slow-a-w".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= A_KEEPALIVE_EVERY {
                        match peer::write_while(&mut w, &peer::KEEPALIVE, || !s.load(Ordering::Relaxed)) {
                            Ok(_) => last = Instant::now(),
                            Err(e) => return Some(format!("write failed {} s in: {e}", started.elapsed().as_secs())),
                        }
                    }
                }
                None
            })
            .map_err(|e| format!("peer A: thread: {e}"))?;
        Ok(KeepaliveWriter { stop, thread })
    }

    /// Stops the writer; its first write error, if any.
    fn stop(self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(Some("writer panicked".into()))
    }
}

/// Bytes queued on the TCP connection with `addr` as seen in `ns`: Send-Q when `send`, else
/// Recv-Q (`ss -tnH state established`, whose columns are Recv-Q Send-Q Local Peer).
fn queue_bytes(ns: &Ns, addr: Ipv4Addr, send: bool) -> Option<u64> {
    let out = ns.run("ss", &["-tnH", "state", "established"]).ok()?;
    let a = format!("{addr}:");
    out.lines()
        .filter(|l| l.split_whitespace().skip(2).take(2).any(|f| f.starts_with(&a)))
        .filter_map(|l| l.split_whitespace().nth(usize::from(send))?.parse::<u64>().ok())
        .max()
}
