//! Messages and reactions end to end: send, paginate, edit, redact, react, limits.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, User, eventually};

async fn send(s: &Server, u: &User, room: &str, body: &str) -> Value {
    s.send_text(u, room, body).await
}

async fn page(s: &Server, u: &User, room: &str, query: &str) -> (Vec<Value>, Value) {
    let r = s.get(&format!("/v1/rooms/{room}/messages?{query}"), Some(&u.token)).await;
    r.expect(200, "");
    (r.data().as_array().unwrap().clone(), r.body["meta"].clone())
}

fn bodies(list: &[Value]) -> Vec<String> {
    list.iter().map(|m| m["content"]["body"].as_str().unwrap_or("").to_string()).collect()
}

#[tokio::test]
async fn send_answers_the_documented_event() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Team").await;
    let m = send(&s, &a, &room, "Hello").await;
    assert!(m["id"].as_str().unwrap().starts_with("evt-"));
    assert_eq!(m["room_id"], room.as_str());
    assert_eq!(m["sender_id"], a.id.as_str());
    assert_eq!(m["sender_fqid"], a.fqid.as_str());
    assert_eq!(m["event_type"], "swp.room.message");
    assert_eq!(m["content"], json!({"msgtype": "swp.text", "body": "Hello"}));
    assert!(m["stream_position"].as_i64().unwrap() > 0);
    assert!(m["origin_ts"].as_i64().unwrap() > 1_700_000_000);
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["edited_at"], Value::Null);
    assert_eq!(m["redacted_at"], Value::Null);
    assert_eq!(m["reactions"], json!([]));
}

#[tokio::test]
async fn pagination_covers_every_message_once_in_both_directions() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Team").await;
    let n = 57;
    for i in 0..n {
        send(&s, &a, &room, &format!("m{i}")).await;
    }
    // Backwards from the newest, in pages of 10.
    let mut back = Vec::new();
    let mut query = "limit=10".to_string();
    loop {
        let (items, meta) = page(&s, &a, &room, &query).await;
        back.extend(items);
        if meta["has_more"] == false {
            break;
        }
        query = format!("limit=10&from={}", meta["next_cursor"].as_str().unwrap());
    }
    let expected_back: Vec<String> = (0..n).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&back), expected_back);

    // Forwards from the start, in pages of 7.
    let mut fwd = Vec::new();
    let mut query = "limit=7&direction=forward&from=0".to_string();
    loop {
        let (items, meta) = page(&s, &a, &room, &query).await;
        fwd.extend(items);
        if meta["has_more"] == false {
            break;
        }
        query = format!("limit=7&direction=forward&from={}", meta["next_cursor"].as_str().unwrap());
    }
    let expected_fwd: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&fwd), expected_fwd);
    let positions: Vec<i64> = fwd.iter().map(|m| m["stream_position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(positions.iter().collect::<HashSet<_>>().len(), n);

    // Defaults: 50, newest first.
    let (items, meta) = page(&s, &a, &room, "").await;
    assert_eq!(items.len(), 50);
    assert_eq!(items[0]["content"]["body"], format!("m{}", n - 1));
    assert_eq!(meta["has_more"], true);
    assert!(meta["next_cursor"].is_string());
    // A limit over the maximum is capped, not refused.
    let (items, _) = page(&s, &a, &room, "limit=100000").await;
    assert_eq!(items.len(), n.min(200));
    for bad in ["limit=0", "limit=-3", "limit=x", "from=1.5", "from=abc", "direction=sideways"] {
        s.get(&format!("/v1/rooms/{room}/messages?{bad}"), Some(&a.token)).await.expect(400, "SW_BAD_REQUEST");
    }
    // Only messages are listed, not membership or state events.
    assert!(fwd.iter().all(|m| m["event_type"] == "swp.room.message"));
}

#[tokio::test]
async fn event_uuid_makes_sends_idempotent() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Team").await;
    let other = s.create_room(&a, "group", "Other").await;
    let body = json!({"content": {"msgtype": "swp.text", "body": "once"}, "event_uuid": "client-123"});
    let first = s.post(&format!("/v1/rooms/{room}/send"), Some(&a.token), body.clone()).await;
    first.expect(201, "");
    let again = s.post(&format!("/v1/rooms/{room}/send"), Some(&a.token), body.clone()).await;
    again.expect(200, "");
    assert_eq!(again.data()["id"], first.data()["id"]);
    let (items, _) = page(&s, &a, &room, "").await;
    assert_eq!(items.len(), 1);
    s.post(&format!("/v1/rooms/{other}/send"), Some(&a.token), body).await.expect(409, "SW_CONFLICT");
}

