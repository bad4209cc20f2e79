//! Signed events and the server's keys: the well-known document, event wire forms, redaction,
//! key file permissions and rotation.

use serde_json::{Value, json};

use crate::harness::{Server, User};

/// Checks `pdu`'s signature by `server` with the key the well-known document `doc` publishes.
pub fn verify_with_doc(doc: &Value, pdu: &Value, server: &str) {
    let key_id = pdu["signatures"][server].as_object().unwrap().keys().next().unwrap().clone();
    let key = doc["verify_keys"][&key_id]["key"].as_str().or_else(|| doc["old_verify_keys"][&key_id]["key"].as_str());
    let key = crypto::PublicKey::from_base64(key.expect("signing key is published")).unwrap();
    crypto::verify_event(pdu, server, &key_id, &key).expect("event signature verifies");
}

async fn fetch(s: &Server, u: &User, room: &str, id: &str) -> (Value, Value) {
    let r = s.get(&format!("/v1/rooms/{room}/events/{id}"), Some(&u.token)).await;
    let d = r.ok();
    (d["event"].clone(), d["pdu"].clone())
}

#[tokio::test]
async fn well_known_document_verifies_against_its_own_key() {
    let s = Server::start().await;
    let doc = s.get("/.well-known/scaiwave/server", None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.body;
    assert_eq!(doc["server_name"], "localhost");
    assert_eq!(doc["protocol_versions"], json!(["v1"]));
    // The server-to-server API's prefix (contract 8.1).
    assert_eq!(doc["endpoints"], json!({"federation": "/_scaiwave/federation/v1"}));
    assert!(doc["valid_until_ts"].as_i64().unwrap() > 0);
    let (key_id, key) = doc["verify_keys"].as_object().unwrap().iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"));
    assert_eq!(key["key"], doc["public_key"]);
    let pk = crypto::PublicKey::from_base64(doc["public_key"].as_str().unwrap()).unwrap();
    crypto::verify_json(&doc, "localhost", key_id, &pk).expect("well-known signature verifies");
    let mut tampered = doc.clone();
    tampered["server_name"] = json!("evil.test");
    assert!(crypto::verify_json(&tampered, "localhost", key_id, &pk).is_err());
}

#[tokio::test]
async fn every_event_is_stored_signed_with_its_dag_fields() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let doc = s.get("/.well-known/scaiwave/server", None).await.body;
    let m1 = s.post(&format!("/v1/rooms/{room}/send"), Some(&b.token), json!({"content": {"body": "one"}})).await;
    let m2 = s.post(&format!("/v1/rooms/{room}/send"), Some(&a.token), json!({"content": {"body": "two"}})).await;
    let id1 = m1.ok()["id"].as_str().unwrap().to_string();
    let id2 = m2.ok()["id"].as_str().unwrap().to_string();

    let (event, pdu1) = fetch(&s, &b, &room, &id1).await;
    assert_eq!(event["id"], id1.as_str());
    for field in [
        "event_uuid",
        "room_id",
        "sender",
        "origin",
        "origin_ts",
        "event_type",
        "content",
        "prev_events",
        "auth_events",
        "depth",
        "hashes",
        "signatures",
    ] {
        assert!(pdu1.get(field).is_some(), "wire form lacks {field}: {pdu1}");
    }
    assert_eq!(pdu1["sender"], b.fqid.as_str());
    assert_eq!(pdu1["origin"], "localhost");
    assert_eq!(pdu1["room_id"], room.as_str());
    assert_eq!(pdu1["content"], json!({"body": "one"}));
    verify_with_doc(&doc, &pdu1, "localhost");
    assert!(crypto::check_content_hash(&pdu1));
    assert_eq!(crypto::event_id(&pdu1).unwrap(), id1, "the id is the reference hash");
    // Auth events, as the room's rules pick them for a message: create, power levels and the
    // sender's membership (the room has no lifecycle or server ACL event; the join rule is
    // read only for joins and invites).
    assert_eq!(pdu1["auth_events"].as_array().unwrap().len(), 3);

    // The next event builds on this one.
    let (_, pdu2) = fetch(&s, &a, &room, &id2).await;
    assert_eq!(pdu2["prev_events"], json!([id1]));
    assert_eq!(pdu2["depth"].as_i64().unwrap(), pdu1["depth"].as_i64().unwrap() + 1);
    verify_with_doc(&doc, &pdu2, "localhost");

    // Redaction keeps the id and a verifiable, redacted wire form.
    s.post(&format!("/v1/rooms/{room}/events/{id1}/redact"), Some(&b.token), json!({})).await.expect(200, "");
    let (event, redacted) = fetch(&s, &a, &room, &id1).await;
    assert_eq!(event["content"], json!({}));
    assert_eq!(redacted["content"], json!({}));
    assert_eq!(crypto::event_id(&redacted).unwrap(), id1);
    verify_with_doc(&doc, &redacted, "localhost");

    s.get(&format!("/v1/rooms/{room}/events/evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), Some(&a.token))
        .await
        .expect(404, "SW_EVENT_NOT_FOUND");
    let c = s.register("carol").await;
    s.get(&format!("/v1/rooms/{room}/events/{id2}"), Some(&c.token)).await.expect(404, "SW_ROOM_NOT_FOUND");
}

#[tokio::test]
async fn the_key_is_private_and_rotation_keeps_history_verifiable() {
    let mut s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Team").await;
    let m = s.post(&format!("/v1/rooms/{room}/send"), Some(&a.token), json!({"content": {"body": "old key"}})).await;
    let old_id = m.ok()["id"].as_str().unwrap().to_string();
    let before = s.get("/.well-known/scaiwave/server", None).await.body;
    let old_key_id = before["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();

    let key_file = s.data_dir().join("keys").join("signing_keys.json");
    #[cfg(unix)]
    {
        // A data dir the server creates itself is private too.
        use std::os::unix::fs::PermissionsExt;
        let fresh = s.data_dir().join("fresh");
        let out = std::process::Command::new(crate::harness::BIN)
            .args(["admin", "create-tenant", "probe", "--data-dir"])
            .arg(&fresh)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    s.stop().await;
    let (ok, out) = s.cli(&["admin", "federation", "key", "rotate"]);
    assert!(ok, "{out}");
    s.restart().await;
    let after = s.get("/.well-known/scaiwave/server", None).await.body;
    let new_key_id = after["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();
    assert_ne!(new_key_id, old_key_id);
    assert_eq!(after["old_verify_keys"][&old_key_id]["key"], before["verify_keys"][&old_key_id]["key"]);
    assert!(after["old_verify_keys"][&old_key_id]["expired_ts"].as_i64().unwrap() > 0);
    // History signed by the old key verifies with the published old key; new events use the new one.
    let (_, old_pdu) = fetch(&s, &a, &room, &old_id).await;
    verify_with_doc(&after, &old_pdu, "localhost");
    let m = s.post(&format!("/v1/rooms/{room}/send"), Some(&a.token), json!({"content": {"body": "new key"}})).await;
    let (_, new_pdu) = fetch(&s, &a, &room, m.ok()["id"].as_str().unwrap()).await;
    assert!(new_pdu["signatures"]["localhost"].get(&new_key_id).is_some());
    verify_with_doc(&after, &new_pdu, "localhost");

    // A key readable by others stops the server from starting.
    s.stop().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, out) = s.cli(&["serve", "--listen", "127.0.0.1:0"]);
        assert!(!ok);
        assert!(out.contains("readable by others"), "{out}");
    }
}
