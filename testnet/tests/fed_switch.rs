//! The per-room federation switch through real nodes: while a room's federation is off no
//! event of it leaves either server and none is taken in; turned on again, both sides catch up
//! on what was written meanwhile, in order.

mod support;

use serde_json::json;
use support::{bodies, eventually, get, ok, options, put, send_text, shared_room, timeline};
use testnet::Testnet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_switched_off_keeps_its_events_home_and_catches_up_both_ways_when_on_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(2, dir.path());
    if std::env::var("DEBUG_SWITCH").is_ok() {
        opts.log = "info,homeserver::fed=debug".into();
    }
    let net = Testnet::start_with(opts).await.expect("testnet starts");
    let (alpha, beta) = (net.client("alpha").unwrap(), net.client("beta").unwrap());
    let alice = net.register("alpha", "alice").await.unwrap();
    let bob = net.register("beta", "bob").await.unwrap();
    let room = shared_room(&net, "alpha", &alice, "beta", &bob).await;
    let control = shared_room(&net, "alpha", &alice, "beta", &bob).await;
    send_text(&alpha, &alice, &room, "before").await;
    eventually("the first message crosses", 30, || async {
        bodies(&timeline(&beta, &bob, &room).await).contains(&"before".to_string()).then_some(())
    })
    .await;

    let switch = format!("/v1/admin/rooms/{room}/federate");
    let off = ok(&put(&alpha, &switch, &alice.access_token, &json!({"enabled": false})).await, "off");
    assert_eq!(off["federated"], false, "{off}");
    // The switch is room state: beta applies it once alpha's toggle event arrives.
    eventually("beta sees the room's federation off", 30, || async {
        let r = get(&beta, &format!("/v1/rooms/{room}"), &bob.access_token).await;
        (r.data()["federated"] == false).then_some(())
    })
    .await;
    for i in 1..=3 {
        send_text(&alpha, &alice, &room, &format!("alpha while off {i}")).await;
        send_text(&beta, &bob, &room, &format!("beta while off {i}")).await;
    }
    // Each server's sender delivers to a peer in stream order: once a later message of another
    // room has crossed, the room's messages before it were kept home.
    send_text(&alpha, &alice, &control, "control from alpha").await;
    send_text(&beta, &bob, &control, "control from beta").await;
    eventually("the control room still federates", 30, || async {
        let a = bodies(&timeline(&alpha, &alice, &control).await);
        let b = bodies(&timeline(&beta, &bob, &control).await);
        (a.contains(&"control from beta".to_string()) && b.contains(&"control from alpha".to_string())).then_some(())
    })
    .await;
    let a = bodies(&timeline(&alpha, &alice, &room).await);
    let b = bodies(&timeline(&beta, &bob, &room).await);
    assert!(!a.iter().any(|m| m.starts_with("beta while off")), "nothing of beta's arrived at alpha: {a:?}");
    assert!(!b.iter().any(|m| m.starts_with("alpha while off")), "nothing of alpha's left for beta: {b:?}");

    // On again: both sides get what the other wrote meanwhile, and agree on the order.
    let on = ok(&put(&alpha, &switch, &alice.access_token, &json!({"enabled": true})).await, "on");
    assert_eq!(on["federated"], true, "{on}");
    eventually("beta sees the room's federation on", 30, || async {
        let r = get(&beta, &format!("/v1/rooms/{room}"), &bob.access_token).await;
        (r.data()["federated"] == true).then_some(())
    })
    .await;
    send_text(&alpha, &alice, &room, "after").await;
    eventually("both sides caught up", 60, || async {
        let a = bodies(&timeline(&alpha, &alice, &room).await);
        let b = bodies(&timeline(&beta, &bob, &room).await);
        let all = |v: &[String]| {
            (1..=3).all(|i| v.contains(&format!("alpha while off {i}")) && v.contains(&format!("beta while off {i}")))
                && v.contains(&"after".to_string())
        };
        if std::env::var("DEBUG_SWITCH").is_ok() && !(all(&a) && all(&b)) {
            println!("alpha {a:?}\nbeta {b:?}");
            for n in ["alpha", "beta"] {
                let _ = std::fs::copy(&net.node(n).unwrap().log_path, format!("/tmp/sw-{n}.log"));
            }
        }
        (all(&a) && all(&b)).then_some(())
    })
    .await;
    for (who, v) in [
        ("alpha", bodies(&timeline(&alpha, &alice, &room).await)),
        ("beta", bodies(&timeline(&beta, &bob, &room).await)),
    ] {
        for side in ["alpha", "beta"] {
            let mine: Vec<&String> = v.iter().filter(|m| m.starts_with(&format!("{side} while off"))).collect();
            assert_eq!(mine.len(), 3, "{who}: {v:?}");
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{who} shows {side}'s messages in order: {v:?}");
        }
    }
    net.down().await.unwrap();
}
