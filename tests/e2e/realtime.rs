//! Sync long-poll, the WebSocket stream, typing and presence.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Server, User};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &Server, token: &str, since: Option<&str>) -> Ws {
    let base = s.base.replacen("http://", "ws://", 1);
    let url = match since {
        Some(p) => format!("{base}/v1/stream?token={token}&since={p}"),
        None => format!("{base}/v1/stream?token={token}"),
    };
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
    ws
}

/// A stream that has said hello.
async fn connect_ready(s: &Server, token: &str) -> Ws {
    let mut ws = connect(s, token, None).await;
    next_frame(&mut ws, |f| f["type"] == "hello").await;
    ws
}

/// The next JSON frame that satisfies `pred`, within 10 s.
async fn next_frame(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await.expect("stream open").expect("frame") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("json frame");
                    if pred(&v) {
                        return v;
                    }
                }
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("expected frame within 10 s")
}

/// Reads the stream until it closes (within 10 s), checking every text frame with `check`;
/// answers the close code.
async fn close_code(ws: &mut Ws, check: impl Fn(&Value)) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(c)))) => return Some(u16::from(c.code)),
                Some(Ok(Message::Text(t))) => check(&serde_json::from_str(&t).expect("json frame")),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the stream closes within 10 s")
}

async fn send(s: &Server, u: &User, room: &str, body: &str) -> Value {
    s.send_text(u, room, body).await
}

