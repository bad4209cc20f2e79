//! Joins, leaves and invites as plain functions over data (contract 8.1): the membership
//! template a resident server answers to `make_join` / `make_leave`, how the joiner completes
//! it, the stripped state an invite carries, and the checks on a `send_join` answer (every
//! state event authorised by its auth chain, the join authorised by the state).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::auth::{self, AuthError, RoomVersion};
use crate::event::{EventId, Pdu, StateMap, parse_fqid, types};
use crate::wire::MAX_STATE_EVENTS;

/// Why a template, an answer or an invite is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("bad template: {0}")]
    BadTemplate(String),
    #[error("bad send_join answer: {0}")]
    BadAnswer(String),
    #[error("the room's rules refuse it: {0}")]
    Refused(#[from] AuthError),
}

/// The membership template of `make_join` / `make_leave`: everything but `origin`,
/// `origin_ts`, `event_uuid`, hashes and signatures. `extremities` are `(event_id, depth)`.
pub fn template(
    room_id: &str,
    fqid: &str,
    membership: &str,
    extremities: &[(String, i64)],
    auth_events: &[String],
) -> Value {
    let depth = extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
    let prev: Vec<&str> = extremities.iter().map(|(id, _)| id.as_str()).collect();
    json!({
        "room_id": room_id,
        "sender": fqid,
        "state_key": fqid,
        "event_type": types::MEMBER,
        "content": {"membership": membership},
        "prev_events": prev,
        "auth_events": auth_events,
        "depth": depth,
    })
}

/// The template as a [`Pdu`] from `origin` (no id yet), for the rules to look at before it is
/// answered.
pub fn template_pdu(template: &Value, origin: &str) -> Result<Pdu, JoinError> {
    let mut v = template.clone();
    let obj = v.as_object_mut().ok_or_else(|| JoinError::BadTemplate("not an object".into()))?;
    obj.insert("origin".into(), json!(origin));
    obj.insert("origin_ts".into(), json!(0));
    obj.insert("event_uuid".into(), json!("template"));
    obj.insert("hashes".into(), json!({"sha256": ""}));
    Pdu::parse("evt-template", &v).map_err(|e| JoinError::BadTemplate(e.to_string()))
}

/// Completes a resident server's template into the joiner's unsigned event: checks that it is
/// the membership asked for, of `fqid` in `room_id`, then sets `origin` (the joiner's server),
/// `origin_ts` (Unix seconds) and `event_uuid`. The caller hashes and signs it.
pub fn complete_template(
    template: &Value,
    room_id: &str,
    fqid: &str,
    membership: &str,
    origin_ts: i64,
    event_uuid: &str,
) -> Result<Value, JoinError> {
    let bad = |m: &str| JoinError::BadTemplate(m.to_owned());
    let t = template.as_object().ok_or_else(|| bad("not an object"))?;
    let text = |k: &str| t.get(k).and_then(Value::as_str);
    if text("room_id") != Some(room_id) {
        return Err(bad("room_id is not the room asked about"));
    }
    if text("sender") != Some(fqid) || text("state_key") != Some(fqid) {
        return Err(bad("sender and state_key must be the joiner"));
    }
    if text("event_type") != Some(types::MEMBER) {
        return Err(bad("not a member event"));
    }
    if t.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str) != Some(membership) {
        return Err(bad("not the membership asked for"));
    }
    let (_, server) = parse_fqid(fqid).ok_or_else(|| bad("the joiner is not an fqid"))?;
    // Only what the template may fill in is kept: the rest is the joiner's to set.
    let mut out = Map::new();
    for k in ["room_id", "sender", "state_key", "event_type", "content", "prev_events", "auth_events", "depth"] {
        let v = t.get(k).ok_or_else(|| JoinError::BadTemplate(format!("{k} is missing")))?;
        out.insert(k.to_owned(), v.clone());
    }
    out.insert("origin".into(), json!(server));
    out.insert("origin_ts".into(), json!(origin_ts));
    out.insert("event_uuid".into(), json!(event_uuid));
    let event = Value::Object(out);
    // The shape is checked now, not by the resident server later.
    template_pdu(&event, server)?;
    Ok(event)
}

/// An event's stripped form for `invite_room_state`: `{event_type, state_key, sender, content}`.
pub fn stripped(event: &Pdu) -> Value {
    json!({
        "event_type": event.event_type,
        "state_key": event.state_key.clone().unwrap_or_default(),
        "sender": event.sender,
        "content": event.content,
    })
}

