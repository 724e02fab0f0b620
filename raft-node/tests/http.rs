//! The HTTP face on the node's own port, against real 3-node clusters: the
//! labs' curl commands, the key-value API, the probes, bad input, and the
//! binary protocol going on beside it on the same port.

mod common;
use common::*;

use serde_json::Value;

/// One HTTP/1.1 request over a fresh connection (`Connection: close`):
/// the status code and the body.
fn http(addr: &str, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = content_type {
        request.push_str(&format!("Content-Type: {t}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    // (A server refusing a large body may close before reading it all.)
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let code = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| {
        panic!("{method} {path}: not an HTTP response: {response:?}");
    });
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn command(addr: &str, cmd: &str) -> (u16, Value) {
    let body = serde_json::to_vec(&serde_json::json!({ "cmd": cmd })).unwrap();
    let (code, body) = http(addr, "POST", "/command", Some("application/json"), &body);
    (code, json(&body))
}

/// A 3-node cluster with a leader; returns it, the leader's id and a follower's.
fn cluster() -> (Cluster, NodeId, NodeId) {
    let c = Cluster::start(3, &[]);
    let leader = runtime().block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await.id
    });
    let follower = if leader == 1 { 2 } else { 1 };
    (c, leader, follower)
}

#[test]
fn every_endpoint_answers_on_the_leader_and_on_a_follower() {
    let (c, leader, follower) = cluster();
    let (lead, follow) = (c.addrs[&leader].clone(), c.addrs[&follower].clone());

    // Commands through a follower: forwarded to the leader.
    let (code, answer) = command(&follow, "SET x=5");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"]["ok"], true, "{answer}");
    // The answer's index is the write's entry, committed, in the log.
    let index = answer["index"].as_u64().unwrap_or_else(|| panic!("no index in {answer}"));
    let (_, body) = http(&lead, "GET", "/status?log=100", None, b"");
    let s = json(&body);
    let entry = s["log"].as_array().unwrap().iter().find(|e| e["index"] == index).cloned();
    let entry = entry.unwrap_or_else(|| panic!("no entry {index} in {s}"));
    assert_eq!((entry["cmd"].as_str(), &entry["committed"]), (Some("SET x=5"), &Value::Bool(true)), "{s}");
    let (code, answer) = command(&follow, "GET x");
    assert_eq!((code, answer["value"].as_str()), (200, Some("5")), "{answer}");
    let read_at = answer["index"].as_u64().unwrap_or_else(|| panic!("no index in {answer}"));
    assert!(read_at >= index, "the read of x is as of {read_at}, before the write at {index}: {answer}");
    let (code, answer) = command(&follow, "DEL x");
    assert_eq!((code, &answer["result"]["existed"]), (200, &Value::Bool(true)), "{answer}");
    let (_, answer) = command(&lead, "GET x");
    assert_eq!(answer["value"], Value::Null, "{answer}");

    // The key-value API.
    for addr in [&lead, &follow] {
        let (code, body) = http(addr, "PUT", "/kv/greeting", None, b"hello world");
        assert_eq!(code, 200, "{body}");
        let (code, body) = http(addr, "GET", "/kv/greeting", None, b"");
        assert_eq!((code, json(&body)["value"].as_str()), (200, Some("hello world")), "{body}");
        let (code, body) = http(addr, "DELETE", "/kv/greeting", None, b"");
        assert_eq!(code, 200, "{body}");
        let (code, body) = http(addr, "GET", "/kv/greeting", None, b"");
        assert_eq!(code, 404, "{body}");
        let (code, body) = http(addr, "DELETE", "/kv/greeting", None, b"");
        assert_eq!(code, 404, "{body}");
    }
    http(&lead, "PUT", "/kv/k", None, b"v");
    runtime().block_on(async {
        wait_until("a stale read on the follower", Duration::from_secs(5), async || {
            let (code, body) = http(&follow, "GET", "/kv/k?stale=true", None, b"");
            (code == 200 && json(&body)["value"] == "v").then_some(())
        })
        .await
    });

    // The status, on both.
    for (id, addr) in [(leader, &lead), (follower, &follow)] {
        let (code, body) = http(addr, "GET", "/status", None, b"");
        assert_eq!(code, 200, "{body}");
        let s = json(&body);
        assert_eq!(s["id"], id, "{s}");
        assert_eq!(s["role"], if id == leader { "leader" } else { "follower" }, "{s}");
        assert_eq!(s["leader"]["id"], leader, "{s}");
        assert_eq!(s["leader"]["address"], lead.as_str(), "{s}");
        assert_eq!(s["membership"]["voters"], serde_json::json!([1, 2, 3]), "{s}");
        assert!(s["term"].as_u64().unwrap() >= 1, "{s}");
        let (commit, applied, last) = (
            s["commit_index"].as_u64().unwrap(),
            s["applied_index"].as_u64().unwrap(),
            s["last_index"].as_u64().unwrap(),
        );
        assert!(applied <= commit && commit <= last, "{s}");
        let log = s["log"].as_array().unwrap();
        assert!(!log.is_empty() && log.len() <= 20, "{s}");
        assert_eq!(log.last().unwrap()["index"].as_u64(), Some(last), "{s}");
        for entry in log {
            assert!(
                entry["term"].is_u64() && entry["committed"].is_boolean() && entry["cmd"].is_string(),
                "{entry}"
            );
        }
        if id == leader {
            let followers = s["followers"].as_array().unwrap();
            assert_eq!(followers.len(), 2, "{s}");
            assert!(
                followers
                    .iter()
                    .all(|f| f["match_index"].is_u64() && f["lag"].is_u64() && f["role"] == "voter"),
                "{s}"
            );
        }
    }
    let (_, body) = http(&lead, "GET", "/status?log=100", None, b"");
    let log = json(&body)["log"].as_array().unwrap().clone();
    assert!(log.iter().any(|e| e["cmd"] == "SET x=5"), "the labs' text form in the log: {log:?}");
    let (_, body) = http(&lead, "GET", "/status?log=3", None, b"");
    assert_eq!(json(&body)["log"].as_array().unwrap().len(), 3);

    // The probes.
    for addr in [&lead, &follow] {
        assert_eq!(http(addr, "GET", "/livez", None, b"").0, 200);
        assert_eq!(http(addr, "GET", "/readyz", None, b""), (200, "ok\n".to_string()));
        let (code, body) = http(addr, "GET", "/health", None, b"");
        assert_eq!((code, json(&body)), (200, serde_json::json!({ "health": "true" })));
    }

    // The binary protocol on the same ports goes on.
    runtime().block_on(async {
        let mut client = c.client(Duration::from_secs(5));
        client.put(b"binary", b"still").await.unwrap();
        assert_eq!(client.get(b"binary", false).await.unwrap().as_deref(), Some(&b"still"[..]));
    });
    let (_, body) = http(&follow, "GET", "/kv/binary", None, b"");
    assert_eq!(json(&body)["value"], "still");
}

/// A request that must be refused: method, path, content type, body and
/// the status expected.
type BadRequest = (&'static str, &'static str, Option<&'static str>, Vec<u8>, u16);

#[test]
fn bad_http_input_gets_a_status_and_a_sentence_and_the_node_serves_on() {
    let (c, leader, _) = cluster();
    let addr = c.addrs[&leader].clone();
    let cases: [BadRequest; 6] = [
        ("POST", "/command", Some("application/json"), b"{\"cmd\": ".to_vec(), 400),
        ("POST", "/command", Some("application/json"), b"{\"cmd\": \"FLY x\"}".to_vec(), 400),
        ("POST", "/command", None, b"{\"cmd\": \"SET x=1\"}".to_vec(), 415),
        ("POST", "/command", Some("application/json"), vec![b'a'; 10 << 20], 413),
        ("GET", "/no/such/thing", None, Vec::new(), 404),
        ("DELETE", "/status", None, Vec::new(), 405),
    ];
    for (method, path, content_type, body, expected) in cases {
        let (code, answer) = http(&addr, method, path, content_type, &body);
        assert_eq!(code, expected, "{method} {path}: {answer}");
        let sentence = json(&answer)["error"].as_str().map(str::to_string);
        assert!(sentence.is_some_and(|s| s.len() > 10), "{method} {path}: no sentence in {answer}");
    }
    // Garbage that is neither HTTP nor a frame is dropped; a slow client
    // that sends half a request line holds only its own connection.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /sta").unwrap();
    let mut junk = std::net::TcpStream::connect(&addr).unwrap();
    junk.write_all(&[0xff; 64]).unwrap();
    let started = Instant::now();
    assert_eq!(http(&addr, "GET", "/livez", None, b"").0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served behind a slow client: {:?}",
        started.elapsed()
    );
    let (code, answer) = command(&addr, "SET after=bad");
    assert_eq!(code, 200, "{answer}");
    runtime().block_on(async {
        let mut client = c.client(Duration::from_secs(5));
        assert_eq!(client.get(b"after", false).await.unwrap().as_deref(), Some(&b"bad"[..]));
    });
    // The slow client is cut off once its headers are late (10 s), not
    // held forever.
    use std::io::Read;
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    assert!(read.is_ok(), "the slow connection is still open after {:?}: {read:?}", started.elapsed());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "the slow connection was closed only after {took:?}");
    drop(junk);
}

#[test]
fn metrics_listen_serves_the_probes_and_metrics_alone_and_a_taken_port_is_refused() {
    let port = free_ports(1)[0];
    let probes = format!("127.0.0.1:{port}");
    let c = Cluster::start(1, &["--metrics-listen", &probes]);
    runtime().block_on(async {
        wait_until("the node to be ready on --metrics-listen", Duration::from_secs(20), async || {
            let up = std::net::TcpStream::connect(&probes).is_ok();
            (up && http(&probes, "GET", "/readyz", None, b"").0 == 200).then_some(())
        })
        .await
    });
    assert_eq!(scrape(&probes)["raftlite_is_leader"], 1.0, "a node of one leads");
    assert_eq!(http(&probes, "GET", "/livez", None, b"").0, 200);
    let (code, body) = http(&probes, "GET", "/health", None, b"");
    assert_eq!((code, json(&body)["health"].as_str()), (200, Some("true")), "{body}");
    // Only the probes and metrics: the rest stays on the node's port.
    let (code, body) = http(&probes, "GET", "/status", None, b"");
    assert_eq!(code, 404, "{body}");
    assert!(json(&body)["error"].as_str().is_some_and(|e| e.contains("/metrics")), "{body}");
    assert_eq!(http(&probes, "POST", "/metrics", None, b"").0, 405);
    assert_eq!(http(&c.addrs[&1], "GET", "/status", None, b"").0, 200);
    // A second node asked to serve metrics on the taken port says so.
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_ports(1)[0]);
    let data_dir = dir.path().join("d").to_string_lossy().into_owned();
    let args: Vec<String> =
        ["run", "--id", "1", "--single-node", "--listen", &listen, "--data-dir", &data_dir]
            .into_iter()
            .chain(["--metrics-listen", &probes])
            .map(str::to_string)
            .collect();
    let stderr = refused_start(&args, &[]);
    assert!(stderr.contains("--metrics-listen") && stderr.contains(&probes), "{stderr}");
}