#[tokio::test]
async fn send_checks_membership_content_and_power() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let bot = s.register("bot").await;
    let room = s.create_room(&a, "group", "Team").await;
    let path = format!("/v1/rooms/{room}/send");
    s.post(&path, Some(&b.token), json!({"content": {"body": "hi"}})).await.expect(404, "SW_ROOM_NOT_FOUND");
    s.add_member(&room, &a, &b).await;
    s.add_member(&room, &a, &bot).await;
    for bad in [
        json!({}),
        json!({"content": "text"}),
        json!({"content": {"msgtype": "swp.text"}}),
        json!({"content": {"msgtype": 5, "body": "x"}}),
        json!({"content": {"body": "x", "n": 1.5}}),
        json!({"content": {"body": "x", "n": 9007199254740992u64}}),
        json!({"content": {"body": "x", "mentions": "bob"}}),
        json!({"content": {"body": "x", "reply_to_event_id": "nope"}}),
        json!({"content": {"msgtype": "swp.media"}}),
        json!({"content": {"body": "x"}, "event_uuid": ""}),
    ] {
        s.post(&path, Some(&b.token), bad).await.expect(400, "SW_BAD_REQUEST");
    }
    s.post(
        &path,
        Some(&b.token),
        json!({"content": {"msgtype": "swp.media", "media_id": "med-01ABCDEFGHJKMNPQRSTVWXYZ00"}}),
    )
    .await
    .expect(400, "SW_BAD_REQUEST");
    let big = "x".repeat(70 * 1024);
    s.post(&path, Some(&b.token), json!({"content": {"body": big}})).await.expect(413, "SW_CONTENT_TOO_LARGE");
    s.post(
        &path,
        Some(&b.token),
        json!({"content": {"body": "re", "reply_to_event_id": "evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}),
    )
    .await
    .expect(404, "SW_EVENT_NOT_FOUND");
    // Mentions, replies and custom message types are kept as sent.
    let first = send(&s, &a, &room, "first").await;
    let reply = s
        .post(
            &path,
            Some(&b.token),
            json!({"content": {"msgtype": "acme.poll", "body": "re", "mentions": [a.fqid], "reply_to_event_id": first["id"]}}),
        )
        .await;
    assert_eq!(reply.ok()["content"]["reply_to_event_id"], first["id"]);

    // On behalf of another member: power 100 only; the real sender is recorded in the content.
    let on_behalf = json!({"content": {"body": "beep"}, "as_participant_id": bot.id});
    s.post(&path, Some(&b.token), on_behalf.clone()).await.expect(403, "SW_ROOM_FORBIDDEN");
    let r = s.post(&path, Some(&a.token), on_behalf).await;
    assert_eq!(r.ok()["sender_id"], bot.id.as_str());
    assert_eq!(r.ok()["content"]["sent_by"], a.fqid.as_str());
    // An fqid names the participant as well as an id does.
    let by_fqid =
        s.post(&path, Some(&a.token), json!({"content": {"body": "boop"}, "as_participant_id": bot.fqid})).await;
    assert_eq!(by_fqid.ok()["sender_id"], bot.id.as_str(), "{}", by_fqid.body);
    s.post(&path, Some(&a.token), json!({"content": {"body": "x"}, "as_participant_id": "@nobody:nowhere.test"}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");
    s.post(&path, Some(&a.token), json!({"content": {"body": "x"}, "as_participant_id": "stranger"}))
        .await
        .expect(404, "SW_PARTICIPANT_NOT_FOUND");

    s.post(&format!("/v1/rooms/{room}/archive"), Some(&a.token), json!({})).await.expect(200, "");
    s.post(&path, Some(&b.token), json!({"content": {"body": "x"}})).await.expect(409, "SW_ROOM_FROZEN");
    let (items, _) = page(&s, &b, &room, "").await;
    assert_eq!(items.len(), 4, "members still read a frozen room");
}

/// `as_participant_id` (contract section 5): never in a DM, never as an equal or higher, and who
/// really sent it is `content.sent_by` inside the signed event, which no client can write.
#[tokio::test]
async fn sends_on_behalf_are_signed_with_their_real_sender_and_never_in_dms() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let co = s.register("co-owner").await;
    let bot = s.register("bot").await;

    // Either side of a DM holds 100: neither may speak as the other.
    let dm = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await.ok()["id"].clone();
    let dm = dm.as_str().unwrap();
    let as_bob = json!({"content": {"msgtype": "swp.text", "body": "I owe alice 100"}, "as_participant_id": b.id});
    s.post(&format!("/v1/rooms/{dm}/send"), Some(&a.token), as_bob).await.expect(400, "SW_ROOM_TYPE_INVARIANT");
    let (items, _) = page(&s, &b, dm, "").await;
    assert!(items.is_empty(), "nothing was sent as bob: {items:?}");

    let room = s.create_room(&a, "group", "Team").await;
    for u in [&b, &co, &bot] {
        s.add_member(&room, &a, u).await;
    }
    s.set_power(&room, &a, &co, 100).await;
    let path = format!("/v1/rooms/{room}/send");
    let as_ = |who: &User| json!({"content": {"msgtype": "swp.text", "body": "beep"}, "as_participant_id": who.id});
    // Never as someone at or above the caller's level, oneself included.
    s.post(&path, Some(&a.token), as_(&co)).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.post(&path, Some(&co.token), as_(&a)).await.expect(403, "SW_ROOM_FORBIDDEN");
    s.post(&path, Some(&a.token), as_(&a)).await.expect(403, "SW_ROOM_FORBIDDEN");

    // As the bot: the bot is the sender, alice's fqid is signed into the content.
    let sent = s.post(&path, Some(&a.token), as_(&bot)).await;
    sent.expect(201, "");
    let m = sent.data().clone();
    assert_eq!(m["sender_id"], bot.id.as_str());
    assert_eq!(m["sender_fqid"], bot.fqid.as_str());
    assert_eq!(m["content"], json!({"msgtype": "swp.text", "body": "beep", "sent_by": a.fqid}));
    assert!(m.get("unsigned").is_none(), "sent_by is in the signed content, not unsigned: {m}");
    let id = m["id"].as_str().unwrap().to_string();
    let got = s.get(&format!("/v1/rooms/{room}/events/{id}"), Some(&b.token)).await;
    let pdu = got.ok()["pdu"].clone();
    assert_eq!(pdu["sender"], bot.fqid.as_str());
    assert_eq!(pdu["content"]["sent_by"], a.fqid.as_str());
    let doc = s.get("/.well-known/scaiwave/server", None).await.body.clone();
    crate::signing::verify_with_doc(&doc, &pdu, doc["server_name"].as_str().unwrap());
    assert_eq!(crypto::event_id(&pdu).unwrap(), id);
    // The message list and sync show it the same way.
    let (items, _) = page(&s, &b, &room, "limit=1").await;
    assert_eq!(items[0]["content"]["sent_by"], a.fqid.as_str());
    let sync = s.get("/v1/sync?since=0&limit=500", Some(&b.token)).await;
    let frame = sync.ok()["events"].as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).cloned();
    assert_eq!(frame.expect("the send is in sync")["content"]["sent_by"], a.fqid.as_str());

    // Nobody can write sent_by: not on a plain send, not on an on-behalf send, not in an edit.
    let forged = json!({"msgtype": "swp.text", "body": "from alice, honest", "sent_by": a.fqid});
    s.post(&path, Some(&b.token), json!({"content": forged})).await.expect(400, "SW_BAD_REQUEST");
    s.post(&path, Some(&a.token), json!({"content": forged, "as_participant_id": bot.id}))
        .await
        .expect(400, "SW_BAD_REQUEST");
    let own = send(&s, &b, &room, "mine").await;
    s.post(
        &format!("/v1/rooms/{room}/events/{}/edit", own["id"].as_str().unwrap()),
        Some(&b.token),
        json!({"content": forged}),
    )
    .await
    .expect(400, "SW_BAD_REQUEST");

    // A redaction wipes the body; who really sent it stays beside the sender.
    let r = s.post(&format!("/v1/rooms/{room}/events/{id}/redact"), Some(&a.token), json!({})).await;
    assert_eq!(r.ok()["content"], json!({"sent_by": a.fqid}));
    assert!(r.ok()["redacted_at"].is_string());
}

/// An edit's new content passes every check a send's content does: a reply must name an event
/// of the same room, and a media message an upload that exists.
#[tokio::test]
async fn edits_run_the_checks_of_sends() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Team").await;
    let elsewhere = s.create_room(&a, "group", "Elsewhere").await;
    let foreign = send(&s, &a, &elsewhere, "in another room").await;
    let here = send(&s, &a, &room, "earlier").await;
    let m = send(&s, &a, &room, "original").await;
    let edit = format!("/v1/rooms/{room}/events/{}/edit", m["id"].as_str().unwrap());
    let text = |extra: Value| {
        let mut c = json!({"msgtype": "swp.text", "body": "edited"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"content": c})
    };

    // The attacks: a reply into another room, a media id that names nothing.
    s.post(&edit, Some(&a.token), text(json!({"reply_to_event_id": foreign["id"]})))
        .await
        .expect(404, "SW_EVENT_NOT_FOUND");
    let missing_media =
        json!({"content": {"msgtype": "swp.media", "body": "x", "media_id": "med-01ABCDEFGHJKMNPQRSTVWXYZ00"}});
    s.post(&edit, Some(&a.token), missing_media).await.expect(400, "SW_BAD_REQUEST");
    // And the shape checks, as for sends.
    s.post(&edit, Some(&a.token), text(json!({"mentions": ["bob"]}))).await.expect(400, "SW_BAD_REQUEST");
    s.post(&edit, Some(&a.token), text(json!({"reply_to_event_id": "nope"}))).await.expect(400, "SW_BAD_REQUEST");
    let (items, _) = page(&s, &a, &room, "limit=1").await;
    assert_eq!(items[0]["content"]["body"], "original", "refused edits change nothing");
    assert_eq!(items[0]["edited_at"], Value::Null);

    // What a send accepts, an edit accepts.
    let ok = s.post(&edit, Some(&a.token), text(json!({"reply_to_event_id": here["id"], "mentions": [a.fqid]}))).await;
    assert_eq!(ok.ok()["content"]["reply_to_event_id"], here["id"]);
    let upload = s
        .raw(
            reqwest::Method::POST,
            "/v1/media/upload",
            Some(&a.token),
            Some(crate::harness::RawBody::Bytes(
                b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--b--\r\n"
                    .to_vec(),
                "multipart/form-data; boundary=b",
            )),
        )
        .await;
    let media_id = upload.ok()["media_id"].clone();
    let media = json!({"content": {"msgtype": "swp.media", "body": "a.txt", "media_id": media_id}});
    assert_eq!(s.post(&edit, Some(&a.token), media).await.ok()["content"]["media_id"], media_id);
}

#[tokio::test]
async fn edits_keep_the_original_and_expire() {
    let s = Server::start_with_env(&[("HOMESERVER_EDIT_WINDOW_SECS", "2")]).await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let m = send(&s, &a, &room, "Helo").await;
    let id = m["id"].as_str().unwrap();
    let edit = format!("/v1/rooms/{room}/events/{id}/edit");
    let e = s.post(&edit, Some(&a.token), json!({"content": {"msgtype": "swp.text", "body": "Hello"}})).await;
    let e = e.ok();
    assert_eq!(e["content"]["body"], "Hello");
    assert_eq!(e["original_content"]["body"], "Helo");
    assert!(e["edited_at"].is_string());
    let e2 = s.post(&edit, Some(&a.token), json!({"content": {"msgtype": "swp.text", "body": "Hello!"}})).await;
    assert_eq!(e2.ok()["original_content"]["body"], "Helo", "the first original is kept");
    let (items, _) = page(&s, &b, &room, "").await;
    assert_eq!(items.len(), 1, "edits are folded, not listed");
    assert_eq!(items[0]["content"]["body"], "Hello!");
    assert_eq!(items[0]["original_content"]["body"], "Helo");

    s.post(&edit, Some(&b.token), json!({"content": {"body": "mine now"}})).await.expect(403, "SW_EDIT_FORBIDDEN");
    s.post(&edit, Some(&a.token), json!({"content": 5})).await.expect(400, "SW_BAD_REQUEST");
    let missing = format!("/v1/rooms/{room}/events/evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/edit");
    s.post(&missing, Some(&a.token), json!({"content": {"body": "x"}})).await.expect(404, "SW_EVENT_NOT_FOUND");
    s.post(&format!("/v1/rooms/{room}/events/bad-id/edit"), Some(&a.token), json!({"content": {"body": "x"}}))
        .await
        .expect(400, "SW_BAD_REQUEST");
    // The window closes: poll until the server says so (bounded).
    eventually(Duration::from_secs(10), || async {
        let r = s.post(&edit, Some(&a.token), json!({"content": {"body": "late"}})).await;
        (r.status == 409).then_some(r)
    })
    .await
    .expect(409, "SW_EVENT_TOO_OLD_TO_EDIT");
}

#[tokio::test]
async fn redaction_wipes_the_body_for_good() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    let room = s.team_room(&a, &[&b, &c]).await;
    let mb = send(&s, &b, &room, "secret").await;
    let id = mb["id"].as_str().unwrap().to_string();
    let redact = format!("/v1/rooms/{room}/events/{id}/redact");
    // Edited first: the edit's body must go too.
    s.post(&format!("/v1/rooms/{room}/events/{id}/edit"), Some(&b.token), json!({"content": {"body": "secret 2"}}))
        .await
        .expect(200, "");
    s.post(&redact, Some(&c.token), json!({})).await.expect(403, "SW_REDACT_FORBIDDEN");
    let r = s.post(&redact, Some(&b.token), json!({"reason": "oops"})).await;
    let r = r.ok();
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["content"], json!({}));
    assert!(r["redacted_at"].is_string());
    assert!(r.get("original_content").is_none());
    s.post(&redact, Some(&b.token), json!({})).await.expect(200, "");
    s.post(&format!("/v1/rooms/{room}/events/{id}/edit"), Some(&b.token), json!({"content": {"body": "back"}}))
        .await
        .expect(409, "SW_CONFLICT");
    let (items, _) = page(&s, &a, &room, "").await;
    assert_eq!(items[0]["content"], json!({}));
    assert_eq!(items[0]["sender_id"], b.id.as_str(), "metadata stays");

    // A moderator may redact others' messages, but not the creator's.
    let mc = send(&s, &c, &room, "spam").await;
    s.set_power(&room, &a, &b, 50).await;
    let by_mod = s
        .post(&format!("/v1/rooms/{room}/events/{}/redact", mc["id"].as_str().unwrap()), Some(&b.token), json!({}))
        .await;
    assert!(by_mod.ok()["redacted_at"].is_string());
    let ma = send(&s, &a, &room, "boss").await;
    s.post(&format!("/v1/rooms/{room}/events/{}/redact", ma["id"].as_str().unwrap()), Some(&b.token), json!({}))
        .await
        .expect(403, "SW_REDACT_FORBIDDEN");
}

