//! What one BGP session is configured to do.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::types::Family;
use crate::wire::{AddPathMode, Role};

/// Graceful restart as this speaker advertises it (RFC 4724 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Restart time to advertise, in seconds (at most 4095).
    pub restart_time: u16,
    /// Set the Restart State (R) bit: this speaker has just restarted.
    pub restarting: bool,
    /// Families whose forwarding state was preserved across the restart (F bit).
    pub forwarding_preserved: Vec<Family>,
    /// Offer the N bit (RFC 8538): a NOTIFICATION other than Hard Reset
    /// then keeps graceful restart in force on both sides.
    pub notification: bool,
    /// Offer long-lived graceful restart (RFC 9494) for every configured
    /// family with this long-lived stale time in seconds (at most 2^24 − 1;
    /// 0: helper only). The F bits are those of `forwarding_preserved`.
    pub long_lived_stale_time: Option<u32>,
}

impl GracefulRestartConfig {
    /// Graceful restart with `restart_time`, as a speaker that did not restart.
    pub fn new(restart_time: u16) -> GracefulRestartConfig {
        GracefulRestartConfig {
            restart_time,
            restarting: false,
            forwarding_preserved: Vec::new(),
            notification: false,
            long_lived_stale_time: None,
        }
    }
}

/// The largest long-lived stale time (24 bits, RFC 9494 §3).
pub const MAX_LONG_LIVED_STALE_TIME: u32 = 0x00FF_FFFF;

/// The configuration of one session. Validated by [`SessionConfig::validate`]
/// before a session is built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The AS this speaker presents to the peer (Calico `localASNumber`, or the node's AS).
    pub local_as: u32,
    /// The AS the peer must present.
    pub peer_as: u32,
    /// This speaker's BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Hold time to propose, in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Keepalive interval; by default a third of the negotiated hold time.
    pub keepalive_time: Option<Duration>,
    /// ConnectRetryTime (RFC 4271 §10: 120 s suggested).
    pub connect_retry: Duration,
    /// Never initiate the TCP connection; wait for the peer (RFC 4271 §8.1.1 PassiveTcpEstablishment).
    pub passive: bool,
    /// Wait this long after the connection is up before sending OPEN (DelayOpen, §8.1.1).
    pub delay_open: Option<Duration>,
    /// Restart automatically after an error (AutomaticStart), with the IdleHold backoff below.
    pub auto_restart: bool,
    /// First IdleHold delay after an error; doubled on each further flap (§8.1.1 DampPeerOscillations).
    pub idle_hold: Duration,
    /// The longest IdleHold delay.
    pub idle_hold_max: Duration,
    /// Families to offer (multiprotocol capability).
    pub families: Vec<Family>,
    /// ADD-PATH modes to offer per family.
    pub add_path: Vec<(Family, AddPathMode)>,
    /// Offer route refresh (RFC 2918) and enhanced route refresh (RFC 7313).
    pub route_refresh: bool,
    /// Offer extended messages (RFC 8654).
    pub extended_message: bool,
    /// Offer IPv4 NLRI with IPv6 next hops (RFC 8950).
    pub extended_next_hop: bool,
    /// Graceful restart to advertise.
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// BGP role (RFC 9234) to advertise and check.
    pub role: Option<Role>,
    /// Host name for the FQDN capability.
    pub hostname: Option<String>,
}

/// A configuration that cannot make a valid session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// RFC 4271 §4.2: the hold time is 0 or at least 3 seconds.
    #[error("hold time {0} s: must be 0 or at least 3")]
    HoldTime(u16),
    /// AS number 0 is reserved (RFC 7607).
    #[error("AS number 0 is reserved")]
    ZeroAs,
    /// RFC 6286 §2.1: the identifier is a non-zero 32-bit number.
    #[error("BGP identifier 0.0.0.0 is not allowed")]
    ZeroId,
    /// The graceful restart time does not fit 12 bits.
    #[error("graceful restart time {0} s exceeds 4095")]
    RestartTime(u16),
    /// The long-lived stale time does not fit 24 bits.
    #[error("long-lived stale time {0} s exceeds 16777215")]
    LongLivedStaleTime(u32),
    /// No family to exchange.
    #[error("no address family configured")]
    NoFamily,
}

impl SessionConfig {
    /// A session between `local_as` and `peer_as` with RFC-suggested timers:
    /// hold time 90 s, ConnectRetry 120 s (scaled down to 5 s here, as BIRD
    /// and FRR do for data-centre fabrics), IPv4 and IPv6 unicast, route
    /// refresh, automatic restart.
    pub fn new(local_as: u32, peer_as: u32, bgp_id: Ipv4Addr) -> SessionConfig {
        SessionConfig {
            local_as,
            peer_as,
            bgp_id,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(5),
            passive: false,
            delay_open: None,
            auto_restart: true,
            idle_hold: Duration::from_secs(1),
            idle_hold_max: Duration::from_secs(120),
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            add_path: Vec::new(),
            route_refresh: true,
            extended_message: false,
            extended_next_hop: false,
            graceful_restart: None,
            role: None,
            hostname: None,
        }
    }

    /// Whether this is an internal (iBGP) session.
    pub fn is_ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }

    /// Checks the fields whose invalid values RFCs forbid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hold_time != 0 && self.hold_time < 3 {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.local_as == 0 || self.peer_as == 0 {
            return Err(ConfigError::ZeroAs);
        }
        if self.bgp_id.is_unspecified() {
            return Err(ConfigError::ZeroId);
        }
        if let Some(gr) = &self.graceful_restart {
            if gr.restart_time > 4095 {
                return Err(ConfigError::RestartTime(gr.restart_time));
            }
            if let Some(t) = gr.long_lived_stale_time.filter(|t| *t > MAX_LONG_LIVED_STALE_TIME) {
                return Err(ConfigError::LongLivedStaleTime(t));
            }
        }
        if self.families.is_empty() {
            return Err(ConfigError::NoFamily);
        }
        Ok(())
    }
}
