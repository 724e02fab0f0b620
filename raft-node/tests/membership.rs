//! Membership change of a running cluster, with real processes: a node
//! started with `--join` is added (as a learner, then promoted once caught
//! up) and a dead one removed, while the cluster keeps serving.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use raft_core::{ChangeOp, MembershipChange};
use raft_kv::MemberRole;

/// Starts node `id` with `--join` on `addr`, its data in `c`'s directory.
fn spawn_joining(c: &Cluster, id: NodeId, addr: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(c.dir.path().join(format!("node-{id}.log"))).unwrap();
    Command::new(BIN)
        .args(["run", "--id", &id.to_string(), "--listen", addr, "--join", "--data-dir"])
        .arg(c.dir.path().join(id.to_string()))
        .args(extra)
        .env_remove("RAFT_PEERS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

fn change(ops: Vec<ChangeOp>) -> MembershipChange {
    MembershipChange { ops }
}

/// The operator's walk-through: node 1 dies for good; node 4 is started
/// with `--join`, added as a learner, promoted once caught up (by snapshot:
/// the leader compacted its log long before), and node 1 is removed. No
/// acknowledged write is lost, and the cluster keeps serving.
#[test]
fn a_dead_node_is_replaced_by_a_new_one_while_the_cluster_serves() {
    let rt = runtime();
    let mut c = Cluster::start(3, &["--snapshot-entries", "40"]);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..100 {
            client.put(format!("k{i}").as_bytes(), b"before").await.unwrap();
        }
    });
    c.kill(1);
    let addr4 = format!("127.0.0.1:{}", free_ports(1)[0]);
    let mut node4 = spawn_joining(&c, 4, &addr4, &["--snapshot-entries", "40"]);
    rt.block_on(async {
        let mut client = c.client(Duration::from_secs(10));
        // What `raft-client member add 4 ADDR` does: learner, catch-up, voter.
        client
            .change_members(change(vec![ChangeOp::AddLearner { id: 4, context: addr4.clone().into_bytes() }]))
            .await
            .unwrap_or_else(|e| panic!("adding node 4 as a learner: {e}\n{}", c.logs()));
        let end = Instant::now() + Duration::from_secs(20);
        let caught_up = loop {
            let members = client.members().await.unwrap_or_default();
            if let Some(m) = members.iter().find(|m| m.id == 4 && m.match_index > 0 && m.lag_entries <= 8) {
                break m.clone();
            }
            let log4 = std::fs::read_to_string(c.dir.path().join("node-4.log")).unwrap_or_default();
            assert!(
                Instant::now() < end,
                "node 4 did not catch up: {members:?}\n{}\nnode 4:\n{log4}",
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(caught_up.role, MemberRole::Learner);
        assert_eq!(caught_up.address, addr4);
        client.change_members(change(vec![ChangeOp::PromoteLearner { id: 4 }])).await.unwrap();
        client
            .change_members(change(vec![ChangeOp::Remove { id: 1 }]))
            .await
            .unwrap_or_else(|e| panic!("removing node 1: {e}\n{}", c.logs()));
        let members = client.members().await.unwrap();
        let voters: Vec<NodeId> =
            members.iter().filter(|m| m.role == MemberRole::Voter).map(|m| m.id).collect();
        assert_eq!(voters, vec![2, 3, 4], "{members:?}");
        for i in 100..150 {
            client.put(format!("k{i}").as_bytes(), b"after").await.unwrap();
        }
        for i in 0..150 {
            let want: &[u8] = if i < 100 { b"before" } else { b"after" };
            let got = client.get(format!("k{i}").as_bytes(), false).await.unwrap();
            assert_eq!(got.as_deref(), Some(want), "key k{i}");
        }
        // Node 4 holds everything, and got there by a snapshot.
        let status4 = wait_until("node 4 to apply every write", Duration::from_secs(10), async || {
            let ask = Client::new(ClientConfig::new(&addr4, CLUSTER_ID, Duration::from_secs(2))).ok()?;
            let s = match ask.ask(&addr4, RequestKind::Status).await.ok()? {
                ResponseKind::Status(s) => s,
                _ => return None,
            };
            let leader_commit = leader(&c).await.map(|l| l.commit)?;
            (s.applied >= leader_commit).then_some(s)
        })
        .await;
        assert!(status4.snapshot_index > 0, "node 4 caught up without a snapshot: {status4:?}");
        assert_eq!(status4.keys, 150);
    });
    let _ = node4.kill();
    let _ = node4.wait();
}

/// Issue 10's wiped follower: a voter that lost its data directory may not
/// vote as its old self (it is refused at start), so the way back is
/// remove, then add again as a new member with an empty directory. It
/// catches up (by snapshot) and serves every acknowledged write.
#[test]
fn a_wiped_follower_is_removed_added_back_and_catches_up() {
    let rt = runtime();
    let mut c = Cluster::start(3, &["--snapshot-entries", "40"]);
    let leader_id = rt.block_on(async {
        let leader = wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        for i in 0..80 {
            client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
        }
        leader.id
    });
    let wiped = if leader_id == 3 { 2 } else { 3 };
    c.kill(wiped);
    std::fs::remove_dir_all(c.data_dir(wiped)).unwrap();
    let addr = c.addrs[&wiped].clone();
    let mut again = rt.block_on(async {
        let mut client = c.client(Duration::from_secs(10));
        client.change_members(change(vec![ChangeOp::Remove { id: wiped }])).await.unwrap();
        let again = spawn_joining(&c, wiped, &addr, &["--snapshot-entries", "40"]);
        let context = addr.clone().into_bytes();
        client.change_members(change(vec![ChangeOp::AddLearner { id: wiped, context }])).await.unwrap();
        wait_until("the wiped node to catch up", Duration::from_secs(20), async || {
            let m = client.members().await.ok()?.into_iter().find(|m| m.id == wiped)?;
            (m.match_index > 0 && m.lag_entries <= 8).then_some(())
        })
        .await;
        client.change_members(change(vec![ChangeOp::PromoteLearner { id: wiped }])).await.unwrap();
        client.put(b"after", b"rejoined").await.unwrap();
        again
    });
    rt.block_on(async {
        wait_until("the rejoined node to hold every write", Duration::from_secs(10), async || {
            let mut node = Client::new(ClientConfig::new(&addr, CLUSTER_ID, Duration::from_secs(2))).ok()?;
            let after = node.get(b"after", true).await.ok()??;
            let first = node.get(b"k0", true).await.ok()??;
            let last = node.get(b"k79", true).await.ok()??;
            (after == b"rejoined" && first == b"v" && last == b"v").then_some(())
        })
        .await;
    });
    let _ = again.kill();
    let _ = again.wait();
}

/// A node removed while it was down does not come back by accident: started
/// again on its data directory, it is told by its old peers that it was
/// removed, says so, and exits with status 0; the cluster's leader stays.
#[test]
fn a_removed_node_started_again_says_so_exits_0_and_disturbs_nobody() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    let leader_before = rt.block_on(async {
        let leader = wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let victim = if leader.id == 3 { 2 } else { 3 };
        (leader, victim)
    });
    let (leader_before, victim) = leader_before;
    c.kill(victim);
    rt.block_on(async {
        let mut client = c.client(Duration::from_secs(10));
        client.change_members(change(vec![ChangeOp::Remove { id: victim }])).await.unwrap();
        client.put(b"k", b"v").await.unwrap();
    });
    let mut again = c.command(victim).spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = again.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the removed node did not stop:\n{}", c.log_of(victim));
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = c.log_of(victim);
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(log.contains("was removed from"), "{log}");
    rt.block_on(async {
        let now = leader(&c).await.expect("a leader");
        assert_eq!((now.id, now.term), (leader_before.id, leader_before.term), "the leader was disturbed");
    });
}

/// The leader removes itself under a write load: it leads until its removal
/// commits, then hands over, so a new leader takes over at once (not after
/// an election timeout), writes go on, and no acknowledged write is lost.
#[test]
fn the_leader_removes_itself_under_load_and_a_new_leader_takes_over_at_once() {
    let rt = runtime();
    let c = Cluster::start(3, &[]);
    rt.block_on(async {
        let first = wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (acked, stop) = (acked.clone(), stop.clone());
            let mut client = c.client(Duration::from_secs(10));
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("w{i}");
                    if client.put(key.as_bytes(), b"v").await.is_ok() {
                        acked.lock().unwrap().push(key);
                    }
                    i += 1;
                }
            })
        };
        wait_until("writes", Duration::from_secs(10), async || {
            (acked.lock().unwrap().len() > 50).then_some(())
        })
        .await;
        let mut admin = c.client(Duration::from_secs(10));
        let started = Instant::now();
        admin.change_members(change(vec![ChangeOp::Remove { id: first.id }])).await.unwrap();
        // (The removed leader hands over as its removal commits: no
        // election timeout to wait for.)
        let next = wait_until("a new leader", Duration::from_secs(1), async || {
            let all = statuses(&c).await;
            all.iter().find(|s| s.role == Role::Leader && s.id != first.id).cloned()
        })
        .await;
        let took = started.elapsed();
        eprintln!("removing leader {}: node {} leads after {took:?}", first.id, next.id);
        let before = acked.lock().unwrap().len();
        wait_until("writes after the handover", Duration::from_secs(10), async || {
            (acked.lock().unwrap().len() > before + 50).then_some(())
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.await.unwrap();
        let keys = acked.lock().unwrap().clone();
        let mut reader = c.client(Duration::from_secs(10));
        for key in &keys {
            assert_eq!(reader.get(key.as_bytes(), false).await.unwrap().as_deref(), Some(&b"v"[..]), "{key}");
        }
    });
}

