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
    for group in GROUPS {
        socket.add_membership(group).map_err(step("join group"))?;
    }
    Ok((tokio_socket, addr.port_number()))
}
