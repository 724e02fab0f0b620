//! The HTTP face of a node, on its own port: the course labs' curl
//! commands (`GET /status`, `POST /command`), a key-value API (`/kv/KEY`)
//! health probes (`/livez`, `/readyz`, `/health`) and Prometheus metrics
//! (`/metrics`, see [`crate::metrics`]).
//!
//! The listener tells an HTTP connection from the binary protocol by its
//! first bytes ([`raft_net::transport::looks_like_http`]) and hands it here.
//! Every request becomes a [`RequestKind`] for the node's event loop, the
//! same the binary protocol carries; a follower forwards what only the
//! leader answers (writes, linearizable reads) to the leader over the binary
//! protocol. Bad input gets a status code and one sentence, never a panic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raft_core::NodeId;
use raft_kv::{
    parse_text_command, ClientRequest, ClientResponse, Command, MemberRole, NodeStatus, RequestKind,
    ResponseKind, TextCommand, WriteOp, WriteResult,
};
use raft_net::transport;
use raft_net::wire::Sender;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::metrics::Metrics;

/// A request from the HTTP side for the node's event loop.
#[derive(Debug)]
pub(crate) struct HttpCall {
    /// What is asked.
    pub(crate) kind: RequestKind,
    /// Where the answer goes.
    pub(crate) reply: oneshot::Sender<ResponseKind>,
}

/// How many HTTP requests may wait for the event loop at once; past that
/// a request gets 503.
pub(crate) const HTTP_CALLS_MAX: usize = 1024;

/// The largest request body taken (a command or a value, with room for
/// JSON's quoting); a larger one gets 413.
const BODY_BYTES_MAX: usize = 2 << 20;

/// How long one request may take, forwarding included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Entries `/status` shows by default, and at most.
const STATUS_LOG_DEFAULT: u64 = 20;
const STATUS_LOG_MAX: u64 = 1000;

/// `/readyz` says ready while the node has applied up to this many entries
/// short of its commit index.
const READY_APPLY_LAG_MAX: u64 = 1000;

/// What every handler shares.
struct Ctx {
    node_id: NodeId,
    cluster_id: String,
    calls: mpsc::Sender<HttpCall>,
    /// Client sessions for HTTP writes: one per request (a fresh id, seq 1).
    next_client: AtomicU64,
    metrics: Arc<Metrics>,
}

/// A failed request: its status and one sentence.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Answer<T> = Result<T, Problem>;

/// Builds what the listener calls for each HTTP connection: it serves the
/// connection with HTTP/1.1 (keep-alive) until the client closes it.
pub(crate) fn handoff(faces: &HttpFaces) -> transport::HttpHandoff {
    let node_id = faces.0.node_id;
    let app = router(faces.0.clone());
    transport::HttpHandoff(Arc::new(move |stream: TcpStream, addr: SocketAddr| {
        let app = app.clone();
        Box::pin(async move {
            let _ = stream.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(node = node_id, %addr, error = %e, "HTTP connection ended");
            }
        })
    }))
}

/// What the HTTP handlers of one node share: made once, served on the
/// node's port ([`handoff`]) and on `--metrics-listen` ([`serve_probes`]).
#[derive(Clone)]
pub(crate) struct HttpFaces(Arc<Ctx>);

impl HttpFaces {
    /// The handlers' state: they ask the event loop through `calls`; HTTP
    /// writes take client sessions from `first_client_id` on.
    pub(crate) fn new(
        node_id: NodeId,
        cluster_id: String,
        calls: mpsc::Sender<HttpCall>,
        first_client_id: u64,
        metrics: Arc<Metrics>,
    ) -> HttpFaces {
        let next_client = AtomicU64::new(first_client_id);
        HttpFaces(Arc::new(Ctx { node_id, cluster_id, calls, next_client, metrics }))
    }
}

