//! Messages, edits, redactions and reactions (contract section 5).
//!
//! Each is an event of its own; the message row also carries its folded state (current
//! content, original content, edit and redaction times), and reactions have a uniqueness table,
//! so listing a page needs no replay.

use serde_json::{Value, json};

use crate::clock::{iso8601, now_secs};
use crate::error::{ApiError, ApiResult};
use crate::group_commit::{CheckedSend, GroupCommit, References, SendRequest, Sent};
use crate::ids;
use crate::rooms::{self, NewEventSpec, event_types, rules};
use crate::storage::{MessageRow, PageQuery, Participant, ReactionCount, Store};

/// Event content may be at most this large as canonical JSON.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
pub const EDIT: &str = "swp.room.edit";
pub const REACTION: &str = "swp.room.reaction";
pub const REDACTION: &str = "swp.room.redaction";
pub const MAX_PAGE: i64 = 200;

/// Checks a message body: an object, canonical-JSON encodable, within the size limit, with the
/// well-known fields of the right types. Answers its canonical JSON, as it is signed and stored.
pub fn validate_content(content: &Value) -> ApiResult<String> {
    // Only an import writes `_imported_*` keys: a member must not forge an imported author.
    if let Some(key) = content.as_object().and_then(|o| o.keys().find(|k| k.starts_with(IMPORTED_PREFIX))) {
        return Err(ApiError::bad_request(format!(
            "content key {key:?} is reserved: keys starting with {IMPORTED_PREFIX} are set by imports only"
        )));
    }
    // Only the server writes `sent_by`: a member must not forge who really sent a message.
    if content.get(SENT_BY).is_some() {
        return Err(ApiError::bad_request(format!(
            "content key {SENT_BY:?} is reserved: the server sets it on sends on behalf of another participant"
        )));
    }
    validate_stored_content(content)
}

/// The content key, inside the signed event, naming (by fqid) who really sent a message that
/// was sent on behalf of another participant (`as_participant_id`).
pub const SENT_BY: &str = "sent_by";

/// The content of a send on behalf of another participant: the checked `content` with
/// `sent_by` set to the caller's fqid, and its canonical JSON (encoded again, and checked
/// against the size limit again: only these sends pay for a second encoding).
pub fn stamp_sent_by(mut content: Value, caller_fqid: &str) -> ApiResult<(Value, String)> {
    let obj = content.as_object_mut().ok_or_else(|| ApiError::bad_request("content must be a JSON object"))?;
    obj.insert(SENT_BY.into(), json!(caller_fqid));
    let canonical = validate_stored_content(&content)?;
    Ok((content, canonical))
}

/// What a message's content points at outside itself, checked against the database: a
/// `swp.media` message's `media_id` must name an upload of this server (else 400), and
/// `reply_to_event_id` an event of the same room. Sends and edits run this same check. The
/// reply is answered, not raised, so that each caller raises it at its own place in the check
/// order (after membership: a room the caller may not see answers 404 `SW_ROOM_NOT_FOUND`,
/// whatever the content names).
pub async fn check_references(store: &Store, room_id: &str, content: &Value) -> ApiResult<References> {
    if let Some(media_id) = media_id_of(content)
        && (!ids::is_media_id(media_id) || store.media(media_id).await?.is_none())
    {
        return Err(ApiError::bad_request("media_id names no media on this server"));
    }
    let reply_found = match content.get("reply_to_event_id").and_then(Value::as_str) {
        Some(reply) => ids::is_event_id(reply) && store.event_position(room_id, reply).await?.is_some(),
        None => true,
    };
    Ok(References::new(reply_found))
}

/// The upload a message names: a `swp.media` message's `media_id`.
pub fn media_id_of(content: &Value) -> Option<&str> {
    (content.get("msgtype").and_then(Value::as_str) == Some("swp.media"))
        .then(|| content.get("media_id").and_then(Value::as_str))
        .flatten()
}

/// Content keys an import sets: the original author, time, and an earlier import's author.
pub const IMPORTED_PREFIX: &str = "_imported_";
pub const IMPORTED_SENDER: &str = "_imported_sender";
pub const IMPORTED_ORIGIN_TS: &str = "_imported_origin_ts";
pub const IMPORTED_PREVIOUS: &str = "_imported_previous";
/// An imported message's original `sent_by` (the importer is the sender of everything here).
pub const IMPORTED_SENT_BY: &str = "_imported_sent_by";

