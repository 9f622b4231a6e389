//! What `bgpd verify` found: findings, each naming the objects responsible and
//! a suggested fix, grouped by class; rendered as text for a person or as one
//! JSON document for a program.

use std::fmt::{self, Write as _};

use serde::Serialize;

/// What a finding is about. The order is the order of the text report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// A BGP session that cannot come up, or is configured on one side only.
    Session,
    /// A BGPPeer selector (`nodeSelector`, `peerSelector`, `node`) that selects nothing.
    Selector,
    /// A service address that is not advertised, or advertised by nobody.
    Service,
    /// IPAM: nodes no pool selects, pools that run out.
    Ipam,
    /// A destination some source cannot reach.
    BlackHole,
    /// A packet that comes back to a member it already passed.
    Loop,
    /// A member using fewer equal-cost next hops than it has uplinks.
    Ecmp,
    /// Answers coming back through other members than the requests went
    /// through, where the template declares symmetric paths.
    Asymmetry,
    /// What a failure (router, link, node) cuts off.
    Partition,
}

impl Class {
    /// The heading of the class in the text report.
    pub fn title(self) -> &'static str {
        match self {
            Class::Session => "Sessions",
            Class::Selector => "Selectors",
            Class::Service => "Services",
            Class::Ipam => "IPAM",
            Class::BlackHole => "Black holes",
            Class::Loop => "Forwarding loops",
            Class::Ecmp => "ECMP",
            Class::Asymmetry => "Asymmetric paths",
            Class::Partition => "Failures",
        }
    }
}

/// Whether a finding makes the design unsound (exit status 1) or is for information.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The design does not work as written.
    Problem,
    /// Worth knowing; the design works (a forecast, a borrowed block).
    Note,
}

/// The kind of an object a finding names: a template resource or a lab member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// A Calico Node (also a lab member).
    Node,
    /// A lab router (ToR, spine, core).
    Router,
    /// A lab host outside the clusters.
    Host,
    /// A lab segment (an L2 network, a link).
    Segment,
    /// A pod the lab attaches.
    Pod,
    /// A Calico BGPPeer.
    #[serde(rename = "BGPPeer")]
    BgpPeer,
    /// A Calico BGPFilter.
    #[serde(rename = "BGPFilter")]
    BgpFilter,
    /// The cluster's BGPConfiguration.
    #[serde(rename = "BGPConfiguration")]
    BgpConfiguration,
    /// A Calico IPPool.
    #[serde(rename = "IPPool")]
    IpPool,
    /// A Kubernetes Service.
    Service,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Node => "Node",
            Kind::Router => "router",
            Kind::Host => "host",
            Kind::Segment => "segment",
            Kind::Pod => "pod",
            Kind::BgpPeer => "BGPPeer",
            Kind::BgpFilter => "BGPFilter",
            Kind::BgpConfiguration => "BGPConfiguration",
            Kind::IpPool => "IPPool",
            Kind::Service => "Service",
        })
    }
}

/// One object a finding names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Object {
    /// What it is.
    pub kind: Kind,
    /// Its name (`namespace/name` for a Service; `cluster/default` for a
    /// BGPConfiguration when the lab has several clusters).
    pub name: String,
}

impl Object {
    /// An object of `kind` named `name`.
    pub fn new(kind: Kind, name: impl Into<String>) -> Object {
        Object { kind, name: name.into() }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// One thing `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is about.
    pub class: Class,
    /// Problem or note.
    pub severity: Severity,
    /// The objects responsible (the first is the one to change).
    pub objects: Vec<Object>,
    /// One line saying what is wrong.
    pub summary: String,
    /// Further lines: why, and whom it affects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
    /// What to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A problem of `class` about `objects`.
    pub fn problem(class: Class, objects: Vec<Object>, summary: impl Into<String>) -> Finding {
        let mut unique: Vec<Object> = Vec::with_capacity(objects.len());
        for o in objects {
            if !unique.contains(&o) {
                unique.push(o);
            }
        }
        let objects = unique;
        Finding { class, severity: Severity::Problem, objects, summary: summary.into(), detail: Vec::new(), fix: None }
    }

    /// A note of `class` about `objects`.
    pub fn note(class: Class, objects: Vec<Object>, summary: impl Into<String>) -> Finding {
        Finding { severity: Severity::Note, ..Finding::problem(class, objects, summary) }
    }

    /// With a suggested fix.
    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }

    /// With a line of detail.
    pub fn detail(mut self, line: impl Into<String>) -> Finding {
        self.detail.push(line.into());
        self
    }

