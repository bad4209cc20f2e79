//! Federation's SQL: peers' key documents, delivery state per destination, received
//! transactions.

use serde_json::Value;

use super::Store;

type StoreResult<T> = Result<T, sqlx::Error>;

impl Store {
    /// Every stored peer key document: `(server_name, document)`.
    pub async fn fed_server_keys(&self) -> StoreResult<Vec<(String, Value)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT server_name, document FROM fed_server_keys").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().filter_map(|(s, d)| serde_json::from_str(&d).ok().map(|d| (s, d))).collect())
    }

    /// Keeps a peer's key document (the newest one wins).
    pub async fn save_fed_server_keys(
        &self,
        server_name: &str,
        document: &Value,
        valid_until_ts: u64,
    ) -> StoreResult<()> {
        let doc = document.to_string();
        sqlx::query(
            "INSERT INTO fed_server_keys (server_name, document, valid_until_ts, fetched_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (server_name) DO UPDATE SET document = excluded.document,
                 valid_until_ts = excluded.valid_until_ts, fetched_at = excluded.fetched_at
             WHERE excluded.valid_until_ts >= fed_server_keys.valid_until_ts",
        )
        .bind(server_name)
        .bind(doc)
        .bind(valid_until_ts as i64)
        .bind(federation::now_ms() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
