//! Key rotation and revocation through real nodes: `homeserver admin federation key rotate`
//! on a stopped node, then peers fetch the new key by themselves, old events verify on a
//! server that joins later, and what a revoked key signs after its revocation is refused.

mod support;

use support::graph_of;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{
    AsPeer, bodies, eventually, federated_room, homeserver_bin, invite_and_join, node_key, ok, options, put, send_text,
    timeline, tls_client,
};
use testnet::Testnet;

/// Runs `homeserver admin federation key rotate` on a node's data dir (the node is stopped).
fn rotate(data_dir: &Path, revoke: bool) -> String {
    let mut cmd = Command::new(homeserver_bin());
    cmd.args(["admin", "federation", "key", "rotate", "--data-dir"]).arg(data_dir);
    if revoke {
        cmd.arg("--revoke");
    }
    let out = cmd.output().expect("run homeserver admin federation key rotate");
    assert!(out.status.success(), "key rotate failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn well_known(net: &Testnet, node: &str) -> Value {
    let url = format!("{}/.well-known/scaiwave/server", net.node(node).unwrap().federation_url);
    tls_client(net).get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_revoked_keys_verify_what_they_signed_in_time_and_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start_with(options(3, dir.path())).await.expect("testnet starts");
    let alpha = net.client("alpha").unwrap();
    let beta = net.client("beta").unwrap();
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let room = federated_room(&net, "alpha", &alice, "group", "Keys").await;
    invite_and_join(&net, "alpha", &alice, &room, "beta", &bob).await;
    send_text(&alpha, &alice, &room, "signed with k1").await;
    let k1 = node_key(&net, "alpha");

    // Rotation: the old key is listed with an expiry 30 days ahead; beta fetches the new key
    // when alpha's first transaction signed with it arrives.
    net.stop_node("alpha").await.unwrap();
    let said = rotate(&net.node("alpha").unwrap().data_dir, false);
    assert!(said.contains("rotated"), "{said}");
    net.start_node("alpha").await.unwrap();
    let k2 = node_key(&net, "alpha");
    assert_ne!(k1.key_id(), k2.key_id());
    let doc = well_known(&net, "alpha").await;
    assert!(doc["verify_keys"][k2.key_id()].is_object(), "{doc}");
    let k1_expiry = doc["old_verify_keys"][k1.key_id()]["expired_ts"].as_u64().expect("k1 listed as old");
    assert!(k1_expiry > support::now_ms() + 29 * 24 * 3600 * 1000, "30-day overlap: {doc}");
    ok(
        &put(&alpha, &format!("/v1/rooms/{room}/name"), &alice.access_token, &json!({"name": "Named with k2"})).await,
        "rename",
    );
    send_text(&alpha, &alice, &room, "signed with k2").await;
    eventually("beta verifies alpha's events signed with the new key", 30, || async {
        let b = bodies(&timeline(&beta, &bob, &room).await);
        (b == ["signed with k1", "signed with k2"]).then_some(())
    })
    .await;

    // Revocation: k2 expires now. What alpha signs with k3 flows; what k2 signs after the
    // revocation is refused by beta, and the same event signed with k3 is taken.
    net.stop_node("alpha").await.unwrap();
    let said = rotate(&net.node("alpha").unwrap().data_dir, true);
    assert!(said.contains("revoked"), "{said}");
    let revoked_at = support::now_ms();
    net.start_node("alpha").await.unwrap();
    let k3 = node_key(&net, "alpha");
    let doc = well_known(&net, "alpha").await;
    let k2_expiry = doc["old_verify_keys"][k2.key_id()]["expired_ts"].as_u64().expect("k2 listed as old");
    assert!(k2_expiry <= revoked_at, "revoked now: {doc}");
    assert!(doc["old_verify_keys"][k1.key_id()].is_object(), "k1 still listed: {doc}");
    send_text(&alpha, &alice, &room, "signed with k3").await;
    eventually("beta takes alpha's events signed with k3", 30, || async {
        let b = bodies(&timeline(&beta, &bob, &room).await);
        (b.last().map(String::as_str) == Some("signed with k3")).then_some(())
    })
    .await;

    let (state, heads) = graph_of(&support::node_db(&net, "beta"), &room);
    let id_of = |t: &str, k: &str| state.iter().find(|((et, sk), _)| et == t && sk == k).unwrap().1.clone();
    let auth =
        [id_of("swp.room.create", ""), id_of("swp.room.power_levels", ""), id_of("swp.room.member", &alice.fqid)];
    let as_alpha = |key: &crypto::ServerKey| AsPeer {
        origin: "alpha.test".into(),
        key: crypto::ServerKey::from_seed_base64(key.key_id(), &key.seed_base64()).unwrap(),
        http: tls_client(&net),
    };
    let (thief, now_k3) = (as_alpha(&k2), as_alpha(&k3));
    let content = json!({"msgtype": "swp.text", "body": "forged with the revoked key"});
    let (forged, forged_v, _) =
        thief.build(&room, &alice.fqid, "swp.room.message", None, content.clone(), &heads, &auth);
    let (status, answer) = now_k3
        .request(
            "beta.test",
            "PUT",
            "/_scaiwave/federation/v1/send/keys-1",
            Some(&json!({
                "origin": "alpha.test", "origin_ts": support::now_ms(), "pdus": [forged_v], "edus": [],
            })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["pdus"][&forged]["error"]["code"], "SW_FED_SIGNATURE_MISMATCH", "{answer}");
    let content = json!({"msgtype": "swp.text", "body": "the same, signed with k3"});
    let (fine, fine_v, _) = now_k3.build(&room, &alice.fqid, "swp.room.message", None, content, &heads, &auth);
    let (status, answer) = now_k3
        .request(
            "beta.test",
            "PUT",
            "/_scaiwave/federation/v1/send/keys-2",
            Some(&json!({
                "origin": "alpha.test", "origin_ts": support::now_ms(), "pdus": [fine_v], "edus": [],
            })),
        )
        .await;
    assert_eq!((status, &answer["data"]["pdus"][&fine]), (200, &json!({})), "{answer}");
    let b = bodies(&timeline(&beta, &bob, &room).await);
    assert!(!b.iter().any(|m| m.contains("forged")), "the forged event is never shown: {b:?}");

    // Gamma joins after both rotations: the room's state and auth chain it verifies were signed
    // by k1 (the creation) and k2 (the name, before its revocation).
    let gamma = net.client("gamma").unwrap();
    let carol = net.register("gamma", "carol").await.unwrap();
    invite_and_join(&net, "alpha", &alice, &room, "gamma", &carol).await;
    let view = ok(&support::get(&gamma, &format!("/v1/rooms/{room}"), &carol.access_token).await, "room on gamma");
    assert_eq!(view["name"], "Named with k2", "{view}");
    send_text(&alpha, &alice, &room, "after gamma joined").await;
    eventually("gamma gets alpha's new events", 30, || async {
        let b = bodies(&timeline(&gamma, &carol, &room).await);
        b.iter().any(|m| m == "after gamma joined").then_some(())
    })
    .await;
    net.down().await.unwrap();
}