#[tokio::test]
async fn reactions_are_unique_per_sender_and_emoji() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let m = send(&s, &a, &room, "ship it").await;
    let path = format!("/v1/rooms/{room}/events/{}/reaction", m["id"].as_str().unwrap());
    s.post(&path, Some(&a.token), json!({"emoji": "🚀"})).await.expect(200, "");
    s.post(&path, Some(&a.token), json!({"emoji": "🚀"})).await.expect(200, "");
    s.post(&path, Some(&b.token), json!({"emoji": "🚀"})).await.expect(200, "");
    let r = s.post(&path, Some(&b.token), json!({"emoji": "👍"})).await;
    let reactions = r.ok()["reactions"].clone();
    assert_eq!(
        reactions,
        json!([{"emoji": "🚀", "count": 2, "reacted_by_me": true}, {"emoji": "👍", "count": 1, "reacted_by_me": true}])
    );
    let (items, _) = page(&s, &a, &room, "").await;
    assert_eq!(items.len(), 1, "reactions are folded, not listed");
    assert_eq!(
        items[0]["reactions"],
        json!([{"emoji": "🚀", "count": 2, "reacted_by_me": true}, {"emoji": "👍", "count": 1, "reacted_by_me": false}])
    );

    let d = s.raw(reqwest::Method::DELETE, &format!("{path}?emoji=%F0%9F%9A%80"), Some(&b.token), None).await;
    assert_eq!(
        d.ok()["reactions"],
        json!([{"emoji": "🚀", "count": 1, "reacted_by_me": false}, {"emoji": "👍", "count": 1, "reacted_by_me": true}])
    );
    let d = s
        .raw(
            reqwest::Method::DELETE,
            &path,
            Some(&b.token),
            Some(crate::harness::RawBody::Json(json!({"emoji": "👍"}))),
        )
        .await;
    assert_eq!(d.ok()["reactions"], json!([{"emoji": "🚀", "count": 1, "reacted_by_me": false}]));
    s.raw(reqwest::Method::DELETE, &path, Some(&b.token), Some(crate::harness::RawBody::Json(json!({"emoji": "👍"}))))
        .await
        .expect(200, "");
    s.post(&path, Some(&a.token), json!({})).await.expect(400, "SW_BAD_REQUEST");
    s.post(&path, Some(&a.token), json!({"emoji": ""})).await.expect(400, "SW_BAD_REQUEST");
    let missing = format!("/v1/rooms/{room}/events/evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/reaction");
    s.post(&missing, Some(&a.token), json!({"emoji": "x"})).await.expect(404, "SW_EVENT_NOT_FOUND");
}

