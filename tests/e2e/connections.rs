//! Connection-level abuse, tried as an attacker would from outside: stalled heads and bodies,
//! idle sockets, declared bodies larger than the route takes, connection floods, answers the
//! HTTP layer writes itself, and shutdown while clients misbehave. Every loop is bounded and
//! every socket is on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::Server;

fn addr(s: &Server) -> SocketAddr {
    s.base.trim_start_matches("http://").parse().expect("server address")
}

/// Connects from `source` (any 127.0.0.0/8 address), so a test can play several clients.
async fn connect_from(s: &Server, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().unwrap()).expect("bind a loopback source address");
    socket.connect(addr(s)).await.expect("connect")
}

/// Writes `bytes` and reads until the server closes, for at most `limit`. Answers what was
/// read and whether the server closed within the limit.
async fn exchange(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    stream.write_all(bytes).await.expect("write");
    read_until_closed(stream, limit).await
}

async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 16384];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, closed)
}

/// Status and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[track_caller]
fn assert_json_error(raw: &[u8], status: u16, code: &str) {
    let (got, body) = parse_answer(raw);
    assert_eq!(got, status, "answer: {}", String::from_utf8_lossy(raw));
    assert_eq!(body["error"]["code"], code, "answer: {}", String::from_utf8_lossy(raw));
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn stalled_heads_bodies_and_idle_sockets_are_closed() {
    let s = Server::start_with_env(&[
        ("HOMESERVER_LIMITS__HEADER_READ_TIMEOUT_SECS", "1"),
        ("HOMESERVER_LIMITS__BODY_READ_TIMEOUT_SECS", "1"),
        ("HOMESERVER_LIMITS__IDLE_TIMEOUT_SECS", "2"),
    ])
    .await;
    let limit = Duration::from_secs(10);

    // Half a head, then nothing: closed once the head timeout passes.
    let mut half = TcpStream::connect(addr(&s)).await.unwrap();
    let (_, closed) = exchange(&mut half, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", limit).await;
    assert!(closed, "a half-sent head is not kept open");

    // A body under the limit that stops arriving: 408 in the envelope, then closed.
    let mut body = TcpStream::connect(addr(&s)).await.unwrap();
    let head = b"POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"user";
    let (answer, closed) = exchange(&mut body, head, limit).await;
    assert!(closed);
    assert_json_error(&answer, 408, "SW_REQUEST_TIMEOUT");

    // A keep-alive socket that asks once and then idles is closed.
    let mut idle = TcpStream::connect(addr(&s)).await.unwrap();
    let (answer, closed) = exchange(&mut idle, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", limit).await;
    assert!(closed, "an idle keep-alive connection is closed");
    assert_eq!(parse_answer(&answer).0, 200);

    // Connecting and sending nothing at all is no different.
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    assert!(read_until_closed(&mut silent, limit).await.1);
    s.get("/healthz", None).await.expect(200, "");
}

#[tokio::test]
async fn a_declared_body_over_the_route_limit_is_refused_before_it_is_read() {
    let s =
        Server::start_with_env(&[("HOMESERVER_MAX_UPLOAD_BYTES", "100000"), ("HOMESERVER_MAX_IMPORT_BYTES", "100000")])
            .await;
    let a = s.register("alice").await;
    let limit = Duration::from_secs(5);
    // 1 GB declared, a few bytes sent: answered at once, with the body never read.
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let req = b"POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{\"us";
    let (answer, closed) = exchange(&mut c, req, limit).await;
    assert!(closed, "the connection is closed after the refusal");
    assert_json_error(&answer, 413, "SW_CONTENT_TOO_LARGE");

    // Each route has its own limit: the upload route takes more than 1 MiB JSON bodies would,
    // and refuses more than its own.
    let upload = |len: u64| {
        format!(
            "POST /v1/media/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {len}\r\n\r\n",
            a.token
        )
    };
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let (answer, _) = exchange(&mut c, upload(10_000_000).as_bytes(), limit).await;
    assert_json_error(&answer, 413, "SW_CONTENT_TOO_LARGE");
    // `Expect: 100-continue` clients hear the refusal before sending anything.
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let req = format!(
        "PUT /v1/rooms/room-x/name HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\nAuthorization: Bearer {}\r\n\r\n",
        a.token
    );
    let (answer, _) = exchange(&mut c, req.as_bytes(), limit).await;
    assert_json_error(&answer, 413, "SW_CONTENT_TOO_LARGE");
    // A bundle over the import limit is a refused import (contract section 7), like one found
    // too large while it is read.
    let mut c = TcpStream::connect(addr(&s)).await.unwrap();
    let req = format!(
        "POST /v1/rooms/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n",
        a.token
    );
    let (answer, _) = exchange(&mut c, req.as_bytes(), limit).await;
    assert_json_error(&answer, 400, "SW_ROOM_IMPORT_REFUSED");
    s.get("/healthz", None).await.expect(200, "");
}

#[tokio::test]
async fn connection_floods_are_capped_per_address_and_in_total() {
    let s = Server::start_with_env(&[
        ("HOMESERVER_LIMITS__MAX_CONNECTIONS", "60"),
        ("HOMESERVER_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "40"),
        ("HOMESERVER_LIMITS__HEADER_READ_TIMEOUT_SECS", "30"),
    ])
    .await;
    // One client opens 40 sockets and sends half a head on each: all are held open...
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut c = connect_from(&s, "127.0.0.2").await;
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    // ...and the next ones from that address are refused at once, in the envelope.
    for _ in 0..5 {
        let mut c = connect_from(&s, "127.0.0.2").await;
        let req = b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\ngrant_type=password";
        let (answer, closed) = exchange(&mut c, req, Duration::from_secs(5)).await;
        assert!(closed);
        assert_json_error(&answer, 429, "SW_RATE_LIMIT_EXCEEDED");
    }
    // Everyone else is still served.
    s.get("/healthz", None).await.expect(200, "");
    let a = s.register("alice").await;
    s.get("/v1/auth/whoami", Some(&a.token)).await.expect(200, "");

    // A second flooding address fills what is left of the total; then even new clients wait
    // for a free place (503), which comes back as soon as sockets close.
    for _ in 0..20 {
        let mut c = connect_from(&s, "127.0.0.3").await;
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    let mut c = connect_from(&s, "127.0.0.4").await;
    let (answer, _) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert_json_error(&answer, 503, "SW_UNAVAILABLE");
    drop(held);
    crate::harness::eventually(Duration::from_secs(10), || async {
        let mut c = connect_from(&s, "127.0.0.4").await;
        let (answer, _) =
            exchange(&mut c, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(5))
                .await;
        (parse_answer(&answer).0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn answers_the_http_layer_makes_are_json_too() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let limit = Duration::from_secs(5);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Long URLs: over our limit, and over what the HTTP parser itself takes.
        (format!("GET /v1/rooms/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000)).into_bytes(), 414),
        (format!("GET /v1/rooms/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(), 414),
        // Large headers, both ways.
        (format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000)).into_bytes(), 431),
        (format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(600_000)).into_bytes(), 431),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..150).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        // Heads the parser cannot read.
        (b"GET /v1/ro oms HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400),
        (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), 400),
        (b"POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n".to_vec(), 400),
        // Paths whose percent-encoding does not decode.
        (
            format!("GET /v1/rooms/%FF%FE/members HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", a.token)
                .into_bytes(),
            400,
        ),
        (
            format!("GET /v1/participants/%C0%AF HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", a.token)
                .into_bytes(),
            400,
        ),
    ];
    for (req, status) in cases {
        let mut c = TcpStream::connect(addr(&s)).await.unwrap();
        let shown = String::from_utf8_lossy(&req[..req.len().min(60)]).to_string();
        let (answer, _) = exchange(&mut c, &req, limit).await;
        let (got, body) = parse_answer(&answer);
        assert_eq!(got, status, "{shown:?} answered {}", String::from_utf8_lossy(&answer[..answer.len().min(300)]));
        assert!(
            body["error"]["code"].as_str().is_some_and(|c| c.starts_with("SW_")),
            "{shown:?} answered without the JSON envelope: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    s.get("/healthz", None).await.expect(200, "");
}

#[tokio::test]
async fn sigterm_finishes_within_the_grace_period_whatever_clients_do() {
    let mut s = Server::start_with_env(&[
        ("HOMESERVER_LIMITS__SHUTDOWN_GRACE_SECS", "2"),
        ("HOMESERVER_LIMITS__BODY_READ_TIMEOUT_SECS", "300"),
        ("HOMESERVER_LIMITS__HEADER_READ_TIMEOUT_SECS", "300"),
        ("HOMESERVER_LIMITS__IDLE_TIMEOUT_SECS", "300"),
    ])
    .await;
    let a = s.register("alice").await;
    // A request whose body never finishes, a half head, and an open WebSocket stream.
    let mut stalled = TcpStream::connect(addr(&s)).await.unwrap();
    let req = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n{{\"room_type\":",
        a.token
    );
    stalled.write_all(req.as_bytes()).await.unwrap();
    let mut half = TcpStream::connect(addr(&s)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost").await.unwrap();
    let ws_url = format!("{}/v1/stream?token={}", s.base.replacen("http://", "ws://", 1), a.token);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("stream opens");
    ws.next().await.expect("hello").expect("hello frame");

    let t = Instant::now();
    let status = s.stop().await;
    let took = t.elapsed();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(took < Duration::from_secs(8), "shutdown took {took:?} with a 2 s grace period");
    // The stream was told the server is going away.
    let last = tokio::time::timeout(Duration::from_secs(5), async {
        let mut close = None;
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Close(c) = m {
                close = c.map(|c| u16::from(c.code));
            }
        }
        close
    })
    .await
    .unwrap_or(None);
    assert_eq!(last, Some(1001));
}

#[tokio::test]
async fn websocket_streams_are_capped_per_participant() {
    let s = Server::start_with_env(&[("HOMESERVER_LIMITS__MAX_STREAMS_PER_PARTICIPANT", "2")]).await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let url = |t: &str| format!("{}/v1/stream?token={t}", s.base.replacen("http://", "ws://", 1));
    let (mut first, _) = tokio_tungstenite::connect_async(url(&a.token)).await.expect("first stream");
    let (_second, _) = tokio_tungstenite::connect_async(url(&a.token)).await.expect("second stream");
    match tokio_tungstenite::connect_async(url(&a.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap_or(Value::Null);
            assert_eq!(body["error"]["code"], "SW_RATE_LIMIT_EXCEEDED");
        }
        other => panic!("a third stream must be refused, got {:?}", other.map(|_| ())),
    }
    // Others are not affected, and a closed stream frees its place.
    tokio_tungstenite::connect_async(url(&b.token)).await.expect("bob's stream");
    first.close(None).await.unwrap();
    drop(first);
    crate::harness::eventually(Duration::from_secs(10), || async {
        tokio_tungstenite::connect_async(url(&a.token)).await.ok().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn the_federation_listener_has_the_same_limits() {
    let s = Server::start_with_env(&[
        ("HOMESERVER_FEDERATION_LISTEN", "127.0.0.1:0"),
        ("HOMESERVER_LIMITS__HEADER_READ_TIMEOUT_SECS", "1"),
        ("HOMESERVER_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "10"),
    ])
    .await;
    let fed: SocketAddr =
        s.federation_base.as_deref().expect("federation listener").trim_start_matches("http://").parse().unwrap();
    let limit = Duration::from_secs(10);
    let mut half = TcpStream::connect(fed).await.unwrap();
    assert!(exchange(&mut half, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", limit).await.1, "half heads time out");
    let mut big = TcpStream::connect(fed).await.unwrap();
    let req = b"PUT /_scaiwave/federation/v1/send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n";
    let (answer, _) = exchange(&mut big, req, limit).await;
    assert_json_error(&answer, 413, "SW_CONTENT_TOO_LARGE");
    let mut bad = TcpStream::connect(fed).await.unwrap();
    let (answer, _) = exchange(&mut bad, b"GET /\xff HTTP/1.1\r\n\r\n", limit).await;
    assert_json_error(&answer, 400, "SW_BAD_REQUEST");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut held = vec![socket.connect(fed).await.unwrap()];
    for _ in 1..10 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(fed).await.unwrap());
    }
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut over = socket.connect(fed).await.unwrap();
    let (answer, _) = read_until_closed(&mut over, limit).await;
    assert_json_error(&answer, 429, "SW_RATE_LIMIT_EXCEEDED");
}
