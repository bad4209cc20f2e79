//! Who this server federates with: its own policy (`GET|PUT /v1/admin/federation/policy`,
//! decided by [`federation::policy`]) and each room's server lists (`swp.room.server_acl`,
//! room state the auth rules read).
//!
//! Both decide transport only — which requests are answered and where events go. Whether an
//! event is accepted stays a function of the event and the room's state (the ACL's part of
//! that is in the auth rules), so no policy here ever rejects an event the room accepts.
//!
//! Refusals answer 403 `SW_FED_PEER_UNKNOWN` (contract 8.1: "a peer that policy refuses"),
//! for the server policy and for a room's deny list alike.

use std::sync::{Arc, RwLock};

use federation::auth::server_acl::ServerAcl;
use federation::policy::{PeerAccess, ServerPolicy};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::storage::Store;

/// The policy in force, read once at start and replaced by the admin API: no database read
/// per request.
#[derive(Default)]
pub struct PolicyHolder {
    current: RwLock<Arc<ServerPolicy>>,
}

impl PolicyHolder {
    pub async fn load(store: &Store) -> PolicyHolder {
        let policy = match store.fed_policy().await {
            Ok(Some(doc)) => serde_json::from_value(doc).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the stored federation policy does not parse; using the open default");
                ServerPolicy::default()
            }),
            Ok(None) => ServerPolicy::default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the federation policy; using the open default");
                ServerPolicy::default()
            }
        };
        PolicyHolder { current: RwLock::new(Arc::new(policy)) }
    }

    pub fn get(&self) -> Arc<ServerPolicy> {
        self.current.read().expect("policy lock").clone()
    }

    pub fn set(&self, policy: ServerPolicy) {
        *self.current.write().expect("policy lock") = Arc::new(policy);
    }
}

fn refused(what: impl Into<String>) -> ApiError {
    ApiError::FedPeerUnknown(what.into())
}

/// The server-wide check of a verified request: a peer the policy gives nothing is refused
/// before any endpoint runs.
pub fn check_peer(st: &AppState, origin: &str) -> ApiResult<PeerAccess> {
    match st.fed.policy.get().access(origin) {
        PeerAccess::None => Err(refused(format!("{} does not federate with {origin}", st.fed.server_name))),
        access => Ok(access),
    }
}

/// Whether the room's server lists let `server` in (a room without lists lets everyone in; a
/// list that does not parse is treated as absent, as the auth rules never accepted it).
pub async fn acl_allows(store: &Store, room_id: &str, server: &str) -> ApiResult<bool> {
    let Some(content) = store.room_server_acl(room_id).await? else { return Ok(true) };
    Ok(content.as_object().and_then(|c| ServerAcl::parse(c).ok()).is_none_or(|acl| acl.allows(server)))
}

/// What every endpoint about one room checks for `origin`: the room's deny/allow lists, and
/// under an `invite_only` policy that an invitation crossed between us and `origin` in this
/// room. Refused: 403 `SW_FED_PEER_UNKNOWN`.
pub async fn check_room(st: &AppState, room_id: &str, origin: &str) -> ApiResult<()> {
    if !acl_allows(&st.store, room_id, origin).await? {
        return Err(refused(format!("the room's server lists refuse {origin}")));
    }
    match check_peer(st, origin)? {
        PeerAccess::Any => Ok(()),
        PeerAccess::InvitedRooms => {
            if st.store.invite_crossed(room_id, &st.fed.server_name, origin).await? {
                Ok(())
            } else {
                Err(refused(format!(
                    "{} federates with {origin} only in rooms an invitation crossed into",
                    st.fed.server_name
                )))
            }
        }
        PeerAccess::None => unreachable!("check_peer refuses it"),
    }
}

/// Invitations this server sends: refused when the policy gives the invitee's server nothing.
/// (Under `invite_only` the invitation is what opens the room to it.)
pub fn check_invite_to(st: &AppState, server: &str) -> ApiResult<()> {
    match st.fed.policy.get().access(server) {
        PeerAccess::None => Err(refused(format!("this server's federation policy refuses {server}"))),
        _ => Ok(()),
    }
}

/// Joins this server serves: refused once the room has the policy's cap of joined participants
/// from other servers (a participant already joined may join again).
pub async fn check_join_cap(st: &AppState, room_id: &str, joiner: &str) -> ApiResult<()> {
    let Some(cap) = st.fed.policy.get().max_foreign_participants_per_room else { return Ok(()) };
    if st.store.is_joined(room_id, joiner).await? {
        return Ok(());
    }
    if st.store.foreign_joined_count(room_id, &st.fed.server_name).await? >= i64::from(cap) {
        return Err(refused(format!(
            "the room has {cap} participants of other servers, the most this server's policy serves joins for"
        )));
    }
    Ok(())
}