#[tokio::test]
async fn sends_over_the_tenant_rate_get_429_with_retry_after() {
    let s = Server::start().await;
    s.create_tenant("slow", &["--send-rate-per-s", "1", "--send-burst", "3"]);
    let a = s.register_in("alice", Some("slow")).await;
    let room = s.create_room(&a, "group", "Team").await;
    let path = format!("/v1/rooms/{room}/send");
    let mut limited = None;
    for i in 0..10 {
        let r = s.post(&path, Some(&a.token), json!({"content": {"body": format!("{i}")}})).await;
        if r.status == 429 {
            limited = Some((i, r));
            break;
        }
    }
    let (i, r) = limited.expect("the burst runs out");
    assert!(i >= 3, "the burst of 3 is allowed");
    r.expect(429, "SW_RATE_LIMIT_EXCEEDED");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
}

#[tokio::test]
async fn read_markers_count_unread_messages() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(send(&s, &a, &room, &format!("m{i}")).await["id"].as_str().unwrap().to_string());
    }
    let state = s.get(&format!("/v1/rooms/{room}/state"), Some(&b.token)).await;
    assert_eq!(state.ok()["unread_count"], 5);
    assert_eq!(state.ok()["room"]["id"], room.as_str());
    assert_eq!(state.ok()["members"].as_array().unwrap().len(), 2);
    let read = s.put(&format!("/v1/rooms/{room}/read"), Some(&b.token), json!({"event_id": ids[2]})).await;
    assert_eq!(read.ok()["unread_count"], 2);
    assert_eq!(read.ok()["last_read_event_id"], ids[2].as_str());
    // Only forward.
    let back = s.put(&format!("/v1/rooms/{room}/read"), Some(&b.token), json!({"event_id": ids[0]})).await;
    assert_eq!(back.ok()["unread_count"], 2);
    assert_eq!(back.ok()["last_read_event_id"], ids[2].as_str());
    let state = s.get(&format!("/v1/rooms/{room}/state"), Some(&b.token)).await;
    assert_eq!(state.ok()["last_read_event_id"], ids[2].as_str());
    // One's own messages are never unread.
    let mine = s.get(&format!("/v1/rooms/{room}/state"), Some(&a.token)).await;
    assert_eq!(mine.ok()["unread_count"], 0);
}

