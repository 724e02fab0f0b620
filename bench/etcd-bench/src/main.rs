//! `etcd-bench`: the W1 (puts) and R1 (linearizable gets) workloads of
//! BENCH.md against an etcd cluster, with the flags and the output of
//! `raft-client bench`, so that `scripts/bench.sh compare` measures both
//! systems with the same load.
//!
//! - The leader is found among `--endpoints` (etcd's `Status` call names it),
//!   and all the load goes to it, as `raft-client bench` sends its load to
//!   Raft Lite's leader.
//! - `--clients` closed-loop logical clients (one request in flight each)
//!   share `--conns` gRPC connections (HTTP/2, requests multiplexed; default
//!   1, as etcd's own `tools/benchmark`).
//! - Keys are 8 decimal digits drawn uniformly from `--keys`; values are
//!   `--value-size` pseudo-random bytes. Before R1 every key is written once.
//! - Requests completed during the `--warmup` are not counted; latency of
//!   those completed in the `--duration` after it goes into an HdrHistogram.
//!
//! Output: one line `op=put clients=.. conns=.. leader=.. ops=.. ops_per_s=..
//! p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. mean_us=.. errors=..`,
//! or with `--json` one object with the fields of `raft-client bench --json`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use etcd_client::Client;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "etcd-bench", about = "W1/R1 load against etcd's leader, reported as `raft-client bench`")]
struct Args {
    /// etcd client endpoints (host:port, comma-separated); the load goes to whichever is leader.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// Closed-loop logical clients, one request in flight each.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// gRPC connections to the leader the clients share.
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
    /// Operation: put (W1) or get (R1, linearizable: etcd's default read).
    #[arg(long, value_enum, default_value = "put")]
    op: Op,
    /// Give up on one request after this many milliseconds (counted as an error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Put,
    Get,
}

/// The fields of `raft-client bench --json`, in its order.
#[derive(Debug, Serialize)]
struct Report {
    op: Op,
    clients: usize,
    conns: usize,
    leader: String,
    seconds: f64,
    ops: u64,
    ops_per_s: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
    errors: BTreeMap<String, u64>,
}

/// `10s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a duration; write e.g. 10s, 500ms, 2m or 10");
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let n: f64 = s[..split].parse().map_err(|_| bad())?;
    let scale = match &s[split..] {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
}

/// xorshift64: keys and values need speed, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// The same key shape as `raft-client bench`: 8 decimal digits.
fn key(k: u64) -> String {
    format!("{k:08}")
}

/// The client endpoint whose member is the leader, asking each in turn
/// until `deadline`.
async fn find_leader(endpoints: &[String], deadline: Duration) -> anyhow::Result<String> {
    let give_up = Instant::now() + deadline;
    loop {
        let mut last = String::from("no endpoint given");
        for ep in endpoints {
            match Client::connect([ep.as_str()], None).await {
                Ok(mut c) => match c.status().await {
                    Ok(s) => {
                        let me = s.header().map(|h| h.member_id());
                        if s.leader() != 0 && me == Some(s.leader()) {
                            return Ok(ep.clone());
                        }
                        last = format!("{ep} is not the leader");
                    }
                    Err(e) => last = format!("{ep}: {e}"),
                },
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        if Instant::now() > give_up {
            bail!("no etcd leader among {} after {deadline:?} ({last})", endpoints.join(","));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn error_kind(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("grpc_{:?}", s.code()).to_lowercase(),
        etcd_client::Error::TransportError(_) => "transport".into(),
        _ => "other".into(),
    }
}

/// Writes every key once (R1 reads values, as etcd's own read benchmark does
/// after its writes), from 64 writers at a time.
async fn prefill(pool: &[Client], keys: u64, value_size: usize) -> anyhow::Result<()> {
    let writers = 64u64.min(keys);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = pool[w as usize % pool.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x5eed_0000 + w * 2 + 1);
            let mut value = vec![0u8; value_size];
            for k in (w..keys).step_by(writers as usize) {
                rng.fill(&mut value);
                c.put(key(k), value.clone(), None)
                    .await
                    .with_context(|| format!("prefill put {}", key(k)))?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// One closed-loop logical client: a request, its answer, the next request.
async fn run_client(
    mut c: Client,
    id: u64,
    args: &Args,
    measure_from: Instant,
    until: Instant,
) -> ClientResult {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = BTreeMap::new();
    let mut rng = Rng(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut value = vec![0u8; args.value_size];
    let timeout = Duration::from_millis(args.timeout_ms);
    while Instant::now() < until {
        let k = key(rng.next() % args.keys);
        let sent = Instant::now();
        // Ok, or the kind of error it counts as.
        let answer: Result<(), String> = match args.op {
            Op::Put => {
                rng.fill(&mut value);
                match tokio::time::timeout(timeout, c.put(k, value.clone(), None)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(error_kind(&e)),
                    Err(_) => Err("timeout".into()),
                }
            }
            Op::Get => match tokio::time::timeout(timeout, c.get(k, None)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(error_kind(&e)),
                Err(_) => Err("timeout".into()),
            },
        };
        let done = Instant::now();
        if done < measure_from || done > until {
            continue;
        }
        if answer.is_err() {
            // Not a hot loop against a member that refuses everything.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match answer {
            Ok(()) => {
                let us = (done - sent).as_micros().clamp(1, 60_000_000) as u64;
                hist.record(us).expect("within bounds");
            }
            Err(kind) => *errors.entry(kind).or_insert(0) += 1,
        }
    }
    ClientResult { hist, errors }
}

async fn run(args: Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.keys > 0, "--keys must be at least 1");
    let endpoints: Vec<String> =
        args.endpoints.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    let leader = find_leader(&endpoints, Duration::from_secs(10)).await?;
    let conns = args.conns.clamp(1, args.clients);
    let mut pool = Vec::with_capacity(conns);
    for _ in 0..conns {
        pool.push(
            Client::connect([leader.as_str()], None).await.with_context(|| format!("connect {leader}"))?,
        );
    }
    if args.op == Op::Get {
        prefill(&pool, args.keys, args.value_size).await?;
    }
    let args = std::sync::Arc::new(args);
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let until = measure_from + args.duration;
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let c = pool[i % conns].clone();
        let args = args.clone();
        tasks
            .push(tokio::spawn(async move { run_client(c, i as u64 + 1, &args, measure_from, until).await }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = BTreeMap::new();
    for t in tasks {
        let r = t.await?;
        hist.add(&r.hist).expect("same bounds");
        for (k, n) in r.errors {
            *errors.entry(k).or_insert(0) += n;
        }
    }
    let seconds = args.duration.as_secs_f64();
    Ok(Report {
        op: args.op,
        clients: args.clients,
        conns,
        leader,
        seconds,
        ops: hist.len(),
        ops_per_s: hist.len() as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        mean_us: hist.mean(),
        errors,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = args.json;
    let r = run(args).await?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "op={} clients={} conns={} leader={} ops={} ops_per_s={:.0} p50_us={} p90_us={} p99_us={} \
             p999_us={} max_us={} mean_us={:.0} errors={} {:?}",
            if r.op == Op::Put { "put" } else { "get" },
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
            r.errors.values().sum::<u64>(),
            r.errors
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_raft_client_bench_does() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn keys_are_eight_bytes_like_ours() {
        assert_eq!(key(42), "00000042");
        assert_eq!(key(9_999).len(), 8);
    }
}
