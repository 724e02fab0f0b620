//! `raft-client`: talk to a Raft Lite cluster from the command line.

/// mimalloc, as in `raft-node`: `bench` allocates and frees a few small
/// buffers per request (its frames, the decoded answers), where glibc's
/// free-list consolidation showed in W1 profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raft_client::{bench, Client, ClientConfig, ClientError, DEFAULT_CLUSTER, DEFAULT_CLUSTER_ID};
use raft_core::{ChangeOp, MembershipChange, Role};
use raft_kv::{
    describe_token, parse_text_command, MemberRole, NodeStatus, TextCommand, WriteLimits, WriteResult,
};

#[derive(Parser, Debug)]
#[command(name = "raft-client", version, about = "Talk to a Raft Lite cluster")]
struct Cli {
    /// Node addresses, comma-separated.
    #[arg(long, env = "RAFT_CLUSTER", default_value = DEFAULT_CLUSTER, global = true)]
    cluster: String,
    /// The cluster id the nodes were started with.
    #[arg(long, env = "RAFT_CLUSTER_ID", default_value = DEFAULT_CLUSTER_ID, global = true)]
    cluster_id: String,
    /// Deadline of one operation, retries included, in milliseconds.
    #[arg(long = "timeout-ms", env = "RAFT_TIMEOUT_MS", default_value_t = 5000, global = true)]
    timeout_ms: u64,
    /// The largest key this client sends, in bytes (the nodes check their own --max-key-bytes).
    #[arg(long, env = "RAFT_MAX_KEY_BYTES", default_value_t = WriteLimits::default().key_bytes_max, global = true)]
    max_key_bytes: usize,
    /// The largest value this client sends, in bytes (the nodes check their own --max-value-bytes).
    #[arg(long, env = "RAFT_MAX_VALUE_BYTES", default_value_t = WriteLimits::default().value_bytes_max, global = true)]
    max_value_bytes: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Set KEY to VALUE.
    Set { key: String, value: String },
    /// Read KEY (linearizable unless --stale).
    Get {
        key: String,
        /// Answer from whichever node is reached, possibly stale.
        #[arg(long)]
        stale: bool,
    },
    /// Delete KEY.
    Del { key: String },
    /// Set KEY to NEW if it holds OLD (OLD `-` means: absent).
    Cas { key: String, old: String, new: String },
    /// A command in lab syntax: "SET x=5", "GET x", "DEL x".
    Submit { command: String },
    /// Every node's role, term, leader, commit and applied index.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A node's log entries.
    Log {
        /// The node to ask (default: the leader).
        #[arg(long)]
        node: Option<String>,
        /// First index.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most entries.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Benchmark W1 (puts) or R1 (linearizable gets) against the leader.
    Bench {
        /// Closed-loop logical clients, one request in flight each.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Connections to the leader the clients share (requests are pipelined on
        /// each; 1, like etcd's benchmark tool, measured fastest here).
        #[arg(long, default_value_t = 1)]
        conns: usize,
        /// Measured time, e.g. `10s`, `500ms` or `10`.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Unmeasured warm-up before it.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        warmup: Duration,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Keys drawn uniformly from this many.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Operation: put (W1) or get (R1, linearizable).
        #[arg(long, value_enum, default_value = "put")]
        op: OpArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write keys `fill0` .. `fill{KEYS-1}` once each, VALUE_SIZE bytes of
    /// value apiece, from CLIENTS concurrent clients (retrying through
    /// elections and back-pressure, each write applied once): loads a
    /// cluster with a known state. Prints the bytes written and the rate.
    Fill {
        /// How many keys.
        #[arg(long, default_value_t = 1024)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 1 << 20)]
        value_size: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: u64,
    },
    /// The cluster's membership: list, add, promote, remove members.
    Member {
        #[command(subcommand)]
        op: MemberCmd,
    },
    /// Hand leadership to voter ID; answers once it leads, or says why not.
    TransferLeader {
        /// The voter to hand over to.
        id: u64,
    },
    /// F1: write under load, SIGKILL the leader, report the failover time and
    /// whether any acknowledged write went missing (nodes must run on this machine).
    Failover {
        /// Concurrent writers.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Load before the kill.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        before: Duration,
        /// Load after the kill.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        after: Duration,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum MemberCmd {
    /// Every member: id, address, voter or learner, match index and lag on
    /// the leader.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add node ID (serving at ADDRESS) as a learner, wait until it has
    /// caught up with the leader, then promote it to voter.
    Add {
        /// The new member's id.
        id: u64,
        /// The address it serves on (peers and clients), e.g. 127.0.0.1:8004.
        address: String,
        /// Stop after adding it as a learner.
        #[arg(long)]
        learner: bool,
        /// Promote once it is at most this many entries behind the leader.
        #[arg(long, default_value_t = 64)]
        lag_entries_max: u64,
        /// Give up waiting for it to catch up after this long (it stays a
        /// learner).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        catch_up_timeout: Duration,
    },
    /// Make learner ID a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// Remove member ID (a dead node, a live follower or the leader itself).
    Remove {
        /// The member.
        id: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OpArg {
    Put,
    Get,
}

/// `10s`, `250ms`, `2m` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a duration; write e.g. 10s, 500ms, 2m or 10");
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn show(value: Option<Vec<u8>>) -> String {
    value.map_or_else(|| "(not found)".to_string(), |v| String::from_utf8_lossy(&v).into_owned())
}

fn show_write(result: WriteResult) -> String {
    match result {
        WriteResult::Done { .. } => "OK".to_string(),
        WriteResult::Cas { swapped: true, .. } => "OK (swapped)".to_string(),
        WriteResult::Cas { swapped: false, current } => {
            format!("NOT SWAPPED (current value: {})", show(current))
        }
        WriteResult::StaleSequence { last_seq } => {
            format!("REFUSED: this session already applied sequence number {last_seq}")
        }
    }
}

/// `status` succeeds only when some node answered and a leader is known;
/// otherwise one sentence says which, naming refusals as such.
fn status_verdict(statuses: &[(String, Result<NodeStatus, ClientError>)]) -> Result<(), String> {
    let answered: Vec<&NodeStatus> = statuses.iter().filter_map(|(_, s)| s.as_ref().ok()).collect();
    if answered.is_empty() {
        let refused: Vec<String> = statuses
            .iter()
            .filter_map(|(addr, s)| match s {
                Err(ClientError::Refused { reason, .. }) => Some(format!("{addr}: {reason}")),
                _ => None,
            })
            .collect();
        if !refused.is_empty() {
            return Err(format!(
                "no node accepted this client ({}); check --cluster-id (or RAFT_CLUSTER_ID)",
                refused.join("; ")
            ));
        }
        return Err("no node answered; check that the nodes are running and that --cluster lists them".into());
    }
    let leader_known = answered.iter().any(|s| s.role == Role::Leader || s.leader.is_some());
    if !leader_known {
        return Err(format!(
            "{} of {} nodes answered but none knows a leader; a majority may be down or cut off",
            answered.len(),
            statuses.len()
        ));
    }
    Ok(())
}

/// A membership change the cluster did not make, in one sentence: what
/// was asked, then why (the leader's reason).
fn refused(what: &str, e: ClientError) -> anyhow::Error {
    anyhow::anyhow!("cannot {what}: {e}")
}

/// `raft-client member ...`.
async fn member(client: &mut Client, op: MemberCmd) -> anyhow::Result<()> {
    let change = |ops| MembershipChange { ops };
    match op {
        MemberCmd::List { json } => {
            let members = client.members().await?;
            if json {
                let rows: Vec<serde_json::Value> = members
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "id": m.id, "address": m.address, "role": m.role.to_string(),
                            "outgoing": m.outgoing, "match_index": m.match_index, "lag_entries": m.lag_entries,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<4} {:<21} {:<9} {:>11} {:>8}", "ID", "ADDRESS", "ROLE", "MATCH", "LAG");
                for m in &members {
                    let role = if m.outgoing { format!("{} (out)", m.role) } else { m.role.to_string() };
                    println!(
                        "{:<4} {:<21} {:<9} {:>11} {:>8}",
                        m.id, m.address, role, m.match_index, m.lag_entries
                    );
                }
            }
        }
        MemberCmd::Add { id, address, learner, lag_entries_max, catch_up_timeout } => {
            // (The core's AddLearner of a voter demotes it: not what `add` means.)
            if let Some(m) = client.members().await?.into_iter().find(|m| m.id == id) {
                anyhow::bail!(
                    "node {id} is already a member ({} at {}); `raft-client member promote {id}` makes a \
                     learner a voter, and a member moving to another address is removed and added again",
                    m.role,
                    m.address
                );
            }
            let context = address.clone().into_bytes();
            let index = client
                .change_members(change(vec![ChangeOp::AddLearner { id, context }]))
                .await
                .map_err(|e| refused(&format!("add node {id} as a learner"), e))?;
            println!("added node {id} at {address} as a learner (configuration entry {index})");
            if learner {
                return Ok(());
            }
            let deadline = std::time::Instant::now() + catch_up_timeout;
            let mut lag = None;
            loop {
                if let Some(m) = client.members().await?.into_iter().find(|m| m.id == id) {
                    if m.match_index > 0 && m.lag_entries <= lag_entries_max {
                        break;
                    }
                    lag = (m.match_index > 0).then_some(m.lag_entries);
                }
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "node {id} did not catch up within {catch_up_timeout:?} ({}); it stays a learner: check \
                         that it runs at {address} (raft-node run --join) and reaches the leader, then \
                         `raft-client member promote {id}` (or `raft-client member remove {id}`)",
                        lag.map_or("it has received nothing".to_string(), |l| format!("{l} entries behind"))
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let index = client
                .change_members(change(vec![ChangeOp::PromoteLearner { id }]))
                .await
                .map_err(|e| refused(&format!("promote node {id}"), e))?;
            println!("promoted node {id} to voter (configuration entry {index})");
        }
        MemberCmd::Promote { id } => {
            let index = client
                .change_members(change(vec![ChangeOp::PromoteLearner { id }]))
                .await
                .map_err(|e| refused(&format!("promote node {id}"), e))?;
            println!("promoted node {id} to voter (configuration entry {index})");
        }
        MemberCmd::Remove { id } => {
            let voters: Vec<u64> = client
                .members()
                .await?
                .iter()
                .filter(|m| m.role == MemberRole::Voter)
                .map(|m| m.id)
                .collect();
            if voters == [id] {
                anyhow::bail!(
                    "node {id} is the cluster's last voter and a cluster needs one: add another voter first \
                     (raft-client member add ID ADDRESS), then remove node {id}"
                );
            }
            let index = client
                .change_members(change(vec![ChangeOp::Remove { id }]))
                .await
                .map_err(|e| refused(&format!("remove node {id}"), e))?;
            println!("removed node {id} (configuration entry {index})");
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = ClientConfig::new(&cli.cluster, &cli.cluster_id, Duration::from_millis(cli.timeout_ms));
    config.limits = WriteLimits { key_bytes_max: cli.max_key_bytes, value_bytes_max: cli.max_value_bytes };
    let mut client = Client::new(config.clone())?;
    match cli.command {
        Cmd::Set { key, value } => {
            println!("{}", show_write(client.put(key.as_bytes(), value.as_bytes()).await?))
        }
        Cmd::Get { key, stale } => println!("{}", show(client.get(key.as_bytes(), stale).await?)),
        Cmd::Del { key } => println!("{}", show_write(client.delete(key.as_bytes()).await?)),
        Cmd::Cas { key, old, new } => {
            let expected = (old != "-").then_some(old.as_bytes());
            println!("{}", show_write(client.cas(key.as_bytes(), expected, new.as_bytes()).await?));
        }
        Cmd::Submit { command } => match parse_text_command(&command).map_err(anyhow::Error::msg)? {
            TextCommand::Set(k, v) => {
                println!("{}", show_write(client.put(k.as_bytes(), v.as_bytes()).await?))
            }
            TextCommand::Get(k) => println!("{}", show(client.get(k.as_bytes(), false).await?)),
            TextCommand::Del(k) => println!("{}", show_write(client.delete(k.as_bytes()).await?)),
        },
        Cmd::Member { op } => member(&mut client, op).await?,
        Cmd::TransferLeader { id } => {
            let leader = client.transfer_leader(id).await?;
            println!("node {leader} leads");
        }
        Cmd::Status { json } => {
            let statuses = client.status_all().await;
            let problem = |e: &ClientError| match e {
                ClientError::Refused { reason, .. } => format!("refused: {reason}"),
                e => format!("unreachable: {e}"),
            };
            if json {
                let rows: Vec<serde_json::Value> = statuses
                    .iter()
                    .map(|(addr, s)| match s {
                        Ok(s) => serde_json::json!({
                            "id": s.id, "address": addr, "pid": s.pid, "role": s.role.to_string(),
                            "term": s.term, "leader": s.leader, "commit": s.commit, "applied": s.applied,
                            "last_index": s.last_index, "first_index": s.first_index,
                            "snapshot_index": s.snapshot_index, "keys": s.keys, "reachable": true,
                            "cluster_id": s.cluster_id, "cluster_token": describe_token(s.cluster_token),
                            "members_with_data": s.members_with_data,
                            "voters": s.voters, "learners": s.learners,
                            "learner": s.learners.contains(&s.id),
                        }),
                        Err(e) => serde_json::json!({
                            "address": addr, "reachable": false,
                            "refused": matches!(e, ClientError::Refused { .. }), "error": e.to_string(),
                        }),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<4} {:<21} {:<8} {:<13} {:>6} {:>6} {:>8} {:>8} {:>8}",
                    "ID", "ADDRESS", "PID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST"
                );
                for (addr, s) in &statuses {
                    match s {
                        Ok(s) => println!(
                            "{:<4} {:<21} {:<8} {:<13} {:>6} {:>6} {:>8} {:>8} {:>8}",
                            s.id,
                            addr,
                            s.pid,
                            if s.learners.contains(&s.id) {
                                "learner".to_string()
                            } else {
                                s.role.to_string()
                            },
                            s.term,
                            s.leader.map_or("-".to_string(), |l| l.to_string()),
                            s.commit,
                            s.applied,
                            s.last_index
                        ),
                        Err(e) => println!("{:<4} {:<21} {}", "?", addr, problem(e)),
                    }
                }
            }
            if let Some(s) =
                statuses.iter().filter_map(|(_, s)| s.as_ref().ok()).find(|s| s.role == Role::Leader)
            {
                let learners = if s.learners.is_empty() {
                    String::new()
                } else {
                    format!(", learners {:?}", s.learners)
                };
                if !json {
                    println!("membership (node {}): voters {:?}{learners}", s.id, s.voters);
                }
            }
            status_verdict(&statuses).map_err(anyhow::Error::msg)?;
        }
        Cmd::Log { node, from, limit } => {
            let addr = match node {
                Some(addr) => addr,
                None => client.find_leader().await.map(|(a, _)| a).ok_or_else(|| {
                    anyhow::anyhow!(
                        "no node reports itself leader; pass --node ADDR to read a follower's log"
                    )
                })?,
            };
            println!("{:>8} {:>6} {:<10} COMMAND", "INDEX", "TERM", "STATE");
            for e in client.log(&addr, from, limit).await? {
                let state = if e.committed { "committed" } else { "pending" };
                println!("{:>8} {:>6} {:<10} {}", e.index, e.term, state, e.command);
            }
        }
        Cmd::Fill { keys, value_size, clients } => {
            let started = std::time::Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients.max(1) {
                let config = config.clone();
                tasks.push(tokio::spawn(async move {
                    let mut client = Client::new(config)?;
                    let value = vec![b'f'; value_size];
                    let mut k = c;
                    while k < keys {
                        client.put(format!("fill{k}").as_bytes(), &value).await?;
                        k += clients.max(1);
                    }
                    Ok::<_, ClientError>(())
                }));
            }
            for task in tasks {
                task.await.map_err(|e| anyhow::anyhow!("a fill client panicked: {e}"))??;
            }
            let seconds = started.elapsed().as_secs_f64();
            let bytes = keys * value_size as u64;
            println!(
                "wrote {keys} keys, {bytes} bytes of values, in {seconds:.1} s ({:.1} MiB/s)",
                bytes as f64 / seconds / f64::from(1 << 20)
            );
        }
        Cmd::Bench { clients, conns, duration, warmup, value_size, keys, op, json } => {
            let spec = bench::LoadSpec {
                clients,
                conns,
                duration,
                warmup,
                value_size,
                keys,
                op: match op {
                    OpArg::Put => bench::BenchOp::Put,
                    OpArg::Get => bench::BenchOp::Get,
                },
                request_timeout: Duration::from_millis(cli.timeout_ms),
            };
            let r = bench::run_load(&config, &spec).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let errors: u64 = r.errors.values().sum();
                println!(
                    "op={:?} clients={} conns={} leader={} ops={} ops_per_s={:.0} p50_us={} p90_us={} p99_us={} \
                     p999_us={} max_us={} mean_us={:.0} errors={} {:?}",
                    r.op,
                    r.clients,
                    r.conns,
                    r.leader,
                    r.ops,
                    r.ops_per_s,
                    r.p50_us,
                    r.p90_us,
                    r.p99_us,
                    r.p999_us,
                    r.max_us,
                    r.mean_us,
                    errors,
                    r.errors
                );
            }
        }
        Cmd::Failover { clients, before, after, json } => {
            let r = bench::run_failover(&config, clients, before, after).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "killed leader {} (pid {}); new leader {}; first write acknowledged by the new leader \
                     {:.0} ms after the kill; {} writes acknowledged, {} missing",
                    r.killed_leader, r.killed_pid, r.new_leader, r.failover_ms, r.acknowledged, r.missing
                );
            }
            anyhow::ensure!(r.missing == 0, "{} acknowledged writes are missing", r.missing);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("raft-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raft-client: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, role: Role, leader: Option<u64>) -> NodeStatus {
        NodeStatus {
            id,
            address: format!("n{id}"),
            pid: 1,
            role,
            term: 1,
            leader,
            commit: 0,
            applied: 0,
            last_index: 0,
            first_index: 1,
            snapshot_index: 0,
            keys: 0,
            cluster_id: "c".into(),
            cluster_token: 0,
            members_with_data: vec![],
            voters: vec![],
            learners: vec![],
        }
    }

    #[test]
    fn status_succeeds_only_with_an_answer_and_a_known_leader() {
        let down = || Err(ClientError::Server("down".into()));
        let with =
            |rows: Vec<Result<NodeStatus, ClientError>>| -> Vec<(String, Result<NodeStatus, ClientError>)> {
                rows.into_iter().enumerate().map(|(i, r)| (format!("a{i}"), r)).collect()
            };
        assert!(status_verdict(&with(vec![down(), down()])).unwrap_err().contains("no node answered"));
        let refused = Err(ClientError::Refused { addr: "a".into(), reason: "cluster id `x`".into() });
        let e = status_verdict(&with(vec![refused, down()])).unwrap_err();
        assert!(e.contains("check --cluster-id") && e.contains("cluster id `x`"), "{e}");
        let e = status_verdict(&with(vec![Ok(node(1, Role::Follower, None)), down()])).unwrap_err();
        assert!(e.contains("1 of 2 nodes answered but none knows a leader"), "{e}");
        assert!(status_verdict(&with(vec![Ok(node(1, Role::Follower, Some(2))), down()])).is_ok());
        assert!(status_verdict(&with(vec![Ok(node(2, Role::Leader, Some(2)))])).is_ok());
    }
}
