//! SQL for rooms, memberships and the events table.

use super::*;

/// A room row plus the joined-member count and the viewer's membership (`$viewer`).
const ROOM_VIEW_SELECT: &str = "SELECT r.*,
    (SELECT COUNT(*) FROM memberships c WHERE c.room_id = r.id AND c.membership = 'join') AS members_count,
    me.membership AS my_membership, me.power_level AS my_power_level
  FROM rooms r LEFT JOIN memberships me ON me.room_id = r.id AND me.participant_id = $1";

const MEMBER_SELECT: &str = "SELECT m.*, p.id, p.tenant_id, p.local_id, p.server_name, p.fqid, p.display_name,
    p.is_admin, p.created_at
  FROM memberships m JOIN participants p ON p.id = m.participant_id";

/// Filters of the room directory.
pub struct DirectoryQuery<'a> {
    pub viewer_id: &'a str,
    pub tenant_id: &'a str,
    pub q: Option<&'a str>,
    pub room_type: Option<RoomType>,
    pub limit: i64,
    pub offset: i64,
}

/// An event about to be appended.
pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    /// The sender's fqid.
    pub sender: &'a str,
    /// Canonical JSON of the content.
    pub content: &'a str,
    pub origin_ts: i64,
    /// Idempotency key; unique per sender. None for events built by a peer.
    pub event_uuid: Option<&'a str>,
    /// The event an edit, reaction or redaction is about.
    pub relates_to: Option<&'a str>,
    /// Server-local annotations (e.g. `sent_by`), never signed.
    pub unsigned: Option<&'a serde_json::Value>,
    /// The signed wire form.
    pub pdu: &'a str,
    pub depth: i64,
}

pub(super) const TENANT_SQL: &str =
    "SELECT id, name, max_participants, send_rate_per_s, send_burst, created_at FROM tenants WHERE id = $1";

fn like_pattern(q: &str) -> String {
    let escaped = q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

fn room_type_str(t: RoomType) -> &'static str {
    match t {
        RoomType::Group => "group",
        RoomType::Public => "public",
        RoomType::Incognito => "incognito",
        RoomType::Dm => "dm",
    }
}

