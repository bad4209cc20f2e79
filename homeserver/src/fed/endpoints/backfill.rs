//! `GET rooms/{room_id}/backfill?v={event_id}&v=…&limit={n}` → `{pdus}`: up to `n` (≤ 1000)
//! accepted events of the room reached by walking `prev_events` back from the given ones.

use crate::api::extract::Path;
use axum::Json;
use axum::extract::{RawQuery, State};
use federation::wire::MAX_BACKFILL;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::inbound::room_readable_by;
use crate::fed::request::SignedRequest;

/// At most this many starting events.
const MAX_FROM: usize = 20;

pub async fn handle(
    State(st): State<AppState>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let mut from = Vec::new();
    let mut limit = 100usize;
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()).take(64) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| ApiError::bad_request("a query value is not percent-encoded UTF-8"))?;
        match k {
            "v" => from.push(v),
            "limit" => limit = v.parse().map_err(|_| ApiError::bad_request("limit is not a number"))?,
            _ => {}
        }
    }
    if from.is_empty() || from.len() > MAX_FROM {
        return Err(ApiError::bad_request(format!("backfill needs 1 to {MAX_FROM} v= events")));
    }
    room_readable_by(&st, &room_id, &req.origin).await?;
    let pdus = st.store.backfill_events(&room_id, &from, limit.clamp(1, MAX_BACKFILL)).await?;
    Ok(Json(json!({"data": {"pdus": pdus}})))
}

/// Decodes `%XX` escapes (and `+` as a space, as forms do).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(super::percent_decode("evt-a%2Fb").as_deref(), Some("evt-a/b"));
        assert_eq!(super::percent_decode("%zz"), None);
        assert_eq!(super::percent_decode("%4"), None);
    }
}
