//! Names people read in listings refuse control characters and lose invisible ones (bidi
//! overrides and isolates, zero-width characters), so one name cannot pass for another.

use serde_json::json;

use crate::harness::Server;

const BAD: (u16, &str) = (400, "SW_BAD_REQUEST");

#[tokio::test]
async fn display_names_refuse_controls_and_lose_invisible_characters() {
    let s = Server::start().await;
    let reg = |name: &str, display: &str| json!({"username": name, "password": "password-1", "display_name": display});
    for (i, bad) in ["Ali\u{0}ce", "Ali\nce", "Alice\t", "\u{7}Alice", "Ali\u{9b}ce", "\u{200B}\u{202E}", "\u{2028}"]
        .iter()
        .enumerate()
    {
        s.post("/v1/auth/register", None, reg(&format!("bad{i}"), bad)).await.expect(BAD.0, BAD.1);
    }
    // "Alice" wrapped in an override, isolates and zero-width characters is plain "Alice".
    let r = s.post("/v1/auth/register", None, reg("mallory", "\u{2066}A\u{200B}li\u{200D}ce\u{202E}\u{2069}")).await;
    let token = r.ok()["access_token"].as_str().unwrap().to_string();
    let me = s.get("/v1/auth/whoami", Some(&token)).await;
    assert_eq!(me.ok()["display_name"], "Alice");
    let ws = s.get("/v1/workspaces", Some(&token)).await;
    assert_eq!(ws.ok()[0]["name"], "Alice's workspace");
    // Emoji sequences survive.
    let family = "Fam \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
    let r = s.post("/v1/auth/register", None, reg("fam", family)).await;
    let me = s.get("/v1/auth/whoami", r.ok()["access_token"].as_str()).await;
    assert_eq!(me.ok()["display_name"], family);
}

#[tokio::test]
async fn room_names_refuse_controls_and_lose_invisible_characters() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let create = |name: &str| json!({"room_type": "public", "name": name});
    for bad in ["Eng\u{0}", "Eng\nineering", "\u{1b}[31mEng", "Eng\u{7f}", "\u{200B}\u{FEFF}\u{2067}"] {
        s.post("/v1/rooms", Some(&a.token), create(bad)).await.expect(BAD.0, BAD.1);
    }
    let r = s.post("/v1/rooms", Some(&a.token), create("\u{2067}Eng\u{200B}ineering\u{2069}\u{200F}")).await;
    let room = r.ok()["id"].as_str().unwrap().to_string();
    assert_eq!(r.ok()["name"], "Engineering");
    let listed = s.get("/v1/directory/rooms?q=Engineering", Some(&a.token)).await;
    assert_eq!(listed.ok()[0]["name"], "Engineering", "the directory finds and shows the clean name");

    let path = format!("/v1/rooms/{room}/name");
    s.put(&path, Some(&a.token), json!({"name": "Ops\u{0}"})).await.expect(BAD.0, BAD.1);
    s.put(&path, Some(&a.token), json!({"name": "Ops\r"})).await.expect(BAD.0, BAD.1);
    s.put(&path, Some(&a.token), json!({"name": "\u{202E}"})).await.expect(BAD.0, BAD.1);
    s.put(&path, Some(&a.token), json!({"name": "O\u{2060}ps\u{FEFF}"})).await.expect(200, "");
    assert_eq!(s.get(&format!("/v1/rooms/{room}"), Some(&a.token)).await.ok()["name"], "Ops");
}

#[tokio::test]
async fn room_topics_allow_line_breaks_but_no_other_controls() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    for bad in ["a\u{0}b", "bell\u{7}", "\u{1b}[2J", "carriage\rreturn", "c1\u{85}"] {
        s.post("/v1/rooms", Some(&a.token), json!({"name": "Team", "topic": bad})).await.expect(BAD.0, BAD.1);
    }
    let r = s.post("/v1/rooms", Some(&a.token), json!({"name": "Team", "topic": "Line one\r\n\tLine two"})).await;
    assert_eq!(r.ok()["topic"], "Line one\n\tLine two");
    let room = r.ok()["id"].as_str().unwrap().to_string();

    let path = format!("/v1/rooms/{room}/topic");
    s.put(&path, Some(&a.token), json!({"topic": "new\u{0}"})).await.expect(BAD.0, BAD.1);
    let r = s.put(&path, Some(&a.token), json!({"topic": "Ship \u{202E}it\u{200B}\nFriday"})).await;
    assert_eq!(r.ok()["topic"], "Ship it\nFriday");
    assert_eq!(s.get(&format!("/v1/rooms/{room}"), Some(&a.token)).await.ok()["topic"], "Ship it\nFriday");
}

#[tokio::test]
async fn workspace_names_refuse_controls_and_lose_invisible_characters() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    for bad in ["Work\u{0}", "Work\nspace", "\u{200B}\u{2066}\u{2069}"] {
        s.post("/v1/workspaces", Some(&a.token), json!({"name": bad})).await.expect(BAD.0, BAD.1);
    }
    let r = s.post("/v1/workspaces", Some(&a.token), json!({"name": "\u{202D}Pro\u{200C}jects\u{202C}"})).await;
    assert_eq!(r.ok()["name"], "Projects");
    let list = s.get("/v1/workspaces", Some(&a.token)).await;
    assert!(list.ok().as_array().unwrap().iter().any(|w| w["name"] == "Projects"), "{}", list.body);
}
