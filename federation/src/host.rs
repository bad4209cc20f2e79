//! What the federation flows ask of their host: storage questions ([`Host`]) and the network
//! ([`Remote`]). The homeserver implements [`Host`] over its store (`homeserver/src/fed/host.rs`);
//! [`Network`] is the real [`Remote`], a [`FedClient`] and a [`KeyRing`]. Both are traits so
//! that the flows of [`crate::gaps`] run in unit tests against maps in memory.
//!
//! Native `async fn` in traits, spelled `-> impl Future + Send` so the flows stay `Send` inside
//! the homeserver's handlers; generics, no `dyn`.

use std::collections::HashSet;
use std::future::Future;

use serde_json::Value;

use crate::auth::RoomVersion;
use crate::client::{FedClient, FedError};
use crate::event::{EventId, StateMap};
use crate::keys::KeyRing;
use crate::verify::{Refusal, Verified, verify_pdu};
use crate::wire::Verdict;

/// The status the host's storage gave an event (`docs/federation.md`, "Storage of the event
/// graph").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Accepted,
    SoftFailed,
    Rejected,
    Outlier,
}

impl Status {
    /// The verdict for a stored event: rejected ones are refused for good with
    /// `SW_ROOM_FORBIDDEN` (the room's rules refuse them); soft-failed ones are taken (stored,
    /// not shown), as the contract says.
    pub fn verdict(self) -> Verdict {
        match self {
            Status::Rejected => Verdict::rejected("SW_ROOM_FORBIDDEN", "the room's rules refuse this event"),
            Status::Accepted | Status::SoftFailed | Status::Outlier => Verdict::Accepted,
        }
    }
}

/// A storage failure of the host, as text (the flows only report it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// The storage questions of the federation flows. Every call is its own short transaction on
/// the host's side: the flows call no peer while one is open.
pub trait Host: Sync {
    /// Which of `ids` are stored, whatever their status.
    fn stored_event_ids(&self, ids: &[EventId]) -> impl Future<Output = Result<HashSet<EventId>, HostError>> + Send;

    /// The status of a stored event, `None` when it is not stored.
    fn event_status(&self, event_id: &str) -> impl Future<Output = Result<Option<Status>, HostError>> + Send;

    /// Those of `ids` stored with a state here (placed in the room's graph): not outliers, and
    /// not events kept without one (an invitation that arrived before the join).
    fn placed_event_ids(&self, ids: &[EventId]) -> impl Future<Output = Result<HashSet<EventId>, HostError>> + Send;

    /// The room's forward extremities, deepest first (at most 20).
    fn forward_extremities(&self, room_id: &str) -> impl Future<Output = Result<Vec<EventId>, HostError>> + Send;

    /// Stores events fetched for their state or auth role (outliers, or placed when their
    /// parents are known), in one transaction; the caller gives them auth events first and
    /// only those not stored yet.
    fn store_outliers(&self, events: Vec<Verified>) -> impl Future<Output = Result<(), HostError>> + Send;

    /// Stores one event (with the state before it when its parents stay missing); answers
    /// its status, or the verdict when it cannot be stored.
    fn store_event(
        &self,
        event: &Verified,
        state: Option<&StateMap<EventId>>,
    ) -> impl Future<Output = Result<Status, Verdict>> + Send;

    /// Stores `events` in the order given (parents first), each placed on its parents' states
    /// or on the state given with it, in as few transactions as the host likes: a pulled gap
    /// of thousands of events is one write, not thousands.
    fn store_events(
        &self,
        events: &[(&Verified, Option<StateMap<EventId>>)],
    ) -> impl Future<Output = Result<(), Verdict>> + Send;
}

/// The network as the flows use it: signed requests to a peer, and steps 1–3 of the inbound
/// checks on events a peer answered with.
pub trait Remote: Sync {
    /// [`FedClient::request`].
    fn request(
        &self,
        destination: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> impl Future<Output = Result<Value, FedError>> + Send;

    /// [`verify_pdu`] of an event fetched from any server (no transaction origin).
    fn verify(&self, value: &Value, version: RoomVersion) -> impl Future<Output = Result<Verified, Refusal>> + Send;
}

/// The real [`Remote`].
#[derive(Clone, Copy)]
pub struct Network<'a> {
    pub client: &'a FedClient,
    pub keys: &'a KeyRing,
}

impl Remote for Network<'_> {
    async fn request(
        &self,
        destination: &str,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, FedError> {
        self.client.request(destination, method, path_and_query, body).await
    }

    async fn verify(&self, value: &Value, version: RoomVersion) -> Result<Verified, Refusal> {
        verify_pdu(self.keys, value, version, None).await
    }
}
