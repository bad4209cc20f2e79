//! The realtime hub: ephemeral events (typing, presence, read markers) and who is online.
//!
//! Room events need no hub: they are durable, so subscribers watch the store's committed stream
//! position and read what is new. Ephemeral events are broadcast in memory; a client that was
//! away misses them by design (they describe the present, not history).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// Typing notices clear on their own this long after the last `typing: true`.
pub const TYPING_TTL: Duration = Duration::from_secs(4);
/// Recent activity counts as online for this long.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct Ephemeral {
    /// Who may receive it: the participants of a room, or one participant's own sessions.
    pub audience: Audience,
    /// The frame as JSON text, encoded once however many streams send it.
    pub frame: Arc<str>,
}

#[derive(Clone, Debug)]
pub enum Audience {
    RoomMembers(String),
    Participant(String),
    /// Presence: the participant and everyone joined to one of `rooms`, the rooms the
    /// participant is joined to (resolved once by the publisher, so no stream queries).
    PeersOf {
        participant: String,
        rooms: Arc<[String]>,
    },
}

impl Audience {
    /// Whether `participant_id`, joined to `joined`, is in this audience.
    pub fn includes(&self, participant_id: &str, joined: &std::collections::HashSet<String>) -> bool {
        match self {
            Audience::RoomMembers(room) => joined.contains(room),
            Audience::Participant(p) => p == participant_id,
            Audience::PeersOf { participant, rooms } => {
                participant == participant_id || rooms.iter().any(|r| joined.contains(r))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Idle,
    Busy,
    AppearOffline,
    Offline,
}

#[derive(Default)]
struct State {
    /// (room, participant) → when the typing notice lapses.
    typing: HashMap<(String, String), Instant>,
    /// participant → open streams.
    streams: HashMap<String, usize>,
    last_active: HashMap<String, Instant>,
    chosen: HashMap<String, PresenceStatus>,
}

pub struct Hub {
    tx: broadcast::Sender<Ephemeral>,
    state: Mutex<State>,
    /// Turns true when the server shuts down: streams close.
    shutdown: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { tx: broadcast::channel(4096).0, state: Mutex::new(State::default()), shutdown: watch::channel(false).0 }
    }
}

/// One open stream's place in its participant's count, given back when dropped.
pub struct StreamSeat {
    hub: Arc<Hub>,
    participant_id: String,
}

impl Drop for StreamSeat {
    fn drop(&mut self) {
        let mut s = self.hub.state();
        if let Some(n) = s.streams.get_mut(&self.participant_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.streams.remove(&self.participant_id);
            }
        }
    }
}

impl Hub {
    /// Ends every stream (the server is shutting down).
    pub fn shut_down(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn on_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Ephemeral> {
        self.tx.subscribe()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, audience: Audience, mut frame: Value) {
        // Every frame has an id (contract section 6: `{type, id, room_id, …}`); an ephemeral one
        // is no event, so its id is its own, unique, never an event id.
        frame["id"] = Value::String(format!("eph-{}", ulid::Ulid::generate().to_string().to_lowercase()));
        // No subscribers is fine: nobody is listening.
        let _ = self.tx.send(Ephemeral { audience, frame: frame.to_string().into() });
    }

    fn typers(state: &State, room_id: &str, now: Instant) -> Vec<String> {
        let mut v: Vec<String> = state
            .typing
            .iter()
            .filter(|((r, _), until)| r == room_id && **until > now)
            .map(|((_, p), _)| p.clone())
            .collect();
        v.sort();
        v
    }

    /// Sets or clears a typing notice. Announces the room's typers when the set changes; a
    /// repeated `typing: true` only extends the notice, so clients may refresh it freely.
    /// Answers the expiry when a new notice started, so the caller schedules one expiry task.
    pub fn set_typing(&self, room_id: &str, participant_id: &str, typing: bool, now: Instant) -> Option<Instant> {
        let (typers, started) = {
            let mut s = self.state();
            let key = (room_id.to_string(), participant_id.to_string());
            let was_typing = s.typing.get(&key).is_some_and(|until| *until > now);
            if typing {
                let until = now + TYPING_TTL;
                s.typing.insert(key, until);
                if was_typing {
                    return None;
                }
                (Self::typers(&s, room_id, now), Some(until))
            } else {
                if s.typing.remove(&key).is_none() {
                    return None;
                }
                (Self::typers(&s, room_id, now), None)
            }
        };
        self.publish(
            Audience::RoomMembers(room_id.to_string()),
            json!({"type": "typing", "room_id": room_id, "participant_ids": typers}),
        );
        started
    }

    /// Clears a notice that was not renewed and announces the change. Answers when to look
    /// again if it was renewed meanwhile, `None` once it is gone.
    pub fn expire_typing(&self, room_id: &str, participant_id: &str, now: Instant) -> Option<Instant> {
        let typers = {
            let mut s = self.state();
            let key = (room_id.to_string(), participant_id.to_string());
            match s.typing.get(&key) {
                Some(until) if *until > now => return Some(*until),
                Some(_) => {
                    s.typing.remove(&key);
                }
                None => return None,
            }
            Self::typers(&s, room_id, now)
        };
        self.publish(
            Audience::RoomMembers(room_id.to_string()),
            json!({"type": "typing", "room_id": room_id, "participant_ids": typers}),
        );
        None
    }

    pub fn typing_in(&self, room_id: &str, now: Instant) -> Vec<String> {
        Self::typers(&self.state(), room_id, now)
    }

    /// Records activity (any authenticated request).
    pub fn touch(&self, participant_id: &str, now: Instant) {
        let mut s = self.state();
        match s.last_active.get_mut(participant_id) {
            Some(t) => *t = now,
            None => {
                s.last_active.insert(participant_id.to_string(), now);
            }
        }
    }

    /// Takes a stream seat for `participant_id` unless `cap` streams are open already.
    pub fn take_stream_seat(self: &Arc<Self>, participant_id: &str, cap: usize, now: Instant) -> Option<StreamSeat> {
        let mut s = self.state();
        let n = s.streams.entry(participant_id.to_string()).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        s.last_active.insert(participant_id.to_string(), now);
        Some(StreamSeat { hub: self.clone(), participant_id: participant_id.to_string() })
    }

    /// Sets the presence a participant chose.
    pub fn set_presence(&self, participant_id: &str, status: PresenceStatus, now: Instant) {
        let mut s = self.state();
        if status == PresenceStatus::Online {
            s.chosen.remove(participant_id);
        } else {
            s.chosen.insert(participant_id.to_string(), status);
        }
        s.last_active.insert(participant_id.to_string(), now);
    }

    /// The presence frame to announce if what the participant or their peers see changed since
    /// `before` (the participant's own view, read before the change).
    pub fn presence_change(&self, participant_id: &str, before: PresenceStatus, now: Instant) -> Option<Value> {
        // Peers see `appear_offline` as `offline`.
        let seen_now = self.presence_of(participant_id, "", now);
        let after = self.presence_of(participant_id, participant_id, now);
        let as_peer = |p: PresenceStatus| if p == PresenceStatus::AppearOffline { PresenceStatus::Offline } else { p };
        (as_peer(before) != seen_now || before != after)
            .then(|| json!({"type": "presence", "room_id": null, "participant_id": participant_id, "status": seen_now}))
    }

    /// Announces a presence frame to the participant and to everyone joined to `rooms`.
    pub fn publish_presence(&self, participant_id: &str, rooms: Vec<String>, frame: Value) {
        self.publish(Audience::PeersOf { participant: participant_id.to_string(), rooms: rooms.into() }, frame);
    }

    /// The presence of `participant_id` as `viewer_id` sees it: `appear_offline` only to oneself.
    pub fn presence_of(&self, participant_id: &str, viewer_id: &str, now: Instant) -> PresenceStatus {
        let s = self.state();
        let chosen = s.chosen.get(participant_id).copied();
        if chosen == Some(PresenceStatus::AppearOffline) {
            return if viewer_id == participant_id { PresenceStatus::AppearOffline } else { PresenceStatus::Offline };
        }
        let connected = s.streams.get(participant_id).is_some_and(|n| *n > 0);
        let recent =
            s.last_active.get(participant_id).is_some_and(|t| now.saturating_duration_since(*t) < ACTIVE_WINDOW);
        if !(connected || recent) {
            return PresenceStatus::Offline;
        }
        chosen.unwrap_or(PresenceStatus::Online)
    }

    /// Tells the participant's own sessions that their read marker moved.
    pub fn read_marker(&self, participant_id: &str, room_id: &str, event_id: &str) {
        self.publish(
            Audience::Participant(participant_id.to_string()),
            json!({"type": "swp.room.read_marker", "room_id": room_id, "participant_id": participant_id, "event_id": event_id}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_lapses() {
        let hub = Hub::default();
        let t0 = Instant::now();
        assert!(hub.set_typing("r", "a", true, t0).is_some());
        assert!(hub.set_typing("r", "a", true, t0).is_none(), "a refresh starts nothing new");
        hub.set_typing("r", "b", true, t0);
        assert_eq!(hub.typing_in("r", t0), vec!["a", "b"]);
        // Renewed before it lapsed: the expiry task is told to look again later.
        let later = t0 + TYPING_TTL / 2;
        hub.set_typing("r", "a", true, later);
        assert_eq!(hub.expire_typing("r", "a", t0 + TYPING_TTL), Some(later + TYPING_TTL));
        hub.set_typing("r", "b", false, t0);
        assert_eq!(hub.typing_in("r", t0), vec!["a"]);
        assert_eq!(hub.typing_in("r", t0 + TYPING_TTL), vec!["a"], "b lapsed; a was renewed");
        assert!(hub.typing_in("r", later + TYPING_TTL).is_empty());
    }

    #[test]
    fn presence() {
        let hub = Hub::default();
        let t0 = Instant::now();
        let hub = Arc::new(hub);
        assert_eq!(hub.presence_of("a", "b", t0), PresenceStatus::Offline);
        let seat = hub.take_stream_seat("a", 2, t0).expect("a seat");
        assert!(hub.presence_change("a", PresenceStatus::Offline, t0).is_some(), "going online is announced");
        assert!(hub.presence_change("a", PresenceStatus::Online, t0).is_none(), "no change, no frame");
        let second = hub.take_stream_seat("a", 2, t0).expect("a second seat");
        assert!(hub.take_stream_seat("a", 2, t0).is_none(), "at most `cap` streams");
        drop(second);
        assert_eq!(hub.presence_of("a", "b", t0), PresenceStatus::Online);
        hub.set_presence("a", PresenceStatus::Busy, t0);
        assert_eq!(hub.presence_of("a", "b", t0), PresenceStatus::Busy);
        hub.set_presence("a", PresenceStatus::AppearOffline, t0);
        assert_eq!(hub.presence_of("a", "b", t0), PresenceStatus::Offline);
        assert_eq!(hub.presence_of("a", "a", t0), PresenceStatus::AppearOffline);
        hub.set_presence("a", PresenceStatus::Online, t0);
        drop(seat);
        assert!(hub.take_stream_seat("a", 1, t0).is_some(), "closed streams give their seats back");
        // Still recently active.
        assert_eq!(hub.presence_of("a", "b", t0), PresenceStatus::Online);
        assert_eq!(hub.presence_of("a", "b", t0 + ACTIVE_WINDOW), PresenceStatus::Offline);
    }

    #[test]
    fn presence_reaches_the_participant_and_room_peers_only() {
        let joined: std::collections::HashSet<String> = ["r1".to_string(), "r2".to_string()].into();
        let to = |rooms: &[&str]| Audience::PeersOf {
            participant: "p".into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect::<Vec<_>>().into(),
        };
        assert!(to(&["r9", "r2"]).includes("me", &joined));
        assert!(!to(&["r9"]).includes("me", &joined));
        assert!(to(&[]).includes("p", &Default::default()), "one's own sessions hear it");
    }
}
