//! Decisions about peers' participants and media, as plain functions: when a cached remote
//! profile is stale, whether a `profile/` answer is about whom we asked, and whether fetched
//! media bytes are the ones its origin vouched for.

use serde_json::Value;

/// A remote participant's cached profile is refetched after this long (seconds).
pub const PROFILE_TTL_SECS: i64 = 3600;

/// Whether a profile fetched at `fetched_at` (Unix seconds; `None`: never) must be fetched again.
pub fn profile_is_stale(fetched_at: Option<i64>, now: i64) -> bool {
    match fetched_at {
        None => true,
        // A clock that went back counts as stale too: refetching is cheap, a wrong name is not.
        Some(at) => now < at || now - at >= PROFILE_TTL_SECS,
    }
}

/// Longest display name taken from a peer (characters); longer ones are cut.
pub const MAX_DISPLAY_NAME_CHARS: usize = 255;

/// A peer's answer to `profile/{local_id}`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteProfile {
    pub fqid: String,
    pub display_name: String,
}

/// Reads the `data` of a `profile/` answer for `fqid`. The answer must name the participant
/// asked about (a peer cannot plant a record for someone else); a missing or empty display
/// name falls back to the local id, a long one is cut, control characters are dropped.
pub fn parse_profile(data: &Value, fqid: &str) -> Result<RemoteProfile, String> {
    let (local_id, _) = crate::event::parse_fqid(fqid).ok_or_else(|| format!("{fqid:?} is not an fqid"))?;
    let answered = data.get("fqid").and_then(Value::as_str).ok_or("the profile has no fqid")?;
    if answered != fqid {
        return Err(format!("asked for {fqid}, the peer answered about {answered}"));
    }
    let name: String = data
        .get("display_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect();
    let name = name.trim();
    Ok(RemoteProfile {
        fqid: fqid.to_string(),
        display_name: if name.is_empty() { local_id.to_string() } else { name.to_string() },
    })
}

/// Why fetched media is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaCheck {
    #[error("the answer has no X-ScaiWave-Sha256 header")]
    NoHash,
    #[error("the X-ScaiWave-Sha256 header is not 64 lower-case hex digits")]
    BadHash,
    #[error("the bytes hash to {computed}, the origin said {announced}")]
    Mismatch { computed: String, announced: String },
}

/// Checks the SHA-256 (lower-case hex) of fetched bytes against the origin's header.
pub fn check_media_hash(announced: Option<&str>, computed: &str) -> Result<(), MediaCheck> {
    let announced = announced.ok_or(MediaCheck::NoHash)?.trim();
    if announced.len() != 64 || !announced.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(MediaCheck::BadHash);
    }
    if announced != computed {
        return Err(MediaCheck::Mismatch { computed: computed.into(), announced: announced.into() });
    }
    Ok(())
}

/// Where to fetch media this server does not hold, and who uploaded it: `hint` is the server
/// the client named (`?server=`), `mention` the `(origin, sender fqid)` of the newest event
/// naming the media in a room the client is in. The client's hint wins; the sender is known
/// only when the event's origin is the server fetched from.
pub fn media_source(hint: Option<&str>, mention: Option<(String, String)>) -> Option<(String, Option<String>)> {
    match (hint, mention) {
        (Some(s), Some((origin, sender))) if origin == s => Some((origin, Some(sender))),
        (Some(s), _) => Some((s.to_string(), None)),
        (None, Some((origin, sender))) => Some((origin, Some(sender))),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn staleness() {
        assert!(profile_is_stale(None, 100));
        assert!(!profile_is_stale(Some(100), 100 + PROFILE_TTL_SECS - 1));
        assert!(profile_is_stale(Some(100), 100 + PROFILE_TTL_SECS));
        assert!(profile_is_stale(Some(100), 50));
    }

    #[test]
    fn profiles_must_be_about_whom_we_asked() {
        let p = parse_profile(&json!({"fqid": "@bob:beta.test", "display_name": " Bob\u{7} "}), "@bob:beta.test");
        assert_eq!(p.unwrap().display_name, "Bob");
        let p = parse_profile(&json!({"fqid": "@bob:beta.test"}), "@bob:beta.test").unwrap();
        assert_eq!(p.display_name, "bob");
        assert!(parse_profile(&json!({"fqid": "@eve:beta.test", "display_name": "x"}), "@bob:beta.test").is_err());
        assert!(parse_profile(&json!({"display_name": "x"}), "@bob:beta.test").is_err());
        assert!(parse_profile(&json!([]), "@bob:beta.test").is_err());
        let long = "é".repeat(400);
        let p = parse_profile(&json!({"fqid": "@bob:beta.test", "display_name": long}), "@bob:beta.test").unwrap();
        assert_eq!(p.display_name.chars().count(), MAX_DISPLAY_NAME_CHARS);
    }

    #[test]
    fn media_sources() {
        let mention = || Some(("beta.test".to_string(), "@bob:beta.test".to_string()));
        assert_eq!(media_source(None, None), None);
        assert_eq!(media_source(None, mention()), Some(("beta.test".into(), Some("@bob:beta.test".into()))));
        assert_eq!(
            media_source(Some("beta.test"), mention()),
            Some(("beta.test".into(), Some("@bob:beta.test".into())))
        );
        assert_eq!(media_source(Some("gamma.test"), mention()), Some(("gamma.test".into(), None)));
        assert_eq!(media_source(Some("gamma.test"), None), Some(("gamma.test".into(), None)));
    }

    #[test]
    fn media_hashes() {
        let h = "a".repeat(64);
        assert_eq!(check_media_hash(Some(&h), &h), Ok(()));
        assert_eq!(check_media_hash(None, &h), Err(MediaCheck::NoHash));
        assert_eq!(check_media_hash(Some(&"A".repeat(64)), &h), Err(MediaCheck::BadHash));
        assert!(matches!(check_media_hash(Some(&"b".repeat(64)), &h), Err(MediaCheck::Mismatch { .. })));
    }
}
