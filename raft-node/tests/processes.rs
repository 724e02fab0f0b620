//! Real `raft-node` processes on 127.0.0.1: SIGKILL, restart from the data
//! directory, damaged WALs, hostile bytes on the port. Every wait is a
//! condition polled until a deadline.

mod common;

use common::*;

#[test]
fn three_and_five_node_clusters_elect_one_leader_and_serve_writes_through_any_node() {
    for n in [3, 5] {
        let c = Cluster::start(n, &[]);
        runtime().block_on(async {
            let l = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
            let all = statuses(&c).await;
            assert_eq!(all.iter().filter(|s| s.role == Role::Leader && s.term == l.term).count(), 1);
            // A client that knows only one node finds the leader through hints.
            for id in 1..=n {
                let mut client = c.client_of(id);
                let value = format!("from-{id}");
                client.put(b"k", value.as_bytes()).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
                assert_eq!(client.get(b"k", false).await.unwrap(), Some(value.into_bytes()));
            }
        });
    }
}

#[test]
fn leader_sigkill_elects_a_new_leader_and_the_old_one_catches_up_after_restart() {
    let mut c = Cluster::start(3, &[]);
    let rt = runtime();
    let old = rt.block_on(async {
        let l = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..10 {
            client.put(format!("a{i}").as_bytes(), b"1").await.unwrap();
        }
        l
    });
    c.kill(old.id);
    rt.block_on(async {
        let new = wait_until("a new leader", Duration::from_secs(15), async || {
            leader(&c).await.filter(|l| l.id != old.id)
        })
        .await;
        assert!(new.term > old.term);
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..10 {
            client.put(format!("b{i}").as_bytes(), b"2").await.unwrap();
        }
    });
    c.spawn(old.id);
    rt.block_on(async {
        let target = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await.commit;
        wait_until("the old leader to catch up", Duration::from_secs(15), async || {
            status_of(&c, old.id).await.filter(|s| s.applied >= target && s.role == Role::Follower)
        })
        .await;
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..10 {
            assert_eq!(client.get(format!("a{i}").as_bytes(), false).await.unwrap(), Some(b"1".to_vec()));
            assert_eq!(client.get(format!("b{i}").as_bytes(), false).await.unwrap(), Some(b"2".to_vec()));
        }
    });
}

/// A leader that stops answering without dying (SIGSTOP: a long GC pause, a
/// stuck disk): the others elect a new leader and clients move on; when it
/// resumes it learns the newer term, steps down, and catches up. No
/// acknowledged write is lost.
#[test]
fn a_paused_leader_is_replaced_and_steps_down_when_it_resumes() {
    let c = Cluster::start(3, &[]);
    let rt = runtime();
    let old = rt.block_on(async {
        let l = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..5 {
            client.put(format!("a{i}").as_bytes(), b"1").await.unwrap();
        }
        l
    });
    signal(&c, old.id, "-STOP");
    rt.block_on(async {
        let new = wait_until("a new leader", Duration::from_secs(15), async || {
            leader(&c).await.filter(|l| l.id != old.id)
        })
        .await;
        assert!(new.term > old.term);
        // The client knows every node and tries the paused one first; the
        // paused node accepts the connection and never answers. Each write
        // must still succeed within the client's 3 s deadline.
        let mut addrs = vec![c.addrs[&old.id].clone()];
        addrs.extend(c.addrs.iter().filter(|(&id, _)| id != old.id).map(|(_, a)| a.clone()));
        let mut client =
            Client::new(ClientConfig::new(&addrs.join(","), CLUSTER_ID, Duration::from_secs(3))).unwrap();
        for i in 0..10 {
            client.put(format!("b{i}").as_bytes(), b"2").await.unwrap();
        }
    });
    signal(&c, old.id, "-CONT");
    rt.block_on(async {
        let target = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await.commit;
        let back =
            wait_until("the resumed node to follow and catch up", Duration::from_secs(15), async || {
                status_of(&c, old.id).await.filter(|s| s.applied >= target && s.role == Role::Follower)
            })
            .await;
        assert!(back.term > old.term, "it learned the newer term");
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..5 {
            assert_eq!(client.get(format!("a{i}").as_bytes(), false).await.unwrap(), Some(b"1".to_vec()));
        }
        for i in 0..10 {
            assert_eq!(client.get(format!("b{i}").as_bytes(), false).await.unwrap(), Some(b"2".to_vec()));
        }
    });
}

