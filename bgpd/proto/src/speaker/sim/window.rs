//! A window of the simulation: the deliveries that concern one member
//! each, handled on several threads at once (see [`Fabric::window`]).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::member::{Concerns, Delivery, Member};
use super::{Fabric, IDLE, MIN_LATENCY};

/// One member's deliveries of a window.
struct Job<'a> {
    m: usize,
    member: &'a mut Member,
    deliveries: Vec<(Instant, Delivery)>,
}

impl Fabric {
    /// Handles `first` (due at `at`, concerning one member) and every
    /// delivery after it that concerns one member and falls due within
    /// [`MIN_LATENCY`], each member's on whichever thread: nothing one
    /// member does there reaches another before the window ends (a
    /// connection's bytes and closes take at least that long). The window
    /// ends earlier at the first delivery that concerns the fabric, and
    /// where `run` would look at the quiet or the limit. What the members
    /// leave for the fabric is applied member by member in the order of
    /// their index, so the outcome does not depend on the threads.
    pub(super) fn window(&mut self, at: Instant, first: Delivery, end: Instant) {
        let until = (at + MIN_LATENCY).min(self.last_activity + IDLE).min(end + Duration::from_nanos(1));
        let mut batch = vec![(at, first)];
        while let Some(next) = self.next_due().filter(|t| *t < until) {
            let Some(Reverse((_, slot))) = self.queue.peek() else { break };
            let kind = self.waiting[*slot as usize].as_ref().map(|d| d.concerns(&self.links));
            if matches!(kind, Some(Concerns::Fabric)) {
                break;
            }
            let (_, d) = self.pop_due().expect("peeked");
            batch.push((next, d));
        }
        // By member, each's in the order they fall due.
        let mut jobs: BTreeMap<usize, Vec<(Instant, Delivery)>> = BTreeMap::new();
        for (t, d) in batch {
            match d.concerns(&self.links) {
                Concerns::Member(m) => jobs.entry(m).or_default().push((t, d)),
                Concerns::Nobody | Concerns::Fabric => self.deliveries += 1,
            }
        }
        let start = self.now;
        let threads = if jobs.values().map(Vec::len).sum::<usize>() >= self.parallel_min { self.threads } else { 1 };
        let links = &self.links;
        let mut groups: Vec<Vec<Job>> = (0..threads).map(|_| Vec::new()).collect();
        // The heaviest first, each to the thread with the least so far
        // (bytes to read is what costs).
        let weight = |ds: &[(Instant, Delivery)]| -> usize {
            ds.iter().map(|(_, d)| if let Delivery::Bytes { bytes, .. } = d { 64 + bytes.len() } else { 64 }).sum()
        };
        let mut work: Vec<(usize, Job)> = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        for (i, member) in self.members.iter_mut().enumerate() {
            let Some(next) = jobs.peek().map(|(m, _)| *m) else { break };
            if next == i {
                let (_, ds) = jobs.next().expect("peeked");
                work.push((weight(&ds), Job { m: i, member, deliveries: ds }));
            }
        }
        work.sort_by_key(|(w, job)| (Reverse(*w), job.m));
        let mut load = vec![0_usize; threads];
        for (w, job) in work {
            let t = (0..threads).min_by_key(|t| load[*t]).expect("one thread at least");
            load[t] += w;
            groups[t].push(job);
        }
        let run = &|group: Vec<Job>| {
            group
                .into_iter()
                .map(|j| (j.m, j.member.window(j.m, links, start, until, j.deliveries)))
                .collect::<Vec<_>>()
        };
        let mut done = if threads > 1 {
            let mut groups = groups.into_iter();
            let mine = groups.next().expect("one group at least");
            std::thread::scope(|s| {
                let others: Vec<_> = groups.map(|g| s.spawn(move || run(g))).collect();
                let mut done = run(mine);
                for h in others {
                    done.extend(h.join().expect("a member's window does not panic"));
                }
                done
            })
        } else {
            groups.into_iter().flat_map(run).collect()
        };
        done.sort_unstable_by_key(|(m, _)| *m);
        for (m, (fx, last, count)) in done {
            self.now = self.now.max(last);
            self.deliveries += count;
            self.apply(m, fx);
        }
    }
}
