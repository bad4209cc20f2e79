//! Rooms replayed through the room rules: every event a room's export holds must pass
//! `federation::auth::check`, by its own auth events and by the state before it, as a peer
//! would check it.

use std::collections::BTreeMap;

use federation::auth::{self, RoomVersion};
use federation::event::{Pdu, StateMap};
use serde_json::json;

use crate::bundle::{events, export, manifest};
use crate::harness::Server;

/// Replays a bundle's events in order as a peer checks each one: against the state its own
/// `auth_events` name (which must name exactly what the rules read), and against the state
/// before it in the room. Panics on the first refusal; answers every event and the final state.
fn replay(bundle: &[u8]) -> (Vec<Pdu>, StateMap<Pdu>) {
    let mut known: BTreeMap<String, Pdu> = BTreeMap::new();
    let mut state: StateMap<Pdu> = StateMap::new();
    let mut replayed = Vec::new();
    for e in events(bundle) {
        let pdu = Pdu::from_wire(&e["pdu"]).expect("a well-formed event");
        let what = format!("{} by {} about {:?}", pdu.event_type, pdu.sender, pdu.state_key);
        let own = auth::auth_state_from_auth_events(&pdu, &known)
            .unwrap_or_else(|why| panic!("{what}: its auth_events do not fit the rules: {why:?}"));
        auth::check(RoomVersion::V1, &pdu, &own)
            .unwrap_or_else(|why| panic!("{what}: refused by its own auth_events: {why:?}"));
        auth::check(RoomVersion::V1, &pdu, &state)
            .unwrap_or_else(|why| panic!("{what}: refused by the state before it: {why:?}"));
        if let Some(key) = pdu.state_entry() {
            state.insert(key, pdu.clone());
        }
        known.insert(pdu.event_id.clone(), pdu.clone());
        replayed.push(pdu);
    }
    (replayed, state)
}

#[tokio::test]
async fn a_dm_opens_with_events_the_room_rules_accept() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let r = s.post("/v1/rooms/dm", Some(&a.token), json!({"participant_id": b.id})).await;
    let room = r.ok()["id"].as_str().unwrap().to_string();
    s.send_text(&a, &room, "hello bob").await;
    s.send_text(&b, &room, "hello alice").await;
    let (status, bundle, _) = export(&s, &a, &room).await;
    assert_eq!(status, 200);
    let evs = events(&bundle);
    let create = &evs[0]["pdu"];
    assert_eq!(create["event_type"], "swp.room.create");
    assert_eq!(create["content"]["room_version"], "1");
    assert_eq!(create["content"]["dm_parties"], json!([a.fqid, b.fqid]));
    // Replayed in order, every event passes the room version 1 rules, as a peer holding a
    // replica would check it.
    replay(&bundle);
    let bobs_join = evs
        .iter()
        .find(|e| e["pdu"]["event_type"] == "swp.room.member" && e["pdu"]["state_key"] == b.fqid.as_str())
        .expect("bob's join");
    assert_eq!(bobs_join["pdu"]["sender"], b.fqid.as_str(), "a join is its joiner's own event");
}

#[tokio::test]
async fn a_room_replays_through_the_rules_by_its_own_auth_events() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    let room = s.team_room(&a, &[&b, &c]).await;
    s.put(&format!("/v1/rooms/{room}/name"), Some(&a.token), json!({"name": "Team two"})).await.ok();
    s.put(&format!("/v1/rooms/{room}/topic"), Some(&a.token), json!({"topic": "plans"})).await.ok();
    s.set_power(&room, &a, &b, 50).await;
    s.send_text(&b, &room, "hello").await;
    s.post(&format!("/v1/rooms/{room}/kick"), Some(&b.token), json!({"participant_id": c.id})).await.ok();
    s.post(&format!("/v1/rooms/{room}/archive"), Some(&a.token), json!({})).await.ok();
    s.post(&format!("/v1/rooms/{room}/rejoin"), Some(&a.token), json!({})).await.ok();
    s.send_text(&a, &room, "back").await;
    let (status, bundle, _) = export(&s, &a, &room).await;
    assert_eq!(status, 200);
    replay(&bundle);
}

