//! The room's server ACL, `swp.room.server_acl` `{allow?: [glob], deny?: [glob]}`.
//!
//! A server is let in when no `deny` glob matches it and some `allow` glob does; a missing
//! `allow` list means every server, so an ACL that only denies never bans everyone by
//! accident. An empty `allow` list *is* "nobody", but the rules refuse an ACL that denies its
//! own origin, so it cannot be sent. Globs match the host without its port (a port does not
//! make another server), ASCII case-insensitively; `*` is any run of characters, `?` one.

use serde_json::{Map, Value};

use super::error::{AuthError, malformed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAcl {
    /// `None`: every server.
    allow: Option<Vec<String>>,
    deny: Vec<String>,
}

impl ServerAcl {
    /// Strict: each list, if present, holds strings only. A redacted ACL (`{}`: the redaction
    /// table keeps no key of it today) reads as "allow all".
    pub fn parse(content: &Map<String, Value>) -> Result<ServerAcl, AuthError> {
        let list = |key: &str| -> Result<Option<Vec<String>>, AuthError> {
            let Some(value) = content.get(key) else { return Ok(None) };
            let items = value.as_array().ok_or_else(|| malformed(format!("{key} is not a list")))?;
            items
                .iter()
                .map(|g| {
                    g.as_str()
                        .map(str::to_ascii_lowercase)
                        .ok_or_else(|| malformed(format!("{key} holds a non-string")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
        Ok(ServerAcl { allow: list("allow")?, deny: list("deny")?.unwrap_or_default() })
    }

    pub fn allows(&self, server_name: &str) -> bool {
        let host = host_of(server_name).to_ascii_lowercase();
        if self.deny.iter().any(|glob| glob_matches(glob, &host)) {
            return false;
        }
        self.allow.as_ref().is_none_or(|allow| allow.iter().any(|glob| glob_matches(glob, &host)))
    }
}

/// `host` of `host:port`.
fn host_of(server_name: &str) -> &str {
    match server_name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server_name,
    }
}

/// Wildcard matching in O(len(glob) × len(text)) without recursion: on a mismatch, go back to
/// the last `*` and let it swallow one more character. Works on bytes; server names are ASCII,
/// and a non-ASCII glob simply matches no server.
fn glob_matches(glob: &str, text: &str) -> bool {
    let (glob, text) = (glob.as_bytes(), text.as_bytes());
    let (mut g, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                last_star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match last_star {
                Some((star, swallowed)) => {
                    g = star + 1;
                    t = swallowed + 1;
                    last_star = Some((star, swallowed + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn acl(value: Value) -> ServerAcl {
        ServerAcl::parse(value.as_object().unwrap()).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*.evil.test", "a.evil.test"));
        assert!(!glob_matches("*.evil.test", "evil.test"));
        assert!(glob_matches("alpha.tes?", "alpha.test"));
        assert!(!glob_matches("alpha.tes?", "alpha.tes"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("**a", "ba"));
        // A pathological glob costs O(glob × name), not exponential time.
        let long = "a".repeat(2000);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(100)), &long));
    }

    #[test]
    fn allow_and_deny() {
        // No lists, or a deny list only: everyone but the denied.
        assert!(acl(json!({})).allows("alpha.test"));
        let deny_only = acl(json!({"deny": ["*.evil.test", "evil.test"]}));
        assert!(deny_only.allows("alpha.test"));
        assert!(!deny_only.allows("evil.test"));
        assert!(!deny_only.allows("x.evil.test:8448"));
        // Deny wins over allow; case and port do not matter.
        let both = acl(json!({"allow": ["*.test"], "deny": ["Beta.test"]}));
        assert!(both.allows("alpha.test:8448"));
        assert!(!both.allows("BETA.TEST"));
        assert!(!both.allows("alpha.example"));
        assert!(!acl(json!({"allow": []})).allows("alpha.test"));
    }

    #[test]
    fn parse_is_strict() {
        for bad in [json!({"allow": "x"}), json!({"deny": [1]}), json!({"allow": [null]})] {
            assert!(ServerAcl::parse(bad.as_object().unwrap()).is_err(), "{bad}");
        }
    }
}
