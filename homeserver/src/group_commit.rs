//! Group commit for message sends, on a writer thread of their own.
//!
//! Why: SQLite admits one writer at a time. A send used to be one transaction of ~10
//! statements, so concurrent senders spent their time queueing for the write lock, and every
//! send paid its own `BEGIN`/`COMMIT` (and fsync under `durability = full`). Through sqlx, each
//! of those statements also cost two thread wake-ups.
//!
//! How: [`messages::send`](crate::messages::send) checks what it can without the database, then
//! hands the send ([`CheckedSend`]) to [`GroupCommit`] and waits. One writer thread owns a connection of its own
//! ([`BatchWriter`]) and takes whatever has queued up (at most [`MAX_BATCH`]; it never waits
//! for more, so a lone send is not delayed). It runs the whole batch in ONE
//! `BEGIN IMMEDIATE … COMMIT`, calling SQLite directly, after taking the in-process write lock
//! so every other writer still serialises with it:
//!
//! - per room, the room row, the senders' memberships, the auth state and the forward
//!   extremities are read once for the batch and kept in memory; events of the same room chain
//!   (`prev_events` = the previous event of the batch, `depth` + 1). Nothing else can write in
//!   between: the batch holds the write lock;
//! - the tenant's limits come from a cache that lives [`TENANT_TTL`];
//! - each send runs the same checks in the same order as a single send did; one that fails
//!   (frozen room, rate limit, not a member) is answered with its own error and writes nothing;
//! - each signed send then passes the room's authorization rules (`federation::auth::check`)
//!   over the batch's view of the room's auth state, as every local event does. The auth
//!   events are parsed once per process ([`PduCache`], by event id; a redaction drops its
//!   entry) and looked up once per room and batch, and the send's own event is built from its
//!   parts, not parsed: no query and no JSON parse per send;
//! - the sends that passed are signed in order and appended one by one. An append the database
//!   refuses fails alone: a statement is atomic, and the next send chains onto the event before
//!   it. If SQLite ended the whole transaction (disk full, I/O error), the batch fails;
//! - a retry of an `event_uuid` already in the batch is held for the next batch, where it
//!   finds the first send committed;
//! - the extremity of each room is written once per batch (`DELETE` + `INSERT`: a local
//!   event's `prev_events` are all the current extremities, so one remains), and the batch's
//!   prev and auth edges with one multi-row `INSERT` per table (`storage::graph`). A message
//!   starts no state group: it records its room's current one, read with the extremities;
//! - answers go out only after `COMMIT` succeeded; if it fails, every send of the batch gets an
//!   error. Nothing is acknowledged before it is durable.
//!
//! Signing stays on the writer thread. A helper thread that signed a batch's events in parallel
//! (their ids are known before their signatures) was measured slower on 2 cores: its wake-ups
//! cost more than the signatures it took over.
//!
//! A panic fails its batch's sends (their reply channels drop, the transaction rolls back)
//! without stopping the thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::ratelimit::SendLimiter;
use crate::rooms::{self, AuthEvents, NewEventSpec, SignedEvent, event_types, rules};
use crate::storage::{
    BatchTx, BatchWriter, GraphHead, GraphRows, Membership, MessageRow, Participant, PduCache, Room, Store, Tenant,
};

/// The most sends committed together.
pub const MAX_BATCH: usize = 64;
/// How long a tenant's limits are reused before being read again.
pub const TENANT_TTL: Duration = Duration::from_secs(1);

/// A send as the client asked for it.
pub struct SendRequest {
    pub content: Value,
    pub event_uuid: Option<String>,
    pub as_participant_id: Option<String>,
}

/// A send checked as far as it can be before the writer thread: its content as it will be signed
/// (with `sent_by` when on behalf of another) and what that content points at.
pub struct CheckedSend {
    pub req: SendRequest,
    /// Canonical JSON of `req.content`, made by its validation.
    pub content_json: String,
    pub references: References,
}

/// What the content's references came to (`messages::check_references`), for the checks that
/// come after membership.
#[derive(Clone, Copy, Debug)]
pub struct References {
    reply_found: bool,
}

