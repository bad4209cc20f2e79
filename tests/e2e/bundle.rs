//! Room export and import as ZIP bundles: a full round trip, every hostile bundle refused with
//! nothing left behind, who may export, and the CLI making the same bundles as the API.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::harness::{BIN, RawBody, Resp, Server, User};

const BOUNDARY: &str = "sw-bundle-test-7c1e";
const MULTIPART: &str = "multipart/form-data; boundary=sw-bundle-test-7c1e";
/// Send limits high enough for a 1,000-message room.
const FAST: &[(&str, &str)] =
    &[("HOMESERVER_TENANT_DEFAULTS__SEND_RATE_PER_S", "100000"), ("HOMESERVER_TENANT_DEFAULTS__SEND_BURST", "100000")];

fn multipart(field: &str, filename: Option<&str>, bytes: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in extra {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"").as_bytes());
    if let Some(f) = filename {
        body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
    }
    body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload_media(s: &Server, u: &User, name: &str, bytes: &[u8]) -> Value {
    let body = multipart("file", Some(name), bytes, &[]);
    let r = s.raw(Method::POST, "/v1/media/upload", Some(&u.token), Some(RawBody::Bytes(body, MULTIPART))).await;
    r.expect(201, "");
    r.data().clone()
}

async fn import(s: &Server, u: &User, bundle: &[u8], workspace: Option<&str>) -> Resp {
    let extra: Vec<(&str, &str)> = workspace.map(|w| vec![("workspace_id", w)]).unwrap_or_default();
    let body = multipart("bundle", Some("bundle.zip"), bundle, &extra);
    s.raw(Method::POST, "/v1/rooms/import", Some(&u.token), Some(RawBody::Bytes(body, MULTIPART))).await
}

/// The raw export: status and bytes (the harness would parse JSON).
pub(crate) async fn export(s: &Server, u: &User, room: &str) -> (u16, Vec<u8>, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/rooms/{room}/export", s.base))
        .bearer_auth(&u.token)
        .send()
        .await
        .expect("request reaches the server");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body").to_vec();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, bytes, json)
}

/// The entries of a bundle, by name, in archive order.
fn entries(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = ZipArchive::new(Cursor::new(bundle)).expect("a readable zip");
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            (f.name().unwrap().to_string(), bytes)
        })
        .collect()
}