/// [`validate_content`] without the reserved-key check: for content the server annotates itself
/// (a room import) and for signed content that an earlier import annotated.
pub fn validate_stored_content(content: &Value) -> ApiResult<String> {
    let Some(obj) = content.as_object() else {
        return Err(ApiError::bad_request("content must be a JSON object"));
    };
    let canonical = crypto::to_canonical_string(content)
        .map_err(|e| ApiError::bad_request(format!("content is not canonical JSON: {e}")))?;
    if canonical.len() > MAX_CONTENT_BYTES {
        return Err(ApiError::ContentTooLarge(format!("content is over {MAX_CONTENT_BYTES} bytes")));
    }
    let msgtype = match obj.get("msgtype") {
        None => None,
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 128 => Some(t.as_str()),
        Some(_) => return Err(ApiError::bad_request("msgtype must be a non-empty string")),
    };
    if matches!(msgtype, Some("swp.text" | "swp.notice" | "swp.code")) && !obj.get("body").is_some_and(Value::is_string)
    {
        return Err(ApiError::bad_request("text messages need a string body"));
    }
    if msgtype == Some("swp.media") && !obj.get("media_id").and_then(Value::as_str).is_some_and(ids::is_media_id) {
        return Err(ApiError::bad_request("swp.media messages need a media_id"));
    }
    if let Some(m) = obj.get("mentions") {
        let ok =
            m.as_array().is_some_and(|a| a.iter().all(|f| f.as_str().is_some_and(|f| ids::parse_fqid(f).is_some())));
        if !ok {
            return Err(ApiError::bad_request("mentions must be a list of fqids"));
        }
    }
    if let Some(r) = obj.get("reply_to_event_id") {
        if !r.as_str().is_some_and(ids::is_event_id) {
            return Err(ApiError::bad_request("reply_to_event_id must be an event id"));
        }
    }
    Ok(canonical)
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The client-facing shape of a message with its folded state.
pub fn message_view(row: &MessageRow, reactions: &[ReactionCount]) -> Value {
    let mut v = json!({
        "id": row.event_id,
        "room_id": row.room_id,
        "sender_id": row.sender_id,
        "sender_fqid": row.sender_fqid,
        "event_type": row.event_type,
        "content": parse_json(&row.content),
        "stream_position": row.stream_position,
        "origin_ts": row.origin_ts,
        "created_at": iso8601(row.origin_ts),
        "edited_at": row.edited_at.map(iso8601),
        "redacted_at": row.redacted_at.map(iso8601),
        "event_uuid": row.event_uuid,
        "reactions": reactions
            .iter()
            .filter(|r| r.target_event_id == row.event_id)
            .map(|r| json!({"emoji": r.emoji, "count": r.count, "reacted_by_me": r.mine != 0}))
            .collect::<Vec<_>>(),
    });
    if let Some(orig) = &row.original_content {
        v["original_content"] = parse_json(orig);
    }
    if let Some(u) = &row.unsigned_data {
        v["unsigned"] = parse_json(u);
    }
    if let Some(r) = &row.relates_to {
        v["relates_to"] = json!(r);
    }
    if let Some(k) = &row.state_key {
        v["state_key"] = json!(k);
    }
    v
}

/// A room event as the realtime feed delivers it: raw (not folded), typed by `type`.
pub fn event_frame(row: &MessageRow) -> Value {
    let mut v = message_view(row, &[]);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("reactions");
        obj.insert("type".into(), json!(row.event_type));
    }
    v
}

async fn folded(store: &Store, room_id: &str, event_id: &str, viewer: &Participant) -> ApiResult<Value> {
    let row = store.message(room_id, event_id).await?.ok_or(ApiError::EventNotFound)?;
    let reactions = store.reaction_counts(std::slice::from_ref(&row.event_id), &viewer.id).await?;
    Ok(message_view(&row, &reactions))
}

/// One event of a room the caller has joined, folded, with its signed wire form.
pub async fn fetch(store: &Store, caller: &Participant, room_id: &str, event_id: &str) -> ApiResult<(Value, Value)> {
    let view = store.room_view(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)?;
    let seat = rules::Seat { membership: view.my_membership, power: view.my_power_level.unwrap_or(0) };
    rules::require_joined(&view.room, seat, caller)?;
    let event = folded(store, room_id, event_id, caller).await?;
    let pdu = store.event_pdu(room_id, event_id).await?.map(|p| parse_json(&p)).unwrap_or(Value::Null);
    Ok((event, pdu))
}