#[tokio::test]
async fn sync_returns_new_events_and_long_polls() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.create_room(&a, "group", "Team").await;
    let start = s.get("/v1/sync", Some(&b.token)).await;
    let since = start.ok()["next_cursor"].as_str().unwrap().to_string();
    assert_eq!(start.ok()["events"], json!([]));

    // Bob sees nothing of a room he is not in; then his invite.
    send(&s, &a, &room, "before bob").await;
    s.post(&format!("/v1/rooms/{room}/invite"), Some(&a.token), json!({"participant_id": b.id})).await.expect(200, "");
    let r = s.get(&format!("/v1/sync?since={since}"), Some(&b.token)).await;
    let events = r.ok()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "only the invite: {events:?}");
    assert_eq!(events[0]["type"], "swp.room.member");
    assert_eq!(events[0]["content"]["membership"], "invite");
    assert_eq!(events[0]["state_key"], b.fqid.as_str());
    let since = r.ok()["next_cursor"].as_str().unwrap().to_string();

    s.post(&format!("/v1/rooms/{room}/join"), Some(&b.token), json!({})).await.expect(200, "");
    // A long-poll returns as soon as a message arrives, long before its timeout.
    let waiter = {
        let url = format!("/v1/sync?since={since}&timeout=20000");
        let token = b.token.clone();
        let base = s.base.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r: Value = reqwest::Client::new()
                .get(format!("{base}{url}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (r, t.elapsed())
        })
    };
    let (first, _) = waiter.await.unwrap();
    // The join itself already wakes it; read on from there for the message.
    let since = first["data"]["next_cursor"].as_str().unwrap().to_string();
    assert!(first["data"]["events"].as_array().unwrap().iter().any(|e| e["content"]["membership"] == "join"));
    let waiter = {
        let url = format!("{}/v1/sync?since={since}&timeout=20000", s.base);
        let token = b.token.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r: Value =
                reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = send(&s, &a, &room, "wake up").await;
    let (r, took) = waiter.await.unwrap();
    assert!(took < Duration::from_secs(15), "returned early ({took:?})");
    let events = r["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], m["id"]);
    assert_eq!(events[0]["type"], "swp.room.message");
    assert_eq!(r["data"]["next_cursor"], m["stream_position"].to_string());

    // Nothing new: an empty answer once the timeout passes.
    let cursor = r["data"]["next_cursor"].as_str().unwrap();
    let empty = s.get(&format!("/v1/sync?since={cursor}&timeout=300"), Some(&b.token)).await;
    assert_eq!(empty.ok()["events"], json!([]));
    assert_eq!(empty.ok()["has_more"], false);

    // Limits and paging.
    for i in 0..5 {
        send(&s, &a, &room, &format!("p{i}")).await;
    }
    let paged = s.get(&format!("/v1/sync?since={cursor}&limit=2"), Some(&b.token)).await;
    assert_eq!(paged.ok()["events"].as_array().unwrap().len(), 2);
    assert_eq!(paged.ok()["has_more"], true);
    // Over the maximum limit or wait is capped, not refused.
    let capped = s.get(&format!("/v1/sync?since={cursor}&limit=501&timeout=30001"), Some(&b.token)).await;
    assert_eq!(capped.ok()["has_more"], false, "{}", capped.body);
    for bad in ["since=-1", "since=x", "limit=0", "limit=-1", "timeout=-1", "timeout=x"] {
        s.get(&format!("/v1/sync?{bad}"), Some(&b.token)).await.expect(400, "SW_BAD_REQUEST");
    }
    s.get("/v1/sync", None).await.expect(401, "SW_AUTH_INVALID_TOKEN");
}

#[tokio::test]
async fn stream_says_hello_delivers_events_and_resumes() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;

    let mut ws = connect(&s, &b.token, None).await;
    let hello = next_frame(&mut ws, |_| true).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["server_name"], "localhost");
    assert_eq!(hello["tenant_id"], "default");
    assert!(hello["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(hello["ts"].as_i64().unwrap() > 0);

    let m = send(&s, &a, &room, "live").await;
    let got = next_frame(&mut ws, |f| f["type"] == "swp.room.message").await;
    assert_eq!(got["id"], m["id"]);
    assert_eq!(got["room_id"], room.as_str());
    assert_eq!(got["content"]["body"], "live");
    let last = got["stream_position"].as_i64().unwrap();

    // Drop the connection; what happens meanwhile arrives on reconnect with `since`.
    drop(ws);
    let missed1 = send(&s, &a, &room, "missed 1").await;
    let missed2 = send(&s, &a, &room, "missed 2").await;
    let mut ws = connect(&s, &b.token, Some(&last.to_string())).await;
    next_frame(&mut ws, |f| f["type"] == "hello").await;
    let f1 = next_frame(&mut ws, |f| f["type"] == "swp.room.message").await;
    let f2 = next_frame(&mut ws, |f| f["type"] == "swp.room.message").await;
    assert_eq!((f1["id"].clone(), f2["id"].clone()), (missed1["id"].clone(), missed2["id"].clone()));

    // Read markers reach the participant's own sessions.
    s.put(&format!("/v1/rooms/{room}/read"), Some(&b.token), json!({"event_id": missed2["id"]})).await.expect(200, "");
    let marker = next_frame(&mut ws, |f| f["type"] == "swp.room.read_marker").await;
    assert_eq!(marker["event_id"], missed2["id"]);
    assert_eq!(marker["room_id"], room.as_str());

    // A client ping is answered.
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    next_frame(&mut ws, |f| f["type"] == "pong").await;
}

#[tokio::test]
async fn stream_closes_4001_on_a_bad_token() {
    let s = Server::start().await;
    for token in ["nope", ""] {
        let mut ws = connect(&s, token, None).await;
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap();
        match frame {
            Some(Ok(Message::Close(Some(c)))) => assert_eq!(u16::from(c.code), 4001),
            other => panic!("expected close 4001, got {other:?}"),
        }
    }
    // Not a WebSocket request at all.
    s.get("/v1/stream?token=x", None).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn typing_reaches_members_and_clears_by_itself() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    let room = s.team_room(&a, &[&b]).await;
    let mut ws = connect_ready(&s, &b.token).await;

    s.put("/v1/typing", Some(&a.token), json!({"room_id": room, "typing": true})).await.expect(200, "");
    let t = next_frame(&mut ws, |f| f["type"] == "typing").await;
    assert_eq!(t["room_id"], room.as_str());
    assert_eq!(t["participant_ids"], json!([a.id]));
    // Every frame carries an id (contract section 6), its own for an ephemeral frame.
    assert!(t["id"].as_str().is_some_and(|id| id.starts_with("eph-")), "{t}");
    // Nobody renews it: after 4 s it clears and the stream says so.
    let cleared = next_frame(&mut ws, |f| f["type"] == "typing" && f["participant_ids"] == json!([])).await;
    assert_eq!(cleared["room_id"], room.as_str());

    s.put("/v1/typing", Some(&c.token), json!({"room_id": room, "typing": true}))
        .await
        .expect(404, "SW_ROOM_NOT_FOUND");
    s.put("/v1/typing", Some(&a.token), json!({"room_id": room})).await.expect(400, "SW_BAD_REQUEST");
    s.put("/v1/typing", Some(&a.token), json!({"room_id": "x", "typing": true})).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn presence_follows_streams_and_choices() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.team_room(&a, &[&b]).await;
    let c = s.register("carol").await;

    let q = format!("/v1/presence?ids={},{}", c.id, b.fqid);
    let p = s.get(&q, Some(&a.token)).await;
    assert_eq!(p.ok()[&c.id], "offline", "never seen");
    assert_eq!(p.ok()[&b.fqid], "online", "just active");

    let mut ws = connect_ready(&s, &a.token).await;
    s.put("/v1/presence", Some(&b.token), json!({"status": "busy"})).await.expect(200, "");
    let ev = next_frame(&mut ws, |f| f["type"] == "presence" && f["participant_id"] == b.id.as_str()).await;
    assert_eq!(ev["status"], "busy");
    s.put("/v1/presence", Some(&b.token), json!({"status": "appear_offline"})).await.expect(200, "");
    let ev = next_frame(&mut ws, |f| f["type"] == "presence" && f["participant_id"] == b.id.as_str()).await;
    assert_eq!(ev["status"], "offline", "peers see appear_offline as offline");
    let seen = s.get(&format!("/v1/presence?ids={}", b.id), Some(&a.token)).await;
    assert_eq!(seen.ok()[&b.id], "offline");
    let own = s.get(&format!("/v1/presence?ids={}", b.id), Some(&b.token)).await;
    assert_eq!(own.ok()[&b.id], "appear_offline");

    s.put("/v1/presence", Some(&b.token), json!({"status": "offline"})).await.expect(400, "SW_BAD_REQUEST");
    s.put("/v1/presence", Some(&b.token), json!({"status": "sleepy"})).await.expect(400, "SW_BAD_REQUEST");
    s.get("/v1/presence", Some(&a.token)).await.expect(400, "SW_BAD_REQUEST");
    s.get("/v1/presence?ids=@ghost:localhost", Some(&a.token)).await.expect(404, "SW_PARTICIPANT_NOT_FOUND");
}

#[tokio::test]
async fn a_stream_ends_when_its_session_does() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let mut ws = connect_ready(&s, &b.token).await;
    s.post("/v1/auth/logout", Some(&b.token), json!({})).await.expect(200, "");
    // The next wake-up (any commit) re-checks the token.
    send(&s, &a, &room, "after logout").await;
    let closed = close_code(&mut ws, |v| {
        assert_ne!(v["content"]["body"], "after logout", "a logged-out session must not receive events")
    })
    .await;
    assert_eq!(closed, Some(4001));
}