fn entry(bundle: &[u8], name: &str) -> Vec<u8> {
    entries(bundle).into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

pub(crate) fn manifest(bundle: &[u8]) -> Value {
    serde_json::from_slice(&entry(bundle, "manifest.json")).unwrap()
}

pub(crate) fn events(bundle: &[u8]) -> Vec<Value> {
    String::from_utf8(entry(bundle, "events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes entries as a new ZIP (deflated unless named in `stored`).
fn build_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        let method = if name.starts_with("media/") { CompressionMethod::Stored } else { CompressionMethod::Deflated };
        z.start_file(name.as_str(), SimpleFileOptions::default().compression_method(method)).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// Rewrites `events.jsonl` with `f` applied to every event, keeping the manifest's count, hash
/// and event list right (`f` applied to its events too), so only the events' own checks can fail.
fn with_events(bundle: &[u8], f: impl Fn(&mut Value)) -> Vec<u8> {
    let mut es = entries(bundle);
    let mut text = String::new();
    let mut listed = Vec::new();
    for mut e in events(bundle) {
        f(&mut e);
        text.push_str(&serde_json::to_string(&e).unwrap());
        text.push('\n');
        listed.push(e);
    }
    let mut m = manifest(bundle);
    m["events_file"]["sha256"] = json!(sha256_hex(text.as_bytes()));
    m["events"] = Value::Array(listed);
    for (name, bytes) in es.iter_mut() {
        match name.as_str() {
            "events.jsonl" => *bytes = text.clone().into_bytes(),
            "manifest.json" => *bytes = serde_json::to_vec(&m).unwrap(),
            _ => {}
        }
    }
    build_zip(&es)
}

/// Every message of a room, oldest first, through `GET /messages`.
async fn all_messages(s: &Server, u: &User, room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = "0".to_string();
    loop {
        let r =
            s.get(&format!("/v1/rooms/{room}/messages?direction=forward&limit=200&from={from}"), Some(&u.token)).await;
        out.extend(r.ok().as_array().unwrap().iter().cloned());
        if r.body["meta"]["has_more"] != true {
            return out;
        }
        from = r.body["meta"]["next_cursor"].as_str().unwrap().to_string();
    }
}

/// What must survive an import: body, media, edit and redaction state, reactions.
fn comparable(m: &Value) -> Value {
    let mut reactions: Vec<(String, i64)> = m["reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["emoji"].as_str().unwrap().to_string(), r["count"].as_i64().unwrap()))
        .collect();
    reactions.sort();
    json!({
        "body": m["content"]["body"],
        "msgtype": m["content"]["msgtype"],
        "has_media": m["content"]["media_id"].is_string(),
        "original_body": m["original_content"]["body"],
        "edited": !m["edited_at"].is_null(),
        "redacted": !m["redacted_at"].is_null(),
        "reactions": reactions,
    })
}

fn media_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.join("media")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

async fn send(s: &Server, u: &User, room: &str, content: Value) -> String {
    let r = s.post(&format!("/v1/rooms/{room}/send"), Some(&u.token), json!({"content": content})).await;
    r.ok()["id"].as_str().unwrap().to_string()
}

/// A room with `n` text messages from alice and bob, two media messages (one file uploaded
/// twice), edits, redactions (of an edited message too) and reactions, one of them taken back.
async fn busy_room(s: &Server, a: &User, b: &User, n: usize) -> (String, Vec<u8>) {
    let room = s.create_room(a, "group", "Busy room").await;
    s.add_member(&room, a, b).await;
    s.put(&format!("/v1/rooms/{room}/topic"), Some(&a.token), json!({"topic": "for export"})).await.ok();
    let picture: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let m1 = upload_media(s, a, "cat.png", &picture).await;
    let m2 = upload_media(s, b, "same-cat.png", &picture).await;
    let m3 = upload_media(s, b, "notes.txt", b"plain notes").await;
    let mut ids = Vec::new();
    for i in 0..n {
        let who = if i.is_multiple_of(3) { b } else { a };
        ids.push(send(s, who, &room, json!({"msgtype": "swp.text", "body": format!("message {i}")})).await);
    }
    for (u, m) in [(a, &m1), (b, &m2), (b, &m3)] {
        let content = json!({"msgtype": "swp.media", "body": m["filename"], "media_id": m["media_id"]});
        ids.push(send(s, u, &room, content).await);
    }
    let reply = json!({"msgtype": "swp.text", "body": "a reply", "reply_to_event_id": ids[1]});
    ids.push(send(s, a, &room, reply).await);
    let sender_of = |i: usize| if i.is_multiple_of(3) { b } else { a };
    for i in (0..n).step_by(20) {
        let path = format!("/v1/rooms/{room}/events/{}/edit", ids[i]);
        s.post(
            &path,
            Some(&sender_of(i).token),
            json!({"content": {"msgtype": "swp.text", "body": format!("edited {i}")}}),
        )
        .await
        .ok();
    }
    for i in (0..n).step_by(7) {
        for (u, emoji) in [(a, "👍"), (b, "👍"), (b, "🎉")] {
            s.post(&format!("/v1/rooms/{room}/events/{}/reaction", ids[i]), Some(&u.token), json!({"emoji": emoji}))
                .await
                .ok();
        }
    }
    let unreact = format!("/v1/rooms/{room}/events/{}/reaction?emoji=%F0%9F%8E%89", ids[7]);
    s.raw(Method::DELETE, &unreact, Some(&b.token), None).await.ok();
    // Redactions: plain, edited (index 40), reacted (index 35), and a media message.
    for i in [3usize, 35, 40, 41, n] {
        let by = if i == n { a } else { sender_of(i) };
        s.post(&format!("/v1/rooms/{room}/events/{}/redact", ids[i]), Some(&by.token), json!({})).await.ok();
    }
    let (status, bundle, body) = export(s, a, &room).await;
    assert_eq!(status, 200, "export failed: {body}");
    (room, bundle)
}

#[tokio::test]
async fn a_room_round_trips_through_a_bundle() {
    let s = Server::start_with_env(FAST).await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let (room, bundle) = busy_room(&s, &a, &b, 1000).await;

    let m = manifest(&bundle);
    assert_eq!(m["format"], "scaiwave.room-export");
    assert_eq!(m["version"], 1);
    assert_eq!(m["server"]["server_name"], "localhost");
    assert!(m["server"]["verify_keys"].as_object().unwrap().len() == 1);
    assert_eq!(m["room"]["id"], room.as_str());
    assert_eq!(m["room"]["topic"], "for export");
    assert_eq!(m["imported_senders"][&b.fqid]["display_name"], "bob");
    assert_eq!(m["media"].as_object().unwrap().len(), 2, "one entry per distinct content");
    let es = events(&bundle);
    assert_eq!(m["events_file"]["count"], es.len());
    // The manifest itself lists every event in order, with full content and signed wire form.
    let listed = m["events"].as_array().expect("manifest.json lists the events");
    assert_eq!(listed, &es, "manifest events and events.jsonl are the same list");
    assert!(listed.iter().all(|e| e["content"].is_object() && e["pdu"]["hashes"]["sha256"].is_string()));
    assert!(es.windows(2).all(|w| w[0]["stream_position"].as_i64() < w[1]["stream_position"].as_i64()));
    assert!(es.iter().all(|e| e["pdu"]["signatures"]["localhost"].is_object()));

    let before = media_files(&s.data_dir());
    let r = import(&s, &a, &bundle, None).await;
    r.expect(201, "");
    let new_room = r.data()["id"].as_str().unwrap().to_string();
    assert!(r.data()["imported_events"].as_u64().unwrap() >= 1004);
    assert_eq!(media_files(&s.data_dir()), before, "identical content is stored once");

    let info = s.get(&format!("/v1/rooms/{new_room}"), Some(&a.token)).await;
    assert_eq!(info.ok()["creator_id"], a.id.as_str());
    assert_eq!(info.ok()["name"], "Busy room");
    assert_eq!(info.ok()["members_count"], 1);

    let old = all_messages(&s, &a, &room).await;
    let new = all_messages(&s, &a, &new_room).await;
    assert_eq!(old.len(), new.len());
    assert_eq!(old.len(), 1004);
    for (o, n) in old.iter().zip(&new) {
        assert_eq!(comparable(o), comparable(n), "\nold: {o}\nnew: {n}");
        assert_eq!(n["sender_id"], a.id.as_str(), "the importer sends every imported event");
        assert_eq!(n["content"]["_imported_sender"]["fqid"], o["sender_fqid"], "{n}");
        assert_eq!(n["content"]["_imported_sender"]["server_name"], "localhost");
    }
    // Reactions keep who reacted.
    let reacted = new.iter().find(|m| m["content"]["body"] == "edited 0").unwrap();
    assert!(reacted["reactions"].as_array().unwrap().iter().any(|r| r["emoji"] == "👍" && r["reacted_by_me"] == true));
    // Media messages point at new media ids with the same bytes; replies at the new event.
    for n in new.iter().filter(|m| m["content"]["msgtype"] == "swp.media") {
        let id = n["content"]["media_id"].as_str().unwrap();
        let info = s.get(&format!("/v1/media/{id}/info"), Some(&a.token)).await;
        assert!(["cat.png", "same-cat.png", "notes.txt"].contains(&info.ok()["filename"].as_str().unwrap()));
    }
    let reply = new.iter().find(|m| m["content"]["body"] == "a reply").unwrap();
    assert_eq!(reply["content"]["reply_to_event_id"], new[1]["id"]);
    // Read markers are not carried over.
    let state = s.get(&format!("/v1/rooms/{new_room}/state"), Some(&a.token)).await;
    assert_eq!(state.ok()["last_read_event_id"], Value::Null);
    assert!(std::fs::read_dir(s.data_dir().join("tmp")).unwrap().next().is_none(), "the spool is removed");
}

/// Everything a refused import must leave untouched.
struct Snapshot {
    rooms: usize,
    position: String,
    media: Vec<PathBuf>,
}

async fn snapshot(s: &Server, u: &User) -> Snapshot {
    let rooms = s.get("/v1/rooms", Some(&u.token)).await.ok().as_array().unwrap().len();
    let position = s.get("/v1/sync", Some(&u.token)).await.ok()["next_cursor"].as_str().unwrap().to_string();
    Snapshot { rooms, position, media: media_files(&s.data_dir()) }
}

#[tokio::test]
async fn hostile_bundles_are_refused_and_leave_nothing_behind() {
    let s = Server::start_with_env(&[("HOMESERVER_MAX_IMPORT_BYTES", "2097152")]).await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let (_, good) = busy_room(&s, &a, &b, 45).await;
    let es = entries(&good);
    let media_name = es.iter().find(|(n, _)| n.starts_with("media/")).unwrap().0.clone();

    let mut cases: Vec<(&str, Vec<u8>)> = vec![("not a zip", b"PK\x03\x04 this is not a zip".to_vec())];
    cases.push(("truncated", good[..good.len() / 2].to_vec()));
    cases.push(("truncated tail", good[..good.len() - 10].to_vec()));
    let mut corrupt = good.clone();
    {
        let mut z = ZipArchive::new(Cursor::new(&good)).unwrap();
        let f = z.by_name("events.jsonl").unwrap();
        let at = (f.data_start().unwrap() + f.compressed_size() / 2) as usize;
        corrupt[at] ^= 0x55;
    }
    cases.push(("corrupt byte", corrupt));
    let mut m = manifest(&good);
    m["version"] = json!(2);
    let mut v2 = es.clone();
    v2.iter_mut().find(|(n, _)| n == "manifest.json").unwrap().1 = serde_json::to_vec(&m).unwrap();
    cases.push(("unknown version", build_zip(&v2)));
    for evil in ["../evil", "/etc/evil", "media/../../evil", "events.jsonl/../../evil"] {
        let mut e = es.clone();
        e.push((evil.to_string(), b"pwned".to_vec()));
        cases.push((evil, build_zip(&e)));
    }
    let mut link = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in &es {
        link.start_file(name.as_str(), SimpleFileOptions::default()).unwrap();
        link.write_all(bytes).unwrap();
    }
    link.add_symlink(format!("media/{}/link", "0".repeat(64)), "/etc/passwd", SimpleFileOptions::default()).unwrap();
    cases.push(("symlink", link.finish().unwrap().into_inner()));
    for (what, size) in [("zip bomb over the cap", 64 << 20), ("zip bomb ratio", 1_500_000)] {
        let mut e = es.clone();
        e.insert(0, (format!("media/{}/zeros", "f".repeat(64)), vec![0u8; size]));
        let mut z = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in &e {
            let o = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
            z.start_file(name.as_str(), o).unwrap();
            z.write_all(bytes).unwrap();
        }
        cases.push((what, z.finish().unwrap().into_inner()));
    }
    let mut swapped = es.clone();
    let media = &mut swapped.iter_mut().find(|(n, _)| *n == media_name).unwrap().1;
    media[5] ^= 1;
    cases.push(("media not matching its hash", build_zip(&swapped)));
    let tamper_body = |e: &mut Value| {
        if e["pdu"]["content"]["body"] == "message 1" {
            e["pdu"]["content"]["body"] = json!("message one");
            e["content"]["body"] = json!("message one");
        }
    };
    cases.push(("tampered content", with_events(&good, tamper_body)));
    cases.push((
        "tampered content with a fixed hash and id",
        with_events(&good, |e| {
            if e["pdu"]["content"]["body"] == "message 2" {
                e["pdu"]["content"]["body"] = json!("message two");
                e["content"]["body"] = json!("message two");
                let hash = crypto::content_hash(&e["pdu"]).unwrap();
                e["pdu"]["hashes"]["sha256"] = json!(hash);
                e["event_id"] = json!(crypto::event_id(&e["pdu"]).unwrap());
            }
        }),
    ));
    cases.push((
        "foreign signature",
        with_events(&good, |e| {
            if let Some(sigs) = e["pdu"]["signatures"]["localhost"].as_object_mut() {
                let (k, v) = sigs.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
                sigs.insert(k, json!(v.as_str().unwrap().chars().rev().collect::<String>()));
            }
        }),
    ));
    cases.push(("a dropped event", {
        let mut es2 = entries(&good);
        let text = String::from_utf8(entry(&good, "events.jsonl")).unwrap();
        let kept: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        es2.iter_mut().find(|(n, _)| n == "events.jsonl").unwrap().1 = kept.into_bytes();
        build_zip(&es2)
    }));

    let before = snapshot(&s, &a).await;
    for (what, bundle) in &cases {
        let r = import(&s, &a, bundle, None).await;
        assert_eq!((r.status, r.code()), (400, "SW_ROOM_IMPORT_REFUSED"), "{what}: {}", r.body);
        let after = snapshot(&s, &a).await;
        assert_eq!(after.rooms, before.rooms, "{what}: a room was left behind");
        assert_eq!(after.position, before.position, "{what}: an event was left behind");
        assert_eq!(after.media, before.media, "{what}: a media file was left behind");
        assert!(std::fs::read_dir(s.data_dir().join("tmp")).unwrap().next().is_none(), "{what}: spool left");
    }
    // The untouched bundle still imports (the cases were refused for what they changed).
    import(&s, &a, &good, Some(&a.workspace_id)).await.expect(201, "");
    import(&s, &b, &good, Some(&a.workspace_id)).await.expect(400, "SW_BAD_REQUEST");
}

#[tokio::test]
async fn who_may_export() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let c = s.register("carol").await;
    let group = s.create_room(&a, "group", "Private").await;
    let (status, _, body) = export(&s, &c, &group).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("SW_ROOM_NOT_FOUND")));
    let public = s.create_room(&a, "public", "Lobby").await;
    let (status, _, body) = export(&s, &c, &public).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("SW_NOT_MEMBER")));
    s.add_member(&public, &a, &c).await;
    let (status, bundle, _) = export(&s, &c, &public).await;
    assert_eq!(status, 200, "any joined member may export");
    assert_eq!(manifest(&bundle)["exported_by"], c.fqid.as_str());
    let incognito = s.create_room(&a, "incognito", "Secret").await;
    let (status, _, body) = export(&s, &a, &incognito).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("SW_ROOM_EXPORT_REFUSED")));
    let (status, _, _) = export(&s, &a, "not-a-room").await;
    assert_eq!(status, 400);
}

