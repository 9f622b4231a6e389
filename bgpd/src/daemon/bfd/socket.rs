//! The BFD task's sockets: one sending socket per session (RFC 5881 §4 source port, TTL
//! 255) and the listeners, read with each datagram's TTL or hop limit.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tracing::debug;

/// Datagrams read from one listener in one wakeup at most.
const MAX_READS_PER_WAKEUP: usize = 256;

/// A received datagram: its bytes, sender, TTL or hop limit, and on which port.
pub(super) struct Datagram {
    pub(super) bytes: [u8; 64],
    pub(super) len: usize,
    pub(super) from: SocketAddr,
    pub(super) ttl: Option<u8>,
    pub(super) multihop: bool,
}

/// A session's sending socket: its own source port in 49152-65535 (RFC
/// 5881 §4), TTL / hop limit 255, from `local` when given.
pub(super) fn tx_socket(peer: IpAddr, local: Option<IpAddr>) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = peer.is_ipv6();
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let unspecified: IpAddr = if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    let any = local.unwrap_or(unspecified);
    let start = fastrand::u16(49152..=65535);
    let mut last = io::Error::other("no free source port in 49152-65535");
    for i in 0..16384u16 {
        let port = 49152 + (start - 49152 + i) % 16384;
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if v6 {
            s.set_only_v6(true)?;
            s.set_unicast_hops_v6(255)?;
        } else {
            s.set_ttl_v4(255)?;
        }
        match s.bind(&SocketAddr::new(any, port).into()) {
            Ok(()) => {
                s.set_nonblocking(true)?;
                return Ok(s.into());
            }
            // The session's source address is not (or no longer) on this host:
            // the routed source, as the BGP session would have.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && local.is_some() => return tx_socket(peer, None),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A listening socket on `port` that reports each datagram's TTL / hop limit.
pub(super) fn rx_socket(v6: bool, port: u16) -> io::Result<tokio::net::UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    let any: IpAddr = if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    if v6 {
        s.set_only_v6(true)?;
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
    } else {
        setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
    }
    s.bind(&SocketAddr::new(any, port).into())?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// A listening socket (RFC 5881 single-hop or RFC 5883 multihop port).
pub(super) struct Listener {
    pub(super) sock: tokio::net::UdpSocket,
    pub(super) multihop: bool,
}

impl Listener {
    /// Reads every datagram waiting, with its TTL (a bounded number per
    /// wakeup, so that timers are never starved by a flood).
    pub(super) fn drain(&self, mut each: impl FnMut(&Datagram)) {
        for _ in 0..MAX_READS_PER_WAKEUP {
            match self.sock.try_io(tokio::io::Interest::READABLE, || recv_with_ttl(&self.sock)) {
                Ok(mut d) => {
                    d.multihop = self.multihop;
                    each(&d);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("BFD receive: {e}");
                    return;
                }
            }
        }
    }
}

fn recv_with_ttl(sock: &tokio::net::UdpSocket) -> io::Result<Datagram> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let mut bytes = [0u8; 64];
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    let (len, ttl, from) = {
        let mut iov = [io::IoSliceMut::new(&mut bytes)];
        let msg = recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let mut ttl = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
                    ControlMessageOwned::Ipv6HopLimit(h) => ttl = u8::try_from(h).ok(),
                    _ => {}
                }
            }
        }
        let from = msg.address.and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port())))
        });
        (msg.bytes, ttl, from)
    };
    let from = from.ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
    Ok(Datagram { bytes, len: len.min(64), from, ttl, multihop: false })
}