#[test]
fn a_killed_follower_catches_up_by_snapshot_after_the_log_was_compacted() {
    let mut c = Cluster::start(3, &["--snapshot-entries", "10"]);
    let rt = runtime();
    let l = rt
        .block_on(async { wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await });
    let follower = (1..=3).find(|&id| id != l.id).unwrap();
    c.kill(follower);
    rt.block_on(async {
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..60 {
            client.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes()).await.unwrap();
        }
        let l = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        assert!(l.snapshot_index > 0, "the leader compacted its log: {l:?}");
    });
    c.spawn(follower);
    rt.block_on(async {
        let target = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await.commit;
        let s = wait_until("the follower to catch up", Duration::from_secs(15), async || {
            status_of(&c, follower).await.filter(|s| s.applied >= target)
        })
        .await;
        assert!(s.snapshot_index > 0, "caught up through a snapshot: {s:?}");
        assert_eq!(s.keys, 60);
        // The follower's own state answers stale reads: check it directly.
        let mut direct = c.client_of(follower);
        assert_eq!(direct.get(b"k59", true).await.unwrap(), Some(b"v59".to_vec()));
    });
}

#[test]
fn whole_cluster_sigkill_and_restart_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3, &["--snapshot-entries", "25"]);
    let rt = runtime();
    let acked = rt.block_on(async {
        wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        let mut acked = Vec::new();
        for i in 0..40 {
            client.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes()).await.unwrap();
            acked.push(i);
        }
        acked
    });
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    rt.block_on(async {
        wait_until("a leader after restart", Duration::from_secs(15), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        for i in acked {
            let got = client.get(format!("k{i}").as_bytes(), false).await.unwrap();
            assert_eq!(got, Some(format!("v{i}").into_bytes()), "acknowledged write k{i} lost\n{}", c.logs());
        }
    });
}

#[test]
fn a_torn_wal_tail_is_cut_and_the_node_rejoins() {
    let mut c = Cluster::start(3, &[]);
    let rt = runtime();
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..5 {
            client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
        }
    });
    c.kill(3);
    let last = wal_segments(&c.data_dir(3)).pop().unwrap();
    // A crash in the middle of a write: half a record at the end.
    let mut f = std::fs::OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(f);
    c.spawn(3);
    rt.block_on(async {
        let target = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await.commit;
        wait_until("node 3 to rejoin", Duration::from_secs(15), async || {
            status_of(&c, 3).await.filter(|s| s.applied >= target)
        })
        .await;
    });
    let log = std::fs::read_to_string(c.dir.path().join("node-3.log")).unwrap();
    assert!(log.to_lowercase().contains("torn"), "the cut is logged:\n{log}");
}

#[test]
fn a_corrupt_wal_record_before_the_tail_refuses_to_start_naming_file_and_offset() {
    let mut c = Cluster::start(3, &[]);
    let rt = runtime();
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..20 {
            client.put(format!("k{i}").as_bytes(), b"some value").await.unwrap();
        }
        let target = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await.commit;
        wait_until("node 3 to hold everything", Duration::from_secs(15), async || {
            status_of(&c, 3).await.filter(|s| s.applied >= target)
        })
        .await;
    });
    c.kill(3);
    let first = wal_segments(&c.data_dir(3)).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    // Segments are preallocated with zeros: damage the middle of the records
    // written so far, not of the file.
    let written = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let middle = written / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&first, &bytes).unwrap();
    let output = c.command(3).stderr(Stdio::piped()).output().unwrap();
    assert!(!output.status.success(), "a corrupt WAL must stop start-up");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    assert!(stderr.contains(&name), "the error names the file {name}:\n{stderr}");
    assert!(stderr.contains("byte"), "the error names the offset:\n{stderr}");
}

