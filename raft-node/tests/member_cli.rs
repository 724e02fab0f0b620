//! `raft-client member ...` as an operator or a script sees it: the real
//! `raft-client` binary against a real cluster of `raft-node` processes.
//! `member list --json` is a JSON array of members; every refusal is one
//! sentence on stderr with a non-zero exit, and the membership is left as
//! it was.

mod common;

use common::*;

/// Starts node `id` with `--join` on `addr`, its log beside the cluster's.
fn spawn_joining(c: &mut Cluster, id: NodeId, addr: &str) {
    let log = std::fs::File::create(c.dir.path().join(format!("node-{id}.log"))).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--id", &id.to_string(), "--listen", addr, "--join", "--data-dir"])
        .arg(c.dir.path().join(id.to_string()))
        .args(&c.extra)
        .env_remove("RAFT_PEERS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    c.addrs.insert(id, addr.to_string());
    c.children.insert(id, child);
}

fn cluster_arg(c: &Cluster) -> String {
    c.addrs.values().cloned().collect::<Vec<_>>().join(",")
}

/// `raft-client --cluster <c's nodes> ARGS...`, within 60 s.
async fn cli(c: &Cluster, args: &[&str]) -> CliRun {
    raft_client(&cluster_arg(c), args, Duration::from_secs(60)).await
}

/// `member list --json`, parsed: (id, address, role) of every member.
async fn members(c: &Cluster) -> Vec<(NodeId, String, String)> {
    let run = cli(c, &["member", "list", "--json"]).await;
    assert!(run.success, "member list --json: {run}");
    let rows: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run}"));
    let rows = rows.as_array().unwrap_or_else(|| panic!("not a JSON array: {run}"));
    rows.iter()
        .map(|r| {
            let id = r["id"].as_u64().unwrap_or_else(|| panic!("no numeric \"id\" in {r}"));
            let address = r["address"].as_str().unwrap_or_else(|| panic!("no \"address\" in {r}"));
            let role = r["role"].as_str().unwrap_or_else(|| panic!("no \"role\" in {r}"));
            (id, address.to_string(), role.to_string())
        })
        .collect()
}

/// The run failed with one sentence on stderr (no panic, no debug dump)
/// containing `says`.
fn assert_refused(run: &CliRun, says: &str) {
    assert!(!run.success && run.code == Some(1), "expected exit status 1: {run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {run}");
    let line = lines[0];
    assert!(line.starts_with("raft-client: "), "{run}");
    assert!(line.contains(says), "expected the sentence to say `{says}`: {run}");
    for noise in ["panicked", "Error {", "Err(", "Invalid(", "Server(", "\\n"] {
        assert!(!line.contains(noise), "not a sentence (`{noise}`): {run}");
    }
}

/// `member list --json` is a JSON array of objects with "id", "address"
/// and "role" (and the match index and lag); a learner added with
/// `member add --learner` is listed as one, at its address, and `status`
/// shows the membership with it.
#[test]
fn member_list_json_is_an_array_of_members_with_id_address_and_role() {
    let rt = runtime();
    let mut c = Cluster::start(3, &[]);
    let addr4 = format!("127.0.0.1:{}", free_ports(1)[0]);
    spawn_joining(&mut c, 4, &addr4);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let want: Vec<(NodeId, String, String)> =
            (1..=3).map(|id| (id, c.addrs[&id].clone(), "voter".to_string())).collect();
        assert_eq!(members(&c).await, want);

        let run = cli(&c, &["member", "add", "4", &addr4, "--learner"]).await;
        assert!(run.success, "member add 4 --learner: {run}\n{}", c.logs());
        assert!(run.stdout.contains(&format!("added node 4 at {addr4} as a learner")), "{run}");
        let listed = members(&c).await;
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert_eq!(listed[3], (4, addr4.clone(), "learner".to_string()), "{listed:?}");
        let run = cli(&c, &["member", "list", "--json"]).await;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
        for row in &rows {
            assert!(row["match_index"].is_u64() && row["lag_entries"].is_u64(), "{row}");
        }
        // The table says the same, and so does `status`.
        let run = cli(&c, &["member", "list"]).await;
        assert!(run.success, "{run}");
        let row4 = run.stdout.lines().find(|l| l.starts_with("4 ")).unwrap_or_else(|| panic!("{run}"));
        assert!(row4.contains(&addr4) && row4.contains("learner"), "{run}");
        let run = cli(&c, &["status"]).await;
        assert!(run.success, "{run}");
        assert!(run.stdout.contains("voters [1, 2, 3], learners [4]"), "{run}");
    });
}

/// Adding an id that is already a member (voter or learner) is refused in
/// one sentence that says what to do instead, and changes nothing.
#[test]
fn member_add_of_an_existing_id_is_refused_in_one_sentence() {
    let rt = runtime();
    let c = Cluster::start(3, &[]);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let before = members(&c).await;
        let other = format!("127.0.0.1:{}", free_ports(1)[0]);
        for (args, says) in [
            (vec!["member", "add", "2", &other], "node 2 is already a member"),
            (vec!["member", "add", "3", &c.addrs[&3], "--learner"], "node 3 is already a member"),
        ] {
            let run = cli(&c, &args).await;
            assert_refused(&run, says);
            assert!(run.stderr.contains("member promote"), "it says what to do: {run}");
        }
        let run = cli(&c, &["member", "promote", "2"]).await;
        assert_refused(&run, "cannot promote node 2: node 2 is a voter");
        assert_eq!(members(&c).await, before, "a refused change changed the membership");
    });
}

