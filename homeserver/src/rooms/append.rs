//! A room event from request to storage: its auth events picked from the current state, built
//! and signed, checked by the room's rules (`federation::auth`), appended to the graph, and
//! applied to the projections when it is state.

use super::*;

/// Appends a room event sent by `sender`; answers its stream position.
pub(super) async fn emit(
    tx: &mut WriteTx,
    room_id: &str,
    sender: &Participant,
    event_type: &str,
    state_key: Option<&str>,
    content: Value,
) -> ApiResult<i64> {
    let spec = NewEventSpec {
        room_id,
        sender_id: &sender.id,
        event_type,
        state_key,
        content: &content,
        event_uuid: None,
        relates_to: None,
        unsigned: None,
    };
    Ok(append_by(tx, spec, sender.fqid.clone()).await?.stream_position)
}

/// What a domain operation asks to append; ids and timestamps are filled in here.
pub struct NewEventSpec<'a> {
    pub room_id: &'a str,
    pub sender_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a Value,
    pub event_uuid: Option<&'a str>,
    pub relates_to: Option<&'a str>,
    pub unsigned: Option<&'a Value>,
}

/// The state events the rules read for one event, parsed: a [`federation::auth::AuthState`]
/// over a handful of events, found by a scan.
#[derive(Default)]
pub struct AuthEvents(pub Vec<Arc<Pdu>>);

impl AuthState for AuthEvents {
    fn state_event(&self, key: &StateKey) -> Option<&Pdu> {
        self.0.iter().find(|e| e.event_type == key.0 && e.state_key.as_deref() == Some(key.1.as_str())).map(|e| &**e)
    }
}

impl AuthEvents {
    pub fn create(&self) -> Option<&Pdu> {
        self.state_event(&(event_types::CREATE.to_owned(), String::new()))
    }
}

/// The state events an event is authorised by, as the room's rules pick them
/// (`federation::auth::auth_types_for`): the create event, power levels, lifecycle and server
/// ACL, the sender's membership; for a membership event the target's too, and the join rule
/// for a join or an invite. Answers their ids (the event's `auth_events`) and the room's
/// current auth state for the rules, parsed.
async fn auth_events_for(
    tx: &mut WriteTx,
    spec: &NewEventSpec<'_>,
    sender_fqid: &str,
) -> ApiResult<(Vec<String>, AuthEvents)> {
    let (target, joins_or_invites) = match (spec.event_type, spec.state_key) {
        (event_types::MEMBER, Some(t)) => {
            let membership = spec.content.get("membership").and_then(Value::as_str);
            (t, matches!(membership, Some("join" | "invite")))
        }
        _ => (sender_fqid, false),
    };
    let rows = tx.state_pdus(spec.room_id, &[sender_fqid, target]).await?;
    let found: Vec<(String, String, String)> =
        rows.iter().map(|(t, k, id, _)| (t.clone(), k.clone(), id.clone())).collect();
    let ids = pick_auth_events(&found, sender_fqid, target, joins_or_invites);
    let mut state = AuthEvents::default();
    for (_, _, id, pdu) in &rows {
        // Events stored before migration 4 have no wire form: their rooms are not checked.
        if let Some(pdu) = pdu {
            state.0.push(tx.pdu_cache().get_or_parse(id, pdu).map_err(|e| ApiError::internal(e.to_string()))?);
        }
    }
    Ok((ids, state))
}