#[test]
fn readyz_turns_503_on_a_node_cut_off_and_200_again_after_healing() {
    let (c, leader, follower) = cluster();
    let alone = follower;
    let others: Vec<NodeId> = (1..=3).filter(|&id| id != alone).collect();
    assert!(others.contains(&leader));
    for &id in &others {
        signal(&c, id, "-STOP");
    }
    let addr = c.addrs[&alone].clone();
    runtime().block_on(async {
        wait_until("the cut-off node to say it is not ready", Duration::from_secs(20), async || {
            let (code, body) = http(&addr, "GET", "/readyz", None, b"");
            (code == 503 && body.contains("knows no leader")).then_some(())
        })
        .await
    });
    let (code, body) = http(&addr, "GET", "/health", None, b"");
    assert_eq!((code, json(&body)["health"].as_str()), (503, Some("false")), "{body}");
    assert_eq!(http(&addr, "GET", "/livez", None, b"").0, 200, "the process still answers");
    for &id in &others {
        signal(&c, id, "-CONT");
    }
    runtime().block_on(async {
        wait_until("the node to be ready again", Duration::from_secs(20), async || {
            (http(&addr, "GET", "/readyz", None, b"").0 == 200).then_some(())
        })
        .await
    });
}

/// The course labs' commands, exactly as they are written, with curl.
#[test]
fn the_labs_curl_commands_work_as_written() {
    let (c, _, follower) = cluster();
    let host_port = &c.addrs[&follower];
    let curl = |args: &[&str]| {
        let out = Command::new("curl").args(["-s", "-S", "--max-time", "20"]).args(args).output();
        let out = out.expect("curl runs (scripts/test.sh installs it)");
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let status = json(&curl(&[&format!("http://{host_port}/status")]));
    for field in ["role", "term", "log", "commit_index"] {
        assert!(!status[field].is_null(), "no {field} in {status}");
    }
    let answer = json(&curl(&[
        "-X",
        "POST",
        &format!("http://{host_port}/command"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"cmd":"SET x=5"}"#,
    ]));
    assert_eq!(answer["result"]["ok"], true, "{answer}");
    assert!(answer["index"].as_u64().is_some_and(|i| i > 0), "no index in {answer}");
    runtime().block_on(async {
        let mut client = c.client(Duration::from_secs(5));
        assert_eq!(client.get(b"x", false).await.unwrap().as_deref(), Some(&b"5"[..]));
    });
}

/// One scrape of `/metrics`, parsed by a Prometheus text parser: each
/// sample's value by name.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (code, body) = http(addr, "GET", "/metrics", None, b"");
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed =
        prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("does not parse ({e}): {body}"));
    let mut values = BTreeMap::new();
    for sample in parsed.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let mut labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        labels.sort();
        let key = match labels.is_empty() {
            true => sample.metric,
            false => format!("{}{{{}}}", sample.metric, labels.join(",")),
        };
        values.insert(key, value);
    }
    values
}

