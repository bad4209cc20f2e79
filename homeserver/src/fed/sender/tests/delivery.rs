//! The sender against a stand-in peer over verified TLS: delivery, exactly-once content, the
//! back-off on failures, the same transaction id for the same batch, `retry: true`, EDUs, and
//! a peer that never answers delaying no one else.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::put;
use serde_json::{Value, json};

use crate::config::Config;
use crate::fed::sender::Sender;
use crate::rooms::populate_new_room;
use crate::storage::{Membership, Participant, Store};
use crate::test_fixtures;

const ACCEPT: u8 = 0;
const FAIL: u8 = 1;
const RETRY: u8 = 2;

#[derive(Clone, Default)]
struct Peer {
    mode: Arc<AtomicU8>,
    /// Every transaction received: `(txn_id, body)`.
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn send(State(peer): State<Peer>, Path(txn): Path<String>, body: axum::Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    peer.got.lock().unwrap().push((txn, body.0.clone()));
    match peer.mode.load(Ordering::SeqCst) {
        FAIL => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"code": "SW_INTERNAL", "message": "down"}})),
        )
            .into_response(),
        mode => {
            // Verdicts by the pdu's event id as the receiver computes it.
            let mut verdicts = serde_json::Map::new();
            for pdu in body.0["pdus"].as_array().cloned().unwrap_or_default() {
                let id = crypto::event::event_id(&pdu).unwrap_or_default();
                let v = if mode == RETRY {
                    json!({"error": {"code": "SW_FED_DISABLED", "message": "off", "retry": true}})
                } else {
                    json!({})
                };
                verdicts.insert(id, v);
            }
            axum::Json(json!({"data": {"pdus": verdicts}})).into_response()
        }
    }
}