#[test]
fn hostile_bytes_on_the_port_do_not_stop_the_node_from_serving() {
    let c = Cluster::start(1, &[]);
    let addr = c.addrs[&1].clone();
    runtime().block_on(async {
        wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        use tokio::io::AsyncWriteExt;
        // Random bytes.
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
        drop(s);
        // A length prefix of 4 GiB - 1.
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).await.unwrap();
        drop(s);
        // A well-formed hello from another cluster.
        let Err(err) = transport::connect(&addr, "someone-else", Sender::Client).await else {
            panic!("a hello with a foreign cluster id was accepted")
        };
        assert!(err.to_string().contains("cluster id"), "{err}");
        // A hello claiming to be a peer that is not one.
        assert!(transport::connect(&addr, CLUSTER_ID, Sender::Peer(42)).await.is_err());
        // The node still serves.
        let mut client = c.client(Duration::from_secs(10));
        client.put(b"still", b"alive").await.unwrap();
        assert_eq!(client.get(b"still", false).await.unwrap(), Some(b"alive".to_vec()));
    });
}

#[test]
fn a_retried_write_with_the_same_session_and_sequence_is_applied_once() {
    let c = Cluster::start(3, &[]);
    runtime().block_on(async {
        let l = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        let (mut conn, _) = transport::connect(&l.address, CLUSTER_ID, Sender::Client).await.unwrap();
        let mut send = async |id, client_id, value: &str| {
            let command = WireCommand {
                client_id,
                seq: 1,
                op: WriteOp::Put { key: b"x".to_vec(), value: value.as_bytes().to_vec() },
            };
            transport::send_frame(&mut conn, &ClientRequest { id, kind: RequestKind::Write(command) })
                .await
                .unwrap();
            let r: ClientResponse = transport::recv_frame(&mut conn).await.unwrap();
            r.result
        };
        let first = send(1, 1001, "1").await;
        let ResponseKind::Written { index: first_index, result: WriteResult::Done { existed: false } } =
            first
        else {
            panic!("the first write answered {first:?}");
        };
        let other = send(2, 2002, "2").await;
        let ResponseKind::Written { index: other_index, result: WriteResult::Done { existed: true } } = other
        else {
            panic!("the second write answered {other:?}");
        };
        assert!(
            other_index > first_index,
            "the second write is at {other_index}, the first at {first_index}"
        );
        // The retry of client 1001's first write: same answer, no effect.
        let retry = send(3, 1001, "1").await;
        assert_eq!(retry, first);
        let mut client = c.client(Duration::from_secs(10));
        assert_eq!(client.get(b"x", false).await.unwrap(), Some(b"2".to_vec()));
    });
}

#[test]
fn sigterm_stops_a_node_cleanly() {
    let mut c = Cluster::start(1, &[]);
    runtime().block_on(async {
        wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
    });
    let child = c.children.remove(&1).unwrap();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit status {:?}", output.status);
}

#[test]
fn bad_flags_fail_with_one_clear_sentence() {
    let out = Command::new(BIN)
        .args([
            "run",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:1",
            "--peers",
            "2:127.0.0.1:2",
            "--data-dir",
            "/tmp/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ID=HOST:PORT"), "{stderr}");
}

#[test]
fn the_leader_crash_scenario_passes() {
    run_scenario("leader-crash");
}

#[test]
fn the_follower_crash_scenario_passes() {
    run_scenario("follower-crash");
}

#[test]
fn the_load_generator_counts_only_answered_requests_and_ends_when_the_leader_dies() {
    let c = Cluster::start(3, &[]);
    let addrs: Vec<String> = c.addrs.values().cloned().collect();
    let config = ClientConfig::new(&addrs.join(","), CLUSTER_ID, Duration::from_secs(5));
    runtime().block_on(async {
        wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        // W1: every put counted was applied, so the log holds at least that many entries.
        let report = run_load(&config, &load_spec(BenchOp::Put, 8, 2, Duration::from_secs(1))).await.unwrap();
        assert!(report.ops > 0 && report.errors.is_empty(), "{report:?}\n{}", c.logs());
        let l = leader(&c).await.unwrap();
        assert!(l.applied >= report.ops, "counted {} puts, applied {}", report.ops, l.applied);
        // R1 (the key space is filled first).
        let report = run_load(&config, &load_spec(BenchOp::Get, 8, 1, Duration::from_secs(1))).await.unwrap();
        assert!(report.ops > 0 && report.errors.is_empty(), "{report:?}");
        // A leader killed mid-run: the run still ends on time, and reports the failures.
        let pid = l.pid;
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        });
        let started = Instant::now();
        let report = run_load(&config, &load_spec(BenchOp::Put, 8, 2, Duration::from_secs(2))).await.unwrap();
        killer.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(6), "the run hung: {:?}", started.elapsed());
        assert!(!report.errors.is_empty(), "a dead leader must show as errors: {report:?}");
    });
}

