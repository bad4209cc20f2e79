//! SQL for tenants, participants, sessions, tokens and workspaces.

use super::*;

const PARTICIPANT_COLS: &str = "id, tenant_id, local_id, server_name, fqid, display_name, is_admin, created_at";

impl Store {
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, sqlx::Error> {
        sqlx::query_as(super::rooms::TENANT_SQL).bind(id).fetch_optional(&self.pool).await
    }

    /// Inserts the tenant unless one with that id exists; answers whether it was created.
    pub async fn create_tenant(&self, t: &Tenant) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "INSERT INTO tenants (id, name, max_participants, send_rate_per_s, send_burst, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.max_participants)
        .bind(t.send_rate_per_s)
        .bind(t.send_burst)
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn update_tenant_limits(&self, t: &Tenant) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE tenants SET name = $2, max_participants = $3, send_rate_per_s = $4, send_burst = $5
             WHERE id = $1",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.max_participants)
        .bind(t.send_rate_per_s)
        .bind(t.send_burst)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The tenant's registration token hash: `None` when there is no such tenant,
    /// `Some(None)` when it has no token.
    pub async fn tenant_registration_token_hash(&self, id: &str) -> Result<Option<Option<String>>, sqlx::Error> {
        sqlx::query_scalar("SELECT registration_token_hash FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Replaces the tenant's registration token (its hash); answers whether the tenant exists.
    pub async fn set_tenant_registration_token_hash(&self, id: &str, hash: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("UPDATE tenants SET registration_token_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn participant(&self, id: &str) -> Result<Option<Participant>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {PARTICIPANT_COLS} FROM participants WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn participant_by_fqid(&self, fqid: &str) -> Result<Option<Participant>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {PARTICIPANT_COLS} FROM participants WHERE fqid = $1")))
            .bind(fqid)
            .fetch_optional(&self.pool)
            .await
    }

