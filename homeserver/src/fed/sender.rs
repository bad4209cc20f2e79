//! Durable delivery to peers (`docs/federation.md`, "Delivery: the per-destination sender").
//!
//! - A **dispatcher** watches the store's committed position and makes a `fed_destinations`
//!   record for each server that new events are addressed to, then wakes its task.
//! - **One task per destination** reads what that destination still needs after its cursor
//!   (`Store::fed_pending_events`), plus events it asked to be sent again, plans a batch
//!   ([`federation::sender::plan_batch`]) and sends one transaction at a time. Nothing is
//!   shared between destinations but the store, so a slow or dead peer delays no one else.
//! - **EDUs** (typing, presence) are queued in memory per destination, bounded, coalesced, and
//!   dropped while the peer backs off for long: they describe the present.
//!
//! The cursor only moves once a transaction is answered, and a transaction's id is derived from
//! its content ([`federation::sender::txn_id`]), so a crash at any point re-sends a batch the
//! receiver either never saw or answers from its record.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use federation::client::{FedClient, FedError};
use federation::sender::{Candidate, backoff_ms, plan_batch, txn_id};
use federation::wire::{self, Edu, MAX_PDUS_PER_TXN, Verdict};
use rand::RngExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::storage::{OutboundEvent, Store};

/// Ephemeral items kept per destination; older ones are dropped first.
const MAX_QUEUED_EDUS: usize = 1000;
/// A peer backing off longer than this gets no ephemeral items: by the time it is back they
/// would be stale.
const EDU_STALE_MS: u64 = 30_000;
/// A peer's contact is recorded at most this often (unless it ends a back-off).
const SEEN_EVERY: Duration = Duration::from_secs(10);
/// How many positions the dispatcher looks at per query.
/// The shortest time between two scans of newly committed events.
const SCAN_INTERVAL: Duration = Duration::from_millis(5);
const DISPATCH_CHUNK: i64 = 10_000;
/// How often a destination a full read behind counts its backlog for a catch-up.
const CATCH_UP_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Pause after a local storage error before trying again.
const STORE_PAUSE: Duration = Duration::from_secs(1);

/// The sender: cheap to clone.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: FedClient,
    us: String,
    base_ms: u64,
    cap_ms: u64,
    /// A backlog longer than this is caught up newest first (`[federation] catch_up_above`).
    catch_up_above: i64,
    dests: Mutex<HashMap<String, Arc<Dest>>>,
    /// Every event up to here has had its destinations' records made (the present, at start:
    /// a peer first met then needs nothing older).
    dispatched: AtomicI64,
    /// Rooms known to federate (their create event names a room version), cached: it never
    /// changes.
    versioned: Mutex<HashMap<String, bool>>,
    /// When each peer's contact was last recorded.
    seen: Mutex<HashMap<String, Instant>>,
    /// This server's federation policy: nothing goes to a peer it refuses.
    policy: Arc<crate::fed::policy::PolicyHolder>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Inner {
    fn dests_empty(&self) -> bool {
        lock(&self.dests).is_empty()
    }
}

struct Dest {
    name: String,
    wake: Notify,
    edus: Mutex<VecDeque<Edu>>,
    /// Unix ms until which the peer backs off; 0 when it does not.
    backoff_until: std::sync::atomic::AtomicU64,
    /// A room's federation switch changed: what waits on the retry list goes at once, whatever
    /// back-off the peer's earlier `retry` answers set.
    switch_changed: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    federation::now_ms()
}

impl Sender {
    /// Starts the dispatcher and a task for every destination on record (resuming their
    /// cursors and back-offs).
    pub fn start(
        store: Store,
        client: FedClient,
        policy: Arc<crate::fed::policy::PolicyHolder>,
        config: &crate::config::Config,
    ) -> Sender {
        let inner = Arc::new(Inner {
            dispatched: AtomicI64::new(store.committed_position()),
            store,
            client,
            us: config.server_name.clone(),
            base_ms: config.federation.backoff_base_ms.max(1),
            cap_ms: config.federation.backoff_cap_secs.saturating_mul(1000).max(1),
            catch_up_above: i64::from(config.federation.catch_up_above),
            dests: Default::default(),
            versioned: Default::default(),
            seen: Default::default(),
            policy,
            stop: watch::channel(false).0,
            tasks: Default::default(),
        });
        let sender = Sender { inner };
        let s = sender.clone();
        let handle = tokio::spawn(async move { s.dispatch().await });
        lock(&sender.inner.tasks).push(handle.abort_handle());
        sender
    }

