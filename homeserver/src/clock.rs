//! Wall-clock helpers: Unix seconds for storage and `origin_ts`, ISO-8601 UTC for `created_at`.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `2026-05-17T11:00:00Z`
pub fn iso8601(unix_secs: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::iso8601(1778939467), "2026-05-16T13:51:07Z");
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00Z");
    }
}