/// Serves `GET /metrics`, `/livez`, `/readyz` and `/health` alone, in
/// plain HTTP, on `listener` (`--metrics-listen`, as etcd's
/// `--listen-metrics-urls`: for scrapers and probes kept off the client
/// port), until the task is dropped.
pub(crate) async fn serve_probes(listener: tokio::net::TcpListener, faces: &HttpFaces) {
    let ctx = faces.0.clone();
    let app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .fallback(|uri: Uri| async move {
            Problem(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint {} here: this port serves GET /metrics, /livez, /readyz and /health",
                    uri.path()
                ),
            )
        })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ctx.clone());
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(node = ctx.node_id, error = %e, "the metrics listener stopped");
    }
}

fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/command", post(command))
        .route("/kv/{key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(ctx)
}

async fn not_found(uri: Uri) -> Problem {
    Problem(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint {}: use GET /status, POST /command, GET|PUT|DELETE /kv/KEY, GET /metrics, /livez, \
             /readyz or /health",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not served at {}", uri.path()))
}

impl Ctx {
    /// Asks this node's event loop.
    async fn ask(&self, kind: RequestKind) -> Answer<ResponseKind> {
        let (reply, answer) = oneshot::channel();
        self.calls.try_send(HttpCall { kind, reply }).map_err(|_| {
            Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is busy (too many HTTP requests waiting); retry".into(),
            )
        })?;
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Problem(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping".into())),
            Err(_) => Err(Problem(StatusCode::GATEWAY_TIMEOUT, "the node did not answer in time".into())),
        }
    }

    /// Asks this node, and the leader if this node is not it.
    async fn ask_leader(&self, kind: RequestKind) -> Answer<ResponseKind> {
        match self.ask(kind.clone()).await? {
            ResponseKind::NotLeader { leader: Some((leader, address)) } if leader != self.node_id => {
                forward(&address, &self.cluster_id, kind).await.map_err(|e| {
                    Problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("node {} is not the leader, and the leader (node {leader} at {address}) could not be reached: {e}", self.node_id),
                    )
                })
            }
            other => Ok(other),
        }
    }

    /// A write in a session of its own.
    fn write(&self, op: WriteOp) -> RequestKind {
        let client_id = self.next_client.fetch_add(1, Ordering::Relaxed);
        RequestKind::Write(Command { client_id, seq: 1, op })
    }

    async fn status(&self) -> Answer<NodeStatus> {
        match self.ask(RequestKind::Status).await? {
            ResponseKind::Status(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }
}

/// One request to the node at `address` over the binary protocol.
async fn forward(address: &str, cluster_id: &str, kind: RequestKind) -> anyhow::Result<ResponseKind> {
    let ask = async {
        let (mut framed, _) = transport::connect(address, cluster_id, Sender::Client).await?;
        transport::send_frame(&mut framed, &ClientRequest { id: 1, kind }).await?;
        Ok::<_, anyhow::Error>(transport::recv_frame::<ClientResponse>(&mut framed).await?.result)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, ask).await.map_err(|_| anyhow::anyhow!("no answer in time"))?
}

fn unexpected(answer: ResponseKind) -> Problem {
    Problem(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer from the node: {answer:?}"))
}

/// What a failed or refused answer means over HTTP.
fn refusal(answer: ResponseKind) -> Problem {
    match answer {
        ResponseKind::NotLeader { leader } => Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            match leader {
                Some((id, address)) => format!("node {id} at {address} leads; it could not be asked"),
                None => "no leader is known right now (an election may be under way); retry".into(),
            },
        ),
        ResponseKind::Unknown { reason } => {
            Problem(StatusCode::SERVICE_UNAVAILABLE, format!("the outcome is unknown ({reason}); retry"))
        }
        ResponseKind::Error { message } => Problem(StatusCode::SERVICE_UNAVAILABLE, message),
        ResponseKind::Invalid { message } => Problem(StatusCode::BAD_REQUEST, message),
        other => unexpected(other),
    }
}

/// The query of `/status`.
#[derive(Deserialize)]
struct StatusQuery {
    log: Option<u64>,
}

/// One entry in `/status`'s `log`.
#[derive(Serialize)]
struct LogLine {
    index: u64,
    term: u64,
    cmd: String,
    committed: bool,
}

async fn status(
    State(ctx): State<Arc<Ctx>>,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Json<serde_json::Value>> {
    let Query(query) =
        query.map_err(|e| Problem(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text())))?;
    let limit = query.log.unwrap_or(STATUS_LOG_DEFAULT).min(STATUS_LOG_MAX);
    let s = ctx.status().await?;
    let log = match limit {
        0 => Vec::new(),
        _ => {
            let from = s.last_index.saturating_sub(limit - 1).max(s.first_index).max(1);
            match ctx.ask(RequestKind::Log { from, limit }).await? {
                ResponseKind::Log(entries) => entries
                    .into_iter()
                    .map(|e| LogLine { index: e.index, term: e.term, cmd: e.command, committed: e.committed })
                    .collect(),
                other => return Err(unexpected(other)),
            }
        }
    };
    // The members as the leader sees them (with each one's match index and
    // lag), or, on a follower, the leader's address.
    let (members, leader_address) = match ctx.ask(RequestKind::Members).await? {
        ResponseKind::Members(members) => {
            let address = members.iter().find(|m| Some(m.id) == s.leader).map(|m| m.address.clone());
            (Some(members), address)
        }
        ResponseKind::NotLeader { leader } => (None, leader.map(|(_, address)| address)),
        other => return Err(unexpected(other)),
    };
    let followers = members.map(|members| {
        members
            .into_iter()
            .filter(|m| m.id != s.id)
            .map(|m| {
                json!({
                    "id": m.id, "address": m.address,
                    "role": match m.role { MemberRole::Voter => "voter", MemberRole::Learner => "learner" },
                    "match_index": m.match_index, "lag": m.lag_entries,
                })
            })
            .collect::<Vec<_>>()
    });
    Ok(Json(json!({
        "id": s.id,
        "address": s.address,
        "role": s.role.to_string(),
        "term": s.term,
        "leader": s.leader.map(|id| json!({ "id": id, "address": leader_address })),
        "commit_index": s.commit,
        "applied_index": s.applied,
        "last_index": s.last_index,
        "first_index": s.first_index,
        "snapshot_index": s.snapshot_index,
        "keys": s.keys,
        "cluster_id": s.cluster_id,
        "membership": { "voters": s.voters, "learners": s.learners },
        "followers": followers,
        "log": log,
    })))
}

/// The body of `POST /command`.
#[derive(Deserialize)]
struct CommandBody {
    cmd: String,
}

async fn command(
    State(ctx): State<Arc<Ctx>>,
    body: Result<Json<CommandBody>, JsonRejection>,
) -> Answer<Json<serde_json::Value>> {
    let Json(body) = body.map_err(|e| {
        Problem(
            e.status(),
            format!("the body must be JSON like {{\"cmd\": \"SET x=5\"}} ({})", e.body_text()),
        )
    })?;
    let text = parse_text_command(&body.cmd).map_err(|e| Problem(StatusCode::BAD_REQUEST, e))?;
    match text {
        TextCommand::Get(key) => {
            let (index, value) = read(&ctx, key.as_bytes().to_vec(), false).await?;
            let value = value.as_deref().map(String::from_utf8_lossy);
            Ok(Json(json!({ "cmd": body.cmd, "index": index, "key": key, "value": value })))
        }
        TextCommand::Set(key, value) => {
            let op = WriteOp::Put { key: key.into_bytes(), value: value.into_bytes() };
            let (index, result) = write(&ctx, op).await?;
            Ok(Json(json!({ "cmd": body.cmd, "index": index, "result": describe_result(&result) })))
        }
        TextCommand::Del(key) => {
            let (index, result) = write(&ctx, WriteOp::Delete { key: key.into_bytes() }).await?;
            Ok(Json(json!({ "cmd": body.cmd, "index": index, "result": describe_result(&result) })))
        }
    }
}

fn describe_result(result: &WriteResult) -> serde_json::Value {
    match result {
        WriteResult::Done { existed } => json!({ "ok": true, "existed": existed }),
        WriteResult::Cas { swapped, .. } => json!({ "ok": true, "swapped": swapped }),
        WriteResult::StaleSequence { last_seq } => json!({ "ok": false, "stale_sequence": last_seq }),
    }
}

/// A write, applied: the index of its entry and what it did.
async fn write(ctx: &Ctx, op: WriteOp) -> Answer<(u64, WriteResult)> {
    match ctx.ask_leader(ctx.write(op)).await? {
        ResponseKind::Written { index, result } => Ok((index, result)),
        other => Err(refusal(other)),
    }
}

/// A read: the applied index it was served at and the value.
async fn read(ctx: &Ctx, key: Vec<u8>, stale: bool) -> Answer<(u64, Option<Vec<u8>>)> {
    let kind = RequestKind::Get { key, stale };
    let answer = if stale { ctx.ask(kind).await? } else { ctx.ask_leader(kind).await? };
    match answer {
        ResponseKind::Value { index, value } => Ok((index, value)),
        other => Err(refusal(other)),
    }
}

/// The query of `GET /kv/KEY`.
#[derive(Deserialize)]
struct ReadQuery {
    #[serde(default)]
    stale: bool,
}

async fn kv_get(
    State(ctx): State<Arc<Ctx>>,
    Path(key): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    let Query(query) =
        query.map_err(|e| Problem(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text())))?;
    match read(&ctx, key.clone().into_bytes(), query.stale).await? {
        (index, Some(value)) => {
            let value = String::from_utf8_lossy(&value);
            Ok(Json(json!({ "key": key, "index": index, "value": value })).into_response())
        }
        (_, None) => Err(Problem(StatusCode::NOT_FOUND, format!("no key {key}"))),
    }
}

