//! The FIB's configuration: which table, as which protocol, and how hard to push.

use std::path::PathBuf;

use crate::error::FibError;
use crate::kernel::{RTPROT_BGP, RT_TABLE_MAIN};

/// Settings of one FIB writer. Validated once by [`FibConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibConfig {
    /// Kernel routing table to program (default 254, `main`).
    pub table: u32,
    /// Protocol number our routes carry; only routes with it are ever touched
    /// (default 186, `RTPROT_BGP`).
    pub protocol: u8,
    /// Route priority / metric (default 20). IPv6 reads 0 as 1024, as the kernel does.
    pub metric: u32,
    /// Route messages per `sendmsg` (default 256).
    pub batch_size: usize,
    /// Changes accepted but not yet written before callers are made to wait
    /// (backpressure; default 65 536). Repeated changes of one prefix count once.
    pub queue_capacity: usize,
    /// Leave our routes in the kernel when the FIB shuts down, so forwarding continues
    /// through a restart (default false: routes are removed on shutdown).
    pub graceful_restart: bool,
    /// Network namespace to program, as a path such as `/run/netns/NAME`; `None` for the
    /// caller's own namespace.
    pub netns: Option<PathBuf>,
    /// Receive buffer of the netlink socket in bytes, set with `SO_RCVBUFFORCE`
    /// (default 64 MiB). An overrun leads to a full resync.
    pub receive_buffer: usize,
    /// Protocol numbers of another speaker whose routes in our table we take over (bgpd
    /// replacing BIRD: 12). Their routes (any metric) are recorded from the start-up dump
    /// and from notifications, never touched until [`crate::FibHandle::retire_predecessors`],
    /// which removes them. Empty by default.
    pub replaces: Vec<u8>,
}

impl Default for FibConfig {
    fn default() -> Self {
        FibConfig {
            table: RT_TABLE_MAIN,
            protocol: RTPROT_BGP,
            metric: 20,
            batch_size: 256,
            queue_capacity: 65_536,
            graceful_restart: false,
            netns: None,
            receive_buffer: 64 << 20,
            replaces: Vec::new(),
        }
    }
}

impl FibConfig {
    /// Checks the fields the kernel or the writer cannot work with.
    pub fn validate(&self) -> Result<(), FibError> {
        let bad = |field, reason: &str| Err(FibError::Config { field, reason: reason.into() });
        // Tables 0 (unspec), 253 (default), 255 (local) are the kernel's own.
        if matches!(self.table, 0 | 253 | 255) {
            return bad("table", "0, 253 and 255 are reserved by the kernel");
        }
        // Protocols 0..=4 are unspec, redirect, kernel, boot and static: never ours.
        if self.protocol <= 4 {
            return bad("protocol", "0 to 4 are reserved by the kernel (kernel, boot, static, …)");
        }
        if let Some(p) = self.replaces.iter().find(|p| **p <= 4 || **p == self.protocol) {
            return bad(
                "replaces",
                &format!("protocol {p}: 0 to 4 are the kernel's own, and our own protocol is not a predecessor"),
            );
        }
        if !(1..=4096).contains(&self.batch_size) {
            return bad("batch_size", "must be 1 to 4096 messages");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1");
        }
        if self.receive_buffer < 1 << 16 {
            return bad("receive_buffer", "must be at least 64 KiB");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_reserved_values_are_named() {
        FibConfig::default().validate().unwrap();
        let e = FibConfig { table: 255, ..FibConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("table"), "{e}");
        let e = FibConfig { protocol: 4, ..FibConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("protocol"), "{e}");
        let e = FibConfig { replaces: vec![12, 3], ..FibConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("replaces") && e.to_string().contains("protocol 3"), "{e}");
        let e = FibConfig { replaces: vec![RTPROT_BGP], ..FibConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("replaces"), "{e}");
        FibConfig { replaces: vec![12], ..FibConfig::default() }.validate().unwrap();
        let e = FibConfig { batch_size: 0, ..FibConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("batch_size"), "{e}");
    }
}
