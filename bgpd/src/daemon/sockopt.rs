//! Socket options BGP needs that the socket crates do not wrap: TCP MD5
//! signatures (RFC 2385) and the minimum TTL / hop count of GTSM (RFC 5082).
//! These are the only `unsafe` lines of the crate: plain `setsockopt` calls
//! on a descriptor the caller owns, with structures built here.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// Longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY: usize = 80;

/// Linux `struct tcp_md5sig`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: u32,
    key: [u8; MD5_MAX_KEY],
}

fn storage_of(peer: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match peer {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
        }
    }
    ss
}

fn setsockopt<T>(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised T and its size is passed with it;
    // the descriptor is owned by the caller for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets (or, with an empty key, removes) the TCP MD5 key for segments
/// to and from `peer` on `socket` — a listening socket (per peer) or a
/// socket about to connect (RFC 2385).
pub fn set_md5(socket: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "TCP MD5 key longer than 80 octets"));
    }
    let mut sig = TcpMd5Sig {
        addr: storage_of(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// GTSM (RFC 5082 §3): send with TTL (hop limit) 255 and accept only
/// segments that arrive with at least `255 - hops + 1`, i.e. from at most
/// `hops` hops away.
pub fn set_gtsm(socket: &impl AsRawFd, v6: bool, hops: u8) -> io::Result<()> {
    let min = libc::c_int::from(gtsm_min_ttl(hops));
    let ttl: libc::c_int = 255;
    if v6 {
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)
    } else {
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
    }
}

/// Marks the socket's traffic as network control (DSCP CS6), as routers
/// expect BGP to be marked.
pub fn set_cs6(socket: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let tos: libc::c_int = 0xC0;
    if v6 {
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tos)
    } else {
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_TOS, &tos)
    }
}

/// Makes a listening socket keep the SYN of each connection it accepts,
/// so [`syn_ttl`] can tell how far away the connecting peer is.
pub fn set_save_syn(listener: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    setsockopt(listener, libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, &on)
}

/// The TTL (IPv4) or hop limit (IPv6) of the SYN that opened `stream`,
/// accepted from a listener with [`set_save_syn`]. GTSM (RFC 5082) checks it
/// per peer, which a listener shared by all peers cannot do with IP_MINTTL.
/// The kernel hands the SYN out once.
pub fn syn_ttl(stream: &impl AsRawFd) -> io::Result<u8> {
    let mut buf = [0u8; 512];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and the kernel writes at most
    // `len`, updating it; the descriptor is owned by the caller.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let syn = &buf[..(len as usize).min(buf.len())];
    match syn.first().map(|b| b >> 4) {
        Some(4) if syn.len() > 8 => Ok(syn[8]),
        Some(6) if syn.len() > 7 => Ok(syn[7]),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "no saved SYN")),
    }
}

/// The least TTL a GTSM peer `hops` away arrives with (RFC 5082 §3).
pub fn gtsm_min_ttl(hops: u8) -> u8 {
    255u8.saturating_sub(hops.max(1)) + 1
}

/// Whether `addr` is IPv6 (and not an IPv4-mapped one).
pub fn is_v6(addr: &SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_on_a_listener_and_overlong_key() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_md5(&l, "127.0.0.2".parse().unwrap(), b"secret").unwrap();
        set_md5(&l, "::1".parse().unwrap(), b"secret").unwrap_or(());
        let e = set_md5(&l, "127.0.0.2".parse().unwrap(), &[b'x'; 81]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn saved_syn_gives_the_ttl_of_a_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_save_syn(&l).unwrap();
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        c.set_ttl_v4(200).unwrap();
        c.connect(&l.local_addr().unwrap().into()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(syn_ttl(&s).unwrap(), 200, "loopback does not decrement the TTL");
        assert!(syn_ttl(&s).is_err(), "the kernel hands the SYN out once");
        assert_eq!((gtsm_min_ttl(1), gtsm_min_ttl(2), gtsm_min_ttl(0)), (255, 254, 255));
    }

    #[test]
    fn gtsm_and_cs6_apply() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_gtsm(&s, false, 1).unwrap();
        assert_eq!(s.ttl_v4().unwrap(), 255);
        set_cs6(&s, false).unwrap();
        assert_eq!(s.tos_v4().unwrap(), 0xC0);
    }
}
