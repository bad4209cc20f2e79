//! SQL of the projector (`rooms::project`): the `rooms` and `memberships` rows derived from
//! accepted state events, the stored state events the authorization rules read, and the
//! service participant. Nothing else writes these projections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use federation::event::{MalformedEvent, Pdu};

use super::*;

/// A room's current state entry with its stored wire form: `(type, state_key, event_id, pdu)`.
/// The wire form is `None` for events stored before migration 4.
pub type StateRow = (String, String, String, Option<String>);

/// `(type, state_key, event_id, pdu)` of the room's (`$1`) current create, power-levels,
/// join-rule, lifecycle and server ACL events and of the membership events of `members` fqids
/// (`$2…`): what the authorization rules read.
fn state_pdus_sql(members: usize) -> String {
    let placeholders: Vec<String> = (0..members).map(|i| format!("${}", i + 2)).collect();
    format!(
        "SELECT s.event_type, s.state_key, s.event_id, e.pdu FROM room_state s JOIN events e ON e.event_id = s.event_id
         WHERE s.room_id = $1
           AND ((s.event_type IN ('swp.room.create', 'swp.room.power_levels', 'swp.room.join_rules',
                                  'swp.room.lifecycle', 'swp.room.server_acl') AND s.state_key = '')
                OR (s.event_type = 'swp.room.member' AND s.state_key IN ({})))",
        if placeholders.is_empty() { "NULL".to_string() } else { placeholders.join(", ") }
    )
}

/// Parsed state events by event id, shared by room operations and the send writer so that the
/// send path parses each auth event once, not once per send. A stored event never changes,
/// except when it is redacted: [`PduCache::forget`] then drops it.
#[derive(Default)]
pub struct PduCache {
    parsed: Mutex<HashMap<String, Arc<Pdu>>>,
}

/// Past this many entries the cache starts over: it holds the auth events of active rooms,
/// a handful each.
const PDU_CACHE_MAX: usize = 20_000;

impl PduCache {
    pub fn get(&self, event_id: &str) -> Option<Arc<Pdu>> {
        self.parsed.lock().unwrap_or_else(|e| e.into_inner()).get(event_id).cloned()
    }

    /// The cached event, or `pdu` parsed (and kept).
    pub fn get_or_parse(&self, event_id: &str, pdu: &str) -> Result<Arc<Pdu>, MalformedEvent> {
        if let Some(p) = self.get(event_id) {
            return Ok(p);
        }
        let value: serde_json::Value =
            serde_json::from_str(pdu).map_err(|e| MalformedEvent(format!("stored event is not JSON: {e}")))?;
        let parsed = Arc::new(Pdu::parse(event_id, &value)?);
        self.insert(parsed.clone());
        Ok(parsed)
    }

    pub fn insert(&self, pdu: Arc<Pdu>) {
        let mut map = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PDU_CACHE_MAX {
            map.clear();
        }
        map.insert(pdu.event_id.clone(), pdu);
    }

    /// After `event_id`'s stored wire form changed (redaction).
    pub fn forget(&self, event_id: &str) {
        self.parsed.lock().unwrap_or_else(|e| e.into_inner()).remove(event_id);
    }
}

impl Store {
    /// The parsed auth events this process shares (see [`PduCache`]).
    pub fn pdu_cache(&self) -> Arc<PduCache> {
        self.pdus.clone()
    }
}

impl WriteTx {
    /// This server's name, when the store signs events (a serving process).
    pub fn server_name(&self) -> Option<&str> {
        self.signer.as_deref().map(|s| s.server_name.as_str())
    }

    pub fn pdu_cache(&self) -> &PduCache {
        &self.pdus
    }

