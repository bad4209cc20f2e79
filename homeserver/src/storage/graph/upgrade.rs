//! The upgrade of a database that migration 8 converted: state groups, current state and
//! extremities computed from the events already stored.

use super::*;

/// Fills the state groups, the current state and the extremities of a database that migration
/// 8 upgraded (it left a row in `graph_upgrade_pending`, deleted here in the same transaction): every room's events are walked in stream order (all of them were accepted
/// then), each state event starting a group that its following events share. Rooms made before
/// migration 4 had neither `room_state` nor extremities: they get both, so that their next
/// events carry `prev_events` and `auth_events`.
pub(in crate::storage) async fn upgrade(pool: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rooms: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT room_id FROM events ORDER BY room_id").fetch_all(&mut *tx).await?;
    for room_id in rooms {
        let events: Vec<(i64, String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT stream_position, event_id, event_type, state_key, depth FROM events
             WHERE room_id = $1 ORDER BY stream_position",
        )
        .bind(&room_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut state = PositionState::new();
        let mut group: Option<GroupRef> = None;
        // Each group covers its event's position up to the next state event's.
        let starts: Vec<usize> = (0..events.len()).filter(|&i| events[i].3.is_some()).collect();
        for (n, &i) in starts.iter().enumerate() {
            let (pos, id, t, k, _) = &events[i];
            let key = (t.clone(), k.clone().expect("a state event"));
            state.insert(key.clone(), (*pos, id.clone()));
            let plan = GroupPlan::after(group);
            let gid: i64 = sqlx::query_scalar(INSERT_GROUP_SQL)
                .bind(&room_id)
                .bind(plan.prev_group())
                .bind(plan.delta_depth())
                .fetch_one(&mut *tx)
                .await?;
            let entries: Vec<((String, String), i64)> = match plan {
                GroupPlan::Delta { .. } => vec![(key, *pos)],
                GroupPlan::Snapshot => state.iter().map(|(k, (p, _))| (k.clone(), *p)).collect(),
            };
            for chunk in entries.chunks(4096) {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(group_entries_sql(chunk.len())));
                for ((t, k), p) in chunk {
                    q = q.bind(gid).bind(t).bind(k).bind(*p);
                }
                q.execute(&mut *tx).await?;
            }
            let end = starts.get(n + 1).map_or(i64::MAX, |&j| events[j].0);
            sqlx::query(
                "UPDATE events SET state_group = $1
                 WHERE room_id = $2 AND stream_position >= $3 AND stream_position < $4",
            )
            .bind(gid)
            .bind(&room_id)
            .bind(*pos)
            .bind(end)
            .execute(&mut *tx)
            .await?;
            group = Some(GroupRef { id: gid, delta_depth: plan.delta_depth() });
        }
        if let Some(g) = group {
            sqlx::query("DELETE FROM room_state WHERE room_id = $1").bind(&room_id).execute(&mut *tx).await?;
            for ((t, k), (_, id)) in &state {
                sqlx::query(UPSERT_ROOM_STATE_SQL).bind(&room_id).bind(t).bind(k).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query(SET_CURRENT_SQL).bind(&room_id).bind(g.id).execute(&mut *tx).await?;
        }
        let has_extremity: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM room_extremities WHERE room_id = $1)")
                .bind(&room_id)
                .fetch_one(&mut *tx)
                .await?;
        if let (false, Some((_, id, _, _, depth))) = (has_extremity, events.last()) {
            sqlx::query(INSERT_EXTREMITY_SQL).bind(&room_id).bind(id).bind(*depth).execute(&mut *tx).await?;
        }
    }
    sqlx::query("DELETE FROM graph_upgrade_pending").execute(&mut *tx).await?;
    tx.commit().await
}
