//! Inbound backpressure: the UPDATEs a peer, and all peers together, have handed to the
//! RIB and it has not applied yet. While either limit is reached the peer's socket is
//! left unread, so TCP slows the peer down instead of bgpd's memory growing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// UPDATEs of one peer handed to the RIB and not applied yet, at most.
/// The socket is read only while fewer are (and a drain of the socket stops
/// there too), so a peer that sends faster than the RIB applies is slowed
/// down by TCP instead of growing bgpd's memory.
pub const MAX_UPDATES_IN_FLIGHT: usize = 2048;

/// UPDATEs of all peers together handed to the RIB and not applied yet, at
/// most: a hundred peers flooding at once must not queue a hundred times the
/// per-peer limit (`bench chaos`, malformed flood: 703 MiB before this bound).
pub const MAX_UPDATES_IN_FLIGHT_ALL: usize = 16_384;

/// While the node-wide limit is reached, how often a peer task looks again.
pub(super) const ALL_FULL_RETRY: Duration = Duration::from_millis(10);

/// The node's UPDATEs in flight to the RIB (see [`MAX_UPDATES_IN_FLIGHT_ALL`]);
/// one per RIB, shared by every peer's [`Credit`].
#[derive(Debug, Default)]
pub struct Budget {
    in_flight: AtomicUsize,
}

impl Budget {
    fn room(&self) -> usize {
        MAX_UPDATES_IN_FLIGHT_ALL.saturating_sub(self.in_flight.load(Ordering::Acquire))
    }
}

/// The peer's UPDATEs in flight to the RIB (see [`MAX_UPDATES_IN_FLIGHT`]).
#[derive(Debug)]
pub struct Credit {
    in_flight: AtomicUsize,
    pub(super) resumed: tokio::sync::Notify,
    all: Arc<Budget>,
}

impl Credit {
    pub(crate) fn new(all: Arc<Budget>) -> Credit {
        Credit { in_flight: AtomicUsize::new(0), resumed: tokio::sync::Notify::new(), all }
    }

    /// How many more UPDATEs may be decoded now: the smaller of what is left
    /// of the peer's limit and of the node's.
    pub(super) fn room(&self) -> usize {
        MAX_UPDATES_IN_FLIGHT.saturating_sub(self.in_flight.load(Ordering::Acquire)).min(self.all.room())
    }

    /// Whether the socket may be read now.
    pub(super) fn open(&self) -> bool {
        self.room() > 0
    }

    /// Whether the peer's own limit is what keeps its socket unread (it is
    /// woken at half); otherwise the node's is (it looks again shortly).
    pub(super) fn own_limit(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) >= MAX_UPDATES_IN_FLIGHT
    }

    /// One more UPDATE in flight, until the returned guard is dropped.
    pub(crate) fn take(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.all.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// An UPDATE in flight to the RIB: dropped once the RIB applied it.
#[derive(Debug)]
pub struct InFlight(Arc<Credit>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.all.in_flight.fetch_sub(1, Ordering::AcqRel);
        // Reading resumes when half the limit is applied (no wakeup per UPDATE).
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == MAX_UPDATES_IN_FLIGHT / 2 + 1 {
            self.0.resumed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_not_read_while_the_rib_has_the_limit_of_updates_and_resumes_at_half() {
        let credit = Arc::new(Credit::new(Arc::default()));
        let mut in_flight: Vec<InFlight> = (0..MAX_UPDATES_IN_FLIGHT - 1).map(|_| credit.take()).collect();
        assert!(credit.open());
        in_flight.push(credit.take());
        assert!(!credit.open(), "at the limit: the socket is left unread, TCP slows the peer");
        // The RIB applies UPDATEs: no wakeup until half of them are done.
        in_flight.truncate(MAX_UPDATES_IN_FLIGHT / 2 + 1);
        let early = tokio::time::timeout(Duration::from_millis(50), credit.resumed.notified()).await;
        assert!(early.is_err(), "no wakeup per UPDATE");
        in_flight.pop();
        tokio::time::timeout(Duration::from_secs(1), credit.resumed.notified()).await.expect("woken at half");
        assert!(credit.open());
        drop(in_flight);
        assert_eq!(credit.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_node_wide_limit_closes_every_peer_and_reopens_as_the_rib_applies() {
        let all = Arc::new(Budget::default());
        let peers: Vec<Arc<Credit>> = (0..10).map(|_| Arc::new(Credit::new(all.clone()))).collect();
        // Each peer below its own limit, together at the node's.
        let per = MAX_UPDATES_IN_FLIGHT_ALL / peers.len();
        let mut in_flight: Vec<InFlight> = peers.iter().flat_map(|c| (0..per).map(|_| c.take())).collect();
        in_flight.extend((0..MAX_UPDATES_IN_FLIGHT_ALL - per * peers.len()).map(|_| peers[0].take()));
        let idle = Arc::new(Credit::new(all.clone()));
        assert!(!idle.open(), "a peer with nothing in flight waits too");
        assert!(!idle.own_limit(), "for the node's limit: it looks again, no wakeup from its own");
        assert_eq!(idle.room(), 0);
        in_flight.truncate(in_flight.len() - 100);
        assert_eq!(idle.room(), 100, "room for 100: a drain stops there");
        assert!(peers.iter().all(|c| c.open()));
        drop(in_flight);
        assert_eq!(all.in_flight.load(Ordering::Acquire), 0);
    }
}