/// Runs the CLI with `stdin`, answering (success, stdout bytes, stderr).
fn cli(s: &Server, args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(s.data_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run homeserver cli");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn without_export_time(mut m: Value) -> Value {
    m.as_object_mut().unwrap().remove("exported_at");
    m
}

#[tokio::test]
async fn the_cli_makes_and_reads_the_same_bundles() {
    let s = Server::start_with_env(FAST).await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let (room, api_bundle) = busy_room(&s, &a, &b, 60).await;

    let (ok, cli_bundle, err) = cli(&s, &["room", "export", &room, "--as", "alice"], b"");
    assert!(ok, "cli export failed: {err}");
    assert!(err.is_empty(), "quiet when stderr is not a terminal: {err}");
    assert_eq!(without_export_time(manifest(&cli_bundle)), without_export_time(manifest(&api_bundle)));
    assert_eq!(entry(&cli_bundle, "events.jsonl"), entry(&api_bundle, "events.jsonl"));
    let names = |b: &[u8]| entries(b).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(&cli_bundle), names(&api_bundle));
    // Without --as the creator exports.
    let (ok, default_bundle, err) = cli(&s, &["room", "export", &room], b"");
    assert!(ok, "{err}");
    assert_eq!(manifest(&default_bundle)["exported_by"], a.fqid.as_str());
    let (ok, _, err) = cli(&s, &["room", "export", &room, "--as", "nobody"], b"");
    assert!(!ok && err.contains("no local user"), "{err}");

    let (ok, out, err) = cli(&s, &["room", "import", &a.workspace_id], &cli_bundle);
    assert!(ok, "cli import failed: {err}");
    let answer: Value = serde_json::from_slice(&out).unwrap();
    let cli_room = answer["id"].as_str().unwrap().to_string();
    let api = import(&s, &a, &api_bundle, None).await;
    assert_eq!(answer["imported_events"], api.ok()["imported_events"]);
    let api_room = api.ok()["id"].as_str().unwrap().to_string();
    let via_cli: Vec<Value> = all_messages(&s, &a, &cli_room).await.iter().map(comparable).collect();
    let via_api: Vec<Value> = all_messages(&s, &a, &api_room).await.iter().map(comparable).collect();
    assert_eq!(via_cli, via_api);
    let rooms = s.get("/v1/rooms", Some(&a.token)).await;
    assert!(rooms.ok().as_array().unwrap().iter().any(|r| r["id"] == cli_room.as_str()));

    let (ok, _, err) = cli(&s, &["room", "import", &a.workspace_id], b"garbage");
    assert!(!ok && err.contains("SW_ROOM_IMPORT_REFUSED"), "{err}");
    let (ok, _, err) = cli(&s, &["room", "import", &a.workspace_id, "--as", "bob"], &cli_bundle);
    assert!(!ok, "bob does not own alice's workspace: {err}");
    let mut counts = BTreeMap::new();
    for r in rooms.ok().as_array().unwrap() {
        *counts.entry(r["name"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("Busy room"), Some(&3), "the refused imports left no room: {counts:?}");
}

fn temp_files(data_dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(data_dir.join("tmp")) else { return Vec::new() };
    rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(prefix)).collect()
}

/// Exports are written to a temp file at disk speed and streamed from it as it grows: clients
/// that never read their body hold no database connection (the pool has 8), and the temp files
/// go when they disconnect.
#[tokio::test]
async fn stalled_exports_do_not_take_the_database() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Big").await;
    // Far more than socket buffers hold, so an unread body really stalls its sender.
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let m = upload_media(&s, &a, "big.bin", &big).await;
    send(&s, &a, &room, json!({"msgtype": "swp.media", "body": "big", "media_id": m["media_id"]})).await;
    let client = reqwest::Client::new();
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let resp = client
            .get(format!("{}/v1/rooms/{room}/export", s.base))
            .bearer_auth(&a.token)
            .send()
            .await
            .expect("export answers its headers");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.content_length().is_none(), "the body streams while it is written");
        stalled.push(resp);
    }
    // The server still reads and writes the database while ten clients read nothing.
    let check = async {
        s.get("/v1/rooms", Some(&a.token)).await.ok();
        send(&s, &a, &room, json!({"msgtype": "swp.text", "body": "still up"})).await;
        let (status, bundle, _) = export(&s, &a, &room).await;
        assert_eq!(status, 200);
        assert_eq!(manifest(&bundle)["events_file"]["count"], events(&bundle).len());
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), check).await.expect("the server is not starved");
    let last = stalled.pop().unwrap();
    let body = last.bytes().await.unwrap();
    assert_eq!(manifest(&body)["media"].as_object().unwrap().len(), 1, "a stalled export completes when read");
    drop(stalled);
    let data_dir = s.data_dir();
    crate::harness::eventually(std::time::Duration::from_secs(10), || {
        let left = temp_files(&data_dir, "export-");
        async move { left.is_empty().then_some(()) }
    })
    .await;
}