impl References {
    /// `reply_found`: the content has no `reply_to_event_id`, or it names an event of the room.
    pub fn new(reply_found: bool) -> References {
        References { reply_found }
    }

    /// 404 `SW_EVENT_NOT_FOUND` when `reply_to_event_id` names no event of the room.
    pub fn require_reply(self) -> ApiResult<()> {
        if self.reply_found { Ok(()) } else { Err(ApiError::EventNotFound) }
    }
}

/// What a queued send came to, once committed.
pub enum Sent {
    /// A new message, as stored.
    Created(MessageRow),
    /// An idempotent retry: the event this sender already sent with the same `event_uuid`.
    Existing { event_id: String },
}

struct Job {
    caller: Participant,
    room_id: String,
    req: SendRequest,
    /// Canonical JSON of `req.content`, made by its validation.
    content_json: String,
    /// What the content points at, checked before the send was queued.
    references: References,
    reply: oneshot::Sender<ApiResult<Sent>>,
}

impl Job {
    /// `(sender, event_uuid)`: what makes two sends the same send.
    fn idempotency_key(&self) -> Option<(&str, &str)> {
        let sender = self.req.as_participant_id.as_deref().unwrap_or(&self.caller.id);
        self.req.event_uuid.as_deref().map(|u| (sender, u))
    }
}

/// The handle request handlers queue sends on.
pub struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
}

struct Writer {
    db: BatchWriter,
    limiter: Arc<SendLimiter>,
    tenants: HashMap<String, (Tenant, Instant)>,
    pdus: Arc<PduCache>,
}

impl GroupCommit {
    /// Opens the writer's connection and starts its thread, which ends when this handle is
    /// dropped.
    pub fn start(store: &Store, limiter: Arc<SendLimiter>) -> std::io::Result<GroupCommit> {
        let db = store.batch_writer().map_err(std::io::Error::other)?;
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let writer = Writer { db, limiter, tenants: HashMap::new(), pdus: store.pdu_cache() };
        std::thread::Builder::new().name("send-writer".into()).spawn(move || writer.serve(rx))?;
        Ok(GroupCommit { jobs })
    }

    /// Queues a checked send and waits until its batch has committed (or failed).
    pub async fn send(&self, caller: &Participant, room_id: &str, checked: CheckedSend) -> ApiResult<Sent> {
        let (reply, answer) = oneshot::channel();
        let CheckedSend { req, content_json, references } = checked;
        let job = Job { caller: caller.clone(), room_id: room_id.to_string(), req, content_json, references, reply };
        self.jobs.send(job).map_err(|_| ApiError::internal("the group commit writer has stopped"))?;
        answer.await.map_err(|_| ApiError::internal("the send batch failed"))?
    }
}

/// What a batch knows about one room, read once and kept current as events are appended.
struct RoomBatch {
    room: Option<Room>,
    /// Membership rows of the batch's senders (absent: no row).
    /// `participant_id → (membership, power)` of those senders that have a membership row.
    members: HashMap<String, (Membership, i64)>,
    /// `(type, state_key, event_id)` rows of the room's auth state, for the senders' fqids.
    auth: Vec<(String, String, String)>,
    /// The fqids whose membership events `auth` covers.
    auth_fqids: Vec<String>,
    /// The events of `auth`, parsed; filled by the first send of the room that passes the
    /// homeserver's own checks.
    auth_events: Option<AuthEvents>,
    /// The room's forward extremities and current state group as stored so far in this batch.
    head: GraphHead,
    /// Whether an event was appended, so the extremity must be written.
    appended: bool,
}

/// A send that passed its checks, waiting to be signed and written.
struct Ready {
    sender_id: String,
    sender_fqid: String,
    auth_events: Vec<String>,
    event_uuid: String,
}

impl Ready {
    fn spec<'a>(&'a self, job: &'a Job) -> NewEventSpec<'a> {
        NewEventSpec {
            room_id: &job.room_id,
            sender_id: &self.sender_id,
            event_type: event_types::MESSAGE,
            state_key: None,
            content: &job.req.content,
            event_uuid: Some(&self.event_uuid),
            relates_to: None,
            // Who really sent an on-behalf send is `content.sent_by`, inside the signed event.
            unsigned: None,
        }
    }
}

