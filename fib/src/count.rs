//! A one-off look at a table before the FIB starts: how many routes of one protocol it
//! holds (bgpd asks whether there is a predecessor's forwarding state to take over).

use std::io;
use std::path::Path;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::error::FibError;
use crate::kernel::{decode_route, encode_route_dump, frame, Request};
use crate::netns::run_in_netns;

/// `ENOENT`: the family has no such table (yet), which is an empty one.
const ENOENT: i32 = 2;

/// How many routes of `protocol` table `table` holds, IPv4 and IPv6 together, in the
/// network namespace at `netns` (or the caller's own). Blocking: one dump per family on a
/// socket of its own.
pub fn count_routes(table: u32, protocol: u8, netns: Option<&Path>) -> Result<usize, FibError> {
    let open = || -> Result<Socket, FibError> {
        let step = |what: &'static str| move |source: io::Error| FibError::Socket { what, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(step("create"))?;
        socket.bind_auto().map_err(step("bind"))?;
        socket.set_netlink_get_strict_chk(true).map_err(step("NETLINK_GET_STRICT_CHK"))?;
        Ok(socket)
    };
    let socket = match netns {
        Some(path) => run_in_netns(path, open)??,
        None => open()?,
    };
    let mut count = 0;
    for (seq, family) in [(1, AddressFamily::Inet), (2, AddressFamily::Inet6)] {
        count += count_family(&socket, seq, family, table, protocol)?;
    }
    Ok(count)
}

fn count_family(socket: &Socket, seq: u32, family: AddressFamily, table: u32, protocol: u8) -> Result<usize, FibError> {
    let dump_err = |source: io::Error| FibError::Socket { what: "route dump", source };
    let mut buf = Vec::new();
    frame(&mut buf, Request::DumpRoutes(encode_route_dump(family, table)), seq, false);
    socket.send(&buf, 0).map_err(dump_err)?;
    let mut count = 0;
    let mut rbuf: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        rbuf.clear();
        let n = socket.recv(&mut rbuf, 0).map_err(dump_err)?;
        let mut bytes = &rbuf[..n.min(rbuf.len())];
        while !bytes.is_empty() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                .map_err(|e| dump_err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
            let len = (msg.header.length as usize).max(16);
            bytes = bytes.get(((len + 3) & !3).min(bytes.len())..).unwrap_or_default();
            if msg.header.sequence_number != seq {
                continue;
            }
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(count),
                NetlinkPayload::Error(e) => match e.code.map(|c| c.get().saturating_abs()) {
                    Some(ENOENT) => return Ok(0),
                    Some(errno) => return Err(dump_err(io::Error::from_raw_os_error(errno))),
                    None => {}
                },
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m))
                    if decode_route(&m).is_some_and(|r| r.table == table && r.protocol == protocol) =>
                {
                    count += 1;
                }
                _ => {}
            }
        }
    }
}
