//! The `bgpd` command: the node's BGP speaker and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bgpd::{daemon, datastore, decode_mrt, lab, verify};

const DEFAULT_CONTROL_SOCKET: &str = "/run/bgpd/bgpd.sock";

/// bgpd: BGP speaker, IPAM and FIB programmer for Kubernetes nodes.
#[derive(Parser)]
#[command(name = "bgpd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode the BGP messages of an MRT file (BGP4MP, BGP4MP_ET, TABLE_DUMP,
    /// TABLE_DUMP_V2; gzip or plain) with bgpd's codec, re-encode every UPDATE
    /// and RIB entry and check the round trip, and print counts.
    DecodeMrt {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The MRT file.
        file: PathBuf,
    },
    /// Run the node's BGP speaker.
    Run {
        /// The datastore: `file:PATH` (a YAML file or a directory of them, watched),
        /// `etcd:http://HOST:PORT[,…][?prefix=/calico/bgpd/]` (watched; `https://`
        /// with `&ca=FILE&cert=FILE&key=FILE&username=U&password-file=FILE`, or
        /// Calico's ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE,
        /// ETCD_USERNAME, ETCD_PASSWORD), or
        /// `kubernetes` (in-cluster service account or KUBECONFIG; Secrets are read
        /// in the namespace `POD_NAMESPACE`, else kube-system).
        #[arg(long)]
        datastore: String,
        /// This node's name (its Calico Node object).
        #[arg(long)]
        node: String,
        /// The control socket `bgpd show` talks to.
        #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
        /// Serve Prometheus metrics, /healthz and /readyz on this address.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// The kernel routing table learned routes and the node's blackholes
        /// go into (254: main).
        #[arg(long, default_value_t = 254, value_parser = clap::value_parser!(u32).range(1..))]
        kernel_table: u32,
        /// Do not program the kernel (e.g. a route server or a benchmark).
        #[arg(long)]
        no_kernel: bool,
        /// Seconds a decommission lets traffic move (routes sent with
        /// GRACEFUL_SHUTDOWN) before the sessions close: when this node's
        /// Node leaves the datastore, or on `bgpd stop --withdraw`.
        #[arg(long, default_value_t = daemon::DEFAULT_DRAIN.as_secs())]
        drain_time: u64,
    },
    /// Stop the running daemon. By default a deliberate stop (not a
    /// restart): Cease to every peer (they drop this node's routes), its
    /// kernel routes and restart marker removed, so the next start is a clean
    /// one. --withdraw: decommission this node, the same after its routes went
    /// out again with GRACEFUL_SHUTDOWN and a drain time for traffic to move.
    /// --restart: as SIGTERM, a restart (peers keep this node's routes as
    /// graceful restart helpers, the kernel keeps its routes).
    Stop {
        /// Decommission: take this node out for good, gracefully.
        #[arg(long, conflicts_with = "restart")]
        withdraw: bool,
        /// A restart, as SIGTERM.
        #[arg(long)]
        restart: bool,
        /// With --withdraw: seconds to let traffic move (default: the daemon's --drain-time).
        #[arg(long, requires = "withdraw")]
        drain: Option<u64>,
        /// The daemon's control socket.
        #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
    },
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
    /// Show what the running daemon knows.
    Show {
        /// What to show.
        #[command(subcommand)]
        what: ShowWhat,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, global = true, default_value = DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
    },
    /// Why the running daemon advertises a prefix to each peer or not, and
    /// whether it is in the kernel: the paths and why each lost, the filter
    /// rule or default that decided, loops, split horizon (docs/explain.md).
    Explain {
        /// The prefix, exactly (e.g. 10.244.3.0/26).
        prefix: ipnet::IpNet,
        /// Only this peer (its name, as `bgpd show peers` lists it).
        #[arg(long)]
        peer: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
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

#[derive(Subcommand)]
enum ShowWhat {
    /// Peers and their sessions.
    Peers,
    /// Routes learned from peers.
    Routes {
        /// Only routes within or containing this prefix.
        prefix: Option<ipnet::IpNet>,
    },
    /// Prefixes this node originates, and why.
    Originations,
    /// The loaded configuration's state and problems.
    Config,
    /// The kernel table bgpd programs: counts and routes not installed.
    Fib,
    /// BFD sessions: state, discriminators, negotiated intervals, detection time.
    Bfd,
}

/// Logs to stderr at `RUST_LOG` if set, else at the file datastore's
/// `logSeverityScreen` for `node` (its `node.NAME` BGPConfiguration's, else the
/// default's; read once at start), else at info.
fn init_logging(datastore: &datastore::live::DatastoreSpec, node: &str) {
    use datastore::LogSeverity;
    let configured = match datastore {
        datastore::live::DatastoreSpec::File(path) => {
            datastore::load(path).map(|(m, _)| m.log_severity_of(node)).unwrap_or_default()
        }
        _ => LogSeverity::default(),
    };
    let level = match configured {
        LogSeverity::Debug => "debug",
        LogSeverity::Info => "info",
        LogSeverity::Warning => "warn",
        LogSeverity::Error | LogSeverity::Fatal => "error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?)
}

fn run_daemon(
    datastore: String,
    node: String,
    control_socket: PathBuf,
    metrics: Option<std::net::SocketAddr>,
    kernel_table: Option<u32>,
    drain: std::time::Duration,
) -> anyhow::Result<()> {
    let namespace = std::env::var("POD_NAMESPACE").ok();
    let datastore = datastore::live::DatastoreSpec::parse(&datastore, namespace.as_deref())?;
    init_logging(&datastore, &node);
    let opts = daemon::RunOptions { datastore, node, control_socket, metrics, kernel_table, drain };
    runtime()?.block_on(daemon::run(opts))
}

fn stop(how: daemon::StopHow, drain: Option<u64>, control_socket: PathBuf) -> anyhow::Result<()> {
    let req = daemon::Request::Stop { how, drain_secs: drain };
    if how == daemon::StopHow::Withdraw {
        eprintln!("bgpd stop: decommissioning (routes go out with GRACEFUL_SHUTDOWN, then the sessions close)…");
    }
    let v = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(daemon::ask(&control_socket, &req))?;
    print!("{}", daemon::render(&req, &v));
    Ok(())
}

fn show(what: ShowWhat, json: bool, control_socket: PathBuf) -> anyhow::Result<()> {
    let req = match what {
        ShowWhat::Peers => daemon::Request::Peers,
        ShowWhat::Routes { prefix } => daemon::Request::Routes { prefix },
        ShowWhat::Originations => daemon::Request::Originations,
        ShowWhat::Config => daemon::Request::Config,
        ShowWhat::Fib => daemon::Request::Fib,
        ShowWhat::Bfd => daemon::Request::Bfd,
    };
    ask_and_print(req, json, control_socket)
}

/// Asks the daemon and prints its answer (JSON with `json`).
fn ask_and_print(req: daemon::Request, json: bool, control_socket: PathBuf) -> anyhow::Result<()> {
    let v = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(daemon::ask(&control_socket, &req))?;
    if json {
        println!("{v}");
    } else {
        print!("{}", daemon::render(&req, &v));
    }
    Ok(())
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DecodeMrt { json, file } => decode_mrt::run(&file, json),
        Command::Run { datastore, node, control_socket, metrics, kernel_table, no_kernel, drain_time } => {
            let drain = std::time::Duration::from_secs(drain_time);
            run_daemon(datastore, node, control_socket, metrics, (!no_kernel).then_some(kernel_table), drain)
        }
        Command::Stop { withdraw, restart, drain, control_socket } => {
            let how = match (withdraw, restart) {
                (true, _) => daemon::StopHow::Withdraw,
                (false, true) => daemon::StopHow::Restart,
                (false, false) => daemon::StopHow::Stop,
            };
            stop(how, drain, control_socket)
        }
        Command::Show { what, json, control_socket } => show(what, json, control_socket),
        Command::Explain { prefix, peer, json, control_socket } => {
            ask_and_print(daemon::Request::Explain { prefix, peer }, json, control_socket)
        }
        Command::Lab { what } => return lab_command(what),
        Command::Verify { file, failures, json, explain } => return verify_command(file, failures, json, explain),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bgpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