/// Picks, from `(type, state_key, event_id)` rows of the room's current state, the auth events
/// of an event by `sender_fqid` about `target` (the sender again unless a membership event);
/// the join rule only for joins and invites, the one place the rules read it.
pub(crate) fn pick_auth_events(
    found: &[(String, String, String)],
    sender_fqid: &str,
    target: &str,
    joins_or_invites: bool,
) -> Vec<String> {
    let wanted = [
        (event_types::CREATE, ""),
        (event_types::POWER_LEVELS, ""),
        (event_types::LIFECYCLE, ""),
        (event_types::SERVER_ACL, ""),
        (event_types::MEMBER, sender_fqid),
        (event_types::MEMBER, target),
    ];
    let join_rules = joins_or_invites.then_some((event_types::JOIN_RULES, ""));
    let mut out: Vec<String> = Vec::with_capacity(7);
    for (t, k) in wanted.into_iter().chain(join_rules) {
        if let Some((_, _, id)) = found.iter().find(|(ft, fk, _)| ft == t && fk == k) {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
    }
    out
}

/// Runs the room's authorization rules (`federation::auth::check`, the version its create
/// event names) on a local event about to be appended, over the room's current state. A
/// refusal maps to the `SW_` code a client already gets for the same reason.
///
/// Rooms whose create event names no `room_version` (made before the rules existed) are not
/// checked: their first events (a DM without `dm_parties`, a join rule named everywhere) could
/// never pass, so they stay under the homeserver's own checks and are never federated.
pub(crate) fn authorize(event: &Pdu, state: &impl AuthState, create: Option<&Pdu>) -> ApiResult<()> {
    let create = if event.event_type == event_types::CREATE { Some(event) } else { create };
    let Some(create) = create.filter(|c| c.content.contains_key("room_version")) else {
        return Ok(());
    };
    let version = RoomVersion::of_create(create).map_err(refusal)?;
    federation::auth::check(version, event, state).map_err(refusal)
}

/// The `SW_` code for a refusal of the rules (`docs/federation.md`, "Suggested codes").
pub(crate) fn refusal(e: AuthError) -> ApiError {
    let why = e.to_string();
    match e {
        AuthError::RoomFrozen { .. } => ApiError::RoomFrozen(why),
        AuthError::NotJoined => ApiError::NotMember(why),
        AuthError::Banned
        | AuthError::NotInvited
        | AuthError::NotForOthers
        | AuthError::InsufficientPower { .. }
        | AuthError::NotAboveTarget { .. }
        | AuthError::ServerDenied { .. }
        | AuthError::AclDeniesSender => ApiError::RoomForbidden(why),
        AuthError::DmSeatsTaken | AuthError::DmNoModeration => ApiError::RoomTypeInvariant(why),
        AuthError::AlreadyJoined => ApiError::Conflict(why),
        AuthError::Malformed(_) => ApiError::bad_request(why),
        // The server built the event from its own state: anything else is its own fault.
        _ => ApiError::internal(format!("the room's rules refuse an event built here: {why}")),
    }
}

/// Appends an event in its signed wire form: `prev_events` are the room's forward extremities,
/// `auth_events` the state it depends on, `depth` one more than its deepest parent; the content
/// hash and signature come from the crypto crate and the id is the reference hash. Answers the
/// event id and its stream position.
pub async fn append_event(tx: &mut WriteTx, spec: NewEventSpec<'_>) -> ApiResult<(String, i64)> {
    let a = append(tx, spec).await?;
    Ok((a.event_id, a.stream_position))
}

/// What [`append`] stored, enough to answer a client without reading it back.
pub struct Appended {
    pub event_id: String,
    pub stream_position: i64,
    pub origin_ts: i64,
    pub sender_fqid: String,
    pub event_uuid: String,
}

/// [`append_event`], answering everything it stored.
pub async fn append(tx: &mut WriteTx, spec: NewEventSpec<'_>) -> ApiResult<Appended> {
    let sender_fqid = tx.fqid_of(spec.sender_id).await?.ok_or_else(|| ApiError::internal("event sender vanished"))?;
    append_by(tx, spec, sender_fqid).await
}

/// [`append`] when the caller already knows the sender's fqid (saves a read).
pub async fn append_by(tx: &mut WriteTx, spec: NewEventSpec<'_>, sender_fqid: String) -> ApiResult<Appended> {
    append_projected(tx, spec, sender_fqid, None).await
}

/// Every local event's way in: built and signed, checked by the room's rules against the
/// current state, stored, then applied to the projections ([`project::apply`]) when it is a
/// state event. `local` carries what a create event's `rooms` row needs beyond the event.
pub(crate) async fn append_projected(
    tx: &mut WriteTx,
    spec: NewEventSpec<'_>,
    sender_fqid: String,
    local: Option<&LocalFacts<'_>>,
) -> ApiResult<Appended> {
    let generated_uuid;
    let event_uuid = match spec.event_uuid {
        Some(u) => u,
        None => {
            generated_uuid = ulid::Ulid::generate().to_string().to_lowercase();
            &generated_uuid
        }
    };
    let is_create = spec.event_type == event_types::CREATE;
    let head = tx.graph_head(spec.room_id).await?;
    let (auth_events, auth_state) =
        if is_create { (Vec::new(), AuthEvents::default()) } else { auth_events_for(tx, &spec, &sender_fqid).await? };
    let signer = tx.signer().ok_or_else(|| ApiError::internal("no signing key loaded"))?;
    let signed = sign_event(signer, &spec, None, event_uuid, &sender_fqid, &head.extremities, auth_events)?;
    let pdu = signed.to_pdu(&spec, &sender_fqid, &signer.server_name);
    authorize(&pdu, &auth_state, auth_state.create())?;
    if is_create {
        tx.defer_foreign_keys().await?;
    }
    let event = signed.new_event(&spec, event_uuid, &sender_fqid);
    let auth_events = signed.auth_events.as_slice();
    let (pos, _) = tx.append_local(LocalAppend { event: &event, head: &head, auth_events }).await?;
    if pdu.is_state() {
        project::apply(tx, &pdu, local).await?;
        tx.pdu_cache().insert(Arc::new(pdu));
    }
    Ok(Appended {
        event_id: signed.event_id,
        stream_position: pos,
        origin_ts: signed.origin_ts,
        sender_fqid,
        event_uuid: event_uuid.to_string(),
    })
}

/// An event built and signed, not yet stored.
pub(crate) struct SignedEvent<'a> {
    pub event_id: String,
    pub pdu: String,
    /// Canonical JSON of the content, as stored and answered.
    pub content_json: Cow<'a, str>,
    pub origin_ts: i64,
    pub depth: i64,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
}