/// A room that went through everything a peer must accept: a server admin's archive, restore
/// and close (through the service participant), kicks, a ban and an unban, power changes up
/// and down (of a member who is out, too), renames and topics, leaves and re-joins. Every
/// exported event passes the rules by its own auth events and by the state before it.
#[tokio::test]
async fn a_room_with_admin_actions_and_moderation_replays_through_the_rules() {
    let s = Server::start().await;
    let root = s.server_admin("root").await;
    let root_fqid = s.get("/v1/auth/whoami", Some(&root)).await.ok()["fqid"].clone();
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let c = s.register("carol").await;
    let d = s.register("dave").await;
    let room = s.team_room(&a, &[&b, &c, &d]).await;
    let r = format!("/v1/rooms/{room}");
    s.put(&format!("{r}/name"), Some(&a.token), json!({"name": "Renamed"})).await.ok();
    s.set_power(&room, &a, &b, 50).await;
    s.put(&format!("{r}/topic"), Some(&b.token), json!({"topic": "by the moderator"})).await.ok();
    s.put(&format!("{r}/name"), Some(&b.token), json!({"name": "Renamed again"})).await.ok();
    s.send_text(&c, &room, "hello").await;
    s.post(&format!("{r}/kick"), Some(&b.token), json!({"participant_id": c.id})).await.ok();
    s.post(&format!("{r}/ban"), Some(&b.token), json!({"participant_id": d.id})).await.ok();
    // Power of members who are out: set while banned, kept through unban and re-join.
    s.set_power(&room, &a, &d, 10).await;
    s.post(&format!("{r}/unban"), Some(&a.token), json!({"participant_id": d.id})).await.ok();
    s.add_member(&room, &a, &d).await;
    s.add_member(&room, &a, &c).await;
    s.set_power(&room, &a, &b, 0).await;
    s.post(&format!("{r}/leave"), Some(&c.token), json!({})).await.ok();
    // The server admin is no member: its lifecycle changes go through the service participant.
    s.post(&format!("{r}/archive"), Some(&root), json!({})).await.ok();
    s.post(&format!("{r}/rejoin"), Some(&root), json!({})).await.ok();
    s.send_text(&a, &room, "still here").await;
    s.post(&format!("{r}/close"), Some(&root), json!({})).await.ok();
    let (status, bundle, _) = export(&s, &a, &room).await;
    assert_eq!(status, 200);

    let (replayed, state) = replay(&bundle);
    let lifecycle_senders: Vec<_> = replayed
        .iter()
        .filter(|pdu| pdu.event_type == "swp.room.lifecycle")
        .map(|pdu| (pdu.sender.clone(), pdu.content.get("sent_by").cloned()))
        .collect();
    let service = format!("@_server:{}", a.fqid.split_once(':').unwrap().1);
    assert_eq!(lifecycle_senders.len(), 3, "{lifecycle_senders:?}");
    for (sender, sent_by) in &lifecycle_senders {
        assert_eq!(sender, &service, "the admin acts through the service participant");
        assert_eq!(sent_by.as_ref(), Some(&root_fqid), "and is named as who really acted");
    }
    let lifecycle = &state[&("swp.room.lifecycle".to_string(), String::new())];
    assert_eq!(lifecycle.content["state"], "closed");
    // The power the banned member was given while out is in the power-levels event.
    let power = &state[&("swp.room.power_levels".to_string(), String::new())];
    assert_eq!(power.content["users"][&d.fqid], 10);
    assert_eq!(power.content["users"][&service], 100);
    assert!(power.content["users"].get(&b.fqid).is_none(), "lowered to the default: no entry");
    // Members and counts never show the service participant.
    let members = manifest(&bundle)["members"].clone();
    assert!(!members.to_string().contains("@_server"), "{members}");
    assert_eq!(s.get(&format!("{r}/members"), Some(&a.token)).await.ok().as_array().unwrap().len(), 3);
}