/// After membership changes, every node restarts with the flags it was
/// first started with: the membership comes from the data directories, not
/// from the flags, and the data is all there.
#[test]
fn after_changes_every_node_restarts_with_the_membership_from_disk() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    let addr4 = format!("127.0.0.1:{}", free_ports(1)[0]);
    let mut node4 = spawn_joining(&c, 4, &addr4, &[]);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        client.put(b"k", b"before").await.unwrap();
        let context = addr4.clone().into_bytes();
        client.change_members(change(vec![ChangeOp::AddVoter { id: 4, context }])).await.unwrap();
        client.change_members(change(vec![ChangeOp::Remove { id: 1 }])).await.unwrap();
        client.put(b"k", b"after").await.unwrap();
    });
    for id in [1, 2, 3] {
        c.kill(id);
    }
    let _ = node4.kill();
    let _ = node4.wait();
    // Node 1 was removed: it says so and exits; the others come back.
    c.spawn(2);
    c.spawn(3);
    let mut node4 = spawn_joining(&c, 4, &addr4, &[]);
    rt.block_on(async {
        let mut client = Client::new(ClientConfig::new(
            &format!("{},{},{addr4}", c.addrs[&2], c.addrs[&3]),
            CLUSTER_ID,
            Duration::from_secs(20),
        ))
        .unwrap();
        let members = client.members().await.unwrap();
        let voters: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        assert_eq!(voters, vec![2, 3, 4], "{members:?}");
        assert_eq!(client.get(b"k", false).await.unwrap().as_deref(), Some(&b"after"[..]));
    });
    let _ = node4.kill();
    let _ = node4.wait();
}