/// Where the sender may deliver one room's events: the policy and the room's lists both let
/// the destination in. One read per room per transaction built.
pub async fn may_send(store: &Store, policy: &ServerPolicy, us: &str, room_id: &str, dest: &str) -> bool {
    let by_policy = match policy.access(dest) {
        PeerAccess::Any => true,
        PeerAccess::None => false,
        PeerAccess::InvitedRooms => store.invite_crossed(room_id, us, dest).await.unwrap_or(false),
    };
    by_policy && acl_allows(store, room_id, dest).await.unwrap_or(true)
}

/// The longest server list a room may carry (each glob is matched on every request).
pub const MAX_ROOM_SERVERS: usize = 500;

/// A glob of a server list: a server name's characters plus `*` and `?`.
fn is_glob(g: &str) -> bool {
    !g.is_empty() && g.len() <= 255 && g.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.*?:[]".contains(&b))
}

/// The room's lists as the admin API shows them: `{allow: [glob] | null, deny: [glob]}`
/// (`allow: null`: every server not denied).
fn lists_view(content: Option<&serde_json::Value>) -> serde_json::Value {
    let list = |k: &str| content.and_then(|c| c.get(k)).filter(|v| v.is_array()).cloned();
    serde_json::json!({"allow": list("allow"), "deny": list("deny").unwrap_or_else(|| serde_json::json!([]))})
}

/// `GET /v1/admin/rooms/{room_id}/federation/servers`: the room's current lists (the room's
/// creator, a member at power 100 or a server admin).
pub async fn room_servers(
    st: &AppState,
    caller: &crate::storage::Participant,
    room_id: &str,
) -> ApiResult<serde_json::Value> {
    super::require_room_admin(st, caller, room_id, "reading the room's server lists").await?;
    Ok(lists_view(st.store.room_server_acl(room_id).await?.as_ref()))
}

/// `PUT /v1/admin/rooms/{room_id}/federation/servers {allow?, deny?}`: appends the room's
/// `swp.room.server_acl` state event, which every resident server's auth rules apply. A missing
/// `allow` lets in every server not denied; this server must stay let in (400 otherwise), as
/// the auth rules refuse an ACL that shuts out its own sender.
pub async fn set_room_servers(
    st: &AppState,
    caller: &crate::storage::Participant,
    room_id: &str,
    allow: Option<Vec<String>>,
    deny: Vec<String>,
) -> ApiResult<serde_json::Value> {
    use crate::rooms::rules;
    for (name, list) in [("allow", allow.as_deref().unwrap_or(&[])), ("deny", deny.as_slice())] {
        if list.len() > MAX_ROOM_SERVERS {
            return Err(ApiError::bad_request(format!("{name} holds at most {MAX_ROOM_SERVERS} entries")));
        }
        if let Some(bad) = list.iter().find(|g| !is_glob(g)) {
            return Err(ApiError::bad_request(format!(
                "{name}: {bad:?} is not a server name or a glob of one (letters, digits, '-', '.', '*', '?')"
            )));
        }
    }
    let mut content = serde_json::json!({"deny": deny});
    if let Some(allow) = allow {
        content["allow"] = serde_json::json!(allow);
    }
    let acl =
        ServerAcl::parse(content.as_object().expect("an object")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !acl.allows(&st.fed.server_name) {
        return Err(ApiError::bad_request(format!(
            "the lists would shut out this server ({}): it must stay allowed",
            st.fed.server_name
        )));
    }
    let mut tx = st.store.write().await?;
    let (room, me) = crate::rooms::load(&mut tx, room_id, caller).await?;
    let seat = rules::Seat::of(me.as_ref());
    rules::require_owner(&room, seat, caller, "setting the room's server lists", rules::POWER_MAX)?;
    if room.room_type == crate::storage::RoomType::Incognito {
        return Err(ApiError::RoomTypeInvariant("an incognito room never leaves its server".into()));
    }
    rules::require_open(&room)?;
    super::join::versioned_create(&mut tx, room_id).await?;
    let needed = crate::rooms::thresholds(&mut tx, room_id).await?.state(federation::event::types::SERVER_ACL);
    let sender = super::join::acting_sender(&mut tx, caller, seat, needed, room_id, &mut content).await?;
    super::join::append_state(&mut tx, room_id, &sender, federation::event::types::SERVER_ACL, "", &content).await?;
    tx.commit().await?;
    Ok(lists_view(Some(&content)))
}