/// The last voter of a cluster cannot be removed: refused in one sentence,
/// and the one-node cluster goes on serving.
#[test]
fn removing_the_last_voter_is_refused_in_one_sentence() {
    let rt = runtime();
    let c = Cluster::start(1, &[]);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let run = cli(&c, &["member", "remove", "1"]).await;
        assert_refused(&run, "node 1 is the cluster's last voter");
        assert!(run.stderr.contains("add another voter first"), "it says what to do: {run}");
        let run = cli(&c, &["set", "k", "v"]).await;
        assert!(run.success, "the node no longer serves: {run}");
        assert_eq!(members(&c).await, vec![(1, c.addrs[&1].clone(), "voter".to_string())]);
    });
}

/// `member add` of an address where nothing runs ends within its
/// `--catch-up-timeout` with a sentence and a non-zero exit; the learner
/// that never caught up is reported, not promoted (it stays a learner,
/// as the sentence says), and can be removed.
#[test]
fn member_add_of_an_unreachable_address_reports_the_learner_and_does_not_promote_it() {
    let rt = runtime();
    let c = Cluster::start(3, &[]);
    // A port nothing listens on.
    let closed = format!("127.0.0.1:{}", free_ports(1)[0]);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(20), async || leader(&c).await).await;
        let run = cli(&c, &["member", "add", "9", &closed, "--catch-up-timeout", "2s"]).await;
        assert_refused(&run, "node 9 did not catch up within 2s");
        assert!(
            run.stderr.contains("it has received nothing") && run.stderr.contains("stays a learner"),
            "{run}"
        );
        assert!(run.stderr.contains(&closed), "it names the address: {run}");
        assert!(run.took < Duration::from_secs(15), "it took {:?}, past its deadline: {run}", run.took);
        let listed = members(&c).await;
        assert!(listed.contains(&(9, closed.clone(), "learner".to_string())), "{listed:?}");
        assert_eq!(listed.iter().filter(|m| m.2 == "voter").count(), 3, "{listed:?}");
        let run = cli(&c, &["member", "remove", "9"]).await;
        assert!(run.success, "member remove 9: {run}");
        assert!(members(&c).await.iter().all(|m| m.0 != 9));
        let run = cli(&c, &["set", "k", "v"]).await;
        assert!(run.success, "{run}");
    });
}

/// A change while another is pending is refused in one sentence. The
/// first change is held pending by stopping both followers (SIGSTOP) of a
/// cluster whose election timeout is long enough that the leader keeps
/// leading meanwhile; the second is refused while the first waits; once
/// the followers resume, the first commits.
#[test]
fn a_change_while_another_is_pending_is_refused_in_one_sentence() {
    let rt = runtime();
    let c = Cluster::start(3, &["--election-timeout-ms", "5000"]);
    rt.block_on(async {
        wait_until("a leader", Duration::from_secs(30), async || leader(&c).await).await;
        // A write committed: the leader has committed in its term (a
        // change waits for that) and leads for its election timeout, at
        // least, once it hears from no one.
        let run = cli(&c, &["set", "k", "v"]).await;
        assert!(run.success, "{run}");
        let l = leader(&c).await.expect("the leader that committed the write");
        let followers: Vec<NodeId> = (1..=3).filter(|&id| id != l.id).collect();
        for &id in &followers {
            signal(&c, id, "-STOP");
        }
        let (a8, a9) = (format!("127.0.0.1:{}", free_ports(1)[0]), format!("127.0.0.1:{}", free_ports(1)[0]));
        let leader_only = c.addrs[&l.id].clone();
        let first = tokio::spawn({
            let leader_only = leader_only.clone();
            async move {
                let args = ["--timeout-ms", "20000", "member", "add", "8", &a8, "--learner"];
                raft_client(&leader_only, &args, Duration::from_secs(60)).await
            }
        });
        // The first change is in the leader's log, not committed.
        wait_until("the first change in the leader's log", Duration::from_secs(3), async || {
            assert!(!first.is_finished(), "the first change ended while the followers were stopped");
            status_of(&c, l.id).await.filter(|s| s.last_index > s.commit && s.role == Role::Leader)
        })
        .await;
        let second =
            raft_client(&leader_only, &["member", "add", "9", &a9, "--learner"], Duration::from_secs(60))
                .await;
        for &id in &followers {
            signal(&c, id, "-CONT");
        }
        assert_refused(&second, "cannot add node 9 as a learner: the membership change at index");
        assert!(second.stderr.contains("one change at a time"), "{second}");
        let first = first.await.unwrap();
        assert!(first.success, "the first change, once the followers resumed: {first}");
        let listed = members(&c).await;
        assert!(listed.iter().any(|m| m.0 == 8) && listed.iter().all(|m| m.0 != 9), "{listed:?}");
    });
}