/// Takes the next connection to `listener` that stays open after its hello
/// (a link waiting for the answer) and returns who sent it; connections
/// that close right after their hello (a link closed while its connection
/// waited in the listen queue) are skipped.
async fn next_live_dial(listener: &tokio::net::TcpListener) -> NodeId {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = transport::framed(stream);
        let Ok(hello) = transport::recv_frame::<raft_net::wire::Hello>(&mut framed).await else { continue };
        let Sender::Peer(peer) = hello.sender else { continue };
        let next = tokio::time::timeout(
            Duration::from_millis(500),
            transport::recv_frame::<raft_core::Message>(&mut framed),
        )
        .await;
        if next.is_err() {
            return peer; // still open, waiting for the hello's answer
        }
    }
}

/// Links follow the committed configuration: once a member's removal
/// commits, the others close their links to it and never dial its address
/// again (before, their links to a removed member ran for as long as they
/// did, dialing it again every second).
#[test]
fn once_a_removal_commits_no_member_dials_the_removed_address_again() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    let leader_id = rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await.id
    });
    let gone = if leader_id == 3 { 2 } else { 3 };
    c.kill(gone);
    let survivors: Vec<NodeId> = c.addrs.keys().copied().filter(|&id| id != gone).collect();
    rt.block_on(async {
        // In the dead node's place, a listener that reads hellos and
        // answers none: the links to it connect and wait. The leader's
        // link finds its connection gone at its next heartbeat and dials
        // (a follower's link sends nothing, so it may not notice).
        let listener = tokio::net::TcpListener::bind(&c.addrs[&gone]).await.unwrap();
        let mut dialed = std::collections::BTreeSet::new();
        let mut held = Vec::new();
        let control = tokio::time::timeout(Duration::from_secs(15), async {
            while !dialed.contains(&leader_id) {
                let (stream, _) = listener.accept().await.unwrap();
                let mut framed = transport::framed(stream);
                if let Ok(hello) = transport::recv_frame::<raft_net::wire::Hello>(&mut framed).await {
                    if let Sender::Peer(peer) = hello.sender {
                        dialed.insert(peer);
                    }
                }
                held.push(framed);
            }
        })
        .await;
        assert!(
            control.is_ok(),
            "leader {leader_id} did not dial node {gone} while it was a member (dialed: {dialed:?})\n{}",
            c.logs()
        );

        let mut client = c.client(Duration::from_secs(10));
        let index = client.change_members(change(vec![ChangeOp::Remove { id: gone }])).await.unwrap();
        for &id in &survivors {
            wait_until(&format!("node {id} to commit the removal"), Duration::from_secs(10), async || {
                status_of(&c, id).await.filter(|s| s.commit >= index && s.voters == survivors)
            })
            .await;
        }
        // The connections close: a link still running dials again within
        // its backoff cap (1 s, plus jitter).
        drop(held);
        let redial = tokio::time::timeout(Duration::from_secs(4), next_live_dial(&listener)).await;
        assert!(redial.is_err(), "node {:?} dialed removed node {gone} again\n{}", redial.ok(), c.logs());
        for &id in &survivors {
            assert!(
                c.log_of(id).contains(&format!("closed the link to node {gone}")),
                "node {id} did not say it closed its link\n{}",
                c.logs()
            );
        }
    });
}

