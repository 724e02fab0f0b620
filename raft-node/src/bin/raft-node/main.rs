//! `raft-node`: run one node, or a local cluster of real node processes.

/// mimalloc: a node allocates and frees a few small buffers per write (requests,
/// entries, map values); with glibc's allocator its free-list consolidation
/// was 5-8% of a W1 profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cluster::{ClusterOptions, Scenario};
use raft_core::NodeId;
use raft_kv::WriteLimits;
use raft_net::transport::ConnectionLimits;
use raft_node::server::{self, NodeConfig};

#[derive(Parser, Debug)]
#[command(name = "raft-node", version, about = "A Raft Lite node, or a local cluster of them")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node.
    Run(Box<RunArgs>),
    /// Run a local cluster: node i is a child `raft-node run` on 127.0.0.1:(base-port + i).
    Cluster(ClusterArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, env = "RAFT_ID")]
    id: NodeId,
    /// Address to listen on for peers and clients.
    #[arg(long, env = "RAFT_LISTEN")]
    listen: String,
    /// Address other nodes and clients reach this node at (default: --listen).
    #[arg(long, env = "RAFT_ADVERTISE")]
    advertise: Option<String>,
    /// Also serve GET /metrics, /livez, /readyz and /health in plain HTTP
    /// on this address (they are always served on --listen too).
    #[arg(long, env = "RAFT_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// The other nodes (not this one): ID=HOST:PORT, comma-separated. A new
    /// data directory is bootstrapped with them; an existing one must match.
    #[arg(long, env = "RAFT_PEERS", default_value = "")]
    peers: String,
    /// Bootstrap a one-node cluster (a new data directory with no --peers is
    /// refused without it).
    #[arg(long, env = "RAFT_SINGLE_NODE")]
    single_node: bool,
    /// A new node for a running cluster: it starts with no configuration,
    /// never campaigns, and waits to be added (`raft-client member add`).
    #[arg(long, env = "RAFT_JOIN", conflicts_with = "single_node")]
    join: bool,
    /// Directory for the WAL and snapshots.
    #[arg(long, env = "RAFT_DATA_DIR")]
    data_dir: PathBuf,
    /// Cluster id; connections with another id are refused.
    #[arg(long, env = "RAFT_CLUSTER_ID", default_value = raft_client::DEFAULT_CLUSTER_ID)]
    cluster_id: String,
    /// Length of one Raft tick in milliseconds.
    #[arg(long, env = "RAFT_TICK_MS", default_value_t = 10)]
    tick_ms: u64,
    /// Minimum election timeout in milliseconds (randomized up to twice this).
    #[arg(long, env = "RAFT_ELECTION_TIMEOUT_MS", default_value_t = 150)]
    election_timeout_ms: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "RAFT_HEARTBEAT_MS", default_value_t = 50)]
    heartbeat_ms: u64,
    /// Take a snapshot and compact the log every this many applied entries.
    #[arg(long, env = "RAFT_SNAPSHOT_ENTRIES", default_value_t = 100_000)]
    snapshot_entries: u64,
    /// ...or once the commands applied since the last snapshot hold this many bytes.
    #[arg(long, env = "RAFT_SNAPSHOT_LOG_BYTES", default_value_t = 256 << 20)]
    snapshot_log_bytes: u64,
    /// The largest snapshot this node takes from a leader, in bytes; one that
    /// grows past it while arriving is dropped with a WARN (raise it for a
    /// larger state).
    #[arg(long, env = "RAFT_MAX_SNAPSHOT_BYTES", default_value_t = 16 << 30)]
    max_snapshot_bytes: u64,
    /// Bound of the client session table (exactly-once writes).
    #[arg(long, env = "RAFT_MAX_SESSIONS", default_value_t = raft_kv::SESSIONS_MAX_DEFAULT)]
    max_sessions: usize,
    /// The largest key a client may write, in bytes.
    #[arg(long, env = "RAFT_MAX_KEY_BYTES", default_value_t = WriteLimits::default().key_bytes_max)]
    max_key_bytes: usize,
    /// The largest value a client may write, in bytes (a command is at most
    /// a key, two values and 1 KiB; with the 1 MiB append budget it must fit
    /// a 16 MiB frame, so a value may be at most about 7.4 MiB).
    #[arg(long, env = "RAFT_MAX_VALUE_BYTES", default_value_t = WriteLimits::default().value_bytes_max)]
    max_value_bytes: usize,
    /// Most connections open at once (peers and clients); more are closed at
    /// once. The open-file limit is raised to fit, if the hard limit allows.
    #[arg(long, env = "RAFT_MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().connections_max)]
    max_connections: usize,
    /// Most connections open at once from one IP address.
    #[arg(long, env = "RAFT_MAX_CONNECTIONS_PER_SOURCE", default_value_t = ConnectionLimits::default().connections_per_source_max)]
    max_connections_per_source: usize,
    /// A client connection that sends nothing (or reads none of its answers)
    /// for this long is closed, in milliseconds.
    #[arg(long, env = "RAFT_CLIENT_IDLE_TIMEOUT_MS", default_value_t = ConnectionLimits::default().client_idle_timeout.as_millis() as u64)]
    client_idle_timeout_ms: u64,
    /// A frame, once begun, must arrive whole within this many milliseconds.
    #[arg(long, env = "RAFT_FRAME_TIMEOUT_MS", default_value_t = ConnectionLimits::default().frame_timeout.as_millis() as u64)]
    frame_timeout_ms: u64,
    /// Do not fsync the WAL. UNSAFE: acknowledged writes can be lost on a crash.
    #[arg(long, env = "RAFT_NO_FSYNC", hide = true)]
    no_fsync: bool,
}