/// Rewrites `manifest.json` with `f`.
fn with_manifest(bundle: &[u8], f: impl Fn(&mut Value)) -> Vec<u8> {
    let mut es = entries(bundle);
    let mut m = manifest(bundle);
    f(&mut m);
    es.iter_mut().find(|(n, _)| n == "manifest.json").unwrap().1 = serde_json::to_vec(&m).unwrap();
    build_zip(&es)
}

/// The manifest's `events` must list exactly the events of `events.jsonl`, in the same order
/// and with the same members: a bundle whose manifest drops, reorders, changes or adds an event
/// (everything else intact: `events.jsonl`, its count and hash, the media) is refused whole.
#[tokio::test]
async fn a_manifest_that_disagrees_with_its_events_is_refused() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.create_room(&a, "group", "Lists").await;
    s.add_member(&room, &a, &b).await;
    let first = send(&s, &a, &room, json!({"msgtype": "swp.text", "body": "first"})).await;
    send(&s, &b, &room, json!({"msgtype": "swp.text", "body": "second"})).await;
    let edit = json!({"content": {"msgtype": "swp.text", "body": "first, edited"}});
    s.post(&format!("/v1/rooms/{room}/events/{first}/edit"), Some(&a.token), edit).await.ok();
    s.post(&format!("/v1/rooms/{room}/events/{first}/reaction"), Some(&b.token), json!({"emoji": "👍"})).await.ok();
    let (status, good, body) = export(&s, &a, &room).await;
    assert_eq!(status, 200, "export failed: {body}");
    let n = events(&good).len();
    let is_body = |e: &Value, body: &str| e["event_type"] == "swp.room.message" && e["pdu"]["content"]["body"] == body;
    let at = |body: &str| events(&good).iter().position(|e| is_body(e, body)).unwrap();
    let (i_first, i_second) = (at("first"), at("second"));

    let listed = |f: &dyn Fn(&mut Vec<Value>)| {
        with_manifest(&good, |m| {
            let mut es = m["events"].as_array().unwrap().clone();
            f(&mut es);
            m["events"] = Value::Array(es);
        })
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("one event dropped", listed(&|es| drop(es.remove(i_second)))),
        ("the last event dropped", listed(&|es| drop(es.pop()))),
        ("two events swapped", listed(&|es| es.swap(i_first, i_second))),
        ("a body changed", listed(&|es| es[i_second]["content"]["body"] = json!("forged"))),
        ("a signed body changed", listed(&|es| es[i_second]["pdu"]["content"]["body"] = json!("forged"))),
        ("an event id changed", listed(&|es| es[i_second]["event_id"] = es[i_first]["event_id"].clone())),
        ("an unknown member added", listed(&|es| es[i_second]["note"] = json!("extra"))),
        ("an event added", listed(&|es| es.push(es[i_second].clone()))),
        ("an event listed twice, one dropped", listed(&|es| es[i_second] = es[i_first].clone())),
        ("no events listed", with_manifest(&good, |m| drop(m.as_object_mut().unwrap().remove("events")))),
        ("events not an array", with_manifest(&good, |m| m["events"] = json!({}))),
    ];

    let before = snapshot(&s, &a).await;
    for (what, bundle) in &cases {
        assert_eq!(events(bundle).len(), n, "{what}: events.jsonl is untouched");
        let r = import(&s, &a, bundle, None).await;
        assert_eq!((r.status, r.code()), (400, "SW_ROOM_IMPORT_REFUSED"), "{what}: {}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("manifest.json") && message.contains("events"), "{what}: {message}");
        let after = snapshot(&s, &a).await;
        assert_eq!(after.rooms, before.rooms, "{what}: a room was left behind");
        assert_eq!(after.position, before.position, "{what}: an event was left behind");
        assert!(std::fs::read_dir(s.data_dir().join("tmp")).unwrap().next().is_none(), "{what}: spool left");
    }
    // Re-encoding the manifest (other whitespace and key order) changes nothing that counts.
    let reencoded = with_manifest(&good, |_| {});
    assert_ne!(entry(&reencoded, "manifest.json"), entry(&good, "manifest.json"));
    import(&s, &a, &reencoded, None).await.expect(201, "");
}