/// Starts node `id` of `c` with these `raft-node` arguments, its log
/// appended to the node's log file; `c` stops it when dropped.
fn respawn_with(c: &mut Cluster, id: NodeId, args: &[String]) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(c.dir.path().join(format!("node-{id}.log")))
        .unwrap();
    let child = Command::new(BIN)
        .args(args)
        .env_remove("RAFT_PEERS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    c.children.insert(id, child);
}

/// The log lines of node `id` that report a `--peers` disagreeing with the
/// membership stored.
fn disagreement_lines(c: &Cluster, id: NodeId) -> Vec<String> {
    let log = c.log_of(id);
    log.lines().filter(|l| l.contains("using the data directory's")).map(str::to_string).collect()
}

/// Waits until node `id` (at `addr`) runs in the membership `voters`, has
/// applied what the leader committed, and serves `key` = `value` from its
/// own state machine.
async fn wait_until_serving(c: &Cluster, id: NodeId, addr: &str, voters: &[NodeId], key: &str, value: &str) {
    let cluster = c.addrs.values().cloned().collect::<Vec<_>>().join(",");
    wait_until(&format!("node {id} to serve {key}"), Duration::from_secs(20), async || {
        let direct = Client::new(ClientConfig::new(addr, CLUSTER_ID, Duration::from_secs(2))).ok()?;
        let s = match direct.ask(addr, RequestKind::Status).await.ok()? {
            ResponseKind::Status(s) => s,
            _ => return None,
        };
        let all = Client::new(ClientConfig::new(&cluster, CLUSTER_ID, Duration::from_secs(2))).ok()?;
        let leader = all.find_leader().await?.1;
        let mut direct = direct;
        let got = direct.get(key.as_bytes(), true).await.ok()??;
        (s.voters == voters && s.applied >= leader.commit && got == value.as_bytes()).then_some(())
    })
    .await;
}

