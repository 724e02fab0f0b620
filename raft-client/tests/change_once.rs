//! A membership change reaches the leader at most once: when the answer to
//! one is lost, the client says the outcome is unknown instead of sending
//! it again (a second "add 4" or "remove 3" could apply on top of the
//! first). A write, whose session makes a resend harmless, is retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft_client::{Client, ClientConfig, ClientError};
use raft_core::membership::{ChangeOp, MembershipChange};
use raft_kv::{ClientRequest, ClientResponse, RequestKind, ResponseKind};
use raft_net::transport::{self, ClientProtocol, ListenerConfig, NetCounters, SharedToken};

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

/// A node that takes every request in and never answers; returns its
/// address and how many requests of each kind (changes, writes) it got.
async fn silent_node() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Arc::new(ListenerConfig {
        node_id: 1,
        cluster_id: "t".into(),
        peers: transport::SharedPeers::new([]),
        cluster_token: SharedToken::default(),
        limits: Default::default(),
        http: None,
        data_guard: Default::default(),
    });
    let (inbound_tx, mut inbound_rx) = tokio::sync::mpsc::channel::<transport::Inbound<Kv>>(16);
    tokio::spawn(transport::serve(listener, config, inbound_tx, Arc::new(NetCounters::default())));
    let (changes, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, w) = (changes.clone(), writes.clone());
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some(event) = inbound_rx.recv().await {
            if let transport::Inbound::Client { request, reply } = event {
                match request.kind {
                    RequestKind::ChangeMembers(_) => c.fetch_add(1, Ordering::SeqCst),
                    RequestKind::Write(_) => w.fetch_add(1, Ordering::SeqCst),
                    _ => 0,
                };
                // Held, never sent: the answer is lost.
                unanswered.push(reply);
            }
        }
    });
    (addr, changes, writes)
}

#[tokio::test]
async fn a_change_whose_answer_is_lost_is_sent_once_and_said_unknown() {
    let (addr, changes, writes) = silent_node().await;
    // Attempts get a fifth of the deadline: a retrying client would send
    // the change about five times before giving up.
    let config = ClientConfig::new(&addr, "t", Duration::from_millis(2000));
    let mut client = Client::new(config.clone()).unwrap();
    let change = MembershipChange { ops: vec![ChangeOp::Remove { id: 3 }] };
    let err = client.change_members(change).await.unwrap_err();
    let sentence = err.to_string();
    assert!(matches!(err, ClientError::Server(_)), "{err:?}");
    assert!(sentence.contains("unknown"), "the error says the outcome is unknown: {sentence}");
    assert_eq!(changes.load(Ordering::SeqCst), 1, "the change was sent exactly once");

    // The same silent node gets a write several times: it is safe to resend.
    let mut client = Client::new(config).unwrap();
    let err = client.put(b"k", b"v").await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    let sent = writes.load(Ordering::SeqCst);
    assert!(sent >= 2, "a write is retried until its deadline; sent {sent} times");
}