#[test]
fn metrics_parse_and_move_with_the_load_and_the_leader_changes() {
    let (mut c, leader, follower) = cluster();
    let before = scrape(&c.addrs[&follower]);
    for name in [
        "raftlite_has_leader",
        "raftlite_is_leader",
        "raftlite_term",
        "raftlite_commit_index",
        "raftlite_applied_index",
        "raftlite_leader_changes_seen_total",
        "raftlite_wal_fsync_duration_seconds",
        "raftlite_wal_write_bytes_total",
        "raftlite_snapshot_save_total",
        "raftlite_process_resident_memory_bytes",
        "raftlite_process_open_fds",
        "raftlite_proposals_committed_total",
        "raftlite_proposals_applied_total",
        "raftlite_proposals_failed_total",
        "raftlite_connections_refused_total",
        "raftlite_peer_messages_dropped_total",
    ] {
        assert!(before.contains_key(name), "no {name} in {before:?}");
    }
    assert_eq!(before["raftlite_has_leader"], 1.0);
    assert_eq!(before["raftlite_is_leader"], 0.0);
    assert_eq!(scrape(&c.addrs[&leader])["raftlite_is_leader"], 1.0);
    assert!(before["raftlite_process_resident_memory_bytes"] > 1e6, "{before:?}");
    let lead_before = scrape(&c.addrs[&leader]);
    let writes = 50;
    runtime().block_on(async {
        let mut client = c.client(Duration::from_secs(5));
        for i in 0..writes {
            client.put(format!("m{i}").as_bytes(), &[7u8; 1000]).await.unwrap();
        }
    });
    let after = runtime().block_on(async {
        wait_until("the follower to apply the writes", Duration::from_secs(10), async || {
            let after = scrape(&c.addrs[&follower]);
            (after["raftlite_applied_index"] >= before["raftlite_applied_index"] + writes as f64)
                .then_some(after)
        })
        .await
    });
    let grown = after["raftlite_wal_write_bytes_total"] - before["raftlite_wal_write_bytes_total"];
    assert!(grown >= (writes * 1000) as f64, "the WAL wrote {grown} bytes for {writes} writes of 1000 bytes");
    assert!(after["raftlite_wal_fsync_duration_seconds"] > before["raftlite_wal_fsync_duration_seconds"]);
    for name in ["raftlite_proposals_committed_total", "raftlite_proposals_applied_total"] {
        let grown = after[name] - before[name];
        assert!(grown >= writes as f64, "{name} grew by {grown} for {writes} writes");
    }
    let on_leader = scrape(&c.addrs[&leader]);
    let grown = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>, name: &str| {
        now.get(name).copied().unwrap_or_else(|| panic!("no {name} in {now:?}"))
            - then.get(name).copied().unwrap_or(0.0)
    };
    let sent =
        grown(&on_leader, &lead_before, &format!("raftlite_peer_sent_bytes_total{{peer=\"{follower}\"}}"));
    assert!(sent >= (writes * 1000) as f64, "the leader sent {sent} bytes to {follower} for {writes} writes");
    let received =
        grown(&after, &before, &format!("raftlite_peer_received_bytes_total{{peer=\"{leader}\"}}"));
    assert!(received >= (writes * 1000) as f64, "{follower} received {received} bytes from the leader");
    assert_eq!(on_leader["raftlite_proposals_failed_total"], 0.0, "{on_leader:?}");
    let ok_writes = r#"raftlite_client_requests_total{op="write",result="ok"}"#;
    assert!(
        on_leader[ok_writes] >= writes as f64,
        "{ok_writes} is {} after {writes} writes",
        on_leader[ok_writes]
    );
    assert_eq!(
        on_leader.get(r#"raftlite_client_requests_total{op="write",result="not_leader"}"#),
        Some(&0.0)
    );
    assert!(
        on_leader.contains_key(&format!("raftlite_follower_lag_entries{{peer=\"{follower}\"}}")),
        "{on_leader:?}"
    );
    assert!(!after.keys().any(|k| k.starts_with("raftlite_follower_lag")), "a follower shows follower lag");
    assert!(on_leader.contains_key("raftlite_proposals_pending"));
    // The leader dies: a survivor sees another leader, and its link to the
    // dead one fails.
    c.kill(leader);
    let link_failures = format!("raftlite_peer_sent_failures_total{{peer=\"{leader}\"}}");
    runtime().block_on(async {
        wait_until("the follower to see a leader change", Duration::from_secs(20), async || {
            let now = scrape(&c.addrs[&follower]);
            (now["raftlite_leader_changes_seen_total"] > after["raftlite_leader_changes_seen_total"]
                && now["raftlite_has_leader"] == 1.0
                && now[&link_failures] > after[&link_failures])
                .then_some(())
        })
        .await
    });
}