/// The author of an imported event is its signed sender; the unsigned manifest only lends a
/// display name, which must be a valid one.
#[tokio::test]
async fn imported_authors_come_from_the_signatures() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.create_room(&a, "group", "Authors").await;
    s.add_member(&room, &a, &b).await;
    send(&s, &b, &room, json!({"msgtype": "swp.text", "body": "from bob"})).await;
    let (_, bundle, _) = export(&s, &a, &room).await;

    let bob = b.fqid.clone();
    let forged = with_manifest(&bundle, |m| m["imported_senders"][&bob]["fqid"] = json!("@ceo:localhost"));
    import(&s, &a, &forged, None).await.expect(400, "SW_ROOM_IMPORT_REFUSED");
    let long = with_manifest(&bundle, |m| m["imported_senders"][&bob]["display_name"] = json!("x".repeat(129)));
    import(&s, &a, &long, None).await.expect(400, "SW_ROOM_IMPORT_REFUSED");
    let blank = with_manifest(&bundle, |m| m["imported_senders"][&bob]["display_name"] = json!("  "));
    import(&s, &a, &blank, None).await.expect(400, "SW_ROOM_IMPORT_REFUSED");

    let renamed = with_manifest(&bundle, |m| {
        m["imported_senders"][&bob]["display_name"] = json!("Robert");
        m["imported_senders"][&bob]["server_name"] = json!("elsewhere.test");
    });
    let r = import(&s, &a, &renamed, None).await;
    r.expect(201, "");
    let new_room = r.data()["id"].as_str().unwrap().to_string();
    let msgs = all_messages(&s, &a, &new_room).await;
    let m = msgs.iter().find(|m| m["content"]["body"] == "from bob").unwrap();
    assert_eq!(
        m["content"]["_imported_sender"],
        json!({"fqid": bob, "display_name": "Robert", "server_name": "localhost"})
    );
}

