//! Starts real `homeserver` processes on free ports with temporary data dirs, and talks HTTP
//! to them. Every wait is bounded polling, never a bare sleep.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_homeserver");

/// A running server. Killed when dropped; its data dir lives as long as the `Server`.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    /// The federation listener's base URL, when `HOMESERVER_FEDERATION_LISTEN` started one.
    pub federation_base: Option<String>,
    data: DataDir,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    /// Registration tokens of the tenants made by [`Server::create_tenant`], by slug.
    tenant_tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

enum DataDir {
    Temp(tempfile::TempDir),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Temp(t) => t.path(),
        }
    }
}

/// A registered user with a live token.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub id: String,
    pub fqid: String,
    pub token: String,
    pub refresh_token: String,
    pub workspace_id: String,
}

/// An HTTP answer: status and JSON body (`Value::Null` when the body was not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    /// Asserts the status and, for errors, the `SW_` code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        if !code.is_empty() {
            assert_eq!(self.code(), code, "unexpected code; body: {}", self.body);
        }
        self
    }
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!((200..300).contains(&self.status), "expected success, got {}: {}", self.status, self.body);
        self.data()
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with_env(&[]).await
    }

    /// Starts with extra `HOMESERVER_*` variables, e.g. `("HOMESERVER_ACCESS_TOKEN_TTL_SECS", "1")`.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Server {
        // One TLS provider for the whole process (ring), before any HTTP client exists.
        federation::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        // Every test client shares one address, and tests register and log in far more often
        // than a person: the per-address login limit would throttle them. Tests of that limit
        // lower it again (their variables come later and win).
        let defaults = [("HOMESERVER_LIMITS__LOGIN_PER_ADDRESS__BURST", "100000")];
        let env = defaults.iter().chain(env).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s = Server {
            child: None,
            base: String::new(),
            federation_base: None,
            data: DataDir::Temp(dir),
            env,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            tenant_tokens: Default::default(),
        };
        s.spawn().await;
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data.path())
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn homeserver");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut federation_base = None;
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.split("federation listener on ").nth(1) {
                    federation_base = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return rest.trim().to_string();
                }
            }
            panic!("homeserver exited before it listened");
        })
        .await
        .expect("homeserver did not start within 60 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.base = base;
        self.federation_base = federation_base;
        self.child = Some(child);
        let health = self.get("/healthz", None).await;
        assert_eq!(health.status, 200);
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let pid = c.id().expect("pid") as i32;
        // SAFETY-free: plain kill(2) through the `kill` command keeps the harness dependency-free.
        let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill -TERM");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), c.wait()).await.expect("server stops within 20 s").expect("wait")
    }

    /// Starts the server again on the same data dir (a new port).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.spawn().await;
    }

    /// Runs `homeserver ARGS… --data-dir <this server's dir>` to completion; answers (success, stdout+stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = std::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(self.data.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run homeserver cli");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// `homeserver admin create-tenant SLUG ARGS…` for a new tenant: answers the registration
    /// token it prints, which [`Server::register_in`] then sends for that tenant.
    pub fn create_tenant(&self, slug: &str, args: &[&str]) -> String {
        let mut all = vec!["admin", "create-tenant", slug];
        all.extend_from_slice(args);
        let (ok, out) = self.cli(&all);
        assert!(ok, "{out}");
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("registration_token: "))
            .unwrap_or_else(|| panic!("create-tenant printed no registration token: {out}"))
            .to_string();
        self.tenant_tokens.lock().unwrap().insert(slug.to_string(), token.clone());
        token
    }

    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<RawBody>) -> Resp {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(RawBody::Json(v)) => req.json(&v),
            Some(RawBody::Bytes(b, ct)) => req.header("content-type", ct).body(b),
            None => req,
        };
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, body, headers }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.raw(Method::GET, path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.raw(Method::POST, path, token, Some(RawBody::Json(body))).await
    }
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.raw(Method::PUT, path, token, Some(RawBody::Json(body))).await
    }

    /// Makes a server admin with the CLI (as an operator does) and answers their access token.
    pub async fn server_admin(&self, name: &str) -> String {
        let password = "admin-password-1";
        let (ok, out) = self.cli(&["admin", "create-user", name, "--password", password, "--admin"]);
        assert!(ok, "{out}");
        let login = self
            .post("/v1/auth/token", None, json!({"grant_type": "password", "username": name, "password": password}))
            .await;
        login.ok()["access_token"].as_str().expect("an access token").to_string()
    }

    pub async fn register(&self, name: &str) -> User {
        self.register_in(name, None).await
    }

    pub async fn register_in(&self, name: &str, tenant: Option<&str>) -> User {
        let mut body = json!({"username": name, "password": "password-of-".to_string() + name});
        if let Some(t) = tenant {
            body["tenant_id"] = json!(t);
            if let Some(token) = self.tenant_tokens.lock().unwrap().get(t) {
                body["registration_token"] = json!(token);
            }
        }
        let r = self.post("/v1/auth/register", None, body).await;
        r.expect(201, "");
        let d = r.data();
        User {
            name: name.to_string(),
            id: d["participant_id"].as_str().unwrap().to_string(),
            fqid: d["fqid"].as_str().unwrap().to_string(),
            token: d["access_token"].as_str().unwrap().to_string(),
            refresh_token: d["refresh_token"].as_str().unwrap().to_string(),
            workspace_id: d["workspace_id"].as_str().unwrap().to_string(),
        }
    }

    /// Creates a room and answers its id.
    pub async fn create_room(&self, owner: &User, room_type: &str, name: &str) -> String {
        let r = self.post("/v1/rooms", Some(&owner.token), json!({"room_type": room_type, "name": name})).await;
        r.expect(201, "");
        r.data()["id"].as_str().unwrap().to_string()
    }

    /// A group room "Team" of `owner` that `members` have joined.
    pub async fn team_room(&self, owner: &User, members: &[&User]) -> String {
        let room = self.create_room(owner, "group", "Team").await;
        for m in members {
            self.add_member(&room, owner, m).await;
        }
        room
    }

    /// Invites (when needed) and joins `who` into the room.
    pub async fn add_member(&self, room: &str, by: &User, who: &User) {
        let room_type = self.get(&format!("/v1/rooms/{room}"), Some(&by.token)).await.ok()["room_type"].clone();
        if room_type != "public" {
            self.post(&format!("/v1/rooms/{room}/invite"), Some(&by.token), json!({"participant_id": who.id}))
                .await
                .ok();
        }
        self.post(&format!("/v1/rooms/{room}/join"), Some(&who.token), json!({})).await.ok();
    }

    /// Sends a `swp.text` message and answers it (asserting 201).
    pub async fn send_text(&self, u: &User, room: &str, body: &str) -> Value {
        let r = self
            .post(
                &format!("/v1/rooms/{room}/send"),
                Some(&u.token),
                json!({"content": {"msgtype": "swp.text", "body": body}}),
            )
            .await;
        r.expect(201, "");
        r.data().clone()
    }

    pub async fn set_power(&self, room: &str, by: &User, who: &User, level: i64) {
        self.put(
            &format!("/v1/rooms/{room}/members/{}/power-level", who.id),
            Some(&by.token),
            json!({"power_level": level}),
        )
        .await
        .ok();
    }
}

pub enum RawBody {
    Json(Value),
    Bytes(Vec<u8>, &'static str),
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
