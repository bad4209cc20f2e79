//! `GET /v1/admin/federation/peers` (server admin only): every peer this server sends to or
//! hears from, with its delivery state: `{server_name, last_seen, last_success, last_error,
//! last_error_at, queue_depth, backoff_until, failures}`, timestamps ISO-8601 UTC or null.

use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::extract::Caller;
use super::views::data;
use crate::error::{ApiError, ApiResult};
use crate::storage::PeerStatus;

pub async fn peers(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Value>> {
    if !caller.participant.is_admin {
        return Err(ApiError::InsufficientPermission("only a server admin may list peers".into()));
    }
    let peers = st.store.fed_peer_statuses(&st.config.server_name, st.store.committed_position()).await?;
    let now = federation::now_ms() as i64;
    Ok(data(Value::Array(peers.iter().map(|p| peer_view(p, now)).collect())))
}

fn iso_ms(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(crate::clock::iso8601(ms.div_euclid(1000))))
}

/// One peer as the list shows it; a back-off already over shows as null.
fn peer_view(p: &PeerStatus, now_ms: i64) -> Value {
    let r = &p.row;
    json!({
        "server_name": r.server_name,
        "last_seen": iso_ms(r.last_seen_at),
        "last_success": iso_ms(r.last_success_at),
        "last_error": r.last_error,
        "last_error_at": iso_ms(r.last_error_at),
        "queue_depth": p.queue_depth,
        "backoff_until": iso_ms(r.retry_at.filter(|t| *t > now_ms)),
        "failures": r.failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DestinationRow;

    #[test]
    fn a_peer_reads_as_the_contract_says() {
        let row = DestinationRow {
            server_name: "beta.test".into(),
            delivered_pos: 7,
            failures: 3,
            retry_at: Some(1_778_939_467_000),
            last_error: Some("beta.test is unreachable: refused".into()),
            last_error_at: Some(1_778_939_460_500),
            last_success_at: None,
            last_seen_at: Some(0),
        };
        let v = peer_view(&PeerStatus { row: row.clone(), queue_depth: 12 }, 1_778_939_460_000);
        assert_eq!(
            v,
            json!({"server_name": "beta.test", "last_seen": "1970-01-01T00:00:00Z", "last_success": null,
                   "last_error": "beta.test is unreachable: refused", "last_error_at": "2026-05-16T13:51:00Z",
                   "queue_depth": 12, "backoff_until": "2026-05-16T13:51:07Z", "failures": 3})
        );
        let over = peer_view(&PeerStatus { row, queue_depth: 0 }, 1_778_939_468_000);
        assert_eq!(over["backoff_until"], Value::Null);
    }
}