async fn kv_put(
    State(ctx): State<Arc<Ctx>>,
    Path(key): Path<String>,
    value: Bytes,
) -> Answer<Json<serde_json::Value>> {
    let (index, result) =
        write(&ctx, WriteOp::Put { key: key.clone().into_bytes(), value: value.to_vec() }).await?;
    Ok(Json(json!({ "key": key, "index": index, "result": describe_result(&result) })))
}

async fn kv_delete(State(ctx): State<Arc<Ctx>>, Path(key): Path<String>) -> Answer<Response> {
    match write(&ctx, WriteOp::Delete { key: key.clone().into_bytes() }).await? {
        (_, WriteResult::Done { existed: false }) => {
            Err(Problem(StatusCode::NOT_FOUND, format!("no key {key}")))
        }
        (index, result) => {
            Ok(Json(json!({ "key": key, "index": index, "result": describe_result(&result) }))
                .into_response())
        }
    }
}

/// Why this node is not ready, if it is not: it knows no leader, or it
/// has not applied up to near its commit index.
fn not_ready(s: &NodeStatus) -> Option<String> {
    if s.leader.is_none() {
        return Some(format!("node {} knows no leader (term {})", s.id, s.term));
    }
    let lag = s.commit.saturating_sub(s.applied);
    (lag > READY_APPLY_LAG_MAX).then(|| {
        format!(
            "node {} has applied {} of {} committed entries ({lag} behind, more than {READY_APPLY_LAG_MAX})",
            s.id, s.applied, s.commit
        )
    })
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    match ctx.status().await {
        Ok(s) => match not_ready(&s) {
            None => "ok\n".into_response(),
            Some(reason) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response()
            }
        },
        Err(Problem(code, reason)) => (code, format!("not ready: {reason}\n")).into_response(),
    }
}

async fn health(State(ctx): State<Arc<Ctx>>) -> Response {
    match ctx.status().await {
        Ok(s) => match not_ready(&s) {
            None => Json(json!({ "health": "true" })).into_response(),
            Some(reason) => {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "health": "false", "reason": reason })))
                    .into_response()
            }
        },
        Err(Problem(code, reason)) => {
            (code, Json(json!({ "health": "false", "reason": reason }))).into_response()
        }
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Answer<Response> {
    let status = ctx.status().await?;
    let members = match ctx.ask(RequestKind::Members).await? {
        ResponseKind::Members(members) => Some(members),
        _ => None,
    };
    let text = ctx.metrics.render(&status, members.as_deref());
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        text,
    )
        .into_response())
}
