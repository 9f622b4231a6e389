//! The `bgpd` command: the node's BGP speaker and its tools.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bgpd::{daemon, datastore, decode_mrt};

const DEFAULT_CONTROL_SOCKET: &str = "/run/bgpd/bgpd.sock";

/// bgpd: BGP speaker, IPAM and FIB programmer for Kubernetes nodes.
#[derive(Parser)]
#[command(
    name = "bgpd",
    version,
    about,
    after_help = "Design tools (the bgpd-lab binary, installed beside bgpd):\n  \
                  lab     bring a design up in network namespaces and prove it reachable (`bgpd lab --help`)\n  \
                  verify  check a design offline: sessions, black holes, loops, services, pools (`bgpd verify --help`)"
)]
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
        /// The datastore, as bgpd-ipam's: `file:PATH` (a YAML file or a directory of
        /// them, watched), `etcd:http://HOST:PORT[,…][?prefix=/calico/bgpd/]
        /// [&ipamPrefix=/calico/ipam/v2/]` (watched; `https://` with
        /// `&ca=FILE&cert=FILE&key=FILE&username=U&password-file=FILE`, or Calico's
        /// ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE,
        /// ETCD_USERNAME, ETCD_PASSWORD), `kubernetes` (in-cluster service account
        /// or KUBECONFIG) or `kubernetes:KUBECONFIG`; Secrets are read in the
        /// namespace `POD_NAMESPACE`, else kube-system.
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
        /// Take over from the speaker bgpd replaces on this node (Calico's BIRD:
        /// `bird` or 12), a number or a name from /etc/iproute2/rt_protos. If the
        /// kernel table holds routes of that protocol at start, the start is a
        /// graceful restart that claims forwarding state; those routes keep
        /// forwarding until the selection deferral ends and bgpd's routes are in,
        /// then they are removed. None: a normal start (harmless to leave set).
        #[arg(long, value_name = "PROTOCOL", conflicts_with = "no_kernel")]
        take_over: Option<String>,
        /// With --take-over: seconds after the selection deferral that the routes
        /// bgpd has not replaced yet (of peers not back) keep forwarding before they
        /// are removed; each goes earlier, as bgpd's route for its prefix goes in.
        #[arg(long, value_name = "SECONDS", default_value_t = daemon::DEFAULT_TAKE_OVER_HOLD.as_secs(), requires = "take_over")]
        take_over_hold: u64,
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
    /// `bgpd lab …` and `bgpd verify …`: the design tools, run from the
    /// `bgpd-lab` binary beside this one (`bgpd-lab --help`).
    #[command(external_subcommand)]
    External(Vec<OsString>),
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
    /// The node's status as `calicoctl node status` prints it; with --json, the
    /// `status` a CalicoNodeStatus gets (docs/kubernetes.md).
    Status,
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
    take_over: Option<daemon::TakeOver>,
) -> anyhow::Result<()> {
    let datastore = datastore::live::DatastoreSpec::parse(&datastore)?;
    let secrets_namespace = datastore::live::secrets_namespace(std::env::var("POD_NAMESPACE").ok().as_deref());
    init_logging(&datastore, &node);
    let opts = daemon::RunOptions {
        datastore,
        secrets_namespace,
        node,
        control_socket,
        metrics,
        kernel_table,
        drain,
        take_over,
    };
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
        ShowWhat::Status => daemon::Request::Status,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DecodeMrt { json, file } => decode_mrt::run(&file, json),
        Command::Run {
            datastore,
            node,
            control_socket,
            metrics,
            kernel_table,
            no_kernel,
            drain_time,
            take_over,
            take_over_hold,
        } => {
            let drain = std::time::Duration::from_secs(drain_time);
            match take_over.as_deref().map(daemon::parse_take_over).transpose() {
                Ok(take_over) => {
                    let hold = std::time::Duration::from_secs(take_over_hold);
                    let take_over = take_over.map(|t| daemon::TakeOver { hold, ..t });
                    let kernel = (!no_kernel).then_some(kernel_table);
                    run_daemon(datastore, node, control_socket, metrics, kernel, drain, take_over)
                }
                Err(e) => Err(anyhow::anyhow!(e)),
            }
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
        Command::External(args) => return design_tool(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bgpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The design tools are not in the node daemon's binary: `bgpd lab …` and
/// `bgpd verify …` run `bgpd-lab` (from the `bgpd-lab` crate, installed beside
/// `bgpd`) with the same arguments.
fn design_tool(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let name = args.first().and_then(|a| a.to_str()).unwrap_or_default().to_string();
    if name != "lab" && name != "verify" {
        eprintln!("bgpd: unknown command {name:?} (see `bgpd --help`)");
        return ExitCode::from(2);
    }
    let tool = std::env::current_exe().map(|me| me.with_file_name("bgpd-lab"));
    let tool = match tool {
        Ok(t) if t.is_file() => t,
        _ => {
            eprintln!(
                "bgpd {name}: the design tools are in bgpd-lab, which is not beside this bgpd: build it too \
                 (`cargo build --release -p bgpd -p bgpd-lab -p ipam`)"
            );
            return ExitCode::from(2);
        }
    };
    let err = std::process::Command::new(&tool).args(&args).exec();
    eprintln!("bgpd {name}: cannot run {}: {err}", tool.display());
    ExitCode::from(2)
}
