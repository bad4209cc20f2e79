//! A malformed-input sweep over every route of `api/mod.rs`: broken JSON, bodies that are not
//! objects, wrong field types, oversize bodies, NUL bytes and unicode, hostile ids in paths,
//! bad query parameters and wrong content types. Every answer must be a 4xx with an `SW_`
//! code (the specific one where docs/api.md names it), never a 5xx, and the server must keep
//! serving afterwards.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Server, User};

/// What a probe accepts.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Exactly this status and code.
    Is(u16, &'static str),
    /// Any 4xx with an `SW_` code (e.g. the client normalised `..` away and hit another route).
    Client,
    /// A 2xx, or a 4xx with an `SW_` code: the input is odd but may be legitimate.
    Handled,
}

const BAD: Want = Want::Is(400, "SW_BAD_REQUEST");
const TOO_LARGE: Want = Want::Is(413, "SW_CONTENT_TOO_LARGE");

/// How a body field may be abused.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// An id or enum value: any NUL or non-ASCII value is a bad shape (400).
    Id,
    /// Free text (names, passwords, reasons): NUL and unicode may be accepted, never a 5xx.
    Text,
    /// Free text with a documented length bound: 10k characters is a 400.
    Bounded,
    Int,
    Bool,
    StrList,
}

/// Who calls an endpoint.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    None,
    Owner,
    /// A fresh session per probe (logout ends the session it is called with).
    Fresh,
}

struct Endpoint {
    method: Method,
    /// `{room}` and `{pid}` are filled in; `{room}` of lifecycle routes gets a room of its own.
    path: &'static str,
    auth: Auth,
    /// A valid body that the field probes start from (`Null`: no body at all, a GET).
    base: Value,
    fields: &'static [(&'static str, Kind)],
    /// Whether `{}` lacks a required field.
    required: bool,
}