/// Sends a message. Answers the message and whether it was created (false: an idempotent
/// retry of the same `event_uuid`). What needs no database is checked here; the rest runs in
/// the [`GroupCommit`], which answers once the message is durable.
pub async fn send(
    store: &Store,
    group_commit: &GroupCommit,
    caller: &Participant,
    room_id: &str,
    req: SendRequest,
) -> ApiResult<SendOutcome> {
    let mut req = req;
    let mut content_json = validate_content(&req.content)?;
    if let Some(u) = &req.event_uuid {
        if u.is_empty() || u.len() > 128 || u.chars().any(char::is_control) {
            return Err(ApiError::bad_request("event_uuid must be 1 to 128 printable characters"));
        }
    }
    // Who really sent it goes inside the signed event; the writer checks that the caller may.
    if req.as_participant_id.is_some() {
        (req.content, content_json) = stamp_sent_by(std::mem::take(&mut req.content), &caller.fqid)?;
    }
    // Plain text without a reply or media (the common case) costs no database read here.
    let references = check_references(store, room_id, &req.content).await?;
    match group_commit.send(caller, room_id, CheckedSend { req, content_json, references }).await? {
        // Everything the answer needs is known: no read-back.
        Sent::Created(row) => Ok(SendOutcome::Created(row)),
        Sent::Existing { event_id } => Ok(SendOutcome::Existing(folded(store, room_id, &event_id, caller).await?)),
    }
}

/// What a send answers.
pub enum SendOutcome {
    /// The new message as stored (shown with [`message_out`]).
    Created(MessageRow),
    /// A retry of an `event_uuid`: the message first sent with it, folded as it is now.
    Existing(Value),
}

pub async fn edit(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    event_id: &str,
    new_content: Value,
    edit_window_secs: i64,
) -> ApiResult<Value> {
    // The new content passes the checks of a send: shape, media, and a reply in the same room.
    validate_content(&new_content)?;
    let references = check_references(store, room_id, &new_content).await?;
    let mut tx = store.write().await?;
    let (room, me) = rooms::load(&mut tx, room_id, caller).await?;
    let seat = rules::Seat::of(me.as_ref());
    rules::require_joined(&room, seat, caller)?;
    let target = tx.message(room_id, event_id).await?.filter(|m| m.event_type == event_types::MESSAGE);
    let target = target.ok_or(ApiError::EventNotFound)?;
    if target.sender_id != caller.id {
        return Err(ApiError::EditForbidden("only the sender can edit a message".into()));
    }
    rules::require_open(&room)?;
    if target.redacted_at.is_some() {
        return Err(ApiError::Conflict("a redacted message cannot be edited".into()));
    }
    let now = now_secs();
    if now - target.origin_ts > edit_window_secs {
        return Err(ApiError::EventTooOldToEdit(format!("messages can be edited for {edit_window_secs} s")));
    }
    references.require_reply()?;
    let content = json!({"event_id": event_id, "new_content": new_content});
    rooms::append_event(
        &mut tx,
        NewEventSpec {
            room_id,
            sender_id: &caller.id,
            event_type: EDIT,
            state_key: None,
            content: &content,
            event_uuid: None,
            relates_to: Some(event_id),
            unsigned: None,
        },
    )
    .await?;
    tx.apply_edit(event_id, &new_content.to_string(), now).await?;
    tx.commit().await?;
    folded(store, room_id, event_id, caller).await
}

/// Redacts a message or a reaction: the body is wiped for good, id and metadata stay.
pub async fn redact(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    event_id: &str,
    reason: Option<&str>,
) -> ApiResult<Value> {
    let mut tx = store.write().await?;
    let (room, me) = rooms::load(&mut tx, room_id, caller).await?;
    let seat = rules::Seat::of(me.as_ref());
    rules::require_joined(&room, seat, caller)?;
    let target = tx.message(room_id, event_id).await?.ok_or(ApiError::EventNotFound)?;
    if target.event_type != event_types::MESSAGE && target.event_type != REACTION {
        return Err(ApiError::RedactForbidden("only messages and reactions can be redacted".into()));
    }
    if target.sender_id != caller.id {
        let sender_power = tx.member(room_id, &target.sender_id).await?.map(|m| m.power_level).unwrap_or(0);
        let mine = seat.effective_power();
        let needed = rooms::thresholds(&mut tx, room_id).await?.redact;
        if mine < needed || mine <= sender_power {
            return Err(ApiError::RedactForbidden(format!(
                "redacting another's message needs power level {needed} and above the sender's"
            )));
        }
    }
    rules::require_open(&room)?;
    if target.redacted_at.is_none() {
        append_redaction(&mut tx, room_id, caller, event_id, reason).await?;
        if target.event_type == REACTION {
            tx.forget_reaction_event(event_id).await?;
        }
        // The body goes; who really sent a message sent on behalf of another stays in the
        // folded row, as the sender does (the redacted wire form keeps neither body nor it).
        let sent = parse_json(target.original_content.as_deref().unwrap_or(&target.content));
        if let Some(by) = sent.get(SENT_BY).filter(|v| v.is_string()) {
            tx.set_event_content(event_id, &json!({SENT_BY: by}).to_string()).await?;
        }
        tx.commit().await?;
    }
    folded(store, room_id, event_id, caller).await
}