#[tokio::test]
async fn a_cursor_from_the_future_is_refused() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    s.get("/v1/sync?since=999999999", Some(&a.token)).await.expect(400, "SW_BAD_REQUEST");
    let base = s.base.replacen("http://", "ws://", 1);
    let refused = tokio_tungstenite::connect_async(format!("{base}/v1/stream?token={}&since=999999999", a.token)).await;
    assert!(refused.is_err(), "the upgrade is refused with a 400");
}

#[tokio::test]
async fn presence_of_strangers_stays_private() {
    let s = Server::start().await;
    s.create_tenant("other", &[]);
    let a = s.register("alice").await;
    let o = s.register_in("olga", Some("other")).await;
    // Olga is active, but Alice shares no tenant and no room with her.
    s.get("/v1/auth/whoami", Some(&o.token)).await.expect(200, "");
    let p = s.get(&format!("/v1/presence?ids={}", o.id), Some(&a.token)).await;
    assert_eq!(p.ok()[&o.id], "offline");
    // Once they share a room, Alice sees her.
    let room = s.create_room(&a, "group", "Shared").await;
    s.add_member(&room, &a, &o).await;
    let p = s.get(&format!("/v1/presence?ids={}", o.id), Some(&a.token)).await;
    assert_eq!(p.ok()[&o.id], "online");
}