#[tokio::test]
async fn concurrent_sends_commit_once_each_in_a_consistent_chain() {
    use std::sync::Arc;
    use tokio::task::JoinSet;

    // A log started over at 8 MiB (256 by default), so that this test's 30 MiB cross it.
    let s = Arc::new(Server::start_with_env(&[("HOMESERVER_WAL_RESTART_MIB", "8")]).await);
    s.create_tenant("fast", &["--send-rate-per-s", "100000", "--send-burst", "100000"]);
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        users.push(s.register_in(name, Some("fast")).await);
    }
    let owner = users[0].clone();
    let rooms = [s.create_room(&owner, "group", "One").await, s.create_room(&owner, "group", "Two").await];
    let frozen = s.create_room(&owner, "group", "Frozen").await;
    for u in &users[1..] {
        for room in rooms.iter().chain([&frozen]) {
            s.add_member(room, &owner, u).await;
        }
    }
    s.post(&format!("/v1/rooms/{frozen}/archive"), Some(&owner.token), json!({})).await.expect(200, "");

    // 200 sends into the two rooms, with sends into the frozen room mixed in.
    let mut tasks = JoinSet::new();
    for i in 0..220usize {
        let s = s.clone();
        let user = users[i % users.len()].clone();
        let room = if i % 11 == 10 { frozen.clone() } else { rooms[i % 2].clone() };
        tasks.spawn(async move {
            let body = json!({"content": {"msgtype": "swp.text", "body": format!("m{i}")}});
            let r = s.post(&format!("/v1/rooms/{room}/send"), Some(&user.token), body).await;
            (room, r)
        });
    }
    let mut sent: Vec<(String, String, i64)> = Vec::new();
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (room, r) = done.expect("send task");
        if room == frozen {
            r.expect(409, "SW_ROOM_FROZEN");
            refused += 1;
        } else {
            r.expect(201, "");
            let d = r.data();
            sent.push((room, d["id"].as_str().unwrap().to_string(), d["stream_position"].as_i64().unwrap()));
        }
    }
    assert_eq!((sent.len(), refused), (200, 20));
    let positions: HashSet<i64> = sent.iter().map(|(_, _, p)| *p).collect();
    assert_eq!(positions.len(), 200, "every send has its own stream position");

    for room in &rooms {
        let mut mine: Vec<(i64, String)> =
            sent.iter().filter(|(r, _, _)| r == room).map(|(_, id, p)| (*p, id.clone())).collect();
        mine.sort();
        assert_eq!(mine.len(), 100);
        // Pagination answers exactly these messages, once each, in stream order.
        let (list, meta) = page(&s, &owner, room, "direction=forward&limit=200").await;
        assert_eq!(meta["has_more"], false);
        let listed: Vec<String> = list.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
        let want: Vec<String> = mine.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(listed, want);
        // Each event's parent is the previous event of its room, one level up; each is signed
        // (batches sign on two threads) and its id is its reference hash.
        let doc = s.get("/.well-known/scaiwave/server", None).await.body.clone();
        let origin = doc["server_name"].as_str().unwrap().to_string();
        let mut prev: Option<(String, i64)> = None;
        for (_, id) in &mine {
            let r = s.get(&format!("/v1/rooms/{room}/events/{id}"), Some(&owner.token)).await;
            let pdu = r.ok()["pdu"].clone();
            crate::signing::verify_with_doc(&doc, &pdu, &origin);
            assert_eq!(&crypto::event_id(&pdu).unwrap(), id);
            let depth = pdu["depth"].as_i64().unwrap();
            let parents = pdu["prev_events"].as_array().unwrap();
            assert_eq!(parents.len(), 1, "one parent: {pdu}");
            if let Some((prev_id, prev_depth)) = &prev {
                assert_eq!(parents[0], prev_id.as_str());
                assert_eq!(depth, prev_depth + 1);
            }
            prev = Some((id.clone(), depth));
        }
    }
    // The room's chain continues from the batch's last event.
    let next = send(&s, &owner, &rooms[0], "after").await;
    let id = next["id"].as_str().unwrap();
    let pdu = s.get(&format!("/v1/rooms/{}/events/{id}", rooms[0]), Some(&owner.token)).await.ok()["pdu"].clone();
    let (list, _) = page(&s, &owner, &rooms[0], "limit=2").await;
    assert_eq!(pdu["prev_events"], json!([list[1]["id"]]));
}