impl Store {
    pub async fn room_view(&self, room_id: &str, viewer_id: &str) -> Result<Option<RoomView>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{ROOM_VIEW_SELECT} WHERE r.id = $2")))
            .bind(viewer_id)
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Public rooms of the viewer's tenant and every non-incognito room the viewer is joined to
    /// or invited to; archived rooms have their own listing.
    pub async fn directory(&self, d: &DirectoryQuery<'_>) -> Result<(Vec<RoomView>, i64), sqlx::Error> {
        const WHERE: &str = "WHERE r.room_type <> 'incognito' AND r.state <> 'archived'
            AND ((r.room_type = 'public' AND r.tenant_id = $2) OR me.membership IN ('join', 'invite'))
            AND (CAST($3 AS TEXT) IS NULL OR r.room_type = $3)
            AND (CAST($4 AS TEXT) IS NULL
                 OR LOWER(COALESCE(r.name, '')) LIKE $4 ESCAPE '\\'
                 OR LOWER(COALESCE(r.topic, '')) LIKE $4 ESCAPE '\\'
                 OR LOWER(COALESCE(r.room_alias, '')) LIKE $4 ESCAPE '\\')";
        let pattern = d.q.map(like_pattern);
        let room_type = d.room_type.map(room_type_str);
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM rooms r LEFT JOIN memberships me ON me.room_id = r.id AND me.participant_id = $1 {WHERE}"
        )))
        .bind(d.viewer_id)
        .bind(d.tenant_id)
        .bind(room_type)
        .bind(&pattern)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ROOM_VIEW_SELECT} {WHERE} ORDER BY r.created_at DESC, r.id DESC LIMIT $5 OFFSET $6"
        )))
        .bind(d.viewer_id)
        .bind(d.tenant_id)
        .bind(room_type)
        .bind(&pattern)
        .bind(d.limit)
        .bind(d.offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows, total))
    }

    /// Rooms the viewer has joined or is invited to, of every type.
    pub async fn rooms_of(&self, viewer_id: &str) -> Result<Vec<RoomView>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ROOM_VIEW_SELECT} WHERE me.membership IN ('join', 'invite') AND r.state <> 'archived'
             ORDER BY r.created_at DESC, r.id DESC"
        )))
        .bind(viewer_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn archived_rooms_of(&self, viewer_id: &str) -> Result<Vec<RoomView>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ROOM_VIEW_SELECT} WHERE me.membership = 'join' AND r.state = 'archived' ORDER BY r.created_at DESC, r.id DESC"
        )))
        .bind(viewer_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn members(
        &self,
        room_id: &str,
        filter: &[Membership],
    ) -> Result<Vec<MemberWithParticipant>, sqlx::Error> {
        let wanted: Vec<&str> = filter.iter().map(|m| m.as_str()).collect();
        let rows: Vec<MemberWithParticipant> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{MEMBER_SELECT} WHERE m.room_id = $1 ORDER BY m.power_level DESC, p.fqid"
        )))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().filter(|r| wanted.contains(&r.member.membership.as_str())).collect())
    }

    pub async fn member(
        &self,
        room_id: &str,
        participant_id: &str,
    ) -> Result<Option<MemberWithParticipant>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{MEMBER_SELECT} WHERE m.room_id = $1 AND m.participant_id = $2")))
            .bind(room_id)
            .bind(participant_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The stream position of an event if it belongs to the room.
    pub async fn event_position(&self, room_id: &str, event_id: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT stream_position FROM events WHERE room_id = $1 AND event_id = $2")
            .bind(room_id)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Messages after `after_pos` that the reader did not send.
    pub async fn unread_count(&self, room_id: &str, reader_id: &str, after_pos: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE room_id = $1 AND event_type = 'swp.room.message'
             AND stream_position > $2 AND status = 0
             AND sender <> (SELECT fqid FROM participants WHERE id = $3)",
        )
        .bind(room_id)
        .bind(after_pos)
        .bind(reader_id)
        .fetch_one(&self.pool)
        .await
    }

    /// Moves the read marker forward only; answers whether it moved.
    pub async fn advance_read_marker(
        &self,
        room_id: &str,
        participant_id: &str,
        pos: i64,
        event_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "UPDATE memberships SET last_read_pos = $3, last_read_event_id = $4
             WHERE room_id = $1 AND participant_id = $2 AND last_read_pos < $3",
        )
        .bind(room_id)
        .bind(participant_id)
        .bind(pos)
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_notification_mode(
        &self,
        room_id: &str,
        participant_id: &str,
        mode: NotificationMode,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE memberships SET notification_mode = $3 WHERE room_id = $1 AND participant_id = $2")
            .bind(room_id)
            .bind(participant_id)
            .bind(mode)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_muted_until(
        &self,
        room_id: &str,
        participant_id: &str,
        until: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE memberships SET muted_until = $3 WHERE room_id = $1 AND participant_id = $2")
            .bind(room_id)
            .bind(participant_id)
            .bind(until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn events_of_room(&self, room_id: &str) -> Result<Vec<EventRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT e.stream_position, e.event_id, e.room_id, e.event_type, e.state_key,
                    COALESCE(p.id, e.sender) AS sender_id, e.content, e.origin_ts
             FROM events e LEFT JOIN participants p ON p.fqid = e.sender
             WHERE e.room_id = $1 ORDER BY e.stream_position",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await
    }
}

impl WriteTx {
    pub async fn room(&mut self, room_id: &str) -> Result<Option<Room>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM rooms WHERE id = $1").bind(room_id).fetch_optional(&mut *self.tx).await
    }

    pub async fn member(&mut self, room_id: &str, participant_id: &str) -> Result<Option<MemberRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM memberships WHERE room_id = $1 AND participant_id = $2")
            .bind(room_id)
            .bind(participant_id)
            .fetch_optional(&mut *self.tx)
            .await
    }

    /// Joined members, plus pending invites when `with_invites`.
    pub async fn count_members(&mut self, room_id: &str, with_invites: bool) -> Result<i64, sqlx::Error> {
        let sql = if with_invites {
            "SELECT COUNT(*) FROM memberships WHERE room_id = $1 AND membership IN ('join', 'invite')"
        } else {
            "SELECT COUNT(*) FROM memberships WHERE room_id = $1 AND membership = 'join'"
        };
        sqlx::query_scalar(sql).bind(room_id).fetch_one(&mut *self.tx).await
    }

    /// Joined members at `level` or above.
    pub async fn count_joined_at_least(&mut self, room_id: &str, level: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships WHERE room_id = $1 AND membership = 'join' AND power_level >= $2",
        )
        .bind(room_id)
        .bind(level)
        .fetch_one(&mut *self.tx)
        .await
    }

    pub async fn alias_taken(&mut self, alias: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE room_alias = $1")
            .bind(alias)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(n > 0)
    }

    pub async fn tenant(&mut self, id: &str) -> Result<Option<Tenant>, sqlx::Error> {
        sqlx::query_as(TENANT_SQL).bind(id).fetch_optional(&mut *self.tx).await
    }

    /// The open DM between a pair, if any.
    pub async fn open_dm(&mut self, dm_key: &str) -> Result<Option<Room>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM rooms WHERE dm_key = $1 AND state = 'open' ORDER BY created_at LIMIT 1")
            .bind(dm_key)
            .fetch_optional(&mut *self.tx)
            .await
    }

    pub async fn insert_room(&mut self, r: &Room) -> Result<(), sqlx::Error> {
        if r.federated {
            self.fed_in_use.store(true, std::sync::atomic::Ordering::Release);
        }
        sqlx::query(
            "INSERT INTO rooms (id, tenant_id, room_alias, room_type, name, topic, workspace_id, creator_id, created_at, state, federated, dm_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&r.id)
        .bind(&r.tenant_id)
        .bind(&r.room_alias)
        .bind(r.room_type)
        .bind(&r.name)
        .bind(&r.topic)
        .bind(&r.workspace_id)
        .bind(&r.creator_id)
        .bind(r.created_at)
        .bind(r.state)
        .bind(r.federated)
        .bind(&r.dm_key)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Sets a participant's membership, keeping their personal settings (mode, mute, marker).
    /// `joined_at` is set when the membership becomes `join` and kept while it stays so. A
    /// `power_level` of `None` keeps the stored level (0 for a new row): rooms whose
    /// power-levels event predates stored wire forms.
    pub async fn set_membership(
        &mut self,
        room_id: &str,
        participant_id: &str,
        membership: Membership,
        power_level: Option<i64>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let joined_at = (membership == Membership::Join).then_some(now);
        sqlx::query(
            "INSERT INTO memberships (room_id, participant_id, membership, power_level, joined_at)
             VALUES ($1, $2, $3, COALESCE($4, 0), $5)
             ON CONFLICT (room_id, participant_id) DO UPDATE SET
               membership = excluded.membership,
               power_level = COALESCE($4, memberships.power_level),
               joined_at = CASE WHEN memberships.membership = 'join' AND excluded.membership = 'join'
                                THEN memberships.joined_at ELSE excluded.joined_at END",
        )
        .bind(room_id)
        .bind(participant_id)
        .bind(membership)
        .bind(power_level)
        .bind(joined_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// `fqid → level` for every member above level 0: the `users` map of a room whose current
    /// power-levels event has no stored wire form (stored before migration 4).
    pub async fn power_users(&mut self, room_id: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT p.fqid, m.power_level FROM memberships m JOIN participants p ON p.id = m.participant_id
             WHERE m.room_id = $1 AND m.power_level > 0 ORDER BY p.fqid",
        )
        .bind(room_id)
        .fetch_all(&mut *self.tx)
        .await
    }

    pub async fn set_room_name(&mut self, room_id: &str, name: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE rooms SET name = $2 WHERE id = $1").bind(room_id).bind(name).execute(&mut *self.tx).await?;
        Ok(())
    }

    pub async fn set_room_topic(&mut self, room_id: &str, topic: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE rooms SET topic = $2 WHERE id = $1")
            .bind(room_id)
            .bind(topic)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_room_state(&mut self, room_id: &str, state: RoomState) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE rooms SET state = $2 WHERE id = $1")
            .bind(room_id)
            .bind(state)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_room_workspace(&mut self, room_id: &str, workspace_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE rooms SET workspace_id = $2 WHERE id = $1")
            .bind(room_id)
            .bind(workspace_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