#[tokio::test]
async fn refreshing_typing_extends_it_without_repeating_it() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let mut ws = connect_ready(&s, &b.token).await;
    for _ in 0..5 {
        s.put("/v1/typing", Some(&a.token), json!({"room_id": room, "typing": true})).await.expect(200, "");
    }
    let first = next_frame(&mut ws, |f| f["type"] == "typing").await;
    assert_eq!(first["participant_ids"], json!([a.id]));
    // The next typing frame is the clear, not four repeats of the start.
    let next = next_frame(&mut ws, |f| f["type"] == "typing").await;
    assert_eq!(next["participant_ids"], json!([]));
}

#[tokio::test]
async fn a_logout_ends_its_streams_at_once() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    let mut ws = connect_ready(&s, &b.token).await;
    s.post("/v1/auth/logout", Some(&b.token), json!({})).await.expect(200, "");
    // Only ephemeral traffic follows (nothing is committed): the stream must not carry it.
    s.put("/v1/typing", Some(&a.token), json!({"room_id": room, "typing": true})).await.expect(200, "");
    s.put("/v1/presence", Some(&a.token), json!({"status": "busy"})).await.expect(200, "");
    // Well before the 30 s ping that used to notice.
    let closed = close_code(&mut ws, |v| {
        assert!(v["type"] != "typing" && v["type"] != "presence", "a logged-out session received {v}")
    })
    .await;
    assert_eq!(closed, Some(4001));
}

#[tokio::test]
async fn typing_and_presence_are_rate_limited_per_participant() {
    let s = Server::start_with_env(&[
        ("HOMESERVER_LIMITS__TYPING_PER_PARTICIPANT__BURST", "3"),
        ("HOMESERVER_LIMITS__TYPING_PER_PARTICIPANT__PER_MINUTE", "1"),
        ("HOMESERVER_LIMITS__PRESENCE_PER_PARTICIPANT__BURST", "3"),
        ("HOMESERVER_LIMITS__PRESENCE_PER_PARTICIPANT__PER_MINUTE", "1"),
    ])
    .await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.team_room(&a, &[&b]).await;
    for typing in [true, false, true] {
        s.put("/v1/typing", Some(&a.token), json!({"room_id": room, "typing": typing})).await.expect(200, "");
    }
    let r = s.put("/v1/typing", Some(&a.token), json!({"room_id": room, "typing": false})).await;
    r.expect(429, "SW_RATE_LIMIT_EXCEEDED");
    assert!(r.headers.get("retry-after").is_some());
    for status in ["busy", "idle", "online"] {
        s.put("/v1/presence", Some(&a.token), json!({"status": status})).await.expect(200, "");
    }
    let r = s.put("/v1/presence", Some(&a.token), json!({"status": "busy"})).await;
    r.expect(429, "SW_RATE_LIMIT_EXCEEDED");
    assert!(r.headers.get("retry-after").is_some());
    // Limits are per participant.
    s.put("/v1/typing", Some(&b.token), json!({"room_id": room, "typing": true})).await.expect(200, "");
    s.put("/v1/presence", Some(&b.token), json!({"status": "busy"})).await.expect(200, "");
}

#[tokio::test]
async fn presence_changes_reach_room_peers_and_not_strangers() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    s.team_room(&a, &[&b]).await;
    // Carol shares no room with Bob; her stream must hear only her own presence.
    let mut carol = connect_ready(&s, &c.token).await;
    let mut alice = connect_ready(&s, &a.token).await;
    let mut bob = connect_ready(&s, &b.token).await;
    s.put("/v1/presence", Some(&b.token), json!({"status": "busy"})).await.expect(200, "");
    let seen = next_frame(&mut alice, |f| f["type"] == "presence" && f["participant_id"] == b.id.as_str()).await;
    assert_eq!(seen["status"], "busy");
    let own = next_frame(&mut bob, |f| f["type"] == "presence" && f["participant_id"] == b.id.as_str()).await;
    assert_eq!(own["status"], "busy", "one's own sessions hear it too");
    // Carol's presence change is the marker: anything about Bob before it would be a leak.
    s.put("/v1/presence", Some(&c.token), json!({"status": "idle"})).await.expect(200, "");
    let first = next_frame(&mut carol, |f| f["type"] == "presence").await;
    assert_eq!(first["participant_id"], c.id.as_str(), "a stranger's presence leaked: {first}");
}