impl Writer {
    /// The thread's loop: take what has queued up, run it as one batch, repeat.
    fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match rx.blocking_recv() {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                let Ok(job) = rx.try_recv() else { break };
                // A retry of an idempotency key already in the batch waits for the next one,
                // where it finds the first send stored.
                if job.idempotency_key().is_some() && batch.iter().any(|b| b.idempotency_key() == job.idempotency_key())
                {
                    carried = Some(job);
                    break;
                }
                batch.push(job);
            }
            // A panic ends this batch only: its reply channels drop, the callers see errors.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(batch)));
            if outcome.is_err() {
                tracing::error!("a send batch panicked; its sends failed");
            }
        }
    }

    fn run(&mut self, jobs: Vec<Job>) {
        let mut results: Vec<Option<ApiResult<Sent>>> = jobs.iter().map(|_| None).collect();
        let Writer { db, limiter, tenants, pdus } = self;
        let outcome = match db.begin() {
            Err(e) => Err(ApiError::from(e)),
            Ok(mut tx) => {
                let mut checks = Checks { limiter, tenants, pdus };
                match run_in(&mut tx, &mut checks, &jobs, &mut results) {
                    Ok(()) => tx.commit().map_err(ApiError::from),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = outcome {
            // Nothing of the batch is stored: the sends that went through answer the error.
            let msg = e.to_string();
            for r in results.iter_mut().filter(|r| !matches!(r, Some(Err(_)))) {
                *r = Some(Err(ApiError::internal(format!("the batch did not commit: {msg}"))));
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result.unwrap_or_else(|| Err(ApiError::internal("send left unanswered"))));
        }
    }
}

/// Runs the batch inside the open transaction, filling `results`; `Err` means the transaction
/// is unusable and nothing may be committed.
fn run_in(
    tx: &mut BatchTx<'_>,
    checks: &mut Checks<'_>,
    jobs: &[Job],
    results: &mut [Option<ApiResult<Sent>>],
) -> ApiResult<()> {
    let signer = tx.signer().ok_or_else(|| ApiError::internal("no signing key loaded"))?;
    let mut rooms: HashMap<&str, RoomBatch> = HashMap::new();
    let mut graph = GraphRows::default();
    for (i, job) in jobs.iter().enumerate() {
        if !rooms.contains_key(job.room_id.as_str()) {
            let state = load_room(tx, &job.room_id, jobs)?;
            rooms.insert(job.room_id.as_str(), state);
        }
        let st = rooms.get_mut(job.room_id.as_str()).expect("loaded above");
        let ready = match checks.check(tx, st, job) {
            Ok(Checked::Ready(r)) => r,
            Ok(Checked::Existing(event_id)) => {
                results[i] = Some(Ok(Sent::Existing { event_id }));
                continue;
            }
            Err(e) => {
                results[i] = Some(Err(e));
                alive(tx)?;
                continue;
            }
        };
        // The room's next event: its parent is the event stored before it, in this batch or
        // before. (A send that failed to store is no one's parent.)
        let spec = ready.spec(job);
        let signed = rooms::sign_event(
            signer,
            &spec,
            Some(&job.content_json),
            &ready.event_uuid,
            &ready.sender_fqid,
            &st.head.extremities,
            ready.auth_events.clone(),
        );
        let s = match signed {
            Ok(s) => s,
            Err(e) => {
                results[i] = Some(Err(e));
                continue;
            }
        };
        if let Err(e) = authorize(st, &spec, &s, &ready.sender_fqid, &signer.server_name) {
            results[i] = Some(Err(e));
            continue;
        }
        match tx.append_message(
            &s.new_event(&spec, &ready.event_uuid, &ready.sender_fqid),
            &st.head,
            &s.auth_events,
            &mut graph,
        ) {
            Ok(pos) => {
                st.head.advance(&s.event_id, s.depth, pos, None);
                st.appended = true;
                results[i] = Some(Ok(created(job, &ready, s, pos)));
            }
            Err(e) => {
                results[i] = Some(Err(e.into()));
                alive(tx)?;
            }
        }
    }
    if !graph.is_empty() {
        tx.write_graph_rows(&graph)?;
    }
    for (room_id, state) in &rooms {
        if state.appended {
            let (event_id, depth) = state.head.extremities.last().expect("an appended event");
            tx.replace_extremities(room_id, event_id, *depth)?;
        }
    }
    Ok(())
}

/// After a failed statement: `Err` when SQLite ended the whole transaction.
fn alive(tx: &BatchTx<'_>) -> ApiResult<()> {
    if tx.is_alive() { Ok(()) } else { Err(ApiError::internal("the database ended the transaction")) }
}

/// The room's authorization rules on a signed send, over the batch's view of the room's auth
/// state (see [`rooms::authorize`]).
fn authorize(
    st: &RoomBatch,
    spec: &NewEventSpec<'_>,
    s: &SignedEvent,
    sender_fqid: &str,
    origin: &str,
) -> ApiResult<()> {
    let state = st.auth_events.as_ref().ok_or_else(|| ApiError::internal("the room's auth state was not read"))?;
    rooms::authorize(&s.to_pdu(spec, sender_fqid, origin), state, state.create())
}

/// The parsed events of `rows` (`(type, state_key, event_id)`), from the cache, reading the wire
/// forms of those it lacks in one query.
fn parsed_auth_events(tx: &BatchTx<'_>, pdus: &PduCache, rows: &[(String, String, String)]) -> ApiResult<AuthEvents> {
    let mut events = AuthEvents(Vec::with_capacity(rows.len()));
    let mut missing: Vec<&str> = Vec::new();
    for (_, _, id) in rows {
        match pdus.get(id) {
            Some(p) => events.0.push(p),
            None => missing.push(id),
        }
    }
    for (id, pdu) in tx.pdus_by_ids(&missing)? {
        // Events stored before migration 4 have no wire form: their rooms are not checked.
        if let Some(pdu) = pdu {
            events.0.push(pdus.get_or_parse(&id, &pdu).map_err(|e| ApiError::internal(e.to_string()))?);
        }
    }
    Ok(events)
}

/// What the per-send checks need beyond the transaction.
struct Checks<'a> {
    limiter: &'a SendLimiter,
    tenants: &'a mut HashMap<String, (Tenant, Instant)>,
    pdus: &'a PduCache,
}

impl Checks<'_> {
    /// One send's checks, in the order of a single send, against the batch's view.
    fn check(&mut self, tx: &BatchTx<'_>, st: &mut RoomBatch, job: &Job) -> ApiResult<Checked> {
        let (caller, room_id, req) = (&job.caller, job.room_id.as_str(), &job.req);
        let room = st.room.as_ref().ok_or(ApiError::RoomNotFound)?;
        let seat = st.members.get(&caller.id).map(|&(m, power)| rules::Seat { membership: Some(m), power });
        let seat = seat.unwrap_or_default();
        rules::require_joined(room, seat, caller)?;
        let sender_id = match &req.as_participant_id {
            None => caller.id.clone(),
            Some(other) => {
                rules::check_send_as(room, seat, st.members.get(other).copied())?;
                other.clone()
            }
        };
        rules::require_open(room)?;
        if let Some(uuid) = &req.event_uuid {
            if let Some((event_id, existing_room)) = tx.event_by_uuid(&sender_id, uuid)? {
                if existing_room != room_id {
                    return Err(ApiError::Conflict("event_uuid was already used in another room".into()));
                }
                return Ok(Checked::Existing(event_id));
            }
        }
        // Looked up before the send was queued (events are never deleted), raised here.
        job.references.require_reply()?;
        let tenant = self.tenant(tx, &caller.tenant_id)?;
        if let Err(wait) = self.limiter.try_take(&tenant.id, tenant.send_rate_per_s, tenant.send_burst, Instant::now())
        {
            return Err(ApiError::RateLimited("over the tenant's send rate".into(), wait));
        }
        let sender_fqid = if req.as_participant_id.is_some() {
            tx.fqid_of(&sender_id)?.ok_or_else(|| ApiError::internal("event sender vanished"))?
        } else {
            caller.fqid.clone()
        };
        if !st.auth_fqids.contains(&sender_fqid) {
            let more = tx.auth_state_many(room_id, &[sender_fqid.as_str()])?;
            let more: Vec<_> = more.into_iter().filter(|(t, _, _)| t == event_types::MEMBER).collect();
            if let Some(events) = &mut st.auth_events {
                events.0.extend(parsed_auth_events(tx, self.pdus, &more)?.0);
            }
            st.auth.extend(more);
            st.auth_fqids.push(sender_fqid.clone());
        }
        if st.auth_events.is_none() {
            st.auth_events = Some(parsed_auth_events(tx, self.pdus, &st.auth)?);
        }
        let auth_events = rooms::pick_auth_events(&st.auth, &sender_fqid, &sender_fqid, false);
        let event_uuid = match &req.event_uuid {
            Some(u) => u.clone(),
            None => ulid::Ulid::generate().to_string().to_lowercase(),
        };
        Ok(Checked::Ready(Ready { sender_id, sender_fqid, auth_events, event_uuid }))
    }

    /// The tenant's limits, from the cache while fresh.
    fn tenant(&mut self, tx: &BatchTx<'_>, tenant_id: &str) -> ApiResult<Tenant> {
        let now = Instant::now();
        if let Some((t, at)) = self.tenants.get(tenant_id) {
            if now.duration_since(*at) < TENANT_TTL {
                return Ok(t.clone());
            }
        }
        let tenant = tx.tenant(tenant_id)?.ok_or(ApiError::TenantNotFound)?;
        self.tenants.insert(tenant_id.to_string(), (tenant.clone(), now));
        Ok(tenant)
    }
}

