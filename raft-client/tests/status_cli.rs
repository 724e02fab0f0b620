//! `raft-client status` as a script sees it: its exit code and its one
//! sentence when no node answers, or when every node refuses this client's
//! cluster id (said as a refusal, not as "unreachable").

use std::process::Command;
use std::sync::Arc;

use raft_kv::{ClientRequest, ClientResponse, ResponseKind};
use raft_net::transport::{self, ClientProtocol, ListenerConfig, NetCounters, SharedToken};

/// The listener below refuses every hello, so no request ever reaches it;
/// it still serves a protocol, the key-value one.
struct Kv;

impl ClientProtocol for Kv {
    type Request = ClientRequest;
    type Answer = ResponseKind;
    type Response = ClientResponse;
    fn request_id(request: &ClientRequest) -> u64 {
        request.id
    }
    fn response(id: u64, result: ResponseKind) -> ClientResponse {
        ClientResponse { id, result }
    }
    fn answer_bytes(result: &ResponseKind) -> usize {
        result.queued_bytes()
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_raft-client");

fn status(cluster: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["--cluster", cluster, "--timeout-ms", "2000", "status"])
        .env_remove("RAFT_CLUSTER_ID")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn status_fails_when_no_node_answers() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, stdout, stderr) = status(&format!("127.0.0.1:{port}"));
    assert!(!ok, "status must fail when no node answers:\n{stdout}{stderr}");
    assert!(stdout.contains("unreachable"), "{stdout}");
    assert!(stderr.contains("no node answered"), "{stderr}");
}

#[test]
fn status_says_a_cluster_id_refusal_as_such_and_fails() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Arc::new(ListenerConfig {
        node_id: 1,
        cluster_id: "another-cluster".into(),
        peers: transport::SharedPeers::new([]),
        cluster_token: SharedToken::default(),
        limits: Default::default(),
        http: None,
        data_guard: Default::default(),
    });
    let (inbound, _keep) = tokio::sync::mpsc::channel::<transport::Inbound<Kv>>(16);
    runtime.spawn(transport::serve(listener, config, inbound, Arc::new(NetCounters::default())));
    let (ok, stdout, stderr) = status(&addr);
    assert!(!ok, "status must fail when every node refuses:\n{stdout}{stderr}");
    assert!(stdout.contains("refused") && !stdout.contains("unreachable"), "{stdout}");
    assert!(stdout.contains("another-cluster"), "the refusal names the node's cluster id: {stdout}");
    assert!(stderr.contains("check --cluster-id"), "{stderr}");
}