    /// The participant and its password hash, for a password login.
    pub async fn credentials(&self, fqid: &str) -> Result<Option<(Participant, Option<String>)>, sqlx::Error> {
        let Some(p) = self.participant_by_fqid(fqid).await? else { return Ok(None) };
        let hash: Option<String> = sqlx::query_scalar("SELECT password_hash FROM participants WHERE id = $1")
            .bind(&p.id)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some((p, hash)))
    }

    /// Creates a participant and its personal workspace together. Answers false when the fqid
    /// is taken.
    pub async fn create_participant(
        &self,
        p: &Participant,
        password_hash: Option<&str>,
        workspace: &Workspace,
    ) -> Result<bool, sqlx::Error> {
        let (_turn, mut tx) = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO participants (id, tenant_id, local_id, server_name, fqid, display_name, password_hash, is_admin, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (fqid) DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.local_id)
        .bind(&p.server_name)
        .bind(&p.fqid)
        .bind(&p.display_name)
        .bind(password_hash)
        .bind(p.is_admin)
        .bind(p.created_at)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        insert_workspace(&mut tx, workspace).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn set_admin(&self, participant_id: &str, is_admin: bool) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE participants SET is_admin = $2 WHERE id = $1")
            .bind(participant_id)
            .bind(is_admin)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_password_hash(&self, participant_id: &str, hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE participants SET password_hash = $2 WHERE id = $1")
            .bind(participant_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn create_session(
        &self,
        session_id: &str,
        participant_id: &str,
        now: i64,
        access: (&str, i64),
        refresh: (&str, i64),
    ) -> Result<(), sqlx::Error> {
        let (_turn, mut tx) = self.begin_write().await?;
        sqlx::query("INSERT INTO sessions (id, participant_id, created_at) VALUES ($1, $2, $3)")
            .bind(session_id)
            .bind(participant_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_token(&mut tx, session_id, "access", access).await?;
        insert_token(&mut tx, session_id, "refresh", refresh).await?;
        tx.commit().await
    }

    /// Resolves an access token hash to its owner, or `None` when unknown or revoked.
    pub async fn access_token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>, sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            participant: Participant,
            session_id: String,
            expires_at: i64,
        }
        let row: Option<Row> = sqlx::query_as(
            "SELECT p.id, p.tenant_id, p.local_id, p.server_name, p.fqid, p.display_name, p.is_admin, p.created_at,
                    s.id AS session_id, t.expires_at
             FROM tokens t JOIN sessions s ON s.id = t.session_id JOIN participants p ON p.id = s.participant_id
             WHERE t.token_hash = $1 AND t.kind = 'access' AND s.revoked = FALSE",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TokenOwner { participant: r.participant, session_id: r.session_id, expires_at: r.expires_at }))
    }

    /// Spends a refresh token and, when it is valid, replaces the session's tokens with the new
    /// pair in the same transaction.
    pub async fn rotate_refresh_token(
        &self,
        refresh_hash: &str,
        now: i64,
        access: (&str, i64),
        refresh: (&str, i64),
    ) -> Result<RefreshOutcome, sqlx::Error> {
        let (_turn, mut tx) = self.begin_write().await?;
        let row: Option<(String, i64, bool, bool, String)> = sqlx::query_as(
            "SELECT s.id, t.expires_at, t.used, s.revoked, s.participant_id FROM tokens t
             JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1 AND t.kind = 'refresh'",
        )
        .bind(refresh_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((session_id, expires_at, used, revoked, participant_id)) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        if revoked || expires_at <= now {
            return Ok(RefreshOutcome::Invalid);
        }
        if used {
            sqlx::query("UPDATE sessions SET revoked = TRUE WHERE id = $1").bind(&session_id).execute(&mut *tx).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused(session_id));
        }
        sqlx::query("UPDATE tokens SET used = TRUE WHERE token_hash = $1").bind(refresh_hash).execute(&mut *tx).await?;
        // The session's previous access token dies with the rotation.
        sqlx::query("DELETE FROM tokens WHERE session_id = $1 AND kind = 'access'")
            .bind(&session_id)
            .execute(&mut *tx)
            .await?;
        insert_token(&mut tx, &session_id, "access", access).await?;
        insert_token(&mut tx, &session_id, "refresh", refresh).await?;
        let participant: Participant =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {PARTICIPANT_COLS} FROM participants WHERE id = $1")))
                .bind(&participant_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated(participant, session_id))
    }

    pub async fn revoke_session(&self, session_id: &str) -> Result<(), sqlx::Error> {
        let (_turn, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE sessions SET revoked = TRUE WHERE id = $1").bind(session_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM tokens WHERE session_id = $1").bind(session_id).execute(&mut *tx).await?;
        tx.commit().await
    }

    pub async fn workspaces_of(&self, owner_id: &str) -> Result<Vec<Workspace>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM workspaces WHERE owner_id = $1 ORDER BY personal DESC, created_at, id")
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn workspace(&self, id: &str) -> Result<Option<Workspace>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM workspaces WHERE id = $1").bind(id).fetch_optional(&self.pool).await
    }

    pub async fn personal_workspace(&self, owner_id: &str) -> Result<Option<Workspace>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM workspaces WHERE owner_id = $1 AND personal = TRUE ORDER BY created_at LIMIT 1")
            .bind(owner_id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn create_workspace(&self, w: &Workspace) -> Result<(), sqlx::Error> {
        let (_turn, mut tx) = self.begin_write().await?;
        insert_workspace(&mut tx, w).await?;
        tx.commit().await
    }
}

async fn insert_workspace(tx: &mut Transaction<'static, Sqlite>, w: &Workspace) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workspaces (id, tenant_id, owner_id, name, personal, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&w.id)
    .bind(&w.tenant_id)
    .bind(&w.owner_id)
    .bind(&w.name)
    .bind(w.personal)
    .bind(w.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_token(
    tx: &mut Transaction<'static, Sqlite>,
    session_id: &str,
    kind: &str,
    (hash, expires_at): (&str, i64),
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO tokens (token_hash, session_id, kind, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(session_id)
        .bind(kind)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