fn endpoints(u: &Fix) -> Vec<Endpoint> {
    use Kind::*;
    let ep = |method: Method, path, auth, base: Value, fields, required| Endpoint {
        method,
        path,
        auth,
        base,
        fields,
        required,
    };
    let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
    let target = json!({"participant_id": u.target.id, "reason": "because"});
    let who: &'static [(&str, Kind)] = &[("participant_id", Id), ("fqid", Id), ("reason", Text)];
    vec![
        ep(
            post.clone(),
            "/v1/auth/register",
            Auth::None,
            json!({"username": "UNIQ", "password": "password-123", "display_name": "D"}),
            &[("username", Id), ("password", Bounded), ("display_name", Bounded), ("tenant_id", Text)],
            true,
        ),
        ep(
            post.clone(),
            "/v1/auth/token",
            Auth::None,
            json!({"grant_type": "password", "username": u.owner.name, "password": format!("password-of-{}", u.owner.name)}),
            &[("grant_type", Id), ("username", Text), ("password", Text), ("refresh_token", Text)],
            true,
        ),
        ep(
            post.clone(),
            "/v1/auth/refresh",
            Auth::None,
            json!({"refresh_token": "swr_nope"}),
            &[("refresh_token", Text)],
            true,
        ),
        ep(post.clone(), "/v1/auth/logout", Auth::Fresh, json!({}), &[], false),
        ep(get.clone(), "/v1/auth/whoami", Auth::Owner, Value::Null, &[], false),
        ep(get.clone(), "/v1/workspaces", Auth::Owner, Value::Null, &[], false),
        ep(post.clone(), "/v1/workspaces", Auth::Owner, json!({"name": "ws"}), &[("name", Text)], true),
        ep(get.clone(), "/v1/participants/{pid}", Auth::Owner, Value::Null, &[], false),
        ep(get.clone(), "/v1/directory/rooms", Auth::Owner, Value::Null, &[], false),
        ep(get.clone(), "/v1/rooms", Auth::Owner, Value::Null, &[], false),
        ep(
            post.clone(),
            "/v1/rooms",
            Auth::Owner,
            json!({"name": "probe", "topic": "t", "room_type": "group"}),
            &[
                ("name", Bounded),
                ("topic", Bounded),
                ("room_type", Id),
                ("is_public", Bool),
                ("workspace_id", Id),
                ("scope_kind", Id),
            ],
            true,
        ),
        ep(get.clone(), "/v1/rooms/archived", Auth::Owner, Value::Null, &[], false),
        ep(post.clone(), "/v1/rooms/dm", Auth::Owner, json!({"participant_id": u.target.id}), &who[..2], true),
        ep(get.clone(), "/v1/rooms/{room}", Auth::Owner, Value::Null, &[], false),
        ep(get.clone(), "/v1/rooms/{room}/members", Auth::Owner, Value::Null, &[], false),
        ep(
            put.clone(),
            "/v1/rooms/{room}/members/{pid}/power-level",
            Auth::Owner,
            json!({"power_level": 10}),
            &[("power_level", Int)],
            true,
        ),
        ep(
            post.clone(),
            "/v1/rooms/{room}/join",
            Auth::Owner,
            json!({"via": ["localhost"]}),
            &[("via", StrList)],
            false,
        ),
        ep(post.clone(), "/v1/rooms/{room}/leave", Auth::Owner, json!({}), &[], false),
        ep(post.clone(), "/v1/rooms/{room}/close", Auth::Owner, json!({}), &[], false),
        ep(post.clone(), "/v1/rooms/{room}/archive", Auth::Owner, json!({}), &[], false),
        ep(post.clone(), "/v1/rooms/{room}/rejoin", Auth::Owner, json!({}), &[], false),
        ep(post.clone(), "/v1/rooms/{room}/invite", Auth::Owner, target.clone(), who, true),
        ep(post.clone(), "/v1/rooms/{room}/invitations", Auth::Owner, json!({"fqid": u.target.fqid}), who, true),
        ep(post.clone(), "/v1/rooms/{room}/kick", Auth::Owner, target.clone(), who, true),
        ep(post.clone(), "/v1/rooms/{room}/ban", Auth::Owner, target.clone(), who, true),
        ep(post.clone(), "/v1/rooms/{room}/unban", Auth::Owner, target, who, true),
        ep(put.clone(), "/v1/rooms/{room}/name", Auth::Owner, json!({"name": "n"}), &[("name", Bounded)], true),
        ep(put.clone(), "/v1/rooms/{room}/topic", Auth::Owner, json!({"topic": "t"}), &[("topic", Bounded)], false),
        ep(
            put.clone(),
            "/v1/rooms/{room}/workspace",
            Auth::Owner,
            json!({"workspace_id": u.owner.workspace_id}),
            &[("workspace_id", Id)],
            true,
        ),
        ep(
            put.clone(),
            "/v1/rooms/{room}/notification-mode",
            Auth::Owner,
            json!({"mode": "all"}),
            &[("mode", Id)],
            true,
        ),
        ep(put.clone(), "/v1/rooms/{room}/mute", Auth::Owner, json!({"until": null}), &[("until", Int)], true),
        ep(
            put,
            "/v1/rooms/{room}/read",
            Auth::Owner,
            json!({"event_id": "evt-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            &[("event_id", Id)],
            true,
        ),
    ]
}

/// The fixture: the caller, an unrelated target participant, and rooms.
struct Fix {
    owner: User,
    target: User,
    room: String,
    /// One room per route that would change the room or the caller's place in it.
    own_rooms: Vec<(&'static str, String)>,
}

/// A request and what the sweep expects of it.
struct Probe {
    what: String,
    method: Method,
    path: String,
    auth: Auth,
    body: Option<(Vec<u8>, &'static str)>,
    want: Want,
}

const JSON: &str = "application/json";

fn with(base: &Value, field: &str, v: Value) -> Vec<u8> {
    let mut b = base.clone();
    // `participant_id` wins over `fqid`: drop it so the fqid is what gets read.
    if field == "fqid" {
        b.as_object_mut().unwrap().remove("participant_id");
    }
    b[field] = v;
    serde_json::to_vec(&b).unwrap()
}

/// Bodies that are not a JSON object, or not JSON at all: 400 everywhere a body is read.
fn broken_bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let nested = "[".repeat(5000) + &"]".repeat(5000);
    vec![
        ("truncated JSON", b"{".to_vec(), JSON),
        ("unterminated string", br#"{"name": "abc"#.to_vec(), JSON),
        ("trailing garbage", b"{} x".to_vec(), JSON),
        ("JSON array", b"[]".to_vec(), JSON),
        ("JSON array of objects", br#"[{"name": "x"}]"#.to_vec(), JSON),
        ("JSON string", br#""hello""#.to_vec(), JSON),
        ("JSON number", b"42".to_vec(), JSON),
        ("JSON null", b"null".to_vec(), JSON),
        ("JSON true", b"true".to_vec(), JSON),
        ("invalid UTF-8", b"{\"name\": \"\xff\xfe\"}".to_vec(), JSON),
        ("raw NUL inside a string", b"{\"name\": \"a\x00b\"}".to_vec(), JSON),
        ("lone surrogate escape", br#"{"name": "\ud800"}"#.to_vec(), JSON),
        ("5000-deep nesting", nested.into_bytes(), JSON),
        ("form body", b"name=x&participant_id=y".to_vec(), "application/x-www-form-urlencoded"),
        ("XML body", b"<name>x</name>".to_vec(), "application/xml"),
        (
            "multipart body",
            b"--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--b--\r\n".to_vec(),
            "multipart/form-data; boundary=b",
        ),
        ("plain text", b"hello".to_vec(), "text/plain"),
    ]
}

fn wrong_types(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Id | Kind::Text | Kind::Bounded => {
            vec![json!(5), json!(-1.5), json!({}), json!({"a": "b"}), json!(["x"]), json!(true)]
        }
        Kind::Int => vec![json!("10"), json!(1.5), json!(true), json!({}), json!([1]), json!(1e300)],
        Kind::Bool => vec![json!("true"), json!(1), json!({}), json!([true])],
        Kind::StrList => vec![json!("localhost"), json!([1]), json!({}), json!([["a"]]), json!(7)],
    }
}

const ODD_STRINGS: &[&str] =
    &["a\u{0}b", "\u{0}", "héllo wörld", "🎉🚀 עברית \u{202e}abc", "e\u{301}\u{301}\u{301}", "\u{feff}"];

fn body_probes(ep: &Endpoint, path: &str, out: &mut Vec<Probe>) {
    let probe = |what: String, body: Vec<u8>, ct: &'static str, want: Want| Probe {
        what: format!("{} {path}: {what}", ep.method),
        method: ep.method.clone(),
        path: path.to_string(),
        auth: ep.auth,
        body: Some((body, ct)),
        want,
    };
    for (what, body, ct) in broken_bodies() {
        out.push(probe(what.to_string(), body, ct, BAD));
    }
    // The token endpoint also reads forms: a JSON body labelled as a form is still bad.
    if path == "/v1/auth/token" {
        let j = serde_json::to_vec(&ep.base).unwrap();
        out.push(probe("JSON labelled as a form".into(), j, "application/x-www-form-urlencoded", BAD));
        out.push(probe(
            "form with an unknown grant".into(),
            b"grant_type=magic".to_vec(),
            "application/x-www-form-urlencoded",
            BAD,
        ));
        out.push(probe(
            "form missing grant_type".into(),
            b"username=a".to_vec(),
            "application/x-www-form-urlencoded",
            BAD,
        ));
        let big = format!("grant_type=password&username={}", "a".repeat(2 << 20)).into_bytes();
        out.push(probe("2 MB form".into(), big, "application/x-www-form-urlencoded", TOO_LARGE));
    }
    let required = if ep.required { BAD } else { Want::Handled };
    out.push(probe("empty body".into(), Vec::new(), JSON, required));
    out.push(probe("empty body without content-type".into(), Vec::new(), "", required));
    out.push(probe("empty object".into(), b"{}".to_vec(), JSON, required));
    // 2 MB: over the 1 MiB body limit, whatever the field.
    let big = "x".repeat(2 << 20);
    if let Some(&(field, _)) = ep.fields.first() {
        out.push(probe(format!("2 MB string in {field}"), with(&ep.base, field, json!(big)), JSON, TOO_LARGE));
    }
    out.push(probe("2 MB unknown field".into(), with(&ep.base, "padding", json!(big)), JSON, TOO_LARGE));
    out.push(probe("2 MB of non-JSON".into(), big.clone().into_bytes(), JSON, TOO_LARGE));
    for &(field, kind) in ep.fields {
        for v in wrong_types(kind) {
            out.push(probe(format!("{field} = {v}"), with(&ep.base, field, v), JSON, BAD));
        }
        if matches!(kind, Kind::Id | Kind::Text | Kind::Bounded) {
            let want = if kind == Kind::Id { BAD } else { Want::Handled };
            for s in ODD_STRINGS {
                out.push(probe(format!("{field} = {s:?}"), with(&ep.base, field, json!(s)), JSON, want));
            }
            let long = if kind == Kind::Text { Want::Handled } else { BAD };
            out.push(probe(
                format!("{field} = 10k chars"),
                with(&ep.base, field, json!("é".repeat(10_000))),
                JSON,
                long,
            ));
        }
    }
}

/// Hostile values for an id in the path, percent-encoded as sent. Raw `..` segments are
/// resolved by the client before sending, so those may land on another route (any SW_ 4xx).
fn bad_path_ids(prefix: &str) -> Vec<(String, Want)> {
    let empty = if prefix.is_empty() { Want::Client } else { BAD };
    vec![
        (format!("{prefix}..%2F..%2Fx"), BAD),
        (format!("{prefix}../../x"), Want::Client),
        ("%2E%2E".into(), Want::Client),
        ("%00".into(), BAD),
        (format!("{prefix}%00"), BAD),
        (format!("{prefix}{}", "A".repeat(10_000)), BAD),
        (prefix.into(), empty),
        (format!("{prefix}%C3%A9t%C3%A9"), BAD),
        ("%F0%9F%8E%89".into(), BAD),
        (format!("{prefix}a%20b"), BAD),
        (format!("{prefix}%FF%FE"), BAD),
        (format!("{prefix}a%27%3B--"), BAD),
    ]
}

fn probes(fix: &Fix) -> Vec<Probe> {
    let mut out = Vec::new();
    for ep in endpoints(fix) {
        let room = fix
            .own_rooms
            .iter()
            .find(|(suffix, _)| ep.path.ends_with(suffix))
            .map_or(fix.room.as_str(), |(_, r)| r.as_str());
        let path = ep.path.replace("{room}", room).replace("{pid}", &fix.target.id);
        if ep.method != Method::GET {
            body_probes(&ep, &path, &mut out);
        }
        // Bad ids in every path slot; the body (if any) is valid, so the id is what fails.
        for (slot, prefix) in [("{room}", "room-"), ("{pid}", "")] {
            if !ep.path.contains(slot) {
                continue;
            }
            for (id, want) in bad_path_ids(prefix) {
                let p = ep.path.replace(slot, &id).replace("{room}", room).replace("{pid}", &fix.target.id);
                let body = (!ep.base.is_null()).then(|| (serde_json::to_vec(&ep.base).unwrap(), JSON));
                let short: String = id.chars().take(24).collect();
                out.push(Probe {
                    what: format!("{} {}: {slot} = {short}", ep.method, ep.path),
                    method: ep.method.clone(),
                    path: p,
                    auth: ep.auth,
                    body,
                    want,
                });
            }
        }
    }
    // Participants are also named by fqid: a malformed one is a bad request.
    for id in ["@", "@bad", "@UPPER:localhost", "@a:", "@a:b:c:d", "@%00:localhost", "@a:bad%20host"] {
        let path = format!("/v1/participants/{id}");
        out.push(Probe {
            what: format!("GET {path}"),
            method: Method::GET,
            path,
            auth: Auth::Owner,
            body: None,
            want: BAD,
        });
    }
    let queries = [
        ("/v1/directory/rooms", "limit=-1"),
        ("/v1/directory/rooms", "limit=abc"),
        ("/v1/directory/rooms", "limit=0"),
        ("/v1/directory/rooms", "limit=1.5"),
        ("/v1/directory/rooms", "offset=-5"),
        ("/v1/directory/rooms", "offset=abc"),
        ("/v1/directory/rooms", "room_type=nope"),
        ("/v1/directory/rooms", "room_type=GROUP"),
        ("/v1/directory/rooms", "room_type=%00"),
        ("/v1/directory/rooms", "limit=%FF"),
        ("/v1/rooms/{room}/members", "membership=nope"),
        ("/v1/rooms/{room}/members", "membership=JOIN"),
        ("/v1/rooms/{room}/members", "membership="),
    ];
    for (path, q) in queries {
        let path = format!("{}?{q}", path.replace("{room}", &fix.room));
        out.push(Probe {
            what: format!("GET {path}"),
            method: Method::GET,
            path,
            auth: Auth::Owner,
            body: None,
            want: BAD,
        });
    }
    let q = format!("q={}", "x".repeat(300));
    for (path, want) in [
        (format!("/v1/directory/rooms?{q}"), BAD),
        ("/v1/directory/rooms?q=%00%F0%9F%8E%89".into(), Want::Handled),
        ("/v1/directory/rooms?unknown=1&limit=5".into(), Want::Handled),
    ] {
        out.push(Probe { what: format!("GET {path}"), method: Method::GET, path, auth: Auth::Owner, body: None, want });
    }
    out
}

async fn fresh_token(s: &Server, u: &User) -> String {
    let body = json!({"grant_type": "password", "username": u.name, "password": format!("password-of-{}", u.name)});
    s.post("/v1/auth/token", None, body).await.ok()["access_token"].as_str().unwrap().to_string()
}

/// Sends one request; transport failures are answers too (a dropped connection is a failure).
async fn send(
    http: &reqwest::Client,
    s: &Server,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<(Vec<u8>, &'static str)>,
) -> Result<(u16, Value), String> {
    let mut req = http.request(method, format!("{}{path}", s.base));
    if let Some(a) = auth {
        // From bytes, so non-ASCII headers go out as sent (obs-text).
        req = req.header("authorization", reqwest::header::HeaderValue::from_bytes(a.as_bytes()).unwrap());
    }
    if let Some((bytes, ct)) = body {
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        req = req.body(bytes);
    }
    let resp = req.send().await.map_err(|e| format!("transport error: {e:?}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// `None` if the answer fits, else why not.
fn judge(want: Want, got: &Result<(u16, Value), String>) -> Option<String> {
    let (status, body) = match got {
        Ok(x) => x,
        Err(e) => return Some(e.clone()),
    };
    let code = body["error"]["code"].as_str().unwrap_or("");
    let fine = match want {
        Want::Is(st, c) => *status == st && code == c,
        Want::Client => (400..500).contains(status) && code.starts_with("SW_"),
        Want::Handled => (200..300).contains(status) || ((400..500).contains(status) && code.starts_with("SW_")),
    };
    let mut text = body.to_string();
    text.truncate(200);
    (!fine).then(|| format!("expected {want:?}, got {status} {text}"))
}

#[tokio::test]
async fn every_endpoint_survives_malformed_input() {
    let s = Server::start().await;
    let owner = s.register("sweeper").await;
    let target = s.register("target").await;
    let room = s.create_room(&owner, "group", "sweep").await;
    let mut own_rooms = Vec::new();
    for suffix in ["/leave", "/close", "/archive", "/rejoin"] {
        own_rooms.push((suffix, s.create_room(&owner, "group", &format!("sweep {suffix}")).await));
    }
    let fix = Fix { owner, target, room, own_rooms };
    // No connection reuse: a server may close a connection after refusing an oversize body.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let bearer = format!("Bearer {}", fix.owner.token);

    let all = probes(&fix);
    let total = all.len();
    let mut failures = Vec::new();
    let mut uniq = 0;
    for mut p in all {
        // Registration probes need unused usernames to reach the field under test.
        if let Some((bytes, _)) = p.body.as_mut() {
            if let Ok(mut v) = serde_json::from_slice::<Value>(bytes) {
                if v.get("username") == Some(&json!("UNIQ")) {
                    uniq += 1;
                    v["username"] = json!(format!("probe{uniq}"));
                    *bytes = serde_json::to_vec(&v).unwrap();
                }
            }
        }
        let auth = match p.auth {
            Auth::None => None,
            Auth::Owner => Some(bearer.clone()),
            Auth::Fresh => Some(format!("Bearer {}", fresh_token(&s, &fix.owner).await)),
        };
        let got = send(&http, &s, p.method, &p.path, auth.as_deref(), p.body).await;
        if let Some(why) = judge(p.want, &got) {
            failures.push(format!("{}: {why}", p.what));
        }
    }

    // Unknown paths, wrong methods, and broken Authorization headers.
    let r = &fix.room;
    let routing = [
        (Method::GET, "/nope".to_string(), Want::Is(404, "SW_NOT_FOUND")),
        (Method::GET, "/v1".into(), Want::Is(404, "SW_NOT_FOUND")),
        (Method::GET, "/v1/".into(), Want::Is(404, "SW_NOT_FOUND")),
        // The route table is flat: a trailing slash names no route, as when it was nested.
        (Method::GET, "/v1/rooms/".into(), Want::Is(404, "SW_NOT_FOUND")),
        (Method::POST, format!("/v1/rooms/{r}/send/"), Want::Is(404, "SW_NOT_FOUND")),
        (Method::GET, "/v1/nope".into(), Want::Is(404, "SW_NOT_FOUND")),
        (Method::GET, "/v2/rooms".into(), Want::Is(404, "SW_NOT_FOUND")),
        (Method::POST, format!("/v1/rooms/{r}/nope"), Want::Is(404, "SW_NOT_FOUND")),
        (Method::GET, format!("/v1/rooms/{r}/members/x/y/z"), Want::Is(404, "SW_NOT_FOUND")),
        (Method::DELETE, "/v1/rooms".into(), Want::Is(405, "SW_METHOD_NOT_ALLOWED")),
        (Method::GET, "/v1/auth/register".into(), Want::Is(405, "SW_METHOD_NOT_ALLOWED")),
        (Method::PUT, "/healthz".into(), Want::Is(405, "SW_METHOD_NOT_ALLOWED")),
        (Method::POST, format!("/v1/rooms/{r}/name"), Want::Is(405, "SW_METHOD_NOT_ALLOWED")),
        (Method::GET, format!("/v1/rooms/{r}/join"), Want::Is(405, "SW_METHOD_NOT_ALLOWED")),
        (Method::PATCH, format!("/v1/rooms/{r}"), Want::Is(405, "SW_METHOD_NOT_ALLOWED")),
        (Method::DELETE, "/v1/workspaces".into(), Want::Is(405, "SW_METHOD_NOT_ALLOWED")),
    ];
    for (method, path, want) in routing {
        let got = send(&http, &s, method.clone(), &path, Some(&bearer), None).await;
        if let Some(why) = judge(want, &got) {
            failures.push(format!("{method} {path}: {why}"));
        }
    }
    let long = format!("Bearer {}", "x".repeat(10_000));
    for header in
        ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer swa_nope", "Bearer a b c", &long, "Bearer \u{e9}"]
    {
        let got = send(&http, &s, Method::GET, "/v1/auth/whoami", Some(header), None).await;
        if let Some(why) = judge(Want::Is(401, "SW_AUTH_INVALID_TOKEN"), &got) {
            failures.push(format!("Authorization {:?}: {why}", header.chars().take(24).collect::<String>()));
        }
    }

    // Still serving, and still serving correctly.
    s.get("/healthz", None).await.expect(200, "");
    s.get("/v1/auth/whoami", Some(&fix.owner.token)).await.expect(200, "");
    let created = s.post("/v1/rooms", Some(&fix.owner.token), json!({"name": "after the sweep"})).await;
    assert_eq!(created.ok()["name"], "after the sweep");
    let got = s.get(&format!("/v1/rooms/{}", fix.room), Some(&fix.owner.token)).await;
    assert_eq!(got.ok()["state"], "open", "{}", got.body);

    let mut routes: Vec<&str> = failures.iter().map(|f| f.split(':').next().unwrap_or("")).collect();
    routes.dedup();
    assert!(
        failures.is_empty(),
        "{} of {total}+ probes failed, on {}:\n{}",
        failures.len(),
        routes.join(", "),
        failures.join("\n")
    );
}
