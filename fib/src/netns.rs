//! Opening the netlink socket inside a network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, and keeps it for life.
//! So a short-lived thread enters the namespace, creates the socket and ends; the socket
//! then serves from any thread, and the caller's own threads never change namespace.

use std::fs::File;
use std::path::Path;

use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, TokioSocket};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{SockFilter, SockRef};

use crate::error::FibError;

/// rtnetlink multicast groups: `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV4_ROUTE`,
/// `RTNLGRP_IPV6_IFADDR`, `RTNLGRP_IPV6_ROUTE`.
const GROUPS: [u32; 5] = [1, 5, 7, 9, 11];

/// Runs `f` on a new thread that has entered the network namespace at `path`
/// (`/run/netns/NAME`), and returns its result. Sockets `f` creates stay in that namespace.
pub fn run_in_netns<T, F>(path: &Path, f: F) -> Result<T, FibError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let netns_err = |source: std::io::Error| FibError::Netns { path: path.to_owned(), source };
    let file = File::open(path).map_err(netns_err)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.into()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| netns_err(std::io::Error::other("namespace thread panicked")))?
    })
}

/// The index of the link named `name` in the namespace at `netns` (or the caller's own),
/// `None` when there is none. For callers that pick a next hop's device by whether it exists
/// (bgpd uses `tunl0` for IPIP pools only while the tunnel device is there).
pub fn link_index(netns: Option<&Path>, name: &str) -> Result<Option<u32>, FibError> {
    let lookup = || match nix::net::if_::if_nametoindex(name) {
        Ok(index) => Ok(Some(index)),
        Err(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(FibError::Socket { what: "if_nametoindex", source: e.into() }),
    };
    match netns {
        Some(path) => run_in_netns(path, lookup)?,
        None => lookup(),
    }
}

/// A route socket bound to an automatic port, in the given namespace (or ours), subscribed
/// to link, address and route changes, with extended acks, capped acks, strict dump
/// checking and a receive buffer of `receive_buffer` bytes. Returns it and its port.
/// Must be called within a tokio runtime, with which the socket is registered.
pub(crate) fn open_route_socket(netns: Option<&Path>, receive_buffer: usize) -> Result<(TokioSocket, u32), FibError> {
    let socket = match netns {
        Some(path) => {
            let runtime = tokio::runtime::Handle::current();
            run_in_netns(path, move || {
                let _entered = runtime.enter();
                TokioSocket::new(NETLINK_ROUTE)
            })?
        }
        None => TokioSocket::new(NETLINK_ROUTE),
    }
    .map_err(|source| FibError::Socket { what: "create", source })?;
    configure(socket, receive_buffer)
}

fn configure(mut tokio_socket: TokioSocket, receive_buffer: usize) -> Result<(TokioSocket, u32), FibError> {
    let step = |what: &'static str| move |source: std::io::Error| FibError::Socket { what, source };
    let addr = tokio_socket.socket_mut().bind_auto().map_err(step("bind"))?;
    let socket = tokio_socket.socket_ref();
    socket.set_cap_ack(true).map_err(step("NETLINK_CAP_ACK"))?;
    socket.set_ext_ack(true).map_err(step("NETLINK_EXT_ACK"))?;
    socket.set_netlink_get_strict_chk(true).map_err(step("NETLINK_GET_STRICT_CHK"))?;
    // SO_RCVBUFFORCE needs CAP_NET_ADMIN, which programming routes needs anyway; fall back
    // to the capped SO_RCVBUF otherwise.
    if setsockopt(&socket, sockopt::RcvBufForce, &receive_buffer).is_err() {
        socket.set_rx_buf_sz(receive_buffer).map_err(step("SO_RCVBUF"))?;
    }
    let port = addr.port_number();
    if let Err(e) = SockRef::from(socket).attach_filter(&echo_filter(port)) {
        // Without the filter the echoes arrive and are recognised in user space.
        tracing::warn!(error = %e, "cannot attach the echo filter; reading our own notifications");
    }
    for group in GROUPS {
        socket.add_membership(group).map_err(step("join group"))?;
    }
    Ok((tokio_socket, port))
}

/// A classic BPF program that drops the notifications of our own route writes
/// (`RTM_NEWROUTE`/`RTM_DELROUTE` carrying our port, not part of a dump, not answering a
/// lookup) in the kernel, before they are queued: at bulk rates receiving them costs as
/// much as writing. Their ACKs tell us what we need; everything else passes.
///
/// Netlink headers are in native byte order while BPF loads are big-endian, so every
/// constant is compared as a big-endian load of its native bytes.
fn echo_filter(port: u32) -> [SockFilter; 11] {
    const LD_H: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LD_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
                           // What a big-endian load reads from a field stored in native order.
    let h = |v: u16| u32::from(u16::from_be_bytes(v.to_ne_bytes()));
    let w = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
    [
        SockFilter::new(LD_H, 0, 0, 4),                            // 0: nlmsg_type
        SockFilter::new(JEQ, 1, 0, h(24)),                         // 1: RTM_NEWROUTE → 3
        SockFilter::new(JEQ, 0, 7, h(25)),                         // 2: RTM_DELROUTE → 3, else accept
        SockFilter::new(LD_W, 0, 0, 12),                           // 3: nlmsg_pid
        SockFilter::new(JEQ, 0, 5, w(port)),                       // 4: ours → 5, else accept
        SockFilter::new(LD_H, 0, 0, 6),                            // 5: nlmsg_flags
        SockFilter::new(JSET, 3, 0, h(2)),                         // 6: NLM_F_MULTI → accept
        SockFilter::new(LD_W, 0, 0, 8),                            // 7: nlmsg_seq
        SockFilter::new(JSET, 1, 0, w(crate::engine::LOOKUP_SEQ)), // 8: lookup answer → accept
        SockFilter::new(RET, 0, 0, 0),                             // 9: drop
        SockFilter::new(RET, 0, 0, u32::MAX),                      // 10: accept
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_index_finds_loopback_and_not_a_missing_link() {
        // Every network namespace has `lo`; no name of 15 bytes like this one exists.
        assert!(link_index(None, "lo").unwrap().is_some());
        assert_eq!(link_index(None, "nosuchlink9z8y7").unwrap(), None);
    }
}
