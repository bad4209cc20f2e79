//! Media: upload (multipart, streamed to disk, content-addressed), download, info, limits,
//! access and durability.

use std::path::{Path, PathBuf};

use rand::RngExt;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{RawBody, Resp, Server};

const BOUNDARY: &str = "sw-media-test-3f9a1c7e5b";
const MULTIPART: &str = "multipart/form-data; boundary=sw-media-test-3f9a1c7e5b";

/// A multipart body with one `file` part (and any extra text fields before it).
fn multipart(filename: Option<&str>, content_type: Option<&str>, bytes: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in extra {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"").as_bytes());
    if let Some(f) = filename {
        body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    if let Some(ct) = content_type {
        body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(s: &Server, token: Option<&str>, body: Vec<u8>) -> Resp {
    s.raw(Method::POST, "/v1/media/upload", token, Some(RawBody::Bytes(body, MULTIPART))).await
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::rng().fill(&mut buf[..]);
    buf
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

struct Download {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Download {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// The harness parses bodies as JSON; downloads need the raw bytes.
async fn download(s: &Server, token: &str, media_id: &str, range: Option<&str>) -> Download {
    let mut req = reqwest::Client::new().get(format!("{}/v1/media/download/{media_id}", s.base)).bearer_auth(token);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body").to_vec();
    Download { status, headers, bytes }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn large_upload_round_trips_byte_for_byte() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    // Three times the global 1 MiB JSON body limit: the upload route has its own limit.
    let bytes = random_bytes(3 * 1024 * 1024 + 17);
    let r = upload(&s, Some(&alice.token), multipart(Some("blob.bin"), Some("application/x-test"), &bytes, &[])).await;
    r.expect(201, "");
    let d = r.data();
    let id = d["media_id"].as_str().unwrap();
    assert!(id.starts_with("med-"), "{d}");
    assert_eq!(d["sha256"], sha256_hex(&bytes));
    assert_eq!(d["size"], bytes.len());
    assert_eq!(d["mime_type"], "application/x-test");
    assert_eq!(d["filename"], "blob.bin");
    assert!(d["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{d}");

    // Any authenticated participant holding the id may read it.
    let dl = download(&s, &bob.token, id, None).await;
    assert_eq!(dl.status, 200);
    assert!(dl.bytes == bytes, "downloaded bytes differ");
    assert_eq!(dl.header("content-type"), "application/x-test");
    assert_eq!(dl.header("content-length"), bytes.len().to_string());
    assert_eq!(dl.header("content-disposition"), "inline; filename=\"blob.bin\"");
    assert_eq!(dl.header("x-content-type-options"), "nosniff");
    assert!(dl.header("cache-control").contains("max-age="), "{:?}", dl.headers);
    assert!(dl.header("cache-control").contains("immutable"), "{:?}", dl.headers);

    let info = s.get(&format!("/v1/media/{id}/info"), Some(&bob.token)).await;
    assert_eq!(info.ok(), d);

    // One range, as a resumed download asks for it.
    let part = download(&s, &bob.token, id, Some("bytes=1000-1999")).await;
    assert_eq!(part.status, 206);
    assert!(part.bytes == bytes[1000..2000], "range bytes differ");
    assert_eq!(part.header("content-length"), "1000");
    assert_eq!(part.header("content-range"), format!("bytes 1000-1999/{}", bytes.len()));
    let tail = download(&s, &bob.token, id, Some("bytes=-10")).await;
    assert_eq!(tail.status, 206);
    assert!(tail.bytes == bytes[bytes.len() - 10..]);
    // Several ranges are not supported: the whole file.
    let multi = download(&s, &bob.token, id, Some("bytes=0-1,5-6")).await;
    assert_eq!(multi.status, 200);
    assert_eq!(multi.bytes.len(), bytes.len());

    // Nothing is left in the temp dir.
    assert!(files_under(&s.data_dir().join("media/tmp")).is_empty());
}

#[tokio::test]
async fn empty_file_and_defaults() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let r = upload(&s, Some(&alice.token), multipart(None, None, b"", &[])).await;
    r.expect(201, "");
    let d = r.data();
    assert_eq!(d["size"], 0);
    assert_eq!(d["sha256"], sha256_hex(b""));
    assert_eq!(d["mime_type"], "application/octet-stream");
    assert!(d.get("filename").is_none(), "no filename given: {d}");
    let dl = download(&s, &alice.token, d["media_id"].as_str().unwrap(), None).await;
    assert_eq!(dl.status, 200);
    assert!(dl.bytes.is_empty());
    assert_eq!(dl.header("content-length"), "0");
    assert_eq!(dl.header("content-type"), "application/octet-stream");
    assert_eq!(dl.header("content-disposition"), "inline");
}

#[tokio::test]
async fn unicode_filename_is_kept_and_safely_quoted() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let name = "Résumé «final» 你好.txt";
    let r = upload(&s, Some(&alice.token), multipart(Some(name), Some("text/plain"), "héllo".as_bytes(), &[])).await;
    r.expect(201, "");
    let d = r.data();
    assert_eq!(d["filename"], name);
    assert_eq!(d["mime_type"], "text/plain");
    let id = d["media_id"].as_str().unwrap();
    assert_eq!(s.get(&format!("/v1/media/{id}/info"), Some(&alice.token)).await.ok()["filename"], name);
    let dl = download(&s, &alice.token, id, None).await;
    assert_eq!(dl.bytes, "héllo".as_bytes());
    let cd = dl.header("content-disposition");
    assert!(cd.is_ascii(), "{cd}");
    assert!(cd.starts_with("inline; filename=\""), "{cd}");
    assert!(cd.contains("filename*=UTF-8''R%C3%A9sum%C3%A9%20%C2%ABfinal%C2%BB%20%E4%BD%A0%E5%A5%BD.txt"), "{cd}");

    // A path in the file name keeps only its last component; other fields are ignored.
    let r = upload(&s, Some(&alice.token), multipart(Some("../../etc/x.txt"), None, b"x", &[("note", "hi")])).await;
    assert_eq!(r.ok()["filename"], "x.txt");
}

#[tokio::test]
async fn identical_uploads_share_one_file() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let bytes = random_bytes(100_000);
    let a = upload(&s, Some(&alice.token), multipart(Some("a.bin"), None, &bytes, &[])).await;
    let b = upload(&s, Some(&bob.token), multipart(Some("b.bin"), None, &bytes, &[])).await;
    let (a, b) = (a.ok(), b.ok());
    assert_ne!(a["media_id"], b["media_id"]);
    assert_eq!(a["sha256"], b["sha256"]);
    assert_eq!(a["filename"], "a.bin");
    assert_eq!(b["filename"], "b.bin");
    let sha = a["sha256"].as_str().unwrap();
    let files = files_under(&s.data_dir().join("media"));
    assert_eq!(files, vec![s.data_dir().join("media").join(&sha[..2]).join(sha)]);
    for m in [a, b] {
        let dl = download(&s, &alice.token, m["media_id"].as_str().unwrap(), None).await;
        assert!(dl.bytes == bytes);
    }
}

#[tokio::test]
async fn size_limit_is_enforced_and_leaves_no_temp_file() {
    let s = Server::start_with_env(&[("HOMESERVER_MAX_UPLOAD_BYTES", "1000")]).await;
    let alice = s.register("alice").await;
    upload(&s, Some(&alice.token), multipart(None, None, &random_bytes(1001), &[]))
        .await
        .expect(413, "SW_CONTENT_TOO_LARGE");
    // Far over the limit: refused by the route's body limit or the file count, the same way.
    upload(&s, Some(&alice.token), multipart(None, None, &random_bytes(300_000), &[]))
        .await
        .expect(413, "SW_CONTENT_TOO_LARGE");
    // A body over the route's limit (here through a large extra field) is refused the same way.
    let big = "x".repeat(100_000);
    upload(&s, Some(&alice.token), multipart(None, None, b"ok", &[("note", &big)]))
        .await
        .expect(413, "SW_CONTENT_TOO_LARGE");
    assert!(files_under(&s.data_dir().join("media")).is_empty(), "{:?}", files_under(&s.data_dir()));
    // Exactly at the limit is fine.
    let r = upload(&s, Some(&alice.token), multipart(None, None, &random_bytes(1000), &[])).await;
    assert_eq!(r.ok()["size"], 1000);
    assert!(files_under(&s.data_dir().join("media/tmp")).is_empty());
}

#[tokio::test]
async fn bad_requests_get_codes() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let t = Some(alice.token.as_str());

    // No token, or a bad one: 401 on every media endpoint.
    upload(&s, None, multipart(None, None, b"x", &[])).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    upload(&s, Some("nope"), multipart(None, None, b"x", &[])).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    let id = upload(&s, t, multipart(None, None, b"x", &[])).await.ok()["media_id"].as_str().unwrap().to_string();
    s.get(&format!("/v1/media/{id}/info"), None).await.expect(401, "SW_AUTH_INVALID_TOKEN");
    s.get(&format!("/v1/media/download/{id}"), None).await.expect(401, "SW_AUTH_INVALID_TOKEN");

    // Not multipart at all.
    s.post("/v1/media/upload", t, json!({"file": "x"})).await.expect(400, "SW_BAD_REQUEST");
    s.raw(Method::POST, "/v1/media/upload", t, None).await.expect(400, "SW_BAD_REQUEST");
    s.raw(Method::POST, "/v1/media/upload", t, Some(RawBody::Bytes(b"x".to_vec(), "multipart/form-data")))
        .await
        .expect(400, "SW_BAD_REQUEST");
    // Multipart without a `file` field.
    let no_file =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nvalue\r\n--{BOUNDARY}--\r\n");
    upload(&s, t, no_file.into_bytes()).await.expect(400, "SW_BAD_REQUEST");
    upload(&s, t, format!("--{BOUNDARY}--\r\n").into_bytes()).await.expect(400, "SW_BAD_REQUEST");
    // Malformed: cut off before the closing boundary, or garbage.
    let mut cut = multipart(None, None, b"some bytes", &[]);
    cut.truncate(cut.len() - 30);
    upload(&s, t, cut).await.expect(400, "SW_BAD_REQUEST");
    upload(&s, t, b"this is not multipart".to_vec()).await.expect(400, "SW_BAD_REQUEST");
    // Two `file` fields are ambiguous.
    let mut two = multipart(None, None, b"a", &[]);
    two.truncate(two.len() - format!("--{BOUNDARY}--\r\n").len());
    two.extend_from_slice(&multipart(None, None, b"b", &[]));
    upload(&s, t, two).await.expect(400, "SW_BAD_REQUEST");
    // No failed upload leaves a temp file.
    assert!(files_under(&s.data_dir().join("media/tmp")).is_empty());

    // Ids: malformed → 400, well-formed but unknown → 404.
    for bad in ["nope", "med-", "med-a%20b", "room-abc"] {
        s.get(&format!("/v1/media/{bad}/info"), t).await.expect(400, "SW_BAD_REQUEST");
        s.get(&format!("/v1/media/download/{bad}"), t).await.expect(400, "SW_BAD_REQUEST");
    }
    let unknown = "med-AAAAAAAAAAAAAAAAAAAAAA";
    s.get(&format!("/v1/media/{unknown}/info"), t).await.expect(404, "SW_MEDIA_NOT_FOUND");
    s.get(&format!("/v1/media/download/{unknown}"), t).await.expect(404, "SW_MEDIA_NOT_FOUND");
}

#[tokio::test]
async fn media_survives_a_kill_and_restart() {
    let mut s = Server::start().await;
    let alice = s.register("alice").await;
    let bytes = random_bytes(200_000);
    let r = upload(&s, Some(&alice.token), multipart(Some("keep.bin"), Some("image/png"), &bytes, &[])).await;
    let d = r.ok().clone();
    let id = d["media_id"].as_str().unwrap();
    s.kill().await;
    s.restart().await;
    assert_eq!(s.get(&format!("/v1/media/{id}/info"), Some(&alice.token)).await.ok(), &d);
    let dl = download(&s, &alice.token, id, None).await;
    assert_eq!(dl.status, 200);
    assert!(dl.bytes == bytes);
    assert_eq!(dl.header("content-type"), "image/png");
}
