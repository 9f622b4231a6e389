//! `bgpd-lab`: the design tools. `bgpd lab …` and `bgpd verify …` run this
//! binary with the same arguments (the node daemon's binary holds no lab code).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bgpd_lab as lab;
use bgpd_lab::verify;

/// bgpd's design tools: a design up in network namespaces, or checked offline.
#[derive(Parser)]
#[command(name = "bgpd", bin_name = "bgpd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring a network design up in network namespaces and prove it reachable
    /// (see docs/lab.md).
    Lab {
        /// What to do.
        #[command(subcommand)]
        what: LabCmd,
    },
    /// Check a network design offline (the template `lab` reads): simulate
    /// every node and router, trace packets, report black holes, loops and
    /// misconfigured sessions, services and pools with the objects responsible
    /// (see docs/verify.md). Exit 0: sound; 1: a problem found; 2: the
    /// template cannot be read.
    Verify {
        /// The template (e.g. templates/l3-tor-per-rack.yaml).
        file: PathBuf,
        /// Also check every failure of up to N routers, links and nodes at once.
        #[arg(long, default_value_t = 0)]
        failures: usize,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Explain a member's route to a prefix: `--explain NODE PREFIX`.
        #[arg(long, num_args = 2, value_names = ["NODE", "PREFIX"])]
        explain: Option<Vec<String>>,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the fabric a template describes, wait for convergence, print every
    /// node's and router's routes and check reachability; exit 0 only if all pass.
    Up {
        /// The template (e.g. templates/l3-tor-per-rack.yaml).
        file: PathBuf,
    },
    /// Remove every namespace, link and process the lab made (also after a failed `up`).
    Down {
        /// The template.
        file: PathBuf,
    },
    /// Show what runs, and run the checks once.
    Status {
        /// The template.
        file: PathBuf,
    },
    /// Run the checks again (waiting up to 2 minutes for them to pass).
    Check {
        /// The template.
        file: PathBuf,
    },
    /// Drill: cut every link of a router, or a segment (link), or turn
    /// SERVICE@NODE's endpoint unready, while probing; then the checks and the
    /// probes lost.
    Fail {
        /// The template.
        file: PathBuf,
        /// A router, a segment, or SERVICE@NODE.
        target: String,
        /// A router only: fail silently, dropping every packet in its
        /// namespace with its links left up (only BFD or the hold timer notices).
        #[arg(long)]
        silent: bool,
    },
    /// Undo `fail`: restore the router's links or the segment, or make the endpoint ready again.
    Recover {
        /// The template.
        file: PathBuf,
        /// A router, a segment, or SERVICE@NODE.
        target: String,
    },
    /// Drill: stop a node's (or bgpd router's) bgpd and start it again while
    /// probing, several at once if named; fails if a probe was lost.
    Restart {
        /// The template.
        file: PathBuf,
        /// Nodes or bgpd routers, restarted at once.
        #[arg(required = true)]
        targets: Vec<String>,
        /// How bgpd is stopped: `term` (SIGTERM, as Kubernetes stops a pod:
        /// a graceful restart) or `kill` (SIGKILL, a crash).
        #[arg(long, default_value = "term", value_parser = ["term", "kill"])]
        signal: String,
    },
    /// Drill: take a node down for good while probing: its bgpd decommissions
    /// (`bgpd stop --withdraw`), then the machine goes off (its links down);
    /// its pods are no longer probed. With --crash: SIGKILL, then links down
    /// (a machine failure, no decommission).
    Stop {
        /// The template.
        file: PathBuf,
        /// The node.
        node: String,
        /// Fail the node instead of decommissioning it.
        #[arg(long)]
        crash: bool,
    },
    /// Drill: bring a node taken down by `stop` back (links up, bgpd started) while probing.
    Start {
        /// The template.
        file: PathBuf,
        /// The node.
        node: String,
    },
    /// Drill: restart every node's and bgpd router's bgpd one at a time with
    /// SIGTERM, each once the one before is back (as a DaemonSet rolling
    /// update with maxUnavailable 1), probing throughout; fails on any loss.
    Upgrade {
        /// The template.
        file: PathBuf,
    },
    /// Drill: replace NODE's Calico BIRD with bgpd while probing (BIRD killed,
    /// bgpd started with `--take-over bird`); fails if a probe was lost or a
    /// route of BIRD's is left in the node's kernel (docs/migration.md).
    Migrate {
        /// The template.
        file: PathBuf,
        /// A node that runs Calico's BIRD (the Lab's `calicoBird`).
        node: String,
    },
    /// (internal) A pod's listener: answers each TCP connection with NAME.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        port: u16,
    },
    /// (internal) Probe TCP targets once, or every INTERVAL until the stop file exists.
    #[command(hide = true)]
    Probe {
        #[arg(long)]
        interval_ms: Option<u64>,
        #[arg(long)]
        stop_file: Option<PathBuf>,
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
        targets: Vec<std::net::SocketAddr>,
    },
}

fn lab_command(what: LabCmd) -> ExitCode {
    let result = match what {
        LabCmd::Up { file } => lab::up(&file),
        LabCmd::Down { file } => lab::down(&file),
        LabCmd::Status { file } => lab::status(&file),
        LabCmd::Check { file } => lab::check(&file),
        LabCmd::Fail { file, target, silent } => lab::fail(&file, &target, false, silent),
        LabCmd::Recover { file, target } => lab::fail(&file, &target, true, false),
        LabCmd::Restart { file, targets, signal } => lab::restart(&file, &targets, signal == "kill"),
        LabCmd::Stop { file, node, crash } => lab::stop(&file, &node, crash),
        LabCmd::Start { file, node } => lab::start(&file, &node),
        LabCmd::Upgrade { file } => lab::upgrade(&file),
        LabCmd::Migrate { file, node } => lab::migrate(&file, &node),
        LabCmd::Serve { name, port } => lab::probe::serve(&name, port).map(|()| true),
        LabCmd::Probe { interval_ms: None, targets, .. } => lab::probe::probe(&targets).map(|()| true),
        LabCmd::Probe { interval_ms: Some(ms), stop_file, max_secs, targets } => {
            let stop = stop_file.unwrap_or_else(|| PathBuf::from("/nonexistent/bgpd-lab-stop"));
            let max = std::time::Duration::from_secs(max_secs);
            lab::probe::probe_loop(&targets, std::time::Duration::from_millis(ms), &stop, max).map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bgpd lab: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn verify_command(file: PathBuf, failures: usize, json: bool, explain: Option<Vec<String>>) -> ExitCode {
    let explain = match explain.as_deref() {
        Some([member, prefix]) => {
            match prefix.parse::<ipnet::IpNet>().or_else(|_| prefix.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(p) => Some((member.clone(), p)),
                Err(e) => {
                    eprintln!("bgpd verify: --explain {member} {prefix}: not a prefix or address: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let opts = verify::Options { failures, explain };
    match verify::verify(&file, &opts) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("bgpd verify: cannot encode the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.text());
            }
            if report.sound() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bgpd verify: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Lab { what } => lab_command(what),
        Command::Verify { file, failures, json, explain } => verify_command(file, failures, json, explain),
    }
}
