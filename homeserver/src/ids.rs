//! Identifier generation and the shape checks applied to ids arriving in paths and bodies.
//!
//! A malformed id is a bad request (`SW_BAD_REQUEST`); a well-formed id that names nothing the
//! caller may see is a not-found. Checking the shape first keeps hostile strings out of queries
//! and logs.

use rand::RngExt;

fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn new_room_id() -> String {
    format!("room-{}", ulid::Ulid::generate())
}
pub fn new_participant_id() -> String {
    random_hex(16)
}
pub fn new_workspace_id() -> String {
    format!("ws-{}", ulid::Ulid::generate())
}
pub fn new_session_id() -> String {
    random_hex(16)
}
/// Until events are content-addressed (reference hashes), ids are random and unguessable.
pub fn new_event_id() -> String {
    format!("evt-{}", random_token(32))
}
/// `med-` and 128 random bits: a media id is a capability (anyone authenticated holding it may
/// download), so it is fully random rather than a ULID (whose 48 time bits are guessable).
pub fn new_media_id() -> String {
    format!("med-{}", random_token(16))
}
pub fn new_access_token() -> String {
    format!("swa_{}", random_token(32))
}
pub fn new_refresh_token() -> String {
    format!("swr_{}", random_token(32))
}
/// A tenant's registration token (`homeserver admin create-tenant`).
pub fn new_registration_token() -> String {
    format!("swt_{}", random_token(32))
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn with_prefix(s: &str, prefix: &str, max: usize) -> bool {
    s.len() <= max && s.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty() && rest.chars().all(is_id_char))
}

pub fn is_room_id(s: &str) -> bool {
    with_prefix(s, "room-", 128)
}
pub fn is_event_id(s: &str) -> bool {
    with_prefix(s, "evt-", 128)
}
pub fn is_workspace_id(s: &str) -> bool {
    with_prefix(s, "ws-", 128)
}
pub fn is_media_id(s: &str) -> bool {
    with_prefix(s, "med-", 128)
}
pub fn is_participant_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(is_id_char)
}

/// `local_id` of an fqid: `[a-z0-9._=-]{1,64}`.
pub fn is_local_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'=' | b'-'))
}

/// A DNS name with an optional `:port` (the federation crate's rule).
pub use federation::event::is_server_name;

/// Splits `@local:server` into its parts when well-formed.
pub fn parse_fqid(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('@')?;
    let (local, server) = rest.split_once(':')?;
    (is_local_id(local) && is_server_name(server)).then_some((local, server))
}

pub fn is_tenant_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A room alias local part made from a room name: lowercase, `[a-z0-9._=-]`, at most 48 chars.
pub fn alias_slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '=' | '-');
        let c = if ok { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
        if out.len() >= 48 {
            break;
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() { "room".to_string() } else { trimmed.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(is_room_id(&new_room_id()));
        assert!(is_event_id(&new_event_id()));
        assert!(is_workspace_id(&new_workspace_id()));
        assert!(is_participant_id(&new_participant_id()));
        assert!(is_media_id(&new_media_id()));
        assert!(!is_media_id("med-"));
        assert!(!is_media_id("med-../x"));
        assert!(!is_room_id("room-"));
        assert!(!is_room_id("room-../x"));
        assert!(!is_room_id("xroom-1"));
        assert!(!is_participant_id("a b"));
    }

    #[test]
    fn fqids() {
        assert_eq!(parse_fqid("@alice:alpha.test"), Some(("alice", "alpha.test")));
        assert_eq!(parse_fqid("@alice:localhost:8448"), Some(("alice", "localhost:8448")));
        assert_eq!(parse_fqid("@Alice:alpha.test"), None);
        assert_eq!(parse_fqid("alice:alpha.test"), None);
        assert_eq!(parse_fqid("@alice:"), None);
        assert_eq!(parse_fqid("@alice:a..b"), None);
        assert_eq!(parse_fqid("@alice:host:99999"), None);
    }

    #[test]
    fn slugs() {
        assert_eq!(alias_slug("Engineering Team!"), "engineering-team");
        assert_eq!(alias_slug("  "), "room");
        assert_eq!(alias_slug("Ünïcode"), "n-code");
    }
}