/// The state entries an invite shows the invitee: create, name, topic, join rules, the
/// inviter's member event.
pub fn invite_state_keys(inviter: &str) -> Vec<(String, String)> {
    let room = |t: &str| (t.to_owned(), String::new());
    vec![
        room(types::CREATE),
        room(types::NAME),
        room(types::TOPIC),
        room(types::JOIN_RULES),
        (types::MEMBER.to_owned(), inviter.to_owned()),
    ]
}

/// What an invitee's server reads from `invite_room_state` to show the invitation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InviteSummary {
    pub room_type: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    /// The room's creator (the create event's sender).
    pub creator: Option<String>,
}

/// Reads the stripped state of an invite; unknown or malformed entries are skipped (it is only
/// a preview: the state itself comes with the join).
pub fn read_invite_state(stripped: &[Value]) -> InviteSummary {
    let mut out = InviteSummary::default();
    for e in stripped.iter().take(64) {
        let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
        let content = |k: &str| e.get("content").and_then(|c| c.get(k)).and_then(Value::as_str).map(str::to_owned);
        match text("event_type").as_deref() {
            Some(types::CREATE) => {
                out.room_type = content("room_type");
                out.creator = text("sender");
            }
            Some(types::NAME) => out.name = content("name"),
            Some(types::TOPIC) => out.topic = content("topic"),
            _ => {}
        }
    }
    out
}

/// What a `send_join` answer proved: the state before the join, by id, and the room version.
#[derive(Debug, Clone)]
pub struct CheckedJoin {
    pub version: RoomVersion,
    pub state: StateMap<EventId>,
}

/// The room version named by the create event among `state`.
pub fn version_of_state(state: &[Pdu]) -> Result<RoomVersion, JoinError> {
    let create = state
        .iter()
        .find(|e| e.is_room_state(types::CREATE))
        .ok_or_else(|| JoinError::BadAnswer("the state has no create event".into()))?;
    Ok(RoomVersion::of_create(create)?)
}

/// Checks a `send_join` answer whose events passed the signature and hash checks: every event
/// of the room asked about; every state event (and auth chain event) authorised by its own auth
/// events, all of them in the answer; the state holding each key once; the join authorised by
/// the state before it. Answers the state as ids.
pub fn check_send_join(join: &Pdu, state: &[Pdu], auth_chain: &[Pdu]) -> Result<CheckedJoin, JoinError> {
    if state.len() > MAX_STATE_EVENTS || auth_chain.len() > MAX_STATE_EVENTS {
        return Err(JoinError::BadAnswer("too many events".into()));
    }
    let version = version_of_state(state)?;
    let mut known: HashMap<EventId, Pdu> = HashMap::with_capacity(state.len() + auth_chain.len());
    for e in auth_chain.iter().chain(state) {
        if e.room_id != join.room_id {
            return Err(JoinError::BadAnswer(format!("{} is of another room", e.event_id)));
        }
        known.insert(e.event_id.clone(), e.clone());
    }
    for e in known.values() {
        if e.event_type == types::CREATE {
            auth::check(version, e, &StateMap::<&Pdu>::new())?;
            continue;
        }
        let auth_state = auth::auth_state_from_auth_events(e, &known)?;
        auth::check(version, e, &auth_state).map_err(|err| {
            JoinError::BadAnswer(format!("{} is not authorised by its auth events: {err}", e.event_id))
        })?;
    }
    let mut ids: StateMap<EventId> = StateMap::new();
    let mut by_key: StateMap<&Pdu> = StateMap::new();
    for e in state {
        let key = e.state_entry().ok_or_else(|| JoinError::BadAnswer(format!("{} is not state", e.event_id)))?;
        if ids.insert(key.clone(), e.event_id.clone()).is_some() {
            return Err(JoinError::BadAnswer("the state names a key twice".into()));
        }
        by_key.insert(key, e);
    }
    auth::check(version, join, &by_key)?;
    Ok(CheckedJoin { version, state: ids })
}

