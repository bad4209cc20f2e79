//! SQL for reading the room DAG's current state and stored wire forms (appending is
//! [`graph`](super::graph)'s).

use super::*;

/// `(type, state_key, event_id)` of the room's (`$1`) current create, power-levels and
/// join-rule events and of the membership events of `members` fqids (`$2…`).
pub(super) fn auth_state_sql(members: usize) -> String {
    let placeholders: Vec<String> = (0..members).map(|i| format!("${}", i + 2)).collect();
    format!(
        "SELECT event_type, state_key, event_id FROM room_state WHERE room_id = $1
           AND ((event_type IN ('swp.room.create', 'swp.room.power_levels', 'swp.room.join_rules',
                                'swp.room.lifecycle', 'swp.room.server_acl') AND state_key = '')
                OR (event_type = 'swp.room.member' AND state_key IN ({})))",
        if placeholders.is_empty() { "NULL".to_string() } else { placeholders.join(", ") }
    )
}

pub(super) const FQID_OF_SQL: &str = "SELECT fqid FROM participants WHERE id = $1";

impl WriteTx {
    /// The current create, power-levels and join-rule events, and the membership events of
    /// every fqid in `members`, in one read: `(type, state_key, event_id)`.
    pub async fn auth_state_many(
        &mut self,
        room_id: &str,
        members: &[&str],
    ) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(auth_state_sql(members.len()))).bind(room_id);
        for m in members {
            query = query.bind(*m);
        }
        query.fetch_all(&mut *self.tx).await
    }

    pub async fn fqid_of(&mut self, participant_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(FQID_OF_SQL).bind(participant_id).fetch_optional(&mut *self.tx).await
    }

    /// The stored wire forms of an event and of the edits that point at it.
    pub async fn pdus_of_event_and_edits(&mut self, event_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT event_id, pdu FROM events WHERE pdu IS NOT NULL
               AND (event_id = $1 OR (relates_to = $1 AND event_type = 'swp.room.edit'))",
        )
        .bind(event_id)
        .fetch_all(&mut *self.tx)
        .await
    }

    pub async fn set_pdu(&mut self, event_id: &str, pdu: &str) -> Result<(), sqlx::Error> {
        self.event_cache.remove(event_id);
        sqlx::query("UPDATE events SET pdu = $2 WHERE event_id = $1")
            .bind(event_id)
            .bind(pdu)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Store {
    /// An event's signed wire form, if it is in the room.
    pub async fn event_pdu(&self, room_id: &str, event_id: &str) -> Result<Option<String>, sqlx::Error> {
        let pdu: Option<Option<String>> =
            sqlx::query_scalar("SELECT pdu FROM events WHERE room_id = $1 AND event_id = $2")
                .bind(room_id)
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(pdu.flatten())
    }
}