/// Records a redaction of `target` and wipes it: the folded row, the stored wire forms (its own
/// and its edits'), and its reactions.
async fn append_redaction(
    tx: &mut crate::storage::WriteTx,
    room_id: &str,
    caller: &Participant,
    target: &str,
    reason: Option<&str>,
) -> ApiResult<()> {
    let mut content = json!({"redacts": target});
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    let spec = NewEventSpec {
        room_id,
        sender_id: &caller.id,
        event_type: REDACTION,
        state_key: None,
        content: &content,
        event_uuid: None,
        relates_to: Some(target),
        unsigned: None,
    };
    rooms::append_by(tx, spec, caller.fqid.clone()).await?;
    tx.apply_redaction(target, now_secs()).await?;
    rooms::redact_stored_pdus(tx, target).await?;
    Ok(())
}

pub fn validate_emoji(emoji: &str) -> ApiResult<()> {
    if emoji.is_empty() || emoji.chars().count() > 32 || emoji.chars().any(char::is_control) {
        return Err(ApiError::bad_request("emoji must be 1 to 32 printable characters"));
    }
    Ok(())
}

/// Opens the write transaction of a reaction change: a valid emoji, the caller joined, and the
/// room; the target check differs between adding and removing.
async fn reaction_tx(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    emoji: &str,
) -> ApiResult<(crate::storage::WriteTx, crate::storage::Room)> {
    validate_emoji(emoji)?;
    let mut tx = store.write().await?;
    let (room, me) = rooms::load(&mut tx, room_id, caller).await?;
    rules::require_joined(&room, rules::Seat::of(me.as_ref()), caller)?;
    Ok((tx, room))
}

/// Adds the caller's reaction; a repeat is a no-op. Answers the target message.
pub async fn react(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    event_id: &str,
    emoji: &str,
) -> ApiResult<Value> {
    let (mut tx, room) = reaction_tx(store, caller, room_id, emoji).await?;
    let target = tx.message(room_id, event_id).await?;
    if !target.is_some_and(|t| t.event_type == event_types::MESSAGE && t.redacted_at.is_none()) {
        return Err(ApiError::EventNotFound);
    }
    rules::require_open(&room)?;
    let content = json!({"event_id": event_id, "emoji": emoji});
    let (reaction_id, _) = rooms::append_event(
        &mut tx,
        NewEventSpec {
            room_id,
            sender_id: &caller.id,
            event_type: REACTION,
            state_key: None,
            content: &content,
            event_uuid: None,
            relates_to: Some(event_id),
            unsigned: None,
        },
    )
    .await?;
    if tx.add_reaction(event_id, &caller.id, emoji, &reaction_id).await? {
        tx.commit().await?;
    }
    // Otherwise the reaction existed: dropping the transaction discards the new event.
    folded(store, room_id, event_id, caller).await
}

/// Removes the caller's reaction by redacting its event; removing an absent one is a no-op.
pub async fn unreact(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    event_id: &str,
    emoji: &str,
) -> ApiResult<Value> {
    let (mut tx, room) = reaction_tx(store, caller, room_id, emoji).await?;
    if tx.message(room_id, event_id).await?.is_none_or(|t| t.event_type != event_types::MESSAGE) {
        return Err(ApiError::EventNotFound);
    }
    rules::require_open(&room)?;
    if let Some(reaction_id) = tx.remove_reaction(event_id, &caller.id, emoji).await? {
        append_redaction(&mut tx, room_id, caller, &reaction_id, None).await?;
        tx.commit().await?;
    }
    folded(store, room_id, event_id, caller).await
}