/// Orders events so that every event comes after its auth events (by depth, then id: an auth
/// event is always shallower than what it authorises in a well-formed room).
pub fn auth_order(events: &mut [Pdu]) {
    events.sort_by(|a, b| (a.depth, &a.event_id).cmp(&(b.depth, &b.event_id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> crypto::ServerKey {
        crypto::ServerKey::from_seed("1", &[7u8; 32]).unwrap()
    }

    /// Builds, signs and parses an event of `origin`.
    fn ev(v: Value) -> Pdu {
        let origin = v["origin"].as_str().unwrap().to_owned();
        let (id, signed) = crypto::build_and_sign_event(v, &origin, &key()).unwrap();
        Pdu::parse(&id, &signed).unwrap()
    }

    fn base(room: &str, sender: &str, t: &str, key: Option<&str>, content: Value, prev: &[&Pdu], auth: &[&Pdu]) -> Pdu {
        let depth = prev.iter().map(|p| p.depth).max().unwrap_or(0) + 1;
        let mut v = json!({
            "event_uuid": format!("u{depth}{t}"),
            "room_id": room, "sender": sender, "origin": parse_fqid(sender).unwrap().1,
            "origin_ts": 1_700_000_000 + depth, "event_type": t, "content": content,
            "prev_events": prev.iter().map(|p| p.event_id.clone()).collect::<Vec<_>>(),
            "auth_events": auth.iter().map(|p| p.event_id.clone()).collect::<Vec<_>>(),
            "depth": depth,
        });
        if let Some(k) = key {
            v["state_key"] = json!(k);
        }
        ev(v)
    }

    /// A public room of `@alice:a.test`: create, join, power levels, join rules.
    fn room(join_rule: &str) -> Vec<Pdu> {
        let a = "@alice:a.test";
        let create = base(
            "room-1",
            a,
            types::CREATE,
            Some(""),
            json!({"creator": a, "room_type": "group", "room_version": "1"}),
            &[],
            &[],
        );
        let join = base("room-1", a, types::MEMBER, Some(a), json!({"membership": "join"}), &[&create], &[&create]);
        let pl = base(
            "room-1",
            a,
            types::POWER_LEVELS,
            Some(""),
            json!({"users": {a: 100}, "users_default": 0}),
            &[&join],
            &[&create, &join],
        );
        let jr = base(
            "room-1",
            a,
            types::JOIN_RULES,
            Some(""),
            json!({"join_rule": join_rule}),
            &[&pl],
            &[&create, &join, &pl],
        );
        vec![create, join, pl, jr]
    }

    fn join_of(state: &[Pdu], who: &str) -> Pdu {
        let ids: Vec<String> =
            state.iter().filter(|e| e.event_type != types::MEMBER).map(|e| e.event_id.clone()).collect();
        let t = template("room-1", who, "join", &[(state[3].event_id.clone(), state[3].depth)], &ids);
        let v = complete_template(&t, "room-1", who, "join", 1_700_000_100, "uuid-1").unwrap();
        ev(v)
    }

    #[test]
    fn a_public_room_is_joined_from_a_checked_answer() {
        let state = room("public");
        let join = join_of(&state, "@bob:b.test");
        let checked = check_send_join(&join, &state, &state).unwrap();
        assert_eq!(checked.state.len(), 4);
        assert_eq!(checked.version, RoomVersion::V1);
    }

    #[test]
    fn an_invite_only_room_refuses_an_uninvited_joiner() {
        let state = room("invite");
        let join = join_of(&state, "@bob:b.test");
        assert!(matches!(check_send_join(&join, &state, &state), Err(JoinError::Refused(AuthError::NotInvited))));
    }

    #[test]
    fn an_answer_missing_auth_events_or_of_another_room_is_refused() {
        let state = room("public");
        let join = join_of(&state, "@bob:b.test");
        // Power levels without the join it is authorised by.
        let partial: Vec<Pdu> = vec![state[0].clone(), state[2].clone(), state[3].clone()];
        assert!(check_send_join(&join, &partial, &partial).is_err());
        let mut other = state.clone();
        other[3].room_id = "room-2".into();
        assert!(matches!(check_send_join(&join, &other, &other), Err(JoinError::BadAnswer(_))));
    }

    #[test]
    fn templates_are_checked_before_they_are_signed() {
        let t = template("room-1", "@bob:b.test", "join", &[("evt-a".into(), 4)], &["evt-c".into()]);
        assert_eq!(t["depth"], 5);
        assert!(complete_template(&t, "room-2", "@bob:b.test", "join", 1, "u").is_err());
        assert!(complete_template(&t, "room-1", "@eve:b.test", "join", 1, "u").is_err());
        assert!(complete_template(&t, "room-1", "@bob:b.test", "leave", 1, "u").is_err());
        let done = complete_template(&t, "room-1", "@bob:b.test", "join", 1, "u").unwrap();
        assert_eq!(done["origin"], "b.test");
    }

    #[test]
    fn invite_state_reads_the_preview() {
        let state = room("invite");
        let stripped: Vec<Value> = state.iter().map(stripped).collect();
        let s = read_invite_state(&stripped);
        assert_eq!(s.room_type.as_deref(), Some("group"));
        assert_eq!(s.creator.as_deref(), Some("@alice:a.test"));
        assert_eq!(read_invite_state(&[json!(1), json!({"event_type": 3})]), InviteSummary::default());
    }
}
