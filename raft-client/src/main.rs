//! `raft-client`: talk to a Raft Lite cluster from the command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raft_client::{Client, ClientConfig, DEFAULT_CLUSTER, DEFAULT_CLUSTER_ID};
use raft_net::wire::{parse_text_command, TextCommand, WriteResult};

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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ClientConfig::new(&cli.cluster, &cli.cluster_id, Duration::from_millis(cli.timeout_ms));
    let mut client = Client::new(config)?;
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
        Cmd::Status { json } => {
            let statuses = client.status_all().await;
            if json {
                let rows: Vec<serde_json::Value> = statuses
                    .iter()
                    .map(|(addr, s)| match s {
                        Ok(s) => serde_json::json!({
                            "id": s.id, "address": addr, "pid": s.pid, "role": s.role.to_string(),
                            "term": s.term, "leader": s.leader, "commit": s.commit, "applied": s.applied,
                            "last_index": s.last_index, "first_index": s.first_index,
                            "snapshot_index": s.snapshot_index, "keys": s.keys, "reachable": true,
                        }),
                        Err(e) => {
                            serde_json::json!({ "address": addr, "reachable": false, "error": e.to_string() })
                        }
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<4} {:<21} {:<8} {:<13} {:>6} {:>6} {:>8} {:>8} {:>8}",
                    "ID", "ADDRESS", "PID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST"
                );
                for (addr, s) in statuses {
                    match s {
                        Ok(s) => println!(
                            "{:<4} {:<21} {:<8} {:<13} {:>6} {:>6} {:>8} {:>8} {:>8}",
                            s.id,
                            addr,
                            s.pid,
                            s.role.to_string(),
                            s.term,
                            s.leader.map_or("-".to_string(), |l| l.to_string()),
                            s.commit,
                            s.applied,
                            s.last_index
                        ),
                        Err(e) => println!("{:<4} {:<21} unreachable: {e}", "?", addr),
                    }
                }
            }
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