    /// Whether it names `kind` `name`.
    pub fn names(&self, kind: Kind, name: &str) -> bool {
        self.objects.iter().any(|o| o.kind == kind && o.name == name)
    }
}

/// One BGP session as the simulation left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionState {
    /// The member that has the session configured.
    pub member: String,
    /// The session's name (the BGPPeer, `mesh/NODE`, or the router's neighbour).
    pub peer: String,
    /// The neighbour's address.
    pub remote: std::net::IpAddr,
    /// Established when the simulation ended.
    pub established: bool,
    /// Why it is not, when the simulation knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The outcome of one failure scenario (`--failures N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureOutcome {
    /// What failed: routers, segments (links) and nodes, by name.
    pub failed: Vec<Object>,
    /// Whether the simulation converged within its virtual time limit.
    pub converged: bool,
    /// What the failure breaks that worked before (findings of the design
    /// without failures are not repeated).
    pub findings: Vec<Finding>,
}

/// Everything `verify` found about one template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The template file.
    pub template: String,
    /// The lab's name.
    pub lab: String,
    /// Members simulated: (nodes, routers, hosts).
    pub members: (usize, usize, usize),
    /// Whether the simulation of the design without failures converged.
    pub converged: bool,
    /// Every configured session and its state.
    pub sessions: Vec<SessionState>,
    /// Sources and destinations traced, and how many pairs were delivered.
    pub traces: TraceCounts,
    /// Findings of the design as written.
    pub findings: Vec<Finding>,
    /// Failure scenarios, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailureOutcome>,
    /// An explanation asked for with `--explain NODE PREFIX`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Vec<String>>,
}

/// How many (source, destination) pairs were traced and delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TraceCounts {
    /// Pairs traced (both directions of each connection).
    pub traced: usize,
    /// Pairs every branch of which arrived.
    pub delivered: usize,
}

impl Report {
    /// Whether the design is sound: no problem, with or without failures.
    pub fn sound(&self) -> bool {
        let problem = |f: &Finding| f.severity == Severity::Problem;
        !self.findings.iter().any(problem) && !self.failures.iter().flat_map(|o| &o.findings).any(problem)
    }

    /// The report as text, findings grouped by class.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let (n, r, h) = self.members;
        let up = self.sessions.iter().filter(|s| s.established).count();
        let _ = writeln!(
            out,
            "verify {} (lab {}): {n} nodes, {r} routers, {h} hosts; {up} of {} sessions established{}",
            self.template,
            self.lab,
            self.sessions.len(),
            if self.converged { "" } else { " (the simulation did not converge)" }
        );
        let _ = writeln!(out, "forwarding: {} of {} traced paths delivered", self.traces.delivered, self.traces.traced);
        write_findings(&mut out, &self.findings, "");
        for o in &self.failures {
            let what: Vec<String> = o.failed.iter().map(ToString::to_string).collect();
            let problems = o.findings.iter().filter(|f| f.severity == Severity::Problem).count();
            if problems == 0 {
                let _ = writeln!(out, "\nfailure of {}: nothing more is cut off", what.join(" + "));
                continue;
            }
            let _ = writeln!(out, "\nfailure of {}: {problems} problem(s)", what.join(" + "));
            write_findings(&mut out, &o.findings, "  ");
        }
        if let Some(lines) = &self.explanation {
            out.push_str("\nexplain:\n");
            for l in lines {
                let _ = writeln!(out, "  {l}");
            }
        }
        let problems = self.findings.iter().filter(|f| f.severity == Severity::Problem).count()
            + self.failures.iter().flat_map(|o| &o.findings).filter(|f| f.severity == Severity::Problem).count();
        let _ = writeln!(
            out,
            "\n{}",
            if self.sound() { "the design is sound".to_string() } else { format!("{problems} problem(s) found") }
        );
        out
    }
}

fn write_findings(out: &mut String, findings: &[Finding], indent: &str) {
    let mut classes: Vec<Class> = findings.iter().map(|f| f.class).collect();
    classes.sort();
    classes.dedup();
    for class in classes {
        let _ = writeln!(out, "\n{indent}== {}", class.title());
        for f in findings.iter().filter(|f| f.class == class) {
            let tag = match f.severity {
                Severity::Problem => "PROBLEM",
                Severity::Note => "note",
            };
            let objects: Vec<String> = f.objects.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "{indent}{tag}: {}", f.summary);
            if !objects.is_empty() {
                let _ = writeln!(out, "{indent}    objects: {}", objects.join(", "));
            }
            for d in &f.detail {
                let _ = writeln!(out, "{indent}    {d}");
            }
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "{indent}    fix: {fix}");
            }
        }
    }
}
