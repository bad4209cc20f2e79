//! This server's side of federation: the I/O shell around the `federation` crate.
//!
//! - [`request`]: the signed-request extractor every federation endpoint starts with;
//! - [`endpoints`]: one file per endpoint of contract 8.1, named after it;
//! - the key ring ([`federation::keys::KeyRing`]) and the signed-request client
//!   ([`federation::client::FedClient`]) live in [`Federation`], shared by the endpoints, the
//!   sender and the client API's federation operations.

pub mod backfill;
pub mod dm;
pub mod endpoints;
pub mod host;
pub mod inbound;
pub mod invite;
pub mod join;
pub mod limits;
pub mod partial;
pub mod policy;
pub mod remote;
pub mod request;
pub mod sender;

use std::sync::Arc;
use std::time::Duration;

use federation::client::FedClient;
use federation::keys::{KeyPersist, KeyRing, ServerKeys};

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::storage::Store;

/// What federation needs at run time. Built once at start.
pub struct Federation {
    pub server_name: String,
    active: Result<Active, String>,
    /// Requests in flight and per second, per verified origin.
    pub limits: limits::PeerLimits,
    /// Durable delivery to peers, once started (`server.rs`).
    sender: std::sync::OnceLock<sender::Sender>,
    /// The receiving side's memory (failed fetches).
    pub inbound: inbound::InboundState,
    /// This server's federation policy (who it answers and sends to).
    pub policy: Arc<policy::PolicyHolder>,
}

/// Federation that can reach peers.
pub struct Active {
    pub client: FedClient,
    pub keys: KeyRing,
}

impl Federation {
    /// Builds the client and the key ring from the discovery settings and loads the cached
    /// peer keys. A discovery that cannot be built (a bad CA file) leaves federation
    /// unavailable, reported on use, so the client API still serves.
    pub async fn start(config: &Config, store: &Store, keys: &crate::signing::Keys) -> Federation {
        let server_name = config.server_name.clone();
        let active = match crate::api::discovery::build(config).as_ref() {
            Ok(discovery) => (|| {
                let client = FedClient::new(
                    discovery.clone(),
                    &server_name,
                    Arc::new(keys.current.clone()),
                    Duration::from_secs(30),
                )
                .map_err(|e| e.to_string())?;
                let persist: Arc<dyn KeyPersist> = Arc::new(PersistKeys { store: store.clone() });
                let ring = KeyRing::new(client.clone(), config.federation.notaries.clone(), Some(persist));
                ring.set_own(&keys.well_known(&server_name)).map_err(|e| e.to_string())?;
                Ok(Active { client, keys: ring })
            })(),
            Err(e) => Err(e.clone()),
        };
        if let Ok(active) = &active {
            match store.fed_server_keys().await {
                Ok(docs) => {
                    for (server, doc) in docs {
                        if let Err(e) = active.keys.insert_document(&doc, &server) {
                            tracing::warn!(%server, error = %e, "dropping a stored key document");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot load stored peer keys"),
            }
        }
        if let Err(e) = &active {
            tracing::warn!(error = %e, "federation is unavailable");
        }
        Federation {
            server_name,
            active,
            limits: limits::PeerLimits::new(&config.federation),
            sender: Default::default(),
            inbound: Default::default(),
            policy: Arc::new(policy::PolicyHolder::load(store).await),
        }
    }

    /// Starts the per-destination sender (when federation is available).
    pub fn start_sender(&self, store: &Store, config: &Config) {
        if let Ok(active) = &self.active {
            let _ = self.sender.set(sender::Sender::start(
                store.clone(),
                active.client.clone(),
                self.policy.clone(),
                config,
            ));
        }
    }

    /// Stops the sender's tasks (shutdown).
    pub fn stop_sender(&self) {
        if let Some(s) = self.sender.get() {
            s.stop();
        }
    }

    /// The sender, once started.
    pub fn sender(&self) -> Option<&sender::Sender> {
        self.sender.get()
    }

    /// A peer's signed request verified: it is up (records it, ends its back-off).
    pub fn peer_contacted(&self, origin: &str) {
        if let Some(s) = self.sender.get() {
            s.peer_contacted(origin);
        }
    }

    /// A local participant's typing notice, for the servers of the (federated) room.
    pub fn typing_out(&self, room_id: &str, fqid: &str, typing: bool) {
        if let Some(s) = self.sender.get() {
            s.typing(room_id, fqid, typing);
        }
    }

    /// A local participant's presence as peers see it, for the servers sharing a room.
    pub fn presence_out(&self, participant_id: &str, presence: &str) {
        if let Some(s) = self.sender.get() {
            s.presence(participant_id, presence);
        }
    }

    /// The client and key ring, or `SW_FED_UNAVAILABLE` when they could not be built.
    pub fn active(&self) -> ApiResult<&Active> {
        self.active.as_ref().map_err(|e| ApiError::FedUnavailable(format!("federation is not configured: {e}")))
    }
}

/// The room-scoped federation admin endpoints (contract 8): the room's creator, a member at
/// power 100, or a server admin; others 403 `SW_ROOM_FORBIDDEN`, and a room the caller may not
/// see 404 `SW_ROOM_NOT_FOUND`.
pub async fn require_room_admin(
    st: &crate::api::AppState,
    caller: &crate::storage::Participant,
    room_id: &str,
    what: &str,
) -> ApiResult<()> {
    use crate::rooms::rules;
    let mut tx = st.store.write().await?;
    let (room, me) = crate::rooms::load(&mut tx, room_id, caller).await?;
    rules::require_owner(&room, rules::Seat::of(me.as_ref()), caller, what, rules::POWER_MAX)
}

/// Keeps every accepted key document in `fed_server_keys`, off the caller's path.
struct PersistKeys {
    store: Store,
}

impl KeyPersist for PersistKeys {
    fn save(&self, keys: &ServerKeys) {
        let store = self.store.clone();
        let server = keys.server_name.clone();
        let doc = keys.document.clone();
        let valid_until = keys.valid_until_ts;
        tokio::spawn(async move {
            if let Err(e) = store.save_fed_server_keys(&server, &doc, valid_until).await {
                tracing::warn!(%server, error = %e, "cannot store peer keys");
            }
        });
    }
}