#[derive(Args, Debug)]
struct ClusterArgs {
    /// Number of nodes.
    #[arg(long, env = "RAFT_NODES", default_value_t = 3)]
    nodes: u64,
    /// Node i listens on 127.0.0.1:(base-port + i).
    #[arg(long, env = "RAFT_BASE_PORT", default_value_t = 8000)]
    base_port: u16,
    /// Node i keeps its data in DATA_DIR/i.
    #[arg(long, env = "RAFT_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Remove the data directories first.
    #[arg(long)]
    fresh: bool,
    /// Run a failure experiment instead of serving: start, write, kill a node,
    /// write again, restart it, check it caught up; prints PASS or FAIL.
    #[arg(long, value_enum)]
    scenario: Option<ScenarioArg>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScenarioArg {
    LeaderCrash,
    FollowerCrash,
}

fn parse_peers(spec: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            format!("peer `{part}` is not of the form ID=HOST:PORT (e.g. 2=127.0.0.1:8002)")
        })?;
        let id: NodeId =
            id.trim().parse().map_err(|_| format!("peer id `{id}` is not a positive integer"))?;
        if id == 0 {
            return Err("peer ids must be positive".to_string());
        }
        if addr.trim().is_empty() || !addr.contains(':') {
            return Err(format!("peer {id} has address `{addr}`; expected HOST:PORT"));
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("peer {id} is listed twice"));
        }
    }
    Ok(peers)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn run_node(args: RunArgs) -> Result<(), String> {
    if args.id == 0 {
        return Err("--id must be a positive integer".to_string());
    }
    let peers = parse_peers(&args.peers)?;
    if args.single_node && !peers.is_empty() {
        return Err(format!(
            "--single-node and --peers ({}) contradict each other; give one of them",
            args.peers
        ));
    }
    if args.join && !peers.is_empty() {
        return Err(format!(
            "--join and --peers ({}) contradict each other: a joining node learns its peers from the \
             cluster's leader once added",
            args.peers
        ));
    }
    if peers.contains_key(&args.id) {
        return Err(format!("--peers lists this node's own id {}; list only the other nodes", args.id));
    }
    if args.tick_ms == 0 || args.heartbeat_ms < args.tick_ms || args.election_timeout_ms <= args.heartbeat_ms
    {
        return Err(format!(
            "timeouts must satisfy 0 < --tick-ms ({}) <= --heartbeat-ms ({}) < --election-timeout-ms ({})",
            args.tick_ms, args.heartbeat_ms, args.election_timeout_ms
        ));
    }
    if args.max_connections == 0 || args.max_connections_per_source == 0 {
        return Err("--max-connections and --max-connections-per-source must be at least 1".to_string());
    }
    if args.client_idle_timeout_ms == 0 || args.frame_timeout_ms == 0 {
        return Err("--client-idle-timeout-ms and --frame-timeout-ms must be at least 1".to_string());
    }
    let config = NodeConfig {
        id: args.id,
        advertise: args.advertise.unwrap_or_else(|| args.listen.clone()),
        listen: args.listen,
        peers,
        data_dir: args.data_dir,
        cluster_id: args.cluster_id,
        tick: Duration::from_millis(args.tick_ms),
        election_timeout: Duration::from_millis(args.election_timeout_ms),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        snapshot_entries: args.snapshot_entries.max(1),
        snapshot_log_bytes: args.snapshot_log_bytes.max(1),
        snapshot_bytes_max: args.max_snapshot_bytes.max(1),
        sync: !args.no_fsync,
        sessions_max: args.max_sessions,
        single_node: args.single_node,
        join: args.join,
        limits: WriteLimits { key_bytes_max: args.max_key_bytes, value_bytes_max: args.max_value_bytes },
        connection_limits: ConnectionLimits {
            connections_max: args.max_connections,
            connections_per_source_max: args.max_connections_per_source,
            client_idle_timeout: Duration::from_millis(args.client_idle_timeout_ms),
            frame_timeout: Duration::from_millis(args.frame_timeout_ms),
            ..ConnectionLimits::default()
        },
        metrics_listen: args.metrics_listen,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(server::run(config, shutdown_signal())).map_err(|e| format!("{e:#}"))
}

/// `RAFT_*` variables in `vars` that no flag of any subcommand reads.
fn unknown_env_vars(vars: impl Iterator<Item = String>) -> Vec<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let known: std::collections::BTreeSet<String> = cli
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect();
    let mut unknown: Vec<String> =
        vars.filter(|name| name.starts_with("RAFT_") && !known.contains(name)).collect();
    unknown.sort();
    unknown
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => {
            init_logging();
            let unknown = unknown_env_vars(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
            if !unknown.is_empty() {
                tracing::warn!(
                    "ignoring environment variables that no flag reads: {} (see `raft-node run --help`)",
                    unknown.join(", ")
                );
            }
            run_node(*args)
        }
        Cmd::Cluster(args) => {
            if args.nodes == 0 || args.nodes > 9 {
                Err(format!("--nodes must be between 1 and 9, got {}", args.nodes))
            } else {
                let options = ClusterOptions {
                    nodes: args.nodes,
                    base_port: args.base_port,
                    data_dir: args.data_dir,
                    fresh: args.fresh || args.scenario.is_some(),
                };
                let scenario = args.scenario.map(|s| match s {
                    ScenarioArg::LeaderCrash => Scenario::LeaderCrash,
                    ScenarioArg::FollowerCrash => Scenario::FollowerCrash,
                });
                cluster::main(options, scenario)
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft-node: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_peers, unknown_env_vars};

    #[test]
    fn only_raft_variables_that_no_flag_reads_are_reported() {
        let vars = ["RAFT_PEERS", "RAFT_PEERS_JSON", "PEERS_JSON", "RAFT_ID", "RAFT_NODES", "RAFT_TYPO"];
        let unknown = unknown_env_vars(vars.iter().map(|v| v.to_string()));
        assert_eq!(unknown, ["RAFT_PEERS_JSON", "RAFT_TYPO"]);
    }

    #[test]
    fn peers_parse_and_bad_specs_say_why() {
        let peers = parse_peers("2=127.0.0.1:8002, 3=127.0.0.1:8003").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[&3], "127.0.0.1:8003");
        assert!(parse_peers("2:127.0.0.1:8002").unwrap_err().contains("ID=HOST:PORT"));
        assert!(parse_peers("x=127.0.0.1:8002").unwrap_err().contains("positive integer"));
        assert!(parse_peers("2=a:1,2=b:2").unwrap_err().contains("twice"));
        assert!(parse_peers("").unwrap().is_empty());
    }
}
