//! The design on the simulator: every node and router a `Speaker`, links as
//! in-memory pipes, a virtual clock (`bgpd_proto::speaker::sim`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bgpd_proto::speaker::sim::Fabric;
use bgpd_proto::speaker::{PeerSetup, Speaker};

use super::model::{Design, MemberModel};
use super::report::{Class, Finding, Kind, Object, SessionState};

/// Virtual time the simulation may take to converge.
pub const LIMIT: Duration = Duration::from_secs(600);

/// Virtual time a fabric may take to converge again after a failure: the
/// stale routes that graceful restart's helpers keep for a peer that went
/// away age out within it (long-lived graceful restart keeps them an hour).
pub const FAILURE_LIMIT: Duration = Duration::from_secs(3_600 + 600);

/// The seed of the simulator's link latencies: fixed, so that a run is
/// repeatable.
pub const SEED: u64 = 14;

/// What is failed in a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scenario {
    /// Routers, nodes (and hosts) that are down.
    pub members: BTreeSet<String>,
    /// Segments (links) that are down.
    pub segments: BTreeSet<String>,
}

impl Scenario {
    /// Nothing failed.
    pub fn none() -> Scenario {
        Scenario::default()
    }

    /// The objects that failed, for a report.
    pub fn objects(&self, design: &Design) -> Vec<Object> {
        let members = self.members.iter().map(|m| match design.members.get(m) {
            Some(mm) => mm.object(),
            None => Object::new(Kind::Node, m),
        });
        members.chain(self.segments.iter().map(|s| Object::new(Kind::Segment, s))).collect()
    }

    /// Whether `member` is down.
    pub fn down(&self, member: &str) -> bool {
        self.members.contains(member)
    }
}

/// A simulation that ran.
pub struct Simulation {
    /// The fabric after the run: forwarding tables, sessions, RIBs.
    pub fabric: Fabric,
    /// Whether it converged within [`LIMIT`].
    pub converged: bool,
    /// Peers the speakers refused to configure.
    pub findings: Vec<Finding>,
}

/// Builds the fabric for `design` with `failed` down, and runs it.
pub fn simulate(design: &Design, failed: &Scenario) -> Simulation {
    let mut fabric = Fabric::new(SEED);
    let now = fabric.now();
    let mut findings = Vec::new();
    for m in design.members.values() {
        let speaker = speaker(m, now, &mut findings);
        fabric.add_member(&m.name, speaker, m.interfaces.clone());
    }
    for m in &failed.members {
        fabric.fail_member(m);
    }
    for s in &failed.segments {
        fabric.fail_segment(s);
    }
    let converged = fabric.run(LIMIT);
    Simulation { fabric, converged, findings }
}

/// A member's speaker as its model configures it, started at `now`
/// (`None` for a host); peers it refuses to configure become findings.
fn speaker(m: &MemberModel, now: Instant, findings: &mut Vec<Finding>) -> Option<Speaker> {
    let model = m.speaker.as_ref()?;
    let mut sp = Speaker::new(model.rib.clone(), now);
    for p in &model.peers {
        let setup = PeerSetup {
            session: p.session.clone(),
            rib: p.rib.clone(),
            password: p.password.clone(),
            local: model.local.clone(),
        };
        if let Err(e) = sp.add_peer(setup, now) {
            findings.push(
                Finding::problem(
                    Class::Session,
                    vec![p.object.clone(), m.object()],
                    format!("{}'s session {} to {} cannot be configured: {e}", m.name, p.name, p.remote),
                )
                .fix(format!("correct {}", p.object)),
            );
        }
    }
    for (prefix, attrs, _) in &model.originations {
        sp.originate(*prefix, Some(attrs.clone()), now);
    }
    Some(sp)
}

impl Simulation {
    /// Fails what `failed` names in the running fabric and runs it to
    /// convergence again: the design as it is after those failures, reached
    /// the way a network reaches it (connections cut, routes withdrawn,
    /// graceful-restart stale routes aged out). Whether it converged.
    pub fn fail(&mut self, failed: &Scenario) -> bool {
        for m in &failed.members {
            self.fabric.fail_member(m);
        }
        for s in &failed.segments {
            self.fabric.fail_segment(s);
        }
        self.fabric.run(FAILURE_LIMIT)
    }

    /// Brings back what [`Simulation::fail`] failed, members as fresh
    /// starts configured as `design` says, and runs the fabric to
    /// convergence again. Whether it converged.
    pub fn restore(&mut self, design: &Design, failed: &Scenario) -> bool {
        for s in &failed.segments {
            self.fabric.restore_segment(s);
        }
        let now = self.fabric.now();
        for name in &failed.members {
            let speaker = design.members.get(name).and_then(|m| speaker(m, now, &mut Vec::new()));
            self.fabric.restart_member(name, speaker);
        }
        self.fabric.run(LIMIT)
    }
}

/// Every configured session of the members that are up, as the simulation left it.
pub fn sessions(design: &Design, sim: &Simulation, failed: &Scenario) -> Vec<SessionState> {
    let mut out = Vec::new();
    for m in design.members.values().filter(|m| !failed.down(&m.name)) {
        for s in sim.fabric.sessions(&m.name) {
            let failure = (!s.established).then(|| match (&s.last_failure, s.last_down) {
                (Some(f), _) => f.clone(),
                (None, Some(d)) => format!("{d:?}"),
                (None, None) => format!("in state {:?}", s.state),
            });
            out.push(SessionState {
                member: m.name.clone(),
                peer: s.peer,
                remote: s.remote,
                established: s.established,
                failure,
            });
        }
    }
    out
}