/// On restart the membership in the data directory wins over `--peers`,
/// and a `--peers` that disagrees with it is reported in one log line, not
/// obeyed and not refused. After node 4 joined and node 1 was removed:
/// node 2, restarted with the `--peers` it was founded with (1 and 3),
/// starts, catches up and serves, and says so once; restarted with an
/// empty `--peers` (a forgotten environment variable), the same, once
/// more; node 3, restarted with the `--peers` of the membership in force,
/// says nothing of the kind.
#[test]
fn a_restart_with_peers_that_disagree_with_the_stored_membership_warns_once_and_serves() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    let addr4 = format!("127.0.0.1:{}", free_ports(1)[0]);
    let node4 = spawn_joining(&c, 4, &addr4, &[]);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let mut client = c.client(Duration::from_secs(10));
        let context = addr4.clone().into_bytes();
        client.change_members(change(vec![ChangeOp::AddVoter { id: 4, context }])).await.unwrap();
        client.change_members(change(vec![ChangeOp::Remove { id: 1 }])).await.unwrap();
    });
    // (Node 1 exits by itself: it was removed.) The cluster is 2, 3, 4;
    // its clients know node 4's address.
    let founding_flags = c.args(2);
    let node_3_flags = c.args(3);
    c.addrs.insert(4, addr4.clone());
    c.children.insert(4, node4);
    assert!(disagreement_lines(&c, 2).is_empty(), "{}", c.log_of(2));

    assert!(founding_flags.join(" ").contains(&format!("1={}", c.addrs[&1])), "{founding_flags:?}");
    for (round, args) in
        [founding_flags.clone(), with_flag(founding_flags, "--peers", "")].into_iter().enumerate()
    {
        c.kill(2);
        let value = format!("while-2-was-down-{round}");
        rt.block_on(async {
            let mut client = c.client(Duration::from_secs(10));
            client.put(b"k", value.as_bytes()).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        });
        respawn_with(&mut c, 2, &args);
        rt.block_on(wait_until_serving(&c, 2, &c.addrs[&2].clone(), &[2, 3, 4], "k", &value));
        assert!(
            c.children.get_mut(&2).unwrap().try_wait().unwrap().is_none(),
            "node 2 exited\n{}",
            c.log_of(2)
        );
        let lines = disagreement_lines(&c, 2);
        assert_eq!(lines.len(), round + 1, "one line per start with a disagreeing --peers:\n{}", c.log_of(2));
        let line = &lines[round];
        // It names both sides: what the flags say, and what is used.
        let (addr2, addr3) = (&c.addrs[&2], &c.addrs[&3]);
        let stored = format!("is 2={addr2},3={addr3},4={addr4} (configuration entry");
        assert!(line.contains(&stored), "{line}");
        let given = if round == 0 {
            format!("members 1={},2={addr2},3={addr3} (this node", c.addrs[&1])
        } else {
            format!("members 2={addr2} (this node")
        };
        assert!(line.contains(&given), "{line}");
    }

    // The --peers of the membership in force: nothing to report.
    c.kill(3);
    let current = format!("2={},4={addr4}", c.addrs[&2]);
    respawn_with(&mut c, 3, &with_flag(node_3_flags, "--peers", &current));
    rt.block_on(async {
        let mut client = c.client(Duration::from_secs(10));
        client.put(b"k", b"after-3-restarted").await.unwrap();
        wait_until_serving(&c, 3, &c.addrs[&3].clone(), &[2, 3, 4], "k", "after-3-restarted").await;
    });
    assert!(disagreement_lines(&c, 3).is_empty(), "{}", c.log_of(3));
}