    /// The auth state of the room for the `members` fqids, with wire forms (see [`StateRow`]).
    pub async fn state_pdus(&mut self, room_id: &str, members: &[&str]) -> Result<Vec<StateRow>, sqlx::Error> {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(state_pdus_sql(members.len()))).bind(room_id);
        for m in members {
            query = query.bind(*m);
        }
        query.fetch_all(&mut *self.tx).await
    }

    /// One entry of the room's current state: `(event_id, pdu)`.
    pub async fn state_pdu_keyed(
        &mut self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT s.event_id, e.pdu FROM room_state s JOIN events e ON e.event_id = s.event_id
             WHERE s.room_id = $1 AND s.event_type = $2 AND s.state_key = $3",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .fetch_optional(&mut *self.tx)
        .await
    }

    /// A room-wide entry (empty state key) of the room's current state: `(event_id, pdu)`.
    pub async fn state_pdu(
        &mut self,
        room_id: &str,
        event_type: &str,
    ) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
        self.state_pdu_keyed(room_id, event_type, "").await
    }

    /// Checks foreign keys at commit rather than per statement, for this transaction only: a
    /// room's create event is stored before the projector makes the `rooms` row it points at.
    pub async fn defer_foreign_keys(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("PRAGMA defer_foreign_keys = ON").execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Sets every member's power level from a power-levels event: `users` (JSON object text,
    /// fqid → level), else `users_default`.
    pub async fn project_power_levels(
        &mut self,
        room_id: &str,
        users: &str,
        users_default: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE memberships SET power_level = COALESCE(
               (SELECT j.value FROM json_each($2) j JOIN participants p ON p.fqid = j.key
                WHERE p.id = memberships.participant_id), $3)
             WHERE room_id = $1",
        )
        .bind(room_id)
        .bind(users)
        .bind(users_default)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_room_federated(&mut self, room_id: &str, federated: bool) -> Result<(), sqlx::Error> {
        if federated {
            self.fed_in_use.store(true, std::sync::atomic::Ordering::Release);
        }
        sqlx::query("UPDATE rooms SET federated = $2 WHERE id = $1")
            .bind(room_id)
            .bind(federated)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The participant with this fqid.
    pub async fn participant_by_fqid(&mut self, fqid: &str) -> Result<Option<Participant>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, tenant_id, local_id, server_name, fqid, display_name, is_admin, created_at
             FROM participants WHERE fqid = $1",
        )
        .bind(fqid)
        .fetch_optional(&mut *self.tx)
        .await
    }

    /// Creates the server's service participant if it does not exist yet, and answers it. It
    /// has no password (nobody logs in as it) and no workspace; its tenant is the default one
    /// when there is one, else `fallback_tenant`, and is never read.
    pub async fn ensure_service_participant(
        &mut self,
        id: &str,
        local_id: &str,
        server_name: &str,
        fallback_tenant: &str,
        now: i64,
    ) -> Result<Participant, sqlx::Error> {
        let fqid = format!("@{local_id}:{server_name}");
        sqlx::query(
            "INSERT INTO participants (id, tenant_id, local_id, server_name, fqid, display_name, password_hash, is_admin, created_at)
             VALUES ($1, COALESCE((SELECT id FROM tenants WHERE id = 'default'), $2), $3, $4, $5, $6, NULL, FALSE, $7)
             ON CONFLICT (fqid) DO NOTHING",
        )
        .bind(id)
        .bind(fallback_tenant)
        .bind(local_id)
        .bind(server_name)
        .bind(&fqid)
        .bind(server_name)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        self.participant_by_fqid(&fqid).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// The local record of a foreign participant (`fqid` of another server), created if it
    /// does not exist yet with `display_name` (its local id when unknown). Foreign records have
    /// no password and no workspace; their tenant is the default one, else `fallback_tenant`.
    pub async fn ensure_foreign_participant(
        &mut self,
        fqid: &str,
        display_name: Option<&str>,
        fallback_tenant: &str,
        now: i64,
    ) -> Result<Participant, sqlx::Error> {
        if let Some(p) = self.participant_by_fqid(fqid).await? {
            return Ok(p);
        }
        let (local_id, server_name) = federation::event::parse_fqid(fqid).ok_or(sqlx::Error::RowNotFound)?;
        sqlx::query(
            "INSERT INTO participants (id, tenant_id, local_id, server_name, fqid, display_name, password_hash, is_admin, created_at)
             VALUES ($1, COALESCE((SELECT id FROM tenants WHERE id = 'default'), $2), $3, $4, $5, $6, NULL, FALSE, $7)
             ON CONFLICT (fqid) DO NOTHING",
        )
        .bind(crate::ids::new_participant_id())
        .bind(fallback_tenant)
        .bind(local_id)
        .bind(server_name)
        .bind(fqid)
        .bind(display_name.unwrap_or(local_id))
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        self.participant_by_fqid(fqid).await?.ok_or(sqlx::Error::RowNotFound)
    }
}
