//! The sender's SQL: which events a destination still needs, its cursor and back-off, the
//! events it asked us to send again, and the peers' list for admins.
//!
//! An event goes to a destination when it is accepted, appended (positive position), has a
//! signed wire form, belongs to a room whose federation switch is on (its own toggle events
//! always), was made here or is marked for relay, and the destination has a joined member in
//! the room now or is the server of a member event's subject, or is named by the answer of a
//! join in stages whose state is not complete yet (`fed_partial_rooms`). The room-version check (a room
//! whose create event names none never federates) is the caller's, over the create content.

use serde_json::Value;

use super::Store;

type StoreResult<T> = Result<T, sqlx::Error>;

/// Whether the event `e` (an `events` row joined with its room `r`) concerns the destination
/// `$1`, whatever the room's switch: `$2` is this server's name.
macro_rules! concerns {
    () => {
        "e.status = 0 AND e.stream_position > 0 AND e.pdu IS NOT NULL
    AND (EXISTS (SELECT 1 FROM participants o WHERE o.fqid = e.sender AND o.server_name = $2)
         OR EXISTS (SELECT 1 FROM fed_relay_events x WHERE x.event_pos = e.stream_position))
    AND (EXISTS (SELECT 1 FROM memberships m JOIN participants p ON p.id = m.participant_id
                 WHERE m.room_id = e.room_id AND m.membership = 'join' AND p.server_name = $1)
         OR (e.event_type = 'swp.room.member'
             AND EXISTS (SELECT 1 FROM participants s WHERE s.fqid = e.state_key AND s.server_name = $1))
         OR EXISTS (SELECT 1 FROM fed_partial_rooms pr, json_each(pr.servers) j
                    WHERE pr.room_id = e.room_id AND j.value = $1))"
    };
}

/// The conditions shared by every query below: the event concerns the destination and may
/// leave now (the room's switch is on, or it is a toggle event itself).
const TO_DESTINATION: &str = concat!("(r.federated = TRUE OR e.event_type = 'swp.room.federation') AND ", concerns!());

/// An event that concerns the destination but may not leave while the room's switch is off:
/// kept in `fed_retry_events` when the cursor passes it, sent once the switch is on again.
const HELD_WHILE_OFF: &str = concat!("r.federated = FALSE AND e.event_type <> 'swp.room.federation' AND ", concerns!());

/// Before a destination's cursor moves to `upto`: the events it passes that wait for their
/// room's switch join its retry list.
async fn hold_switched_off(tx: &mut super::WriteTx, server: &str, us: &str, upto: i64) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO fed_retry_events (server_name, event_pos)
         SELECT $1, e.stream_position FROM events e JOIN rooms r ON r.id = e.room_id
         WHERE e.stream_position > (SELECT delivered_pos FROM fed_destinations WHERE server_name = $1)
           AND e.stream_position <= $3 AND {HELD_WHILE_OFF}
         ON CONFLICT (server_name, event_pos) DO NOTHING"
    )))
    .bind(server)
    .bind(us)
    .bind(upto)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}

/// An event waiting for a destination.
#[derive(Debug, Clone)]
pub struct OutboundEvent {
    pub pos: i64,
    pub event_id: String,
    pub room_id: String,
    /// The sender's fqid (its server is the event's origin).
    pub sender: String,
    /// The signed wire form, as stored.
    pub pdu: String,
}

/// A destination's delivery record (`fed_destinations`); timestamps in Unix ms.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DestinationRow {
    pub server_name: String,
    pub delivered_pos: i64,
    pub failures: i64,
    pub retry_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_seen_at: Option<i64>,
}

/// A peer as the admin list shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub row: DestinationRow,
    /// Events still to deliver plus events to send again.
    pub queue_depth: i64,
}

type EventTuple = (i64, String, String, String, String);