impl<'a> SignedEvent<'a> {
    pub fn new_event<'s>(&'s self, spec: &NewEventSpec<'s>, event_uuid: &'s str, sender_fqid: &'s str) -> NewEvent<'s> {
        NewEvent {
            event_id: &self.event_id,
            room_id: spec.room_id,
            event_type: spec.event_type,
            state_key: spec.state_key,
            sender: sender_fqid,
            content: &self.content_json,
            origin_ts: self.origin_ts,
            event_uuid: Some(event_uuid),
            relates_to: spec.relates_to,
            unsigned: spec.unsigned,
            pdu: &self.pdu,
            depth: self.depth,
        }
    }

    /// The event as the rules see it, from the parts it was built from rather than by parsing
    /// its wire form again (the send path checks every message).
    pub fn to_pdu(&self, spec: &NewEventSpec<'_>, sender_fqid: &str, origin: &str) -> Pdu {
        Pdu {
            event_id: self.event_id.clone(),
            room_id: spec.room_id.to_owned(),
            sender: sender_fqid.to_owned(),
            origin: origin.to_owned(),
            origin_ts: self.origin_ts,
            event_type: spec.event_type.to_owned(),
            content: spec.content.as_object().cloned().unwrap_or_default(),
            state_key: spec.state_key.map(str::to_owned),
            prev_events: self.prev_events.clone(),
            auth_events: self.auth_events.clone(),
            depth: self.depth,
        }
    }
}

/// Builds the wire form of an event whose parents are `extremities` (`(event_id, depth)`),
/// signs it, and derives its reference-hash id. Pure: no I/O. `content_json` is the content's
/// canonical JSON when the caller already has it (a send's validation made it).
///
/// The event is assembled from members encoded once ([`crypto::EventDraft`]) rather than as a
/// `Value`: on the send writer's thread, which orders every send, that is a third less work.
pub(crate) fn sign_event<'a>(
    signer: &EventSigner,
    spec: &NewEventSpec<'_>,
    content_json: Option<&'a str>,
    event_uuid: &str,
    sender_fqid: &str,
    extremities: &[(String, i64)],
    auth_events: Vec<String>,
) -> ApiResult<SignedEvent<'a>> {
    let unsignable = |e: crypto::Error| ApiError::bad_request(format!("event cannot be signed: {e}"));
    let content_json = match content_json {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(crypto::to_canonical_string(spec.content).map_err(unsignable)?),
    };
    let depth = extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
    let prev_events: Vec<String> = extremities.iter().map(|(id, _)| id.clone()).collect();
    let origin_ts = now_secs();
    let mut draft = crypto::EventDraft::new(spec.event_type, spec.content, &content_json).map_err(unsignable)?;
    draft
        .string("event_uuid", event_uuid)
        .string("room_id", spec.room_id)
        .string("sender", sender_fqid)
        .string("origin", &signer.server_name)
        .strings("prev_events", &prev_events)
        .strings("auth_events", &auth_events);
    draft.integer("origin_ts", origin_ts).and_then(|d| d.integer("depth", depth)).map_err(unsignable)?;
    if let Some(k) = spec.state_key {
        draft.string("state_key", k);
    }
    let (event_id, pdu) = draft.prepare().map_err(unsignable)?.sign(&signer.server_name, &signer.key);
    Ok(SignedEvent { event_id, pdu, content_json, origin_ts, depth, prev_events, auth_events })
}

/// Replaces the stored wire forms of a redacted event (and of its edits) by their redacted
/// forms, which still verify: signatures cover the redacted event.
pub async fn redact_stored_pdus(tx: &mut WriteTx, event_id: &str) -> ApiResult<()> {
    for (id, pdu) in tx.pdus_of_event_and_edits(event_id).await? {
        let value: Value = serde_json::from_str(&pdu).map_err(ApiError::internal)?;
        let redacted = crypto::redact(&value).map_err(ApiError::internal)?;
        tx.set_pdu(&id, &crypto::to_canonical_string(&redacted).map_err(ApiError::internal)?).await?;
        // The rules must read what peers read: the redacted form, parsed again when next used.
        tx.pdu_cache().forget(&id);
    }
    Ok(())
}