/// A server whose write-ahead log is started over at `wal_restart_mib`, an owner whose tenant
/// does not limit sends, and a room.
async fn server_for_bursts(wal_restart_mib: &str) -> (std::sync::Arc<Server>, User, String) {
    let s = std::sync::Arc::new(Server::start_with_env(&[("HOMESERVER_WAL_RESTART_MIB", wal_restart_mib)]).await);
    s.create_tenant("fast", &["--send-rate-per-s", "100000", "--send-burst", "100000"]);
    let owner = s.register_in("owner", Some("fast")).await;
    let room = s.create_room(&owner, "group", "Busy").await;
    (s, owner, room)
}

/// `clients` concurrent senders of `per_client` messages of over 2 KB each: megabytes of log.
async fn burst(s: &std::sync::Arc<Server>, u: &User, room: &str, clients: usize, per_client: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (s, u, room) = (s.clone(), u.clone(), room.to_string());
        tasks.spawn(async move {
            for i in 0..per_client {
                s.send_text(&u, &room, &format!("client {c} message {i} {}", "x".repeat(2000))).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("sender");
    }
}

fn wal_size(s: &Server) -> u64 {
    std::fs::metadata(s.data_dir().join("homeserver.db-wal")).map(|m| m.len()).unwrap_or(0)
}

/// The write-ahead log is checkpointed beside the writers, and started over once long: under
/// sustained sends it must stay bounded instead of growing with every message (SQLite only
/// starts it over when a write begins with every frame copied, which never happens by itself
/// while writes keep coming).
#[tokio::test]
async fn sustained_sends_keep_the_write_ahead_log_bounded() {
    // A log started over at 8 MiB (256 by default), so that this test's 30 MiB cross it.
    let (s, owner, room) = server_for_bursts("8").await;
    burst(&s, &owner, &room, 16, 150).await;
    // 2,400 sends of over 2 KB each wrote well over 30 MiB of log frames in all.
    let wal = wal_size(&s);
    assert!(wal < 24 * 1024 * 1024, "the WAL grew to {wal} bytes");
    let (list, _) = page(&s, &owner, &room, "limit=1").await;
    assert_eq!(list.len(), 1);
}

/// Once writers are quiet, a long write-ahead log is emptied and its disk space given back.
#[tokio::test]
async fn a_long_write_ahead_log_is_emptied_once_writes_pause() {
    // No restart under load: only the quiet-time truncation can empty this log.
    let (s, owner, room) = server_for_bursts("1024").await;
    burst(&s, &owner, &room, 8, 60).await;
    // 480 sends of over 2 KB: well over the 4 MiB below which a quiet log is left alone.
    let before = wal_size(&s);
    assert!(before > 4 * 1024 * 1024, "the burst left a log of {before} bytes");
    eventually(Duration::from_secs(10), || async { (wal_size(&s) == 0).then_some(()) }).await;
    // The server writes on after that, into a log started from the beginning.
    let after = s.send_text(&owner, &room, "after the quiet").await;
    let (list, _) = page(&s, &owner, &room, "limit=1").await;
    assert_eq!(list[0]["id"], after["id"]);
}

/// A database written before migration 6 (events keyed with `AUTOINCREMENT`, extremities in a
/// rowid table) upgrades in place when the server starts: its messages read back unchanged, and
/// new sends continue the positions and the room's chain of events.
#[tokio::test]
async fn a_database_from_before_the_lean_write_migration_upgrades_in_place() {
    let mut s = Server::start().await;
    let alice = s.register("alice").await;
    let room = s.create_room(&alice, "group", "Old").await;
    for i in 0..3 {
        send(&s, &alice, &room, &format!("old {i}")).await;
    }
    let (before, _) = page(&s, &alice, &room, "limit=10").await;
    s.stop().await;

    // Put the tables back as migrations 1-5 left them, and forget that 6 and 8 ran (8 then
    // upgrades the result again, as it would a database of that age).
    let db = rusqlite::Connection::open(s.data_dir().join("homeserver.db")).expect("open the database");
    db.execute_batch(
        "BEGIN;
         CREATE TABLE events_old (
             stream_position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
             room_id TEXT NOT NULL REFERENCES rooms(id), event_type TEXT NOT NULL, state_key TEXT,
             sender_id TEXT NOT NULL REFERENCES participants(id), content TEXT NOT NULL,
             origin_ts BIGINT NOT NULL, event_uuid TEXT, unsigned_data TEXT, relates_to TEXT,
             original_content TEXT, edited_at BIGINT, redacted_at BIGINT, pdu TEXT,
             depth BIGINT NOT NULL DEFAULT 0);
         INSERT INTO events_old
             SELECT e.stream_position, e.event_id, e.room_id, e.event_type, e.state_key, p.id, e.content,
                    e.origin_ts, e.event_uuid, e.unsigned_data, e.relates_to, e.original_content, e.edited_at,
                    e.redacted_at, e.pdu, e.depth
             FROM events e JOIN participants p ON p.fqid = e.sender ORDER BY e.stream_position;
         DROP TABLE events;
         DROP TABLE event_edges; DROP TABLE event_auth_edges; DROP TABLE event_missing_prevs;
         DROP TABLE state_groups; DROP TABLE state_group_entries; DROP TABLE room_current;
         DROP TABLE graph_upgrade_pending;
         CREATE TABLE room_state_old (room_id TEXT NOT NULL REFERENCES rooms(id), event_type TEXT NOT NULL,
             state_key TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (room_id, event_type, state_key));
         INSERT INTO room_state_old SELECT * FROM room_state;
         DROP TABLE room_state;
         ALTER TABLE room_state_old RENAME TO room_state;
         ALTER TABLE events_old RENAME TO events;
         CREATE INDEX events_room_pos ON events(room_id, stream_position);
         CREATE INDEX events_room_type_pos ON events(room_id, event_type, stream_position);
         CREATE UNIQUE INDEX events_uuid_sender ON events(event_uuid, sender_id);
         CREATE INDEX events_relates_to ON events(relates_to) WHERE relates_to IS NOT NULL;
         CREATE TABLE room_extremities_old (room_id TEXT NOT NULL REFERENCES rooms(id),
             event_id TEXT NOT NULL, depth BIGINT NOT NULL, PRIMARY KEY (room_id, event_id));
         INSERT INTO room_extremities_old SELECT room_id, event_id, depth FROM room_extremities;
         DROP TABLE room_extremities;
         ALTER TABLE room_extremities_old RENAME TO room_extremities;
         DELETE FROM _sqlx_migrations WHERE version IN (6, 8);
         COMMIT;",
    )
    .expect("the old schema");
    let sequence: i64 =
        db.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).expect("sequence");
    assert!(sequence > 0, "the old table counts its positions in sqlite_sequence");
    drop(db);

    s.restart().await;
    let (after, _) = page(&s, &alice, &room, "limit=10").await;
    assert_eq!(after, before, "the upgrade changed what a client reads");
    let newest = &before[0];
    let next = send(&s, &alice, &room, "new").await;
    assert!(next["stream_position"].as_i64() > newest["stream_position"].as_i64());
    let pdu = s.get(&format!("/v1/rooms/{room}/events/{}", next["id"].as_str().unwrap()), Some(&alice.token)).await;
    assert_eq!(pdu.ok()["pdu"]["prev_events"], json!([newest["id"]]), "the chain continues from the old extremity");

    let db = rusqlite::Connection::open(s.data_dir().join("homeserver.db")).expect("open the database");
    let sql_of = |name: &str| -> String {
        db.query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [name], |r| r.get(0)).expect("table")
    };
    assert!(!sql_of("events").contains("AUTOINCREMENT"));
    assert!(sql_of("room_extremities").contains("WITHOUT ROWID"));
}
