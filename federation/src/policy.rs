//! A server's own federation policy (contract 8, `GET|PUT /v1/admin/federation/policy`): which
//! peers it answers and sends to. It is transport only: it never decides whether an event is
//! accepted (that is the room's rules alone, or replicas diverge — FEDERATION.md, "Per-room
//! control").

use serde::{Deserialize, Serialize};

/// `default_mode`: what a peer named in neither list gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Any peer.
    #[default]
    Open,
    /// A peer only for the rooms where one of our users invited one of its users or was
    /// invited by one.
    InviteOnly,
    /// No peer.
    Closed,
}

/// The policy document, as the admin API reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerPolicy {
    #[serde(default)]
    pub default_mode: Mode,
    /// Always answered (unless also denied), whatever the mode.
    #[serde(default)]
    pub allowed_peers: Vec<String>,
    /// Never answered, never sent to.
    #[serde(default)]
    pub denied_peers: Vec<String>,
    /// Joins this server serves stop when a room has this many joined participants of other
    /// servers; `None` is no cap.
    #[serde(default)]
    pub max_foreign_participants_per_room: Option<u32>,
}

/// What a peer may do under the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAccess {
    /// Every room.
    Any,
    /// Only rooms an invitation crossed between us and it ([`Mode::InviteOnly`]).
    InvitedRooms,
    /// Nothing.
    None,
}

/// The longest list an admin may set (each name is checked on every request).
pub const MAX_PEERS: usize = 1000;

impl ServerPolicy {
    /// What `peer` may do. Server names compare without regard to ASCII case.
    pub fn access(&self, peer: &str) -> PeerAccess {
        let named = |list: &[String]| list.iter().any(|p| p.eq_ignore_ascii_case(peer));
        if named(&self.denied_peers) {
            return PeerAccess::None;
        }
        if named(&self.allowed_peers) {
            return PeerAccess::Any;
        }
        match self.default_mode {
            Mode::Open => PeerAccess::Any,
            Mode::InviteOnly => PeerAccess::InvitedRooms,
            Mode::Closed => PeerAccess::None,
        }
    }

    /// Whether the policy is the default one (nothing to check per request).
    pub fn is_open(&self) -> bool {
        self.default_mode == Mode::Open && self.denied_peers.is_empty()
    }

    /// Checks the lists: server names (no ports, no globs), at most [`MAX_PEERS`] each, and
    /// not `us`: a server does not refuse itself.
    pub fn validate(&self, us: &str) -> Result<(), String> {
        for (field, list) in [("allowed_peers", &self.allowed_peers), ("denied_peers", &self.denied_peers)] {
            if list.len() > MAX_PEERS {
                return Err(format!("{field} holds at most {MAX_PEERS} server names"));
            }
            for name in list.iter() {
                if !is_server_name(name) {
                    return Err(format!("{field}: {name:?} is not a server name"));
                }
                if name.eq_ignore_ascii_case(us) {
                    return Err(format!("{field}: {name:?} is this server"));
                }
            }
        }
        Ok(())
    }
}

/// A DNS name of letters, digits, `-` and `.` (at most 255), as server names are.
pub fn is_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> ServerPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn lists_win_over_the_mode_and_denial_wins_over_both() {
        let p = policy(json!({"default_mode": "closed", "allowed_peers": ["beta.test", "gamma.test"],
                              "denied_peers": ["gamma.test"]}));
        assert_eq!(p.access("Beta.Test"), PeerAccess::Any);
        assert_eq!(p.access("gamma.test"), PeerAccess::None);
        assert_eq!(p.access("delta.test"), PeerAccess::None);
        let p = policy(json!({"default_mode": "invite_only"}));
        assert_eq!(p.access("delta.test"), PeerAccess::InvitedRooms);
        let p = ServerPolicy::default();
        assert!(p.is_open());
        assert_eq!(p.access("delta.test"), PeerAccess::Any);
        assert!(!policy(json!({"denied_peers": ["x.test"]})).is_open());
    }

    #[test]
    fn bad_documents_are_refused() {
        for bad in [
            json!({"default_mode": "sometimes"}),
            json!({"allowed_peers": "beta.test"}),
            json!({"surprise": 1}),
            json!({"max_foreign_participants_per_room": -1}),
        ] {
            assert!(serde_json::from_value::<ServerPolicy>(bad.clone()).is_err(), "{bad}");
        }
        for bad in [
            json!({"denied_peers": ["alpha.test"]}),
            json!({"allowed_peers": ["*.test"]}),
            json!({"denied_peers": ["beta.test:8448"]}),
            json!({"denied_peers": [""]}),
        ] {
            assert!(policy(bad.clone()).validate("alpha.test").is_err(), "{bad}");
        }
        assert!(
            policy(json!({"denied_peers": ["beta.test"], "max_foreign_participants_per_room": 0}))
                .validate("alpha.test")
                .is_ok()
        );
    }
}