/// Mistake 1: node 1 is started on cluster A's data while nodes 2 and 3 hold
/// cluster B's, both bootstrapped with identical flags on the same ports.
/// The cluster tokens differ, so every hello between them is refused naming
/// both tokens; node 1 never takes part, and B loses nothing.
#[test]
fn a_data_directory_of_another_cluster_is_refused_at_the_handshake_and_no_write_is_lost() {
    let rt = runtime();
    let mut a = Cluster::start(3, &[]);
    let token_a = rt.block_on(async {
        let token = wait_for_identity(&a).await;
        write_keys(&a, "only-in-a", 3).await;
        token
    });
    for id in 1..=3 {
        a.kill(id);
    }
    let mut b = Cluster::start_on(a.addrs.clone(), &[]);
    let token_b = rt.block_on(async {
        let token = wait_for_identity(&b).await;
        write_keys(&b, "b", 10).await;
        token
    });
    assert_ne!(token_a, token_b, "two clusters bootstrapped with identical flags have different tokens");
    b.kill(1);
    let (from, to) = (a.data_dir(1), b.data_dir(1));
    std::fs::remove_dir_all(&to).unwrap();
    std::fs::create_dir(&to).unwrap();
    for file in std::fs::read_dir(&from).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
    }
    b.spawn(1);
    rt.block_on(async {
        let (ta, tb) = (format!("{token_a:016x}"), format!("{token_b:016x}"));
        wait_until("the handshake refusal naming both tokens", Duration::from_secs(15), async || {
            let logs: String = (1..=3).map(|id| b.log_of(id)).collect();
            logs.lines()
                .any(|l| l.contains("holds data of another cluster") && l.contains(&ta) && l.contains(&tb))
                .then_some(())
        })
        .await;
        write_keys(&b, "c", 5).await;
        assert_keys(&b, "b", 10).await;
        assert_keys(&b, "c", 5).await;
        let mut client = b.client(Duration::from_secs(10));
        assert_eq!(client.get(b"only-in-a0", false).await.unwrap(), None, "A's data never reaches B");
        let l = wait_until("a leader", Duration::from_secs(15), async || leader(&b).await).await;
        assert_ne!(l.id, 1, "the foreign node never leads");
        let one = status_of(&b, 1).await.expect("node 1 runs and answers status");
        assert_eq!(one.cluster_token, token_a, "node 1 keeps its own cluster's token: {one:?}");
        let mut direct = b.client_of(1);
        assert_eq!(direct.get(b"b0", true).await.unwrap(), None, "node 1 took nothing from B");
        assert_eq!(direct.get(b"only-in-a0", true).await.unwrap(), Some(b"v0".to_vec()));
    });
}