    /// Stops every task. Nothing is lost: cursors move only once a peer answered.
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }

    /// A peer made a signed request to us: it is up. Records when (at most every
    /// [`SEEN_EVERY`]), and ends its back-off at once so its queue flows again.
    pub fn peer_contacted(&self, origin: &str) {
        let dest = lock(&self.inner.dests).get(origin).cloned();
        let backing_off = dest.as_ref().is_some_and(|d| d.backoff_until.swap(0, Ordering::Relaxed) > 0);
        {
            let mut seen = lock(&self.inner.seen);
            let now = Instant::now();
            if !backing_off && seen.get(origin).is_some_and(|t| now.duration_since(*t) < SEEN_EVERY) {
                return;
            }
            seen.insert(origin.to_string(), now);
        }
        let inner = self.inner.clone();
        let origin = origin.to_string();
        tokio::spawn(async move {
            // A peer first met here needs nothing before what the dispatcher has looked at:
            // anything older addressed to it already made its record.
            let initial = inner.dispatched.load(Ordering::Relaxed);
            if let Err(e) = inner.store.fed_peer_seen(&origin, now_ms() as i64, backing_off, initial).await {
                tracing::warn!(peer = %origin, error = %e, "cannot record a peer's contact");
            }
            if let Some(d) = dest.filter(|_| backing_off) {
                d.wake.notify_one();
            }
        });
    }

    /// Queues an ephemeral item for `destination` and wakes its task.
    pub fn queue_edu(&self, destination: &str, edu: Edu) {
        if destination == self.inner.us {
            return;
        }
        let dest = self.dest(destination);
        if dest.backoff_until.load(Ordering::Relaxed) > now_ms() + EDU_STALE_MS {
            return;
        }
        {
            let mut q = lock(&dest.edus);
            // A newer notice about the same thing replaces the queued one.
            let key = edu_key(&edu);
            if key.is_some() {
                q.retain(|e| edu_key(e) != key);
            }
            q.push_back(edu);
            while q.len() > MAX_QUEUED_EDUS {
                q.pop_front();
            }
        }
        dest.wake.notify_one();
    }

    /// Tells the servers of a federated room that a local participant types (or stopped).
    pub fn typing(&self, room_id: &str, fqid: &str, typing: bool) {
        let s = self.clone();
        let (room_id, fqid) = (room_id.to_string(), fqid.to_string());
        tokio::spawn(async move {
            match s.inner.store.fed_typing_servers(&room_id, &s.inner.us).await {
                Ok(servers) => {
                    let content = json!({"room_id": room_id, "fqid": fqid, "typing": typing});
                    let policy = s.inner.policy.get();
                    for server in servers {
                        if !crate::fed::policy::may_send(&s.inner.store, &policy, &s.inner.us, &room_id, &server).await
                        {
                            continue;
                        }
                        s.queue_edu(&server, Edu { edu_type: wire::edu::TYPING.into(), content: content.clone() });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "typing notice not federated"),
            }
        });
    }

    /// Tells the servers sharing a federated room with a local participant their presence as
    /// peers see it.
    pub fn presence(&self, participant_id: &str, presence: &str) {
        let s = self.clone();
        let (participant_id, presence) = (participant_id.to_string(), presence.to_string());
        tokio::spawn(async move {
            let store = &s.inner.store;
            let fqid = match store.participant(&participant_id).await {
                Ok(Some(p)) if p.server_name == s.inner.us => p.fqid,
                Ok(_) => return,
                Err(e) => return tracing::warn!(error = %e, "presence not federated"),
            };
            match store.fed_presence_servers(&participant_id, &s.inner.us).await {
                Ok(servers) => {
                    let content = json!({"fqid": fqid, "presence": presence});
                    let policy = s.inner.policy.get();
                    for server in servers {
                        if policy.access(&server) == federation::policy::PeerAccess::None {
                            continue;
                        }
                        s.queue_edu(&server, Edu { edu_type: wire::edu::PRESENCE.into(), content: content.clone() });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence not federated"),
            }
        });
    }

    /// The destination's in-memory handle, starting its task the first time.
    fn dest(&self, name: &str) -> Arc<Dest> {
        let mut dests = lock(&self.inner.dests);
        if let Some(d) = dests.get(name) {
            return d.clone();
        }
        let d = Arc::new(Dest {
            name: name.to_string(),
            wake: Notify::new(),
            edus: Default::default(),
            backoff_until: Default::default(),
            switch_changed: Default::default(),
        });
        dests.insert(name.to_string(), d.clone());
        drop(dests);
        if !*self.inner.stop.borrow() {
            let s = self.clone();
            let task = d.clone();
            let handle = tokio::spawn(async move { s.deliver(task).await });
            lock(&self.inner.tasks).push(handle.abort_handle());
        }
        d
    }

    async fn stopped(&self) {
        let mut rx = self.inner.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The dispatcher: makes records for the destinations of newly committed events.
    async fn dispatch(&self) {
        let store = &self.inner.store;
        let mut committed = store.subscribe();
        let resume = loop {
            match (store.fed_destination_rows().await, store.fed_lowest_cursor().await) {
                (Ok(rows), Ok(lowest)) => {
                    for row in rows {
                        self.dest(&row.server_name).wake.notify_one();
                    }
                    break lowest.unwrap_or(0).max(0);
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "federation sender cannot read its destinations");
                    tokio::select! {
                        _ = tokio::time::sleep(STORE_PAUSE) => {}
                        _ = self.stopped() => return,
                    }
                }
            }
        };
        let mut scanned = resume;
        let mut last_scan = tokio::time::Instant::now();
        loop {
            // Under a stream of commits, scan at most every SCAN_INTERVAL: the scan's reads
            // (and the idle cursors' write) then cost per interval, not per commit of the send
            // path.
            let since = last_scan.elapsed();
            if since < SCAN_INTERVAL {
                tokio::time::sleep(SCAN_INTERVAL - since).await;
            }
            last_scan = tokio::time::Instant::now();
            let top = *committed.borrow_and_update();
            if !store.federation_in_use() && self.inner.dests_empty() {
                // Nothing committed so far can concern a peer.
                scanned = top;
            }
            while scanned < top {
                let upto = (scanned + DISPATCH_CHUNK).min(top);
                let found = match store.fed_destinations_of_range(&self.inner.us, scanned, upto).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(error = %e, "federation dispatcher cannot read new events");
                        break;
                    }
                };
                if let Err(e) = store.fed_ensure_destinations(&found).await {
                    tracing::warn!(error = %e, "federation dispatcher cannot record destinations");
                    break;
                }
                for (server, _) in &found {
                    self.dest(server).wake.notify_one();
                }
                let addressed: Vec<String> = found.into_iter().map(|(s, _)| s).collect();
                if let Err(e) = store.fed_pass_idle_destinations(scanned, upto, &addressed).await {
                    tracing::warn!(error = %e, "federation dispatcher cannot move idle cursors");
                    break;
                }
                scanned = upto;
                self.inner.dispatched.fetch_max(scanned, Ordering::Relaxed);
            }
            let pause = scanned < top;
            tokio::select! {
                _ = committed.changed(), if !pause => {}
                _ = tokio::time::sleep(STORE_PAUSE), if pause => {}
                _ = self.stopped() => return,
            }
        }
    }

    /// Whether events of the room may federate at all (its create event names a version).
    async fn room_federates(&self, room_id: &str) -> bool {
        if let Some(v) = lock(&self.inner.versioned).get(room_id) {
            return *v;
        }
        match self.inner.store.room_has_version(room_id).await {
            Ok(Some(v)) => {
                // Only a version is final: a room whose create event is not here yet (an
                // invitation) is asked about again.
                if v {
                    lock(&self.inner.versioned).insert(room_id.to_string(), v);
                }
                v
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, room_id, "cannot read the room's version");
                false
            }
        }
    }

    /// The events as the planner sees them, for `dest`: skipped when they cannot go out, or
    /// when this server's policy or the room's server lists refuse `dest` (checked once per
    /// room of the batch).
    async fn candidates(&self, dest: &str, events: &[OutboundEvent]) -> Vec<(Candidate, Option<Value>)> {
        let mut out = Vec::with_capacity(events.len());
        let policy = self.inner.policy.get();
        let mut allowed: HashMap<&str, bool> = HashMap::new();
        for e in events {
            let origin = federation::event::parse_fqid(&e.sender).map(|(_, s)| s.to_string()).unwrap_or_default();
            let pdu = serde_json::from_str::<Value>(&e.pdu).ok();
            let may = match allowed.get(e.room_id.as_str()) {
                Some(m) => *m,
                None => {
                    let m = crate::fed::policy::may_send(&self.inner.store, &policy, &self.inner.us, &e.room_id, dest)
                        .await;
                    allowed.insert(&e.room_id, m);
                    m
                }
            };
            let skip = !may || pdu.is_none() || origin.is_empty() || !self.room_federates(&e.room_id).await;
            out.push((Candidate { pos: e.pos, event_id: e.event_id.clone(), origin, skip }, pdu));
        }
        out
    }

    /// One destination's loop: one transaction in flight at a time.
    async fn deliver(&self, dest: Arc<Dest>) {
        let store = &self.inner.store;
        let name = dest.name.as_str();
        // Events answered `retry: true` are due at start, then after a back-off of their own.
        let mut retry_due = now_ms();
        let mut retry_rounds = 0u32;
        let mut has_retries = true;
        // A backlog is counted at most every CATCH_UP_CHECK_EVERY (a busy peer is often a full
        // read behind without being far behind).
        let mut last_catch_up_check: Option<Instant> = None;
        // The ephemeral items of the batch in flight, and their stamp (kept while retried).
        let mut edu_batch: Option<(String, Vec<Edu>)> = None;
        loop {
            if *self.inner.stop.borrow() {
                return;
            }
            if dest.switch_changed.swap(false, Ordering::AcqRel) {
                has_retries = true;
                retry_rounds = 0;
                retry_due = now_ms();
            }
            let row = match store.fed_destination_row(name).await {
                Ok(Some(row)) => row,
                Ok(None) => {
                    // A peer only ephemeral items go to so far: a record with nothing behind it.
                    let at = self.inner.dispatched.load(Ordering::Relaxed);
                    if let Err(e) = store.fed_ensure_destinations(&[(name.to_string(), at + 1)]).await {
                        tracing::warn!(peer = name, error = %e, "cannot record a destination");
                        self.pause(&dest, STORE_PAUSE).await;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(peer = name, error = %e, "cannot read a destination");
                    self.pause(&dest, STORE_PAUSE).await;
                    continue;
                }
            };
            let now = now_ms();
            if let Some(at) = row.retry_at.map(|t| t.max(0) as u64).filter(|t| *t > now) {
                dest.backoff_until.store(at, Ordering::Relaxed);
                if at > now + EDU_STALE_MS {
                    edu_batch = None;
                    lock(&dest.edus).clear();
                }
                self.pause(&dest, Duration::from_millis(at - now)).await;
                continue;
            }
            dest.backoff_until.store(0, Ordering::Relaxed);

            let top = store.committed_position();
            let limit = MAX_PDUS_PER_TXN as i64;
            let fresh = match store.fed_pending_events(name, &self.inner.us, row.delivered_pos, top, limit).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(peer = name, error = %e, "cannot read events to deliver");
                    self.pause(&dest, STORE_PAUSE).await;
                    continue;
                }
            };
            let fresh_complete = (fresh.len() as i64) < limit;
            if !fresh_complete
                && self.inner.catch_up_above > 0
                && last_catch_up_check.is_none_or(|t| t.elapsed() >= CATCH_UP_CHECK_EVERY)
            {
                last_catch_up_check = Some(Instant::now());
                // Far behind (back from an outage): the newest event of each room goes first and
                // the peer pulls the rest through it, instead of a replay of everything.
                let above = self.inner.catch_up_above;
                match store.fed_catch_up(name, &self.inner.us, row.delivered_pos, top, above).await {
                    Ok(Some(rooms)) => {
                        tracing::info!(
                            peer = name,
                            rooms,
                            from = row.delivered_pos,
                            to = top,
                            "catching up: the newest event of each room goes first, the peer pulls the rest"
                        );
                        has_retries = true;
                        retry_rounds = 0;
                        retry_due = now_ms();
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(peer = name, error = %e, "cannot start a catch-up"),
                }
            }
            let retries = if has_retries && now >= retry_due {
                let limit = federation::sender::MAX_RETRIES_PER_TXN as i64;
                match store.fed_retry_candidates(name, &self.inner.us, limit).await {
                    Ok(r) => {
                        has_retries = !r.is_empty();
                        r
                    }
                    Err(e) => {
                        tracing::warn!(peer = name, error = %e, "cannot read events to send again");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            if edu_batch.is_none() {
                let taken: Vec<Edu> = {
                    let mut q = lock(&dest.edus);
                    let n = q.len().min(wire::MAX_EDUS_PER_TXN);
                    q.drain(..n).collect()
                };
                if !taken.is_empty() {
                    edu_batch = Some((ulid::Ulid::generate().to_string(), taken));
                }
            }
            let fresh = self.candidates(name, &fresh).await;
            let retries = self.candidates(name, &retries).await;
            let fresh_c: Vec<Candidate> = fresh.iter().map(|(c, _)| c.clone()).collect();
            let retry_c: Vec<Candidate> = retries.iter().map(|(c, _)| c.clone()).collect();
            let edus_queued = edu_batch.as_ref().map_or(0, |(_, e)| e.len());
            let plan = plan_batch(name, row.delivered_pos, top, &retry_c, &fresh_c, fresh_complete, edus_queued);

            if plan.is_empty() {
                if plan.cursor > row.delivered_pos {
                    if let Err(e) = store.fed_advance_cursor(name, &self.inner.us, plan.cursor).await {
                        tracing::warn!(peer = name, error = %e, "cannot move a destination's cursor");
                        self.pause(&dest, STORE_PAUSE).await;
                        continue;
                    }
                    // Passing events may have held some (a room switched off), and a switch
                    // turned on again frees those held before: look at the list again.
                    has_retries = true;
                }
                if !fresh_complete {
                    // A whole read of events it does not need: read on at once.
                    continue;
                }
                let wait = (has_retries && retry_due > now).then(|| Duration::from_millis(retry_due - now));
                self.idle(&dest, wait).await;
                // Woken: a room's switch may have been turned on again, freeing held events.
                has_retries = true;
                continue;
            }

            let by_pos: HashMap<i64, (&Candidate, &Value)> = retries
                .iter()
                .chain(fresh.iter())
                .filter_map(|(c, pdu)| pdu.as_ref().map(|p| (c.pos, (c, p))))
                .collect();
            let sent: Vec<(&Candidate, &Value)> = plan.pdus.iter().filter_map(|p| by_pos.get(p).copied()).collect();
            let ids: Vec<&str> = sent.iter().map(|(c, _)| c.event_id.as_str()).collect();
            let edus: &[Edu] = edu_batch.as_ref().map_or(&[], |(_, e)| e.as_slice());
            let mut stamp = String::new();
            if !plan.retried.is_empty() {
                stamp.push_str(&format!("retry:{retry_due};"));
            }
            if let Some((edu_stamp, _)) = &edu_batch {
                stamp.push_str(&format!("edus:{edu_stamp};"));
            }
            let first = sent.first().map_or(plan.cursor, |(c, _)| c.pos);
            let last = sent.last().map_or(plan.cursor, |(c, _)| c.pos);
            let txn = txn_id(first, last, &ids, &stamp);
            let pdus: Vec<Value> = sent.iter().map(|(_, p)| (*p).clone()).collect();
            let body = json!({"origin": self.inner.us, "origin_ts": now, "pdus": pdus, "edus": edus});

            let answer = self.inner.client.request(name, "PUT", &wire::path::send(&txn), Some(&body)).await;
            match answer {
                Ok(data) => {
                    let verdicts = wire::parse_send_answer(&data);
                    let mut done = Vec::new();
                    let mut again = Vec::new();
                    for (c, _) in &sent {
                        match verdicts.get(&c.event_id).map(Verdict::from_json) {
                            Some(Verdict::Accepted) => done.push(c.pos),
                            Some(Verdict::Retry { code, message }) => {
                                tracing::info!(peer = name, event_id = %c.event_id, %code, %message, "peer asks to send the event again later");
                                again.push(c.pos);
                            }
                            Some(Verdict::Rejected { code, message }) => {
                                tracing::warn!(peer = name, event_id = %c.event_id, %code, %message, "peer rejected an event");
                                done.push(c.pos);
                            }
                            None => {
                                tracing::warn!(peer = name, event_id = %c.event_id, "peer gave no verdict for an event");
                                done.push(c.pos);
                            }
                        }
                    }
                    if let Err(e) = store
                        .fed_transaction_answered(name, &self.inner.us, plan.cursor, &done, &again, now_ms() as i64)
                        .await
                    {
                        // The same batch goes again, under the same id: the peer answers it
                        // from its record.
                        tracing::warn!(peer = name, error = %e, "cannot record a delivery");
                        self.pause(&dest, STORE_PAUSE).await;
                        continue;
                    }
                    edu_batch = None;
                    if plan.cursor > row.delivered_pos {
                        has_retries = true;
                    }
                    if !again.is_empty() {
                        has_retries = true;
                        retry_rounds = retry_rounds.saturating_add(1);
                        retry_due = now_ms() + self.backoff(retry_rounds);
                    } else if !plan.retried.is_empty() {
                        retry_rounds = 0;
                    }
                }
                Err(e) => {
                    let failures = row.failures.max(0) as u32 + 1;
                    let mut delay = self.backoff(failures);
                    if let FedError::Refused { retry_after: Some(s), .. } = &e {
                        delay = delay.max(s.saturating_mul(1000)).min(self.inner.cap_ms);
                    }
                    let now = now_ms();
                    let at = now + delay;
                    tracing::info!(peer = name, failures, retry_in_ms = delay, error = %e, "delivery failed");
                    dest.backoff_until.store(at, Ordering::Relaxed);
                    if delay > EDU_STALE_MS {
                        edu_batch = None;
                        lock(&dest.edus).clear();
                    }
                    if let Err(e) =
                        store.fed_delivery_failed(name, failures as i64, at as i64, &e.to_string(), now as i64).await
                    {
                        tracing::warn!(peer = name, error = %e, "cannot record a failed delivery");
                        self.pause(&dest, Duration::from_millis(delay)).await;
                    }
                }
            }
        }
    }

    fn backoff(&self, failures: u32) -> u64 {
        backoff_ms(failures, self.inner.base_ms, self.inner.cap_ms, rand::rng().random::<f64>())
    }

    /// Waits `d`, or less when woken (a peer back, new work) or stopped.
    async fn pause(&self, dest: &Dest, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = dest.wake.notified() => {}
            _ = self.stopped() => {}
        }
    }

    /// Waits for new work (or `until`, when events are due for another try).
    async fn idle(&self, dest: &Dest, until: Option<Duration>) {
        match until {
            Some(d) => self.pause(dest, d).await,
            None => {
                tokio::select! {
                    _ = dest.wake.notified() => {}
                    _ = self.stopped() => {}
                }
            }
        }
    }

    /// Wakes every destination's task: a room's federation switch changed, so events held
    /// for it may go now.
    pub fn wake_all(&self) {
        for dest in lock(&self.inner.dests).values() {
            dest.switch_changed.store(true, Ordering::Release);
            dest.wake.notify_one();
        }
    }

    /// Every destination's status for the admin list.
    pub async fn peers(&self) -> Result<Vec<crate::storage::PeerStatus>, sqlx::Error> {
        self.inner.store.fed_peer_statuses(&self.inner.us, self.inner.store.committed_position()).await
    }
}

/// What a newer ephemeral item replaces: the same participant's typing in the same room, or
/// the same participant's presence.
fn edu_key(edu: &Edu) -> Option<(String, String, String)> {
    let text = |k: &str| edu.content.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match edu.edu_type.as_str() {
        wire::edu::TYPING => Some((edu.edu_type.clone(), text("room_id"), text("fqid"))),
        wire::edu::PRESENCE => Some((edu.edu_type.clone(), String::new(), text("fqid"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod delivery;

    #[test]
    fn newer_ephemeral_items_replace_older_ones_about_the_same_thing() {
        let typing = |room: &str, who: &str| Edu {
            edu_type: wire::edu::TYPING.into(),
            content: json!({"room_id": room, "fqid": who, "typing": true}),
        };
        assert_eq!(edu_key(&typing("r1", "@a:x")), edu_key(&typing("r1", "@a:x")));
        assert_ne!(edu_key(&typing("r1", "@a:x")), edu_key(&typing("r2", "@a:x")));
        let presence = Edu { edu_type: wire::edu::PRESENCE.into(), content: json!({"fqid": "@a:x"}) };
        assert_ne!(edu_key(&presence), edu_key(&typing("", "@a:x")));
        assert_eq!(edu_key(&Edu { edu_type: "other".into(), content: json!({}) }), None);
    }
}