enum Checked {
    Ready(Ready),
    Existing(String),
}

/// The answer to a stored send.
fn created(job: &Job, r: &Ready, s: SignedEvent, stream_position: i64) -> Sent {
    Sent::Created(MessageRow {
        stream_position,
        event_id: s.event_id,
        room_id: job.room_id.clone(),
        event_type: event_types::MESSAGE.to_string(),
        sender_id: r.sender_id.clone(),
        sender_fqid: r.sender_fqid.clone(),
        content: s.content_json.into_owned(),
        original_content: None,
        origin_ts: s.origin_ts,
        edited_at: None,
        redacted_at: None,
        event_uuid: Some(r.event_uuid.clone()),
        unsigned_data: None,
        relates_to: None,
        state_key: None,
    })
}

/// Reads, for the batch, what its sends to `room_id` need: the room, the memberships of their
/// callers and on-behalf senders, the auth state of the callers, and the extremities.
fn load_room(tx: &BatchTx<'_>, room_id: &str, jobs: &[Job]) -> ApiResult<RoomBatch> {
    let mine = || jobs.iter().filter(|j| j.room_id == room_id);
    let mut ids: Vec<&str> = Vec::new();
    let mut fqids: Vec<&str> = Vec::new();
    for j in mine() {
        let on_behalf = j.req.as_participant_id.as_deref().filter(|p| ids::is_participant_id(p));
        for id in std::iter::once(j.caller.id.as_str()).chain(on_behalf) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if !fqids.contains(&j.caller.fqid.as_str()) {
            fqids.push(&j.caller.fqid);
        }
    }
    let Some((room, members)) = tx.room_with_members(room_id, &ids)? else {
        return Ok(RoomBatch {
            room: None,
            members: HashMap::new(),
            auth: Vec::new(),
            auth_fqids: Vec::new(),
            auth_events: None,
            head: GraphHead::default(),
            appended: false,
        });
    };
    let members = members.into_iter().map(|(p, m, power)| (p, (m, power))).collect();
    let (auth, head) = tx.auth_state_and_head(room_id, &fqids)?;
    Ok(RoomBatch {
        room: Some(room),
        members,
        auth,
        auth_fqids: fqids.into_iter().map(str::to_string).collect(),
        auth_events: None,
        head,
        appended: false,
    })
}