/// Members cannot write `_imported_*` keys, and a re-import names the signed sender as author,
/// keeping an earlier import's author only as `_imported_previous`.
#[tokio::test]
async fn imported_keys_cannot_be_forged() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = s.create_room(&a, "group", "Forgery").await;
    s.add_member(&room, &a, &b).await;
    let forged = json!({"msgtype": "swp.text", "body": "hi", "_imported_sender": {"fqid": "@ceo:localhost"}});
    let r = s.post(&format!("/v1/rooms/{room}/send"), Some(&b.token), json!({"content": forged})).await;
    r.expect(400, "SW_BAD_REQUEST");
    let id = send(&s, &b, &room, json!({"msgtype": "swp.text", "body": "hi"})).await;
    let edit = json!({"content": {"msgtype": "swp.text", "body": "hi", "_imported_origin_ts": 1}});
    s.post(&format!("/v1/rooms/{room}/events/{id}/edit"), Some(&b.token), edit).await.expect(400, "SW_BAD_REQUEST");

    // Import once (bob's message now sent by alice, crediting bob), export, import again.
    let (_, first, _) = export(&s, &a, &room).await;
    let r1 = import(&s, &a, &first, None).await;
    let room1 = r1.ok()["id"].as_str().unwrap().to_string();
    let (_, second, _) = export(&s, &a, &room1).await;
    let r2 = import(&s, &b, &second, None).await;
    let room2 = r2.ok()["id"].as_str().unwrap().to_string();
    let msgs = all_messages(&s, &b, &room2).await;
    let m = msgs.iter().find(|m| m["content"]["body"] == "hi").unwrap();
    assert_eq!(m["content"]["_imported_sender"]["fqid"], a.fqid.as_str(), "the signed sender: {m}");
    assert_eq!(m["content"]["_imported_previous"]["sender"]["fqid"], b.fqid.as_str(), "{m}");
}

