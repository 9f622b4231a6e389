//! When to publish changes: once a burst of them settles, but never later than a
//! fixed bound after the first change not yet published, however busy the cluster.

use std::time::{Duration, Instant};

/// A burst is over after this long without a change.
pub(super) const QUIET: Duration = Duration::from_millis(100);

/// The bound: a change is published at most this long after bgpd received it,
/// even when changes never stop (a rollout, 1,000 events a second).
pub(super) const MAX_DELAY: Duration = Duration::from_millis(500);

/// The changes not yet published: when the first and the last came in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pacer {
    pending: Option<(Instant, Instant)>,
}

impl Pacer {
    /// The content changed at `now`.
    pub(super) fn changed(&mut self, now: Instant) {
        let first = self.pending.map_or(now, |(first, _)| first);
        self.pending = Some((first, now));
    }

    /// When to publish: [`QUIET`] after the last change, at most [`MAX_DELAY`]
    /// after the first; `None` with nothing to publish.
    pub(super) fn due(&self) -> Option<Instant> {
        self.pending.map(|(first, last)| (last + QUIET).min(first + MAX_DELAY))
    }

    /// Everything up to now is published.
    pub(super) fn published(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_change_is_published_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.due(), None);
        p.changed(t0);
        assert_eq!(p.due(), Some(t0 + QUIET));
        p.published();
        assert_eq!(p.due(), None);
    }

    #[test]
    fn a_burst_is_published_once_it_settles() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        for ms in [0, 20, 40, 60] {
            p.changed(t0 + Duration::from_millis(ms));
        }
        assert_eq!(p.due(), Some(t0 + Duration::from_millis(60) + QUIET));
    }

    /// 1,000 changes a second, for ten seconds, on a virtual clock: publishing
    /// whenever due, no change waits longer than the bound.
    #[test]
    fn continuous_churn_at_1000_a_second_is_published_within_the_bound() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let mut oldest_unpublished: Option<Instant> = None;
        let mut longest = Duration::ZERO;
        let mut publications = 0;
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            if let Some(due) = p.due().filter(|due| *due <= now) {
                longest = longest.max(due - oldest_unpublished.take().expect("something pending"));
                p.published();
                publications += 1;
            }
            p.changed(now);
            oldest_unpublished.get_or_insert(now);
        }
        assert_eq!(longest, MAX_DELAY);
        assert!(publications >= 19, "{publications}");
    }
}