/// Mistakes 1 and 2 at start-up: another --id or another --cluster-id is
/// refused in one sentence naming both values; the right flags restart the
/// node, which catches up with one leader in the cluster and every
/// acknowledged write. (A --peers that disagrees with the stored membership
/// is reported and the stored one used: membership.rs,
/// a_restart_with_peers_that_disagree_with_the_stored_membership_...)
#[test]
fn start_flags_that_disagree_with_the_data_directory_are_refused() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    rt.block_on(async {
        wait_for_identity(&c).await;
        write_keys(&c, "k", 10).await;
    });
    c.kill(1);
    let args = c.args(1);
    let node_2_flags = with_flag(c.args(2), "--listen", &c.addrs[&1]);
    let e = refused_start(&with_flag(node_2_flags, "--data-dir", &c.data_dir(1).to_string_lossy()), &[]);
    assert!(e.contains("belongs to node 1") && e.contains("--id 2"), "{e}");
    let mut other_cluster = args.clone();
    other_cluster.extend(["--cluster-id".to_string(), "other".to_string()]);
    let e = refused_start(&other_cluster, &[]);
    assert!(e.contains("belongs to cluster `raft-lite`") && e.contains("`other`"), "{e}");
    rt.block_on(async {
        write_keys(&c, "while-down", 5).await;
    });
    c.spawn(1);
    rt.block_on(async {
        let l = wait_until("a leader", Duration::from_secs(15), async || leader(&c).await).await;
        wait_until("node 1 to catch up", Duration::from_secs(15), async || {
            status_of(&c, 1).await.filter(|s| s.applied >= l.commit && s.role == Role::Follower)
        })
        .await;
        let all = statuses(&c).await;
        let leaders: Vec<_> = all.iter().filter(|s| s.role == Role::Leader).collect();
        assert_eq!(leaders.len(), 1, "one leader: {all:?}");
        assert_keys(&c, "k", 10).await;
        assert_keys(&c, "while-down", 5).await;
    });
}

/// Mistake 3: a second process on a running node's data directory is
/// refused, naming the running node's pid; the running node goes on.
#[test]
fn a_second_process_on_a_data_directory_is_refused_naming_the_holder() {
    let rt = runtime();
    let c = Cluster::start(3, &[]);
    rt.block_on(async { write_keys(&c, "k", 3).await });
    let port = free_ports(1)[0];
    let e = refused_start(&with_flag(c.args(1), "--listen", &format!("127.0.0.1:{port}")), &[]);
    let pid = c.children[&1].id();
    assert!(e.contains(&format!("in use by another raft-node (pid {pid})")), "{e}");
    rt.block_on(async {
        write_keys(&c, "after", 3).await;
        assert_keys(&c, "k", 3).await;
        assert!(status_of(&c, 1).await.is_some(), "the holder still runs");
    });
}

/// Mistake 4: a voter whose data directory was wiped asks its peers before
/// bootstrapping; they know it held data, so it refuses to start rather
/// than vote as its old self with its vote forgotten.
#[test]
fn a_wiped_member_is_refused_instead_of_rejoining_under_its_old_id() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    let token = rt.block_on(async {
        let token = wait_for_identity(&c).await;
        write_keys(&c, "k", 10).await;
        token
    });
    c.kill(1);
    std::fs::remove_dir_all(c.data_dir(1)).unwrap();
    let e = refused_start(&c.args(1), &[]);
    assert!(
        e.contains("node 1 was already a member of this cluster")
            && e.contains(&format!("{token:016x}"))
            && e.contains("has lost its data"),
        "{e}"
    );
    assert!(!c.data_dir(1).join("identity.json").exists(), "nothing was bootstrapped");
    rt.block_on(async {
        write_keys(&c, "after", 3).await;
        assert_keys(&c, "k", 10).await;
    });
}

/// Mistake 4, with nobody to ask: the whole cluster stopped and node 1
/// comes back first on a wiped data directory. No peer answers its probe,
/// so it bootstraps; but once its peers are up, they know it held data and
/// that it is fresh (it holds no entry from a leader): they answer its
/// hellos `LostData` and send it nothing, and it stops with the error,
/// having taken no part. The other two go on with every write.
#[test]
fn a_wiped_member_that_starts_before_its_peers_is_stopped_once_they_are_up() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    rt.block_on(async {
        wait_for_identity(&c).await;
        write_keys(&c, "k", 10).await;
    });
    for id in 1..=3 {
        c.kill(id);
    }
    std::fs::remove_dir_all(c.data_dir(1)).unwrap();
    // (The node's log file is appended to: only what follows counts.)
    let earlier = c.log_of(1).len();
    let log_since = |c: &Cluster| c.log_of(1)[earlier..].to_string();
    c.spawn(1);
    rt.block_on(async {
        wait_until("node 1 to bootstrap alone", Duration::from_secs(20), async || {
            log_since(&c).contains("bootstrapped").then_some(())
        })
        .await
    });
    c.spawn(2);
    c.spawn(3);
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = c.children.get_mut(&1).unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "node 1 still runs 30 s after its peers came up:\n{}", log_since(&c));
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = log_since(&c);
    assert!(!status.success(), "node 1 exited with success:\n{log}");
    assert!(
        log.contains("node 1 was already a member of this cluster") && log.contains("lost its data"),
        "{log}"
    );
    assert!(!log.contains("granted vote"), "node 1 voted as its old self:\n{log}");
    rt.block_on(async {
        write_keys(&c, "after", 3).await;
        assert_keys(&c, "k", 10).await;
    });
}

