//! Federation end to end on the testnet (issue 14): real processes, TLS, DNS. A room shared by
//! two and then three servers: messages, edits, redactions, reactions and typing replicate, and
//! every server shows the same room.

mod support;

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::*;
use testnet::Testnet;
use tokio_tungstenite::tungstenite::Message;

/// What a message looks like to a reader, minus what depends on the reader (its own
/// participant ids, `reacted_by_me`, stream positions).
fn folded(m: &Value) -> Value {
    let reactions: Vec<Value> = m["reactions"]
        .as_array()
        .map(|a| a.iter().map(|r| json!({"emoji": r["emoji"], "count": r["count"]})).collect())
        .unwrap_or_default();
    json!({
        "id": m["id"], "sender_fqid": m["sender_fqid"], "event_type": m["event_type"],
        "content": m["content"], "edited": !m["edited_at"].is_null(), "redacted": !m["redacted_at"].is_null(),
        "reactions": reactions, "origin_ts": m["origin_ts"],
    })
}

fn bodies_of(list: &[Value], fqid: &str) -> Vec<String> {
    list.iter()
        .filter(|m| m["sender_fqid"] == fqid)
        .map(|m| m["content"]["body"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_room_replicates_both_ways_and_to_a_third_server() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start_with(options(3, dir.path())).await.expect("testnet starts");
    let (a, b, g) = (net.client("alpha").unwrap(), net.client("beta").unwrap(), net.client("gamma").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    let room = shared_room(&net, "alpha", &alice, "beta", &bob).await;

    // Bob's server shows the room like its own: name, both members.
    let view = ok(&get(&b, &format!("/v1/rooms/{room}"), &bob.access_token).await, "room on beta");
    assert_eq!(view["name"], "Shared");
    assert_eq!(view["membership"], "join");

    // Typing on beta reaches alice's stream on alpha.
    let ws_url = format!("{}/v1/stream?token={}", a.base.replacen("http://", "ws://", 1), alice.access_token);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("stream connects");
    put(&b, "/v1/typing", &bob.access_token, &json!({"room_id": room, "typing": true})).await;
    let typing = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let f: Value = serde_json::from_str(&t).unwrap();
                if f["type"] == "typing"
                    && f["room_id"] == room.as_str()
                    && f["participant_ids"].as_array().is_some_and(|p| !p.is_empty())
                {
                    return f;
                }
            }
        }
    })
    .await
    .expect("a typing frame from beta within 20 s");
    let bob_on_alpha =
        ok(&get(&a, &format!("/v1/participants/{}", bob.fqid), &alice.access_token).await, "bob on alpha");
    assert_eq!(typing["participant_ids"], json!([bob_on_alpha["participant_id"]]));

    // 100 messages each way, sent concurrently.
    let (room_a, room_b) = (room.clone(), room.clone());
    let (ac, bc, alice2, bob2) = (a.clone(), b.clone(), alice.clone(), bob.clone());
    let from_alice = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..100 {
            ids.push(send_text(&ac, &alice2, &room_a, &format!("a{i}")).await["id"].as_str().unwrap().to_string());
        }
        ids
    });
    let from_bob = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..100 {
            ids.push(send_text(&bc, &bob2, &room_b, &format!("b{i}")).await["id"].as_str().unwrap().to_string());
        }
        ids
    });
    let (alice_ids, bob_ids) = (from_alice.await.unwrap(), from_bob.await.unwrap());

    // An edit, a redaction and reactions from both sides, once each side holds the other's
    // messages (a reaction names an event its server must know).
    let (last_a, last_b) = (alice_ids[99].clone(), bob_ids[99].clone());
    eventually("bob's messages reach alpha", 60, || async {
        let r = get(&a, &format!("/v1/rooms/{room}/events/{last_b}"), &alice.access_token).await;
        r.is_success().then_some(())
    })
    .await;
    eventually("alice's messages reach beta", 60, || async {
        let r = get(&b, &format!("/v1/rooms/{room}/events/{last_a}"), &bob.access_token).await;
        r.is_success().then_some(())
    })
    .await;
    ok(
        &post(
            &a,
            &format!("/v1/rooms/{room}/events/{}/edit", alice_ids[10]),
            &alice.access_token,
            &json!({"content": {"msgtype": "swp.text", "body": "a10 (edited)"}}),
        )
        .await,
        "edit",
    );
    ok(
        &post(&b, &format!("/v1/rooms/{room}/events/{}/redact", bob_ids[20]), &bob.access_token, &json!({})).await,
        "redact",
    );
    ok(
        &post(
            &a,
            &format!("/v1/rooms/{room}/events/{}/reaction", bob_ids[5]),
            &alice.access_token,
            &json!({"emoji": "👍"}),
        )
        .await,
        "react a",
    );
    ok(
        &post(
            &b,
            &format!("/v1/rooms/{room}/events/{}/reaction", bob_ids[5]),
            &bob.access_token,
            &json!({"emoji": "👍"}),
        )
        .await,
        "react b",
    );
    ok(
        &post(
            &b,
            &format!("/v1/rooms/{room}/events/{}/reaction", alice_ids[5]),
            &bob.access_token,
            &json!({"emoji": "🚀"}),
        )
        .await,
        "react b2",
    );

    let settled = |list: &[Value]| {
        let by_id: BTreeMap<&str, &Value> = list.iter().filter_map(|m| Some((m["id"].as_str()?, m))).collect();
        list.len() == 200
            && by_id.get(alice_ids[10].as_str()).is_some_and(|m| !m["edited_at"].is_null())
            && by_id.get(bob_ids[20].as_str()).is_some_and(|m| !m["redacted_at"].is_null())
            && by_id.get(bob_ids[5].as_str()).is_some_and(|m| m["reactions"][0]["count"] == 2)
            && by_id.get(alice_ids[5].as_str()).is_some_and(|m| m["reactions"][0]["count"] == 1)
    };
    let on_alpha = eventually("alpha holds all 200 messages, folded", 60, || async {
        let t = timeline(&a, &alice, &room).await;
        settled(&t).then_some(t)
    })
    .await;
    let on_beta = eventually("beta holds all 200 messages, folded", 60, || async {
        let t = timeline(&b, &bob, &room).await;
        settled(&t).then_some(t)
    })
    .await;
    // Each sender's messages arrive in the order they were sent, and both servers show the same
    // messages (same ids, contents, edits, redactions, reactions).
    let expected_a: Vec<String> =
        (0..100).map(|i| if i == 10 { "a10 (edited)".into() } else { format!("a{i}") }).collect();
    assert_eq!(bodies_of(&on_alpha, &alice.fqid), expected_a);
    assert_eq!(bodies_of(&on_beta, &alice.fqid), expected_a);
    // Bob's too, the redacted one without its body.
    let expected_b: Vec<String> = (0..100).map(|i| if i == 20 { String::new() } else { format!("b{i}") }).collect();
    assert_eq!(bodies_of(&on_alpha, &bob.fqid), expected_b);
    assert_eq!(bodies_of(&on_beta, &bob.fqid), expected_b);
    let sorted = |list: &[Value]| -> BTreeMap<String, Value> {
        list.iter().map(|m| (m["id"].as_str().unwrap().to_string(), folded(m))).collect()
    };
    assert_eq!(sorted(&on_alpha), sorted(&on_beta));

    // A third server joins and receives everything from its join on.
    invite_and_join(&net, "alpha", &alice, &room, "gamma", &carol).await;
    // Beta learns of carol's join from alpha, which relays it.
    eventually("carol's join reaches beta", 30, || async {
        let r = get(&b, &format!("/v1/rooms/{room}/members"), &bob.access_token).await;
        let members = r.data().as_array().cloned().unwrap_or_default();
        members.iter().any(|m| m["fqid"] == carol.fqid.as_str() && m["membership"] == "join").then_some(())
    })
    .await;
    let after = send_text(&b, &bob, &room, "welcome carol").await;
    let after_id = after["id"].as_str().unwrap().to_string();
    eventually("gamma receives bob's message", 30, || async {
        let t = timeline(&g, &carol, &room).await;
        t.iter().any(|m| m["id"] == after_id.as_str() && m["sender_fqid"] == bob.fqid.as_str()).then_some(())
    })
    .await;
    // Everything after the join reaches gamma, from both other servers, each sender's in order.
    for i in 0..10 {
        send_text(&a, &alice, &room, &format!("ca{i}")).await;
        send_text(&b, &bob, &room, &format!("cb{i}")).await;
    }
    let on_gamma = eventually("gamma holds everything since its join", 60, || async {
        let t = timeline(&g, &carol, &room).await;
        (t.iter().filter(|m| m["content"]["body"].as_str().is_some_and(|b| b.starts_with('c'))).count() >= 20)
            .then_some(t)
    })
    .await;
    let since_join = |fqid: &str, prefix: &str| -> Vec<String> {
        bodies_of(&on_gamma, fqid).into_iter().filter(|b| b.starts_with(prefix)).collect()
    };
    assert_eq!(since_join(&alice.fqid, "ca"), (0..10).map(|i| format!("ca{i}")).collect::<Vec<_>>());
    assert_eq!(since_join(&bob.fqid, "cb"), (0..10).map(|i| format!("cb{i}")).collect::<Vec<_>>());
    let members = ok(&get(&g, &format!("/v1/rooms/{room}/members"), &carol.access_token).await, "members on gamma");
    let joined: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["membership"] == "join")
        .filter_map(|m| m["fqid"].as_str())
        .collect();
    for who in [&alice.fqid, &bob.fqid, &carol.fqid] {
        assert!(joined.contains(&who.as_str()), "{who} is a member on gamma: {members}");
    }
    // Carol's reply reaches both others.
    let reply = send_text(&g, &carol, &room, "thanks").await;
    let reply_id = reply["id"].as_str().unwrap().to_string();
    for (c, u) in [(&a, &alice), (&b, &bob)] {
        eventually("carol's reply arrives", 30, || async {
            timeline(c, u, &room).await.iter().any(|m| m["id"] == reply_id.as_str()).then_some(())
        })
        .await;
    }

    // A media message: uploaded on beta, named in the room; alpha and gamma fetch it from beta
    // on first use (the message says where it is from) and give it back byte for byte.
    let picture: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let media_id = upload(&b.base, &bob.access_token, &picture, "image/png").await;
    let msg = ok(
        &post(
            &b,
            &format!("/v1/rooms/{room}/send"),
            &bob.access_token,
            &json!({"event_type": "swp.room.message",
                    "content": {"msgtype": "swp.media", "media_id": media_id, "body": "picture.png"}}),
        )
        .await,
        "send media",
    );
    let msg_id = msg["id"].as_str().unwrap().to_string();
    for (c, u) in [(&a, &alice), (&g, &carol)] {
        eventually("the media message arrives", 30, || async {
            let r = get(c, &format!("/v1/rooms/{room}/events/{msg_id}"), &u.access_token).await;
            r.is_success().then_some(())
        })
        .await;
        let (status, ct, got) = get_bytes(&c.base, &format!("/v1/media/download/{media_id}"), &u.access_token).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got[..got.len().min(300)]));
        assert_eq!(ct, "image/png");
        assert!(got == picture, "remote media differs byte for byte on {}", c.base);
    }
    net.down().await.unwrap();
}