pub struct Page {
    pub messages: Vec<MessageRow>,
    pub reactions: Vec<ReactionCount>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// [`message_view`] as a serialisable struct over the stored row: stored JSON (content,
/// original content, unsigned) is spliced into the answer as it is, not parsed and re-encoded.
/// Pages are the hot read path; both shapes are kept identical by a test.
#[derive(serde::Serialize)]
pub struct MessageOut<'a> {
    id: &'a str,
    room_id: &'a str,
    sender_id: &'a str,
    sender_fqid: &'a str,
    event_type: &'a str,
    content: &'a serde_json::value::RawValue,
    stream_position: i64,
    origin_ts: i64,
    created_at: String,
    edited_at: Option<String>,
    redacted_at: Option<String>,
    event_uuid: Option<&'a str>,
    reactions: Vec<ReactionOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_content: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsigned: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relates_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct ReactionOut<'a> {
    emoji: &'a str,
    count: i64,
    reacted_by_me: bool,
}

fn raw(text: &str) -> &serde_json::value::RawValue {
    // Stored JSON was written by this server from a serde_json value, so it always parses.
    serde_json::from_str::<&serde_json::value::RawValue>(text).unwrap_or(serde_json::value::RawValue::NULL)
}

pub fn message_out<'a>(row: &'a MessageRow, reactions: &'a [ReactionCount]) -> MessageOut<'a> {
    MessageOut {
        id: &row.event_id,
        room_id: &row.room_id,
        sender_id: &row.sender_id,
        sender_fqid: &row.sender_fqid,
        event_type: &row.event_type,
        content: raw(&row.content),
        stream_position: row.stream_position,
        origin_ts: row.origin_ts,
        created_at: iso8601(row.origin_ts),
        edited_at: row.edited_at.map(iso8601),
        redacted_at: row.redacted_at.map(iso8601),
        event_uuid: row.event_uuid.as_deref(),
        reactions: reactions
            .iter()
            .filter(|r| r.target_event_id == row.event_id)
            .map(|r| ReactionOut { emoji: &r.emoji, count: r.count, reacted_by_me: r.mine != 0 })
            .collect(),
        original_content: row.original_content.as_deref().map(raw),
        unsigned: row.unsigned_data.as_deref().map(raw),
        relates_to: row.relates_to.as_deref(),
        state_key: row.state_key.as_deref(),
    }
}

/// A page of a room's messages, newest first (`forward == false`) or oldest first.
pub async fn list(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    from: Option<i64>,
    forward: bool,
    limit: i64,
) -> ApiResult<Page> {
    let view = store.room_view(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)?;
    let seat = rules::Seat { membership: view.my_membership, power: view.my_power_level.unwrap_or(0) };
    rules::require_joined(&view.room, seat, caller)?;
    let mut rows = store.message_page(&PageQuery { room_id, from, forward, limit: limit + 1 }).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    // Only messages that have reactions need their counts (none: no query at all).
    let ids: Vec<String> = rows.iter().filter(|r| r.has_reactions).map(|r| r.message.event_id.clone()).collect();
    let reactions = store.reaction_counts(&ids, &caller.id).await?;
    let next_cursor =
        rows.last().map(|r| r.message.stream_position.to_string()).or_else(|| from.map(|f| f.to_string()));
    Ok(Page { messages: rows.into_iter().map(|r| r.message).collect(), reactions, has_more, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_page_shape_equals_the_view() {
        let row = MessageRow {
            stream_position: 7,
            event_id: "evt-a".into(),
            room_id: "room-1".into(),
            event_type: "swp.room.message".into(),
            sender_id: "p1".into(),
            sender_fqid: "@a:t".into(),
            content: r#"{"body":"hé \"x\"","msgtype":"swp.text","n":[1,{"k":null}]}"#.into(),
            original_content: Some(r#"{"body":"old"}"#.into()),
            origin_ts: 1_778_939_467,
            edited_at: Some(1_778_939_500),
            redacted_at: None,
            event_uuid: Some("u1".into()),
            unsigned_data: Some(r#"{"sent_by":"p0"}"#.into()),
            relates_to: None,
            state_key: None,
        };
        let reactions = vec![
            ReactionCount { target_event_id: "evt-a".into(), emoji: "🚀".into(), count: 2, mine: 1 },
            ReactionCount { target_event_id: "evt-b".into(), emoji: "x".into(), count: 1, mine: 0 },
        ];
        let fast = serde_json::to_value(message_out(&row, &reactions)).unwrap();
        assert_eq!(fast, message_view(&row, &reactions));
        let bare = MessageRow { original_content: None, unsigned_data: None, edited_at: None, ..row };
        assert_eq!(serde_json::to_value(message_out(&bare, &[])).unwrap(), message_view(&bare, &[]));
    }
}
