//! The hostile peers' sessions: a TCP connection from a chosen address whose OPEN exchange
//! is driven by `bgpd_proto`'s sans-IO [`Session`], after which the caller owns the raw
//! stream (to stop reading it, or to write malformed UPDATEs into it), and a scanner that
//! finds the NOTIFICATION in what the DUT sends without decoding the rest.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use bgpd_proto::session::{Session, SessionConfig, SessionEvent};
use bgpd_proto::wire::HEADER_LEN;
use bgpd_proto::Family;

use crate::bench::routeserver::speaker::{HOLD_TIME, IO_TICK};
use crate::bench::routeserver::DUT_AS;
use crate::lab::Ns;

/// A KEEPALIVE (RFC 4271 §4.4: the 19-octet header alone, type 4).
pub const KEEPALIVE: [u8; 19] = {
    let mut k = [0xFF; 19];
    k[16] = 0;
    k[17] = 19;
    k[18] = 4;
    k
};

/// Connects from `local` (in `ns`) to `remote`:179 within `timeout`, the stream left
/// blocking with reads and writes waiting at most [`IO_TICK`].
pub fn connect_from(ns: &Ns, local: Ipv4Addr, remote: Ipv4Addr, timeout: Duration) -> Result<TcpStream, String> {
    let stream = ns
        .in_ns(|| -> Result<TcpStream, String> {
            // tokio's TcpSocket binds before connecting (std cannot); the stream is then used blocking.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let s = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
                s.bind(SocketAddrV4::new(local, 0).into()).map_err(|e| format!("bind {local}: {e}"))?;
                match tokio::time::timeout(timeout, s.connect(SocketAddrV4::new(remote, 179).into())).await {
                    Ok(Ok(s)) => s.into_std().map_err(|e| format!("into_std: {e}")),
                    Ok(Err(e)) => Err(format!("connect {local} → {remote}:179: {e}")),
                    Err(_) => Err(format!("connect {local} → {remote}:179: no answer in {timeout:?}")),
                }
            })
        })
        .map_err(|e| format!("entering {}: {e}", ns.name()))??;
    stream.set_nonblocking(false).map_err(|e| format!("set_nonblocking: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    stream.set_read_timeout(Some(IO_TICK)).map_err(|e| format!("read timeout: {e}"))?;
    stream.set_write_timeout(Some(IO_TICK)).map_err(|e| format!("write timeout: {e}"))?;
    Ok(stream)
}

/// Drives the OPEN exchange (RFC 4271 §8.2.2, OpenSent → OpenConfirm → Established) on a
/// connected stream with a [`Session`] for AS `my_as` (IPv4 unicast, 4-octet AS, hold time
/// [`HOLD_TIME`]), until Established or `deadline`. Bytes the DUT sends after its KEEPALIVE
/// may be consumed by the session; the caller does not need them.
pub fn handshake(stream: &mut TcpStream, my_as: u32, id: Ipv4Addr, deadline: Instant) -> Result<(), String> {
    let mut cfg = SessionConfig::new(my_as, DUT_AS, id);
    cfg.hold_time = HOLD_TIME;
    cfg.families = vec![Family::IPV4_UNICAST];
    cfg.auto_restart = false;
    let mut s = Session::new(cfg).map_err(|e| format!("session: {e}"))?;
    s.handle_manual_start(Instant::now());
    s.handle_connected(Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(b) = s.poll_transmit() {
            stream.write_all(&b).map_err(|e| format!("write: {e}"))?;
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                SessionEvent::Established(_) => {
                    while let Some(b) = s.poll_transmit() {
                        stream.write_all(&b).map_err(|e| format!("write: {e}"))?;
                    }
                    return Ok(());
                }
                SessionEvent::Down(why) => return Err(format!("the session went down: {why:?}")),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err("no OPEN and KEEPALIVE from the DUT in time".into());
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("the DUT closed the connection during the OPEN exchange".into()),
            Ok(n) => s.handle_bytes(Instant::now(), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if s.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            s.handle_timeout(Instant::now());
        }
    }
}

/// Walks the message headers in a byte stream (without decoding bodies) and keeps the first
/// NOTIFICATION's code and subcode.
#[derive(Debug, Default)]
pub struct Scanner {
    buf: Vec<u8>,
    /// Messages seen.
    pub messages: u64,
    /// The first NOTIFICATION: (code, subcode).
    pub notification: Option<(u8, u8)>,
}

impl Scanner {
    /// Takes more bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() - at >= HEADER_LEN {
            let len = usize::from(u16::from_be_bytes([self.buf[at + 16], self.buf[at + 17]]));
            if len < HEADER_LEN {
                // Not a BGP stream any more: stop looking (and keep no bytes).
                self.buf.clear();
                return;
            }
            if self.buf.len() - at < len {
                break;
            }
            self.messages += 1;
            if self.buf[at + 18] == 3 && self.notification.is_none() && len >= HEADER_LEN + 2 {
                self.notification = Some((self.buf[at + HEADER_LEN], self.buf[at + HEADER_LEN + 1]));
            }
            at += len;
        }
        self.buf.drain(..at);
    }
}

/// Writes all of `bytes`, waiting out a full socket buffer while `go()` holds. `Ok(false)`
/// when `go()` stopped it first.
pub fn write_while(stream: &mut TcpStream, bytes: &[u8], go: impl Fn() -> bool) -> std::io::Result<bool> {
    let mut off = 0;
    while off < bytes.len() {
        match stream.write(&bytes[off..]) {
            Ok(0) => return Err(std::io::Error::new(ErrorKind::WriteZero, "connection closed")),
            Ok(n) => off += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if !go() {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanner_finds_the_notification_across_reads() {
        let mut s = Scanner::default();
        let mut stream = KEEPALIVE.to_vec();
        let mut n = vec![0xFF; 16];
        n.extend_from_slice(&[0, 21, 3, 3, 10]);
        stream.extend_from_slice(&n);
        s.feed(&stream[..25]);
        assert_eq!((s.messages, s.notification), (1, None));
        s.feed(&stream[25..]);
        assert_eq!((s.messages, s.notification), (2, Some((3, 10))));
    }
}
