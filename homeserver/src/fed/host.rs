//! The homeserver as the federation crate's [`Host`]: its storage questions answered by the
//! [`Store`], each call its own short transaction.

use std::collections::HashSet;

use federation::event::{EventId, StateMap};
use federation::host::{Host, HostError, Status};
use federation::verify::Verified;
use federation::wire::Verdict;

use super::inbound::{apply_accepted, store_event};
use crate::storage::{EventStatus, Store};

/// [`Host`] over the store.
#[derive(Clone, Copy)]
pub struct StoreHost<'a> {
    pub store: &'a Store,
}

/// The federation crate's name for a stored event's status.
pub fn status_of(status: EventStatus) -> Status {
    match status {
        EventStatus::Accepted => Status::Accepted,
        EventStatus::SoftFailed => Status::SoftFailed,
        EventStatus::Rejected => Status::Rejected,
        EventStatus::Outlier => Status::Outlier,
    }
}

fn host_error(e: impl std::fmt::Display) -> HostError {
    HostError(e.to_string())
}

impl Host for StoreHost<'_> {
    async fn stored_event_ids(&self, ids: &[EventId]) -> Result<HashSet<EventId>, HostError> {
        self.store.stored_event_ids(ids).await.map_err(host_error)
    }

    async fn event_status(&self, event_id: &str) -> Result<Option<Status>, HostError> {
        Ok(self.store.fed_event(event_id).await.map_err(host_error)?.map(|e| status_of(e.status)))
    }

    async fn placed_event_ids(&self, ids: &[EventId]) -> Result<HashSet<EventId>, HostError> {
        self.store.placed_event_ids(ids).await.map_err(host_error)
    }

    async fn forward_extremities(&self, room_id: &str) -> Result<Vec<EventId>, HostError> {
        self.store.forward_extremities(room_id).await.map_err(host_error)
    }

    async fn store_outliers(&self, events: Vec<Verified>) -> Result<(), HostError> {
        let mut tx = self.store.write().await.map_err(host_error)?;
        for v in &events {
            let json = crypto::to_canonical_string(&v.json).map_err(host_error)?;
            let p = tx.persist(&v.pdu, &json).await.map_err(host_error)?;
            if !p.existed && p.status == EventStatus::Accepted {
                apply_accepted(&mut tx, &v.pdu).await.map_err(host_error)?;
            }
        }
        tx.commit().await.map_err(host_error)
    }

    async fn store_event(&self, event: &Verified, state: Option<&StateMap<EventId>>) -> Result<Status, Verdict> {
        Ok(status_of(store_event(self.store, event, state).await?.status))
    }

    async fn store_events(&self, events: &[(&Verified, Option<StateMap<EventId>>)]) -> Result<(), Verdict> {
        super::inbound::store_events(self.store, events).await
    }
}