/// Serves the stand-in peer on 127.0.0.1 over TLS under a fresh CA; answers its server name
/// and the CA's PEM.
async fn peer(dir: &std::path::Path, peer: Peer) -> (String, String, tokio::sync::watch::Sender<bool>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join("peer.pem"), dir.join("peer.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let config = Config::default();
    let router: Router =
        Router::new().route(&format!("{}/send/{{txn}}", federation::wire::PREFIX), put(send)).with_state(peer);
    let listener = crate::listener::Listener {
        name: "peer",
        tcp,
        tls: Some(crate::listener::tls_acceptor(&cert_path, &key_path).unwrap()),
        router,
        limits: crate::listener::ConnLimits::new(&config.limits, 1024),
        body_limit: crate::api::federation_body_limit(&config),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(listener.serve(stop_rx));
    (format!("127.0.0.1:{port}"), ca_pem, stop)
}

async fn store(dir: &std::path::Path) -> Store {
    test_fixtures::store(dir, "hs.test").await
}

async fn alice_in_room_with(store: &Store, peer_names: &[&str]) -> Participant {
    let alice = test_fixtures::person(store, "alice", "hs.test").await;
    let room = test_fixtures::group_room("room-d1", &alice);
    let mut tx = store.write().await.unwrap();
    populate_new_room(&mut tx, &room, &alice, &[]).await.unwrap();
    for peer_name in peer_names {
        let bob = tx.ensure_foreign_participant(&format!("@bob:{peer_name}"), None, "default", 0).await.unwrap();
        tx.set_membership("room-d1", &bob.id, Membership::Join, Some(0), 0).await.unwrap();
    }
    tx.set_room_federated("room-d1", true).await.unwrap();
    tx.commit().await.unwrap();
    alice
}

async fn say(store: &Store, who: &Participant, body: &str) {
    test_fixtures::say(store, "room-d1", who, body).await
}

/// Polls every 20 ms, for at most 20 s.
async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not reached");
}

/// `(txn_id, bodies of the message pdus)` of every transaction received.
fn received(peer: &Peer) -> Vec<(String, Vec<String>)> {
    peer.got
        .lock()
        .unwrap()
        .iter()
        .map(|(txn, body)| {
            let bodies = body["pdus"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["content"]["body"].as_str().map(str::to_string))
                .collect();
            (txn.clone(), bodies)
        })
        .collect()
}

fn count(peer: &Peer, body: &str) -> usize {
    received(peer).iter().flat_map(|(_, b)| b).filter(|b| *b == body).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_backs_off_and_sends_again_what_the_peer_asked_for() {
    federation::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let fake = Peer::default();
    let (peer_name, ca_pem, _stop) = peer(dir.path(), fake.clone()).await;
    // A second peer that accepts connections and never answers: it must delay no one.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_name = format!("127.0.0.1:{}", hanging.local_addr().unwrap().port());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hanging.accept().await {
            held.push(conn);
        }
    });
    let store = store(dir.path()).await;
    let alice = alice_in_room_with(&store, &[&peer_name, &hanging_name]).await;

    let mut config = Config::default();
    config.server_name = "hs.test".into();
    config.federation.backoff_base_ms = 100;
    config.federation.backoff_cap_secs = 1;
    let discovery = federation::Discovery::new(federation::DiscoveryConfig {
        nameserver: None,
        extra_ca_pem: Some(ca_pem.into_bytes()),
        timeout: None,
    })
    .unwrap();
    let key = crypto::ServerKey::from_seed("1", &[7; 32]).unwrap();
    let client =
        federation::client::FedClient::new(discovery, "hs.test", Arc::new(key), Duration::from_secs(120)).unwrap();
    let sender = Sender::start(store.clone(), client, Default::default(), &config);

    // Delivered, once each, in a transaction of the right shape.
    say(&store, &alice, "one").await;
    say(&store, &alice, "two").await;
    until("one and two arrive", async || (count(&fake, "one") == 1 && count(&fake, "two") == 1).then_some(())).await;
    let (_, first) = fake.got.lock().unwrap()[0].clone();
    assert_eq!(first["origin"], "hs.test");
    assert!(first["origin_ts"].is_u64() && first["edus"].is_array());
    let row = until("the cursor moves", async || {
        store.fed_destination_row(&peer_name).await.unwrap().filter(|r| r.last_success_at.is_some())
    })
    .await;
    assert_eq!((row.failures, row.retry_at), (0, None));

    // The peer fails: the back-off is recorded and the same batch goes again under the same id.
    fake.mode.store(FAIL, Ordering::SeqCst);
    say(&store, &alice, "three").await;
    let row = until("failures are recorded", async || {
        store.fed_destination_row(&peer_name).await.unwrap().filter(|r| r.failures >= 2)
    })
    .await;
    assert!(row.retry_at.is_some() && row.last_error.is_some(), "{row:?}");
    let attempts: Vec<String> =
        received(&fake).into_iter().filter(|(_, b)| b.contains(&"three".to_string())).map(|(t, _)| t).collect();
    assert!(attempts.len() >= 2);
    assert!(attempts.iter().all(|t| *t == attempts[0]), "one batch, one id: {attempts:?}");
    fake.mode.store(ACCEPT, Ordering::SeqCst);
    until("three arrives once the peer is back", async || {
        store.fed_destination_row(&peer_name).await.unwrap().filter(|r| r.failures == 0 && r.retry_at.is_none())
    })
    .await;

    // `retry: true`: kept on the list, sent again later under a new id, then cleared.
    fake.mode.store(RETRY, Ordering::SeqCst);
    say(&store, &alice, "four").await;
    until("four is listed to send again", async || {
        (!store.fed_retry_candidates(&peer_name, "hs.test", 10).await.unwrap().is_empty()).then_some(())
    })
    .await;
    fake.mode.store(ACCEPT, Ordering::SeqCst);
    until("four is sent again and accepted", async || {
        store.fed_retry_candidates(&peer_name, "hs.test", 10).await.unwrap().is_empty().then_some(())
    })
    .await;
    let ids: Vec<String> =
        received(&fake).into_iter().filter(|(_, b)| b.contains(&"four".to_string())).map(|(t, _)| t).collect();
    assert!(ids.len() >= 2 && ids[0] != ids[ids.len() - 1], "a re-send is a new transaction: {ids:?}");
    assert_eq!(count(&fake, "one"), 1, "nothing delivered twice");

    // Ephemeral items go promptly, in a transaction of their own when no event waits.
    sender.typing("room-d1", &alice.fqid, true);
    let edu = until("the typing notice arrives", async || {
        let got = fake.got.lock().unwrap();
        got.iter().flat_map(|(_, b)| b["edus"].as_array().cloned().unwrap_or_default()).next()
    })
    .await;
    assert_eq!(
        edu,
        json!({"edu_type": "typing", "content": {"room_id": "room-d1", "fqid": alice.fqid, "typing": true}})
    );
    let stuck = store.fed_destination_row(&hanging_name).await.unwrap().expect("the hanging peer is a destination");
    assert_eq!(stuck.last_success_at, None, "its first transaction is still waiting");
    sender.stop();
}