#[tokio::test]
async fn import_request_limits() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Limits").await;
    send(&s, &a, &room, json!({"msgtype": "swp.text", "body": "x"})).await;
    let (_, bundle, _) = export(&s, &a, &room).await;
    // A workspace_id field over 256 bytes.
    let long = "w".repeat(300);
    import(&s, &a, &bundle, Some(&long)).await.expect(400, "SW_BAD_REQUEST");
    // Over 100,000 entries: refused on the end record, before the directory is read.
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..100_001u32 {
        z.start_file(format!("{i}"), SimpleFileOptions::default().compression_method(CompressionMethod::Stored))
            .unwrap();
    }
    let many = z.finish().unwrap().into_inner();
    let r = import(&s, &a, &many, None).await;
    r.expect(400, "SW_ROOM_IMPORT_REFUSED");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("100000 entries"), "{}", r.body);
    assert!(temp_files(&s.data_dir(), "import-").is_empty());
}

/// A redaction's target is its signed `redacts`, whatever the unsigned `relates_to` says.
#[tokio::test]
async fn redaction_targets_come_from_the_signature() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let room = s.create_room(&a, "group", "Redactions").await;
    let gone = send(&s, &a, &room, json!({"msgtype": "swp.text", "body": "gone"})).await;
    let other = send(&s, &a, &room, json!({"msgtype": "swp.text", "body": "other"})).await;
    s.post(&format!("/v1/rooms/{room}/events/{gone}/redact"), Some(&a.token), json!({})).await.ok();
    let (_, bundle, _) = export(&s, &a, &room).await;
    let is_redaction = |e: &Value| e["event_type"] == "swp.room.redaction";
    // Marked redacted (its signed form is already redacted: no reason) with no relates_to.
    let nulled = with_events(&bundle, |e| {
        if is_redaction(e) {
            e["redacted_at"] = json!(1);
            e["relates_to"] = Value::Null;
        }
    });
    let r = import(&s, &a, &nulled, None).await;
    r.expect(201, "");
    let msgs = all_messages(&s, &a, r.data()["id"].as_str().unwrap()).await;
    assert!(msgs.iter().any(|m| m["content"]["_imported_sender"].is_object() && !m["redacted_at"].is_null()));
    assert!(msgs.iter().any(|m| m["content"]["body"] == "other" && m["redacted_at"].is_null()));
    let retargeted = with_events(&bundle, |e| {
        if is_redaction(e) {
            e["relates_to"] = json!(other);
        }
    });
    import(&s, &a, &retargeted, None).await.expect(400, "SW_ROOM_IMPORT_REFUSED");
}