fn outbound(rows: Vec<EventTuple>) -> Vec<OutboundEvent> {
    rows.into_iter()
        .map(|(pos, event_id, room_id, sender, pdu)| OutboundEvent { pos, event_id, room_id, sender, pdu })
        .collect()
}

const ROW_COLUMNS: &str = "server_name, delivered_pos, failures, retry_at, last_error, last_error_at, \
                           last_success_at, last_seen_at";

impl Store {
    /// Every destination's record, by name.
    pub async fn fed_destination_rows(&self) -> StoreResult<Vec<DestinationRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ROW_COLUMNS} FROM fed_destinations ORDER BY server_name")))
            .fetch_all(&self.pool)
            .await
    }

    /// One destination's record.
    pub async fn fed_destination_row(&self, server: &str) -> StoreResult<Option<DestinationRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM fed_destinations WHERE server_name = $1"
        )))
        .bind(server)
        .fetch_optional(&self.pool)
        .await
    }

    /// The events in `(after, upto]` that `destination` needs, in stream order, at most
    /// `limit`. `us` is this server's name.
    pub async fn fed_pending_events(
        &self,
        destination: &str,
        us: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboundEvent>> {
        let rows: Vec<EventTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT e.stream_position, e.event_id, e.room_id, e.sender, e.pdu FROM events e
             JOIN rooms r ON r.id = e.room_id
             WHERE e.stream_position > $3 AND e.stream_position <= $4 AND {TO_DESTINATION}
             ORDER BY e.stream_position LIMIT $5"
        )))
        .bind(destination)
        .bind(us)
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(outbound(rows))
    }

    /// The events `destination` answered `retry: true`, oldest first, at most `limit`. An
    /// event that stopped concerning it (room switched off, server gone) stays listed but is
    /// not returned until it concerns it again.
    pub async fn fed_retry_candidates(
        &self,
        destination: &str,
        us: &str,
        limit: i64,
    ) -> StoreResult<Vec<OutboundEvent>> {
        let rows: Vec<EventTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT e.stream_position, e.event_id, e.room_id, e.sender, e.pdu FROM fed_retry_events q
             JOIN events e ON e.stream_position = q.event_pos JOIN rooms r ON r.id = e.room_id
             WHERE q.server_name = $1 AND {TO_DESTINATION}
             ORDER BY e.stream_position LIMIT $3"
        )))
        .bind(destination)
        .bind(us)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(outbound(rows))
    }

    /// Whether the room's create event names a `room_version` (rooms made before the rules
    /// existed never federate). `None` when the room has no create event here.
    pub async fn room_has_version(&self, room_id: &str) -> StoreResult<Option<bool>> {
        let content: Option<String> = sqlx::query_scalar(
            // A joined room's create event came with the join's state: an outlier here.
            "SELECT content FROM events WHERE room_id = $1 AND event_type = 'swp.room.create' AND status IN (0, 3)
             ORDER BY stream_position LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(content
            .map(|c| serde_json::from_str::<Value>(&c).ok().and_then(|v| v.get("room_version").cloned()).is_some()))
    }

    /// The servers (not `us`) that events in `(after, upto]` are addressed to, each with the
    /// first such position: where the dispatcher makes destination records.
    pub async fn fed_destinations_of_range(&self, us: &str, after: i64, upto: i64) -> StoreResult<Vec<(String, i64)>> {
        // Rooms whose switch is off count too: their destinations' tasks keep what they pass.
        let common = "e.stream_position > $2 AND e.stream_position <= $3 AND e.status = 0 AND e.pdu IS NOT NULL
            AND (EXISTS (SELECT 1 FROM participants o WHERE o.fqid = e.sender AND o.server_name = $1)
                 OR EXISTS (SELECT 1 FROM fed_relay_events x WHERE x.event_pos = e.stream_position))
            AND p.server_name <> $1";
        let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT p.server_name, MIN(e.stream_position) FROM events e JOIN rooms r ON r.id = e.room_id
             JOIN memberships m ON m.room_id = e.room_id AND m.membership = 'join'
             JOIN participants p ON p.id = m.participant_id
             WHERE {common} GROUP BY p.server_name
             UNION ALL
             SELECT p.server_name, MIN(e.stream_position) FROM events e JOIN rooms r ON r.id = e.room_id
             JOIN participants p ON p.fqid = e.state_key
             WHERE e.event_type = 'swp.room.member' AND {common} GROUP BY p.server_name
             UNION ALL
             SELECT p.server_name, MIN(e.stream_position) FROM events e JOIN rooms r ON r.id = e.room_id
             JOIN (SELECT pr.room_id, j.value AS server_name FROM fed_partial_rooms pr, json_each(pr.servers) j) p
               ON p.room_id = e.room_id
             WHERE {common} GROUP BY p.server_name"
        )))
        .bind(us)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        let mut first: std::collections::BTreeMap<String, i64> = Default::default();
        for (server, pos) in rows {
            let e = first.entry(server).or_insert(pos);
            *e = (*e).min(pos);
        }
        Ok(first.into_iter().collect())
    }

    /// The lowest cursor of any destination, where the dispatcher starts after a restart (a
    /// destination first addressed just before a crash still gets its record).
    pub async fn fed_lowest_cursor(&self) -> StoreResult<Option<i64>> {
        sqlx::query_scalar("SELECT MIN(delivered_pos) FROM fed_destinations").fetch_one(&self.pool).await
    }

    /// Makes a record for each new destination, its cursor just before the first event it
    /// needs. Existing records are left alone.
    pub async fn fed_ensure_destinations(&self, first: &[(String, i64)]) -> StoreResult<()> {
        if first.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for (server, pos) in first {
            sqlx::query(
                "INSERT INTO fed_destinations (server_name, delivered_pos) VALUES ($1, $2)
                 ON CONFLICT (server_name) DO NOTHING",
            )
            .bind(server)
            .bind(pos - 1)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// After the dispatcher found that no event in `(after, upto]` is addressed to any server
    /// but `addressed`, moves the cursor of every other destination that had caught up to
    /// `after` on to `upto`: an idle peer's cursor follows the stream, so that a room it joins
    /// later does not send it that room's older events. A destination still behind is left to
    /// its own task.
    pub async fn fed_pass_idle_destinations(&self, after: i64, upto: i64, addressed: &[String]) -> StoreResult<()> {
        let idle: Vec<String> = sqlx::query_scalar(
            "SELECT server_name FROM fed_destinations WHERE delivered_pos >= $1 AND delivered_pos < $2",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        let idle: Vec<String> = idle.into_iter().filter(|s| !addressed.contains(s)).collect();
        if idle.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for server in idle {
            sqlx::query(
                "UPDATE fed_destinations SET delivered_pos = $3
                 WHERE server_name = $1 AND delivered_pos >= $2 AND delivered_pos < $3",
            )
            .bind(server)
            .bind(after)
            .bind(upto)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// Catch-up after an outage: when more than `above` events in `(cursor, upto]` wait for
    /// `destination`, the newest of each room joins its retry list (to go first; the peer
    /// pulls the rest through them) and the cursor moves to `upto`, in one write. Answers how
    /// many rooms, or `None` when the backlog is not that long (nothing written).
    pub async fn fed_catch_up(
        &self,
        destination: &str,
        us: &str,
        cursor: i64,
        upto: i64,
        above: i64,
    ) -> StoreResult<Option<u64>> {
        let backlog: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events e JOIN rooms r ON r.id = e.room_id
             WHERE e.stream_position > $3 AND e.stream_position <= $4 AND {TO_DESTINATION} LIMIT $5)"
        )))
        .bind(destination)
        .bind(us)
        .bind(cursor)
        .bind(upto)
        .bind(above + 1)
        .fetch_one(&self.pool)
        .await?;
        if backlog <= above {
            return Ok(None);
        }
        let mut tx = self.write().await?;
        hold_switched_off(&mut tx, destination, us, upto).await?;
        let rooms = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO fed_retry_events (server_name, event_pos)
             SELECT $1, MAX(e.stream_position) FROM events e JOIN rooms r ON r.id = e.room_id
             WHERE e.stream_position > $3 AND e.stream_position <= $4 AND {TO_DESTINATION}
             GROUP BY e.room_id
             ON CONFLICT (server_name, event_pos) DO NOTHING"
        )))
        .bind(destination)
        .bind(us)
        .bind(cursor)
        .bind(upto)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE fed_destinations SET delivered_pos = $2 WHERE server_name = $1 AND delivered_pos < $2")
            .bind(destination)
            .bind(upto)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(Some(rooms))
    }

    /// Moves a destination's cursor forward (never back), keeping what it passes of rooms
    /// whose switch is off.
    pub async fn fed_advance_cursor(&self, server: &str, us: &str, cursor: i64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        hold_switched_off(&mut tx, server, us, cursor).await?;
        sqlx::query("UPDATE fed_destinations SET delivered_pos = $2 WHERE server_name = $1 AND delivered_pos < $2")
            .bind(server)
            .bind(cursor)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await
    }

    /// Records an answered transaction in one write: the cursor moves to `cursor`, the
    /// back-off is cleared, events answered for good leave the retry list and those answered
    /// `retry: true` join it.
    pub async fn fed_transaction_answered(
        &self,
        server: &str,
        us: &str,
        cursor: i64,
        done: &[i64],
        retry: &[i64],
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        hold_switched_off(&mut tx, server, us, cursor).await?;
        sqlx::query(
            "UPDATE fed_destinations SET
                 delivered_pos = CASE WHEN delivered_pos < $2 THEN $2 ELSE delivered_pos END,
                 failures = 0, retry_at = NULL, last_success_at = $3
             WHERE server_name = $1",
        )
        .bind(server)
        .bind(cursor)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        for pos in done {
            sqlx::query("DELETE FROM fed_retry_events WHERE server_name = $1 AND event_pos = $2")
                .bind(server)
                .bind(pos)
                .execute(&mut *tx.tx)
                .await?;
        }
        for pos in retry {
            sqlx::query(
                "INSERT INTO fed_retry_events (server_name, event_pos) VALUES ($1, $2)
                 ON CONFLICT (server_name, event_pos) DO NOTHING",
            )
            .bind(server)
            .bind(pos)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// Records a failed attempt: the failure count, when to try again, and why.
    pub async fn fed_delivery_failed(
        &self,
        server: &str,
        failures: i64,
        retry_at_ms: i64,
        error: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE fed_destinations SET failures = $2, retry_at = $3, last_error = $4, last_error_at = $5
             WHERE server_name = $1",
        )
        .bind(server)
        .bind(failures)
        .bind(retry_at_ms)
        .bind(error)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Records that the peer contacted us; with `reset`, also clears its back-off. A peer seen
    /// for the first time gets a record whose cursor is `initial_cursor`.
    pub async fn fed_peer_seen(&self, server: &str, now_ms: i64, reset: bool, initial_cursor: i64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO fed_destinations (server_name, delivered_pos, last_seen_at) VALUES ($1, $2, $3)
             ON CONFLICT (server_name) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(server)
        .bind(initial_cursor)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        if reset {
            sqlx::query("UPDATE fed_destinations SET failures = 0, retry_at = NULL WHERE server_name = $1")
                .bind(server)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit().await
    }

    /// Every peer with its queue depth (events still to deliver up to `upto`, plus events to
    /// send again).
    pub async fn fed_peer_statuses(&self, us: &str, upto: i64) -> StoreResult<Vec<PeerStatus>> {
        let rows = self.fed_destination_rows().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let pending: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM events e JOIN rooms r ON r.id = e.room_id
                 WHERE e.stream_position > $3 AND e.stream_position <= $4 AND {TO_DESTINATION}"
            )))
            .bind(&row.server_name)
            .bind(us)
            .bind(row.delivered_pos)
            .bind(upto)
            .fetch_one(&self.pool)
            .await?;
            let retry: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fed_retry_events WHERE server_name = $1")
                .bind(&row.server_name)
                .fetch_one(&self.pool)
                .await?;
            out.push(PeerStatus { row, queue_depth: pending + retry });
        }
        Ok(out)
    }

    /// The servers (not `us`) with a joined member in the room, if its federation is on:
    /// where a typing notice goes.
    pub async fn fed_typing_servers(&self, room_id: &str, us: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT p.server_name FROM memberships m JOIN participants p ON p.id = m.participant_id
             JOIN rooms r ON r.id = m.room_id
             WHERE m.room_id = $1 AND m.membership = 'join' AND r.federated = TRUE AND p.server_name <> $2
             ORDER BY p.server_name",
        )
        .bind(room_id)
        .bind(us)
        .fetch_all(&self.pool)
        .await
    }

    /// The servers (not `us`) sharing a federated room with the participant: where their
    /// presence goes.
    pub async fn fed_presence_servers(&self, participant_id: &str, us: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT p.server_name FROM memberships mine
             JOIN rooms r ON r.id = mine.room_id
             JOIN memberships m ON m.room_id = mine.room_id JOIN participants p ON p.id = m.participant_id
             WHERE mine.participant_id = $1 AND mine.membership = 'join' AND r.federated = TRUE
               AND m.membership = 'join' AND p.server_name <> $2
             ORDER BY p.server_name",
        )
        .bind(participant_id)
        .bind(us)
        .fetch_all(&self.pool)
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rooms::{NewEventSpec, append_by, event_types, populate_new_room};
    use crate::storage::{Membership, Participant, Room};
    use crate::test_fixtures;

    const US: &str = "hs.test";
    const PEER: &str = "peer.test";

    async fn store(dir: &std::path::Path) -> Store {
        test_fixtures::store(dir, US).await
    }

    async fn alice(store: &Store) -> Participant {
        test_fixtures::person(store, "alice", US).await
    }

    fn room(creator: &Participant) -> Room {
        test_fixtures::group_room("room-f1", creator)
    }

    async fn say(store: &Store, who: &Participant, body: &str) -> i64 {
        test_fixtures::say(store, "room-f1", who, body).await;
        store.committed_position()
    }

    /// A room of alice's with bob of `peer.test` joined (his row set directly: the joins over
    /// federation are another part's).
    async fn shared_room(store: &Store, federated: bool) -> Participant {
        let alice = alice(store).await;
        let mut tx = store.write().await.expect("tx");
        populate_new_room(&mut tx, &room(&alice), &alice, &[]).await.expect("room");
        let bob = tx.ensure_foreign_participant(&format!("@bob:{PEER}"), None, "default", 0).await.expect("bob");
        tx.set_membership("room-f1", &bob.id, Membership::Join, Some(0), 0).await.expect("seat");
        tx.set_room_federated("room-f1", federated).await.expect("switch");
        tx.commit().await.expect("commit");
        alice
    }

    async fn pending(store: &Store, dest: &str, after: i64) -> Vec<i64> {
        let top = store.committed_position();
        store.fed_pending_events(dest, US, after, top, 1000).await.expect("pending").iter().map(|e| e.pos).collect()
    }

    #[tokio::test]
    async fn only_federated_rooms_with_the_destination_in_them_are_delivered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(dir.path()).await;
        let alice = shared_room(&store, false).await;
        let before = store.committed_position();
        let m1 = say(&store, &alice, "one").await;
        assert!(pending(&store, PEER, before).await.is_empty(), "federation off: nothing leaves");
        // … but the peer's task is woken, and what its cursor passes is kept for later.
        assert_eq!(store.fed_destinations_of_range(US, before, m1).await.expect("range"), vec![(PEER.to_string(), m1)]);
        store.fed_ensure_destinations(&[(PEER.to_string(), m1)]).await.expect("record");
        store.fed_advance_cursor(PEER, US, m1).await.expect("advance");
        let retries = |store: Store| async move {
            store.fed_retry_candidates(PEER, US, 10).await.expect("retries").iter().map(|e| e.pos).collect::<Vec<_>>()
        };
        assert!(retries(store.clone()).await.is_empty(), "held while the switch is off");

        let mut tx = store.write().await.expect("tx");
        tx.set_room_federated("room-f1", true).await.expect("switch");
        tx.commit().await.expect("commit");
        assert_eq!(retries(store.clone()).await, vec![m1], "sent once the switch is on again");
        let m2 = say(&store, &alice, "two").await;
        let m3 = say(&store, &alice, "three").await;
        assert_eq!(pending(&store, PEER, m1).await, vec![m2, m3]);
        assert!(pending(&store, "other.test", m1).await.is_empty(), "a server with no member hears nothing");
        assert_eq!(store.fed_destinations_of_range(US, m1, m3).await.expect("range"), vec![(PEER.to_string(), m2)]);
        // Bounded reads, in stream order.
        let top = store.committed_position();
        let one = store.fed_pending_events(PEER, US, m1, top, 1).await.expect("pending");
        assert_eq!(one.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![m2]);
        assert!(serde_json::from_str::<Value>(&one[0].pdu).expect("a pdu").is_object());
        assert_eq!(one[0].sender, alice.fqid);
        assert_eq!(store.room_has_version("room-f1").await.expect("version"), Some(true));
        assert_eq!(store.room_has_version("room-none").await.expect("version"), None);

        // A member event about a participant of a server with nobody joined goes to it too.
        let carol = "@carol:other.test";
        let content = json!({"membership": "invite"});
        let mut tx = store.write().await.expect("tx");
        let spec = NewEventSpec {
            room_id: "room-f1",
            sender_id: &alice.id,
            event_type: event_types::MEMBER,
            state_key: Some(carol),
            content: &content,
            event_uuid: None,
            relates_to: None,
            unsigned: None,
        };
        append_by(&mut tx, spec, alice.fqid.clone()).await.expect("invite");
        tx.commit().await.expect("commit");
        let invite = store.committed_position();
        let m4 = say(&store, &alice, "four").await;
        assert_eq!(pending(&store, "other.test", m3).await, vec![invite], "the invite, not the room's chatter");
        assert_eq!(pending(&store, PEER, m3).await, vec![invite, m4]);
        let mut found = store.fed_destinations_of_range(US, m3, m4).await.expect("range");
        found.sort();
        assert_eq!(found, vec![("other.test".to_string(), invite), (PEER.to_string(), invite)]);
    }

    #[tokio::test]
    async fn the_cursor_moves_forward_only_and_the_retry_list_follows_verdicts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(dir.path()).await;
        let alice = shared_room(&store, true).await;
        let m1 = say(&store, &alice, "one").await;
        let m2 = say(&store, &alice, "two").await;

        store.fed_ensure_destinations(&[(PEER.into(), m1)]).await.expect("ensure");
        store.fed_ensure_destinations(&[(PEER.into(), 1)]).await.expect("ensure again");
        let row = store.fed_destination_row(PEER).await.expect("row").expect("made");
        assert_eq!(row.delivered_pos, m1 - 1, "the first record wins; a later one never rewinds it");
        assert_eq!(pending(&store, PEER, row.delivered_pos).await, vec![m1, m2]);

        // The peer fails: back-off recorded, nothing moves.
        store.fed_delivery_failed(PEER, 2, 5_000, "peer.test is unreachable", 1_000).await.expect("failed");
        let row = store.fed_destination_row(PEER).await.expect("row").expect("row");
        assert_eq!((row.failures, row.retry_at, row.delivered_pos), (2, Some(5_000), m1 - 1));
        assert_eq!(row.last_error.as_deref(), Some("peer.test is unreachable"));

        // Answered: m1 accepted, m2 to be sent again.
        store.fed_transaction_answered(PEER, US, m2, &[m1], &[m2], 9_000).await.expect("answered");
        let row = store.fed_destination_row(PEER).await.expect("row").expect("row");
        assert_eq!((row.failures, row.retry_at, row.delivered_pos, row.last_success_at), (0, None, m2, Some(9_000)));
        let retry = store.fed_retry_candidates(PEER, US, 10).await.expect("retries");
        assert_eq!(retry.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![m2]);
        let peers = store.fed_peer_statuses(US, store.committed_position()).await.expect("peers");
        assert_eq!((peers.len(), peers[0].queue_depth), (1, 1), "one event to send again");

        // An older answer never moves the cursor back; a verdict for good clears the retry.
        store.fed_transaction_answered(PEER, US, m1, &[m2], &[], 9_500).await.expect("answered");
        assert_eq!(store.fed_destination_row(PEER).await.expect("row").expect("row").delivered_pos, m2);
        assert!(store.fed_retry_candidates(PEER, US, 10).await.expect("retries").is_empty());
        store.fed_advance_cursor(PEER, US, m1).await.expect("advance");
        assert_eq!(store.fed_destination_row(PEER).await.expect("row").expect("row").delivered_pos, m2);

        // An idle destination follows the stream; one still behind, or addressed, does not.
        store.fed_peer_seen("idle.test", 0, false, m2).await.expect("idle");
        store.fed_peer_seen("behind.test", 0, false, m1 - 1).await.expect("behind");
        store.fed_pass_idle_destinations(m2, m2 + 5, &[PEER.to_string()]).await.expect("pass");
        let cursor = |rows: &[DestinationRow], name: &str| {
            rows.iter().find(|r| r.server_name == name).map(|r| r.delivered_pos).expect("row")
        };
        let rows = store.fed_destination_rows().await.expect("rows");
        assert_eq!(
            (cursor(&rows, "idle.test"), cursor(&rows, "behind.test"), cursor(&rows, PEER)),
            (m2 + 5, m1 - 1, m2)
        );

        let m3 = say(&store, &alice, "three").await;
        let peers = store.fed_peer_statuses(US, store.committed_position()).await.expect("peers");
        let peers: Vec<_> = peers.into_iter().filter(|p| p.row.server_name == PEER).collect();
        assert_eq!(peers[0].queue_depth, 1, "one new event waiting");
        assert_eq!(pending(&store, PEER, m2).await, vec![m3]);
    }

    #[tokio::test]
    async fn a_peer_that_calls_ends_its_back_off_and_a_new_one_starts_at_the_given_cursor() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store(dir.path()).await;
        store.fed_peer_seen("new.test", 1_000, false, 42).await.expect("seen");
        let row = store.fed_destination_row("new.test").await.expect("row").expect("made");
        assert_eq!((row.delivered_pos, row.last_seen_at), (42, Some(1_000)));

        store.fed_delivery_failed("new.test", 4, 99_000, "boom", 2_000).await.expect("failed");
        store.fed_peer_seen("new.test", 3_000, false, 0).await.expect("seen");
        let row = store.fed_destination_row("new.test").await.expect("row").expect("row");
        assert_eq!((row.failures, row.retry_at, row.delivered_pos), (4, Some(99_000), 42), "only recorded");
        store.fed_peer_seen("new.test", 4_000, true, 0).await.expect("seen");
        let row = store.fed_destination_row("new.test").await.expect("row").expect("row");
        assert_eq!((row.failures, row.retry_at, row.last_seen_at), (0, None, Some(4_000)));
        assert_eq!(store.fed_lowest_cursor().await.expect("lowest"), Some(42));
    }
}