/// Waits (at most `deadline`) for `child` to exit; returns its status.
fn exit_of(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The voters `raft-client member list --json` names, checking that each
/// row holds at least "id", "address" and "role".
fn voters_listed(run: &CliRun) -> Vec<NodeId> {
    assert!(run.success, "member list failed: {run}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not a JSON array ({e}): {run}"));
    rows.iter()
        .inspect(|r| assert!(r["id"].is_u64() && r["address"].is_string() && r["role"].is_string(), "{r}"))
        .filter(|r| r["role"] == "voter")
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// Issue 12's grow and shrink, through the command line under a write
/// load: a 3-node cluster grows to 5 (nodes 4 and 5 started with `--join`,
/// `raft-client member add` each: learner, caught up, voter), then shrinks
/// back to 3 (`raft-client member remove` of two of the founders, the
/// leader first). The cluster serves writes after every step, a new leader
/// leads at once after the leader's removal, the removed nodes exit with
/// status 0, and every acknowledged write is there at the end, on each of
/// the three members left.
#[test]
fn the_cluster_grows_from_3_to_5_and_shrinks_back_to_3_under_a_write_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    let ports = free_ports(2);
    let joiners: Vec<(NodeId, String)> =
        (4..=5).zip(ports).map(|(id, p)| (id, format!("127.0.0.1:{p}"))).collect();
    for (id, addr) in &joiners {
        let child = spawn_joining(&c, *id, addr, &[]);
        c.addrs.insert(*id, addr.clone());
        c.children.insert(*id, child);
    }
    let cluster = c.addrs.values().cloned().collect::<Vec<_>>().join(",");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let removed = rt.block_on(async {
        let first = wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (acked, stop) = (acked.clone(), stop.clone());
                let mut client =
                    Client::new(ClientConfig::new(&cluster, CLUSTER_ID, Duration::from_secs(10))).unwrap();
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("w{w}-{i}");
                        if client.put(key.as_bytes(), key.as_bytes()).await.is_ok() {
                            acked.lock().unwrap().push(key);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // The cluster serves: 30 more writes acknowledged within 10 s.
        let serving = async |step: &str| {
            let before = acked.lock().unwrap().len();
            wait_until(&format!("writes after {step}"), Duration::from_secs(10), async || {
                (acked.lock().unwrap().len() >= before + 30).then_some(())
            })
            .await;
        };
        serving("the start").await;
        let client_deadline = Duration::from_secs(60);

        for (id, addr) in &joiners {
            let id = id.to_string();
            let run = raft_client(
                &cluster,
                &["member", "add", &id, addr, "--catch-up-timeout", "30s"],
                client_deadline,
            )
            .await;
            assert!(run.success, "member add {id}: {run}\n{}", c.logs());
            assert!(run.stdout.contains(&format!("promoted node {id} to voter")), "{run}");
            serving(&format!("adding node {id}")).await;
        }
        let listed = raft_client(&cluster, &["member", "list", "--json"], client_deadline).await;
        assert_eq!(voters_listed(&listed), vec![1, 2, 3, 4, 5], "{listed}");

        // The leader first (a founder: joiners never campaign before they
        // are voters, and nothing asked it to hand over), then a follower.
        let leader_now = wait_until("a leader", Duration::from_secs(10), async || leader(&c).await).await;
        assert!(leader_now.id <= 3, "a joiner leads: {leader_now:?} (first leader {})", first.id);
        let follower = (1..=3).find(|&id| id != leader_now.id).unwrap();
        let run =
            raft_client(&cluster, &["member", "remove", &leader_now.id.to_string()], client_deadline).await;
        assert!(run.success, "member remove {} (the leader): {run}\n{}", leader_now.id, c.logs());
        let removed_at = Instant::now();
        // (The removed leader hands over as its removal commits: no
        // election timeout to wait for.)
        let next = wait_until("a new leader", Duration::from_secs(1), async || {
            statuses(&c).await.into_iter().find(|s| s.role == Role::Leader && s.id != leader_now.id)
        })
        .await;
        eprintln!(
            "removed leader {}: node {} leads {:?} after `member remove` returned ({:?} in all)",
            leader_now.id,
            next.id,
            removed_at.elapsed(),
            run.took
        );
        serving(&format!("removing leader {}", leader_now.id)).await;
        let run = raft_client(&cluster, &["member", "remove", &follower.to_string()], client_deadline).await;
        assert!(run.success, "member remove {follower}: {run}\n{}", c.logs());
        serving(&format!("removing node {follower}")).await;

        let left: Vec<NodeId> = (1..=5).filter(|&id| id != leader_now.id && id != follower).collect();
        let listed = raft_client(&cluster, &["member", "list", "--json"], client_deadline).await;
        assert_eq!(voters_listed(&listed), left, "{listed}");
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.unwrap();
        }
        (vec![leader_now.id, follower], left)
    });
    let (removed, left) = removed;
    for id in &removed {
        // (Left in `c`, so that it is killed if it runs on and this fails.)
        let status = exit_of(c.children.get_mut(id).unwrap(), Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "removed node {id}: {status:?}\n{}", c.log_of(*id));
        assert!(
            c.log_of(*id).contains("removed from"),
            "node {id} did not say why it stopped\n{}",
            c.log_of(*id)
        );
    }
    let keys = acked.lock().unwrap().clone();
    assert!(keys.len() > 200, "only {} writes were acknowledged", keys.len());
    rt.block_on(async {
        let mut reader =
            Client::new(ClientConfig::new(&cluster, CLUSTER_ID, Duration::from_secs(10))).unwrap();
        for key in &keys {
            let got = reader.get(key.as_bytes(), false).await.unwrap();
            assert_eq!(got.as_deref(), Some(key.as_bytes()), "acknowledged write {key} lost\n{}", c.logs());
        }
        // Every member left holds them all: same applied state, same keys.
        let commit = leader(&c).await.expect("a leader").commit;
        for &id in &left {
            let s = wait_until(
                &format!("node {id} to apply index {commit}"),
                Duration::from_secs(10),
                async || status_of(&c, id).await.filter(|s| s.applied >= commit),
            )
            .await;
            assert!(
                s.keys as usize >= keys.len(),
                "node {id} holds {} keys of {}: {s:?}",
                s.keys,
                keys.len()
            );
        }
    });
}