/// Spool files of a crashed process are swept at start; those of a live process stay.
#[tokio::test]
async fn stale_spool_files_are_swept_at_start() {
    let mut s = Server::start().await;
    let tmp = s.data_dir().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let live = format!("import-{}-live.zip", std::process::id());
    for name in ["import-999999999-dead.zip", "import-old.zip", "export-999999999-dead.zip", live.as_str()] {
        std::fs::write(tmp.join(name), b"partial").unwrap();
    }
    s.restart().await;
    assert_eq!(temp_files(&s.data_dir(), "import-"), vec![live.clone()]);
    assert!(temp_files(&s.data_dir(), "export-").is_empty());
    std::fs::remove_file(tmp.join(live)).unwrap();
}

/// A send on behalf of another keeps its real sender through export and import: the bundle
/// carries the signed `content.sent_by`; the import, whose importer sends everything, keeps it as
/// `_imported_sent_by` beside the author, never as a `sent_by` of the new room.
#[tokio::test]
async fn a_send_on_behalf_keeps_its_real_sender_through_a_bundle() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let bot = s.register("bot").await;
    let room = s.create_room(&a, "group", "On behalf").await;
    s.add_member(&room, &a, &bot).await;
    let r = s
        .post(
            &format!("/v1/rooms/{room}/send"),
            Some(&a.token),
            json!({"content": {"msgtype": "swp.text", "body": "beep"}, "as_participant_id": bot.id}),
        )
        .await;
    r.expect(201, "");
    let (status, bundle, _) = export(&s, &a, &room).await;
    assert_eq!(status, 200);
    let line = events(&bundle).into_iter().find(|e| e["content"]["body"] == "beep").expect("exported");
    assert_eq!(line["content"]["sent_by"], a.fqid.as_str());
    assert_eq!(line["pdu"]["content"]["sent_by"], a.fqid.as_str());
    assert_eq!(line["pdu"]["sender"], bot.fqid.as_str());

    let imported = import(&s, &bot, &bundle, None).await;
    let new_room = imported.ok()["id"].as_str().unwrap().to_string();
    let msgs = all_messages(&s, &bot, &new_room).await;
    let m = msgs.iter().find(|m| m["content"]["body"] == "beep").unwrap();
    assert_eq!(m["sender_id"], bot.id.as_str(), "the importer sent it here");
    assert!(m["content"].get("sent_by").is_none(), "{m}");
    assert_eq!(m["content"]["_imported_sent_by"], a.fqid.as_str(), "{m}");
    assert_eq!(m["content"]["_imported_sender"]["fqid"], bot.fqid.as_str(), "{m}");
}