/// Mistake 5: the labs' PEERS_JSON (and a RAFT_-prefixed look-alike) set,
/// RAFT_PEERS unset: the unknown RAFT_ variable is reported in one WARN
/// line, and a new data directory with no peers is refused instead of
/// bootstrapping a one-node cluster that elects itself.
#[test]
fn unknown_raft_variables_are_reported_and_an_empty_peer_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1)[0];
    let data_dir = dir.path().join("1").to_string_lossy().into_owned();
    let args: Vec<String> =
        ["run", "--id", "1", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", &data_dir]
            .into_iter()
            .map(str::to_string)
            .collect();
    let peers_json = r#"{"2":"127.0.0.1:8002","3":"127.0.0.1:8003"}"#;
    let e = refused_start(&args, &[("PEERS_JSON", peers_json), ("RAFT_PEERS_JSON", peers_json)]);
    let warn: Vec<&str> = e.lines().filter(|l| l.contains("WARN")).collect();
    assert!(warn.len() == 1 && warn[0].contains("RAFT_PEERS_JSON"), "one WARN line naming it:\n{e}");
    assert!(e.contains("--peers is empty") && e.contains("--single-node"), "{e}");
    assert!(!dir.path().join("1").join("identity.json").exists(), "nothing was bootstrapped");
}

/// A restarted node's state machine knows no token until it has applied the
/// token entry again, and the commit index on disk is only a hint: a node
/// whose identity holds the token while its durable commit index is below
/// the token entry must start, re-apply it, and agree, not take the
/// not-yet-applied state for another cluster's.
#[test]
fn a_node_whose_commit_hint_is_below_the_token_entry_restarts() {
    use raft_core::{Entry, EntryPayload, HardState, PersistBatch};
    use raft_kv::IdentityOp;
    use raft_node::datadir::{Identity, StartFlags};
    use raft_node::storage::{Storage, StorageOptions};

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("1");
    let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let members: BTreeMap<NodeId, String> = [(1, addr.clone())].into();
    let mut identity =
        Identity::bootstrap(&StartFlags { cluster_id: CLUSTER_ID, node_id: 1, members: &members });
    let token = 0xabc_u64;
    identity.set_token(token);
    std::fs::create_dir_all(&data_dir).unwrap();
    identity.save(&data_dir).unwrap();
    {
        let (mut storage, _) = Storage::open(&data_dir, StorageOptions::default()).unwrap();
        let command = WireCommand { client_id: 0, seq: 0, op: WriteOp::Identity(IdentityOp::Token(token)) };
        let entries = vec![
            Entry { term: 1, index: 1, payload: EntryPayload::Blank },
            Entry {
                term: 1,
                index: 2,
                payload: EntryPayload::Command(raft_codec::encode(&command).unwrap()),
            },
        ];
        let hard_state = Some(HardState { term: 1, vote: Some(1), commit: 0 });
        storage.append(&PersistBatch { id: 1, snapshot: None, entries, hard_state }).unwrap();
        storage.sync().unwrap();
    }
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--id", "1", "--listen", &addr, "--data-dir"])
        .arg(&data_dir)
        .env_remove("RAFT_PEERS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let result = runtime().block_on(async {
        let client = Client::new(ClientConfig::new(&addr, CLUSTER_ID, Duration::from_millis(300))).unwrap();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(ResponseKind::Status(s)) = client.ask(&addr, RequestKind::Status).await {
                if s.role == Role::Leader && s.applied >= 3 {
                    break Ok(s);
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("the node exited ({status})"));
            }
            if Instant::now() > end {
                break Err("no leader that applied the token entry within 15 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    let s = result.unwrap_or_else(|e| panic!("{e}:\n{logs}"));
    assert_eq!(s.cluster_token, token, "{s:?}");
}
