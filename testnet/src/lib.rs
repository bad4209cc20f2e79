//! The testnet: several real `homeserver` processes on one machine, each with its own server
//! name, loopback address, TLS certificate from a testnet CA, and name resolution through a
//! DNS server the testnet runs, so federation discovery runs its real code path.
//!
//! Layout of one testnet (subnet `s`, the second octet; `0` by default):
//! - node `i` (alpha, beta, …) listens on `127.s.0.(10+i)`: client API on `:8008`, federation
//!   (HTTPS) on `:8448`;
//! - the DNS server listens on `127.s.0.2`, one port for the public view and one per node;
//! - node `i` reaches node `j` through a TCP proxy on `127.s.(1+i).(10+j):8448`, which a
//!   partition cuts.
//!
//! [`Testnet`] is the library API tests use; the `testnet` binary wraps it and adds a control
//! socket ([`control`]) so other shells can stop nodes, partition and heal.

pub mod certs;
pub mod control;
pub mod dns;
pub mod proxy;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub use certs::Ca;
use certs::NodeCert;
use dns::{DnsServer, Zone};
use proxy::Proxy;

pub const CLIENT_PORT: u16 = 8008;
pub const FEDERATION_PORT: u16 = 8448;
/// Node names, in order; past the list nodes are `node10.test`, `node11.test`, …
pub const NAMES: &[&str] = &["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"];
/// The most nodes one testnet runs (addresses `127.s.0.10` … `127.s.0.250`).
pub const MAX_NODES: usize = 240;
/// How long a node may take to answer `/healthz` and its well-known document.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// The one error type: a message for a human.
#[derive(Debug)]
pub struct Error(pub String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
    pub fn io(path: &Path, e: std::io::Error) -> Error {
        Error(format!("{}: {e}", path.display()))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The full server name for node `i`.
pub fn node_name(i: usize) -> String {
    match NAMES.get(i) {
        Some(n) => format!("{n}.test"),
        None => format!("node{i}.test"),
    }
}

/// Username and password of an account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A running (or stopped) node of the testnet.
#[derive(Debug)]
pub struct Node {
    pub index: usize,
    /// `beta.test`.
    pub server_name: String,
    /// `beta`.
    pub short: String,
    pub ip: Ipv4Addr,
    /// `http://127.0.0.11:8008`.
    pub client_url: String,
    /// `https://beta.test:8448` (resolve it through the testnet's DNS, trust its CA).
    pub federation_url: String,
    pub data_dir: PathBuf,
    /// stdout and stderr of every run, appended.
    pub log_path: PathBuf,
    /// The server admin the testnet created.
    pub admin: Credentials,
    /// The DNS view this node resolves through.
    pub dns: SocketAddr,
    cert: NodeCert,
    child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    pub fn federation_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), FEDERATION_PORT)
    }
}

/// How to start a testnet.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub state_dir: PathBuf,
    /// Second octet of every address the testnet uses (`127.<subnet>.…`), so two testnets can
    /// run side by side.
    pub subnet: u8,
    /// The `homeserver` binary; see [`find_homeserver_bin`] when unset.
    pub homeserver_bin: Option<PathBuf>,
    /// `RUST_LOG` for the nodes.
    pub log: String,
    /// Settings (`HOMESERVER_…` variables) given to every node, from its first command on (a
    /// benchmark lifts the default tenant's send rate this way).
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn new(nodes: usize, state_dir: impl Into<PathBuf>) -> Options {
        Options {
            nodes,
            state_dir: state_dir.into(),
            subnet: 0,
            homeserver_bin: None,
            log: "info".into(),
            env: Vec::new(),
        }
    }
}

/// Finds `homeserver`: `$TESTNET_HOMESERVER_BIN`, else next to the running executable (or one
/// directory up, for test binaries in `target/<profile>/deps`).
pub fn find_homeserver_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TESTNET_HOMESERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| Error::new(format!("current executable: {e}")))?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(format!("homeserver{}", std::env::consts::EXE_SUFFIX));
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(Error::new(
        "cannot find the homeserver binary: build it (cargo build -p homeserver) or set TESTNET_HOMESERVER_BIN",
    ))
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).is_err() {
        // Not security relevant (a local test network); keep going with a time-based value.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        buf = t.as_nanos().to_le_bytes()[..bytes.min(16)].to_vec();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn send_signal(pid: u32, signal: i32) -> bool {
    // SAFETY: kill(2) has no memory effects; a stale pid is at worst an ESRCH error.
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// An HTTP answer: status and JSON body (`Null` when not JSON).
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A registered account with a live access token.
#[derive(Clone, Debug)]
pub struct User {
    pub username: String,
    pub password: String,
    pub fqid: String,
    pub participant_id: String,
    pub access_token: String,
}

/// Talks to one node's client API.
#[derive(Clone, Debug)]
pub struct NodeClient {
    pub base: String,
    http: reqwest::Client,
}

impl NodeClient {
    pub fn new(base: impl Into<String>) -> NodeClient {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("plain HTTP client builds");
        NodeClient { base: base.into(), http }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Resp> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| Error::new(format!("{}{path}: {e}", self.base)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| Error::new(format!("{}{path}: {e}", self.base)))?;
        Ok(Resp { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Resp> {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Resp> {
        self.request(reqwest::Method::POST, path, token, Some(body)).await
    }

    /// Registers `username` (registration is open on testnet nodes).
    pub async fn register(&self, username: &str, password: &str) -> Result<User> {
        let r = self.post("/v1/auth/register", None, &json!({"username": username, "password": password})).await?;
        if r.status != 201 {
            return Err(Error::new(format!("register {username} on {}: {} {}", self.base, r.status, r.body)));
        }
        let d = r.data();
        Ok(User {
            username: username.into(),
            password: password.into(),
            fqid: d["fqid"].as_str().unwrap_or_default().into(),
            participant_id: d["participant_id"].as_str().unwrap_or_default().into(),
            access_token: d["access_token"].as_str().unwrap_or_default().into(),
        })
    }

    /// Logs in with a password; answers the access token.
    pub async fn login(&self, username: &str, password: &str) -> Result<String> {
        let body = json!({"grant_type": "password", "username": username, "password": password});
        let r = self.post("/v1/auth/token", None, &body).await?;
        match r.data()["access_token"].as_str() {
            Some(t) if r.is_success() => Ok(t.to_string()),
            _ => Err(Error::new(format!("login {username} on {}: {} {}", self.base, r.status, r.body))),
        }
    }
}

/// Polls `check` every 50 ms until it answers `Some`, for at most `limit`. Never a bare sleep.
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(format!("{what}: not reached within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running testnet. Dropping it kills every node it started; [`Testnet::down`] stops them
/// gracefully.
pub struct Testnet {
    pub options: Options,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    pub ca: Ca,
    pub dns: DnsServer,
    proxies: HashMap<(usize, usize), Proxy>,
    partitions: BTreeSet<(usize, usize)>,
    bin: PathBuf,
    /// Trusts only the testnet CA and resolves node names to their real addresses.
    tls: reqwest::Client,
    tokens: std::sync::Mutex<HashMap<usize, String>>,
    /// Where the control socket listens, when the CLI runs one (recorded in `testnet.json`).
    pub control: Option<SocketAddr>,
    /// Extra environment per node index ([`Testnet::set_node_env`]).
    extra_env: std::sync::Mutex<HashMap<usize, Vec<(String, String)>>>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.start_kill();
                // Reap it so no zombie stays behind while this process lives on.
                for _ in 0..200 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

impl Testnet {
    /// Starts `n` nodes with state under `dir`, subnet 0 and the default binary lookup.
    pub async fn start(n: usize, dir: impl Into<PathBuf>) -> Result<Testnet> {
        Testnet::start_with(Options::new(n, dir)).await
    }

    pub async fn start_with(options: Options) -> Result<Testnet> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let n = options.nodes;
        if !(1..=MAX_NODES).contains(&n) {
            return Err(Error::new(format!("--nodes must be between 1 and {MAX_NODES}")));
        }
        let bin = match &options.homeserver_bin {
            Some(b) => b.clone(),
            None => find_homeserver_bin()?,
        };
        if !bin.is_file() {
            return Err(Error::new(format!("homeserver binary {} does not exist", bin.display())));
        }
        std::fs::create_dir_all(&options.state_dir).map_err(|e| Error::io(&options.state_dir, e))?;
        let dir = std::fs::canonicalize(&options.state_dir).map_err(|e| Error::io(&options.state_dir, e))?;
        let s = options.subnet;
        let ca = Ca::load_or_create(&dir)?;

        let ips: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(127, s, 0, 10 + i as u8)).collect();
        let proxy_ip = |i: usize, j: usize| Ipv4Addr::new(127, s, 1 + i as u8, 10 + j as u8);
        let zone = Zone {
            nodes: (0..n).map(|i| (node_name(i), ips[i])).collect(),
            extra: Default::default(),
            proxy: (0..n).map(|i| (0..n).map(|j| proxy_ip(i, j)).collect()).collect(),
            federation_port: FEDERATION_PORT,
        };
        let dns = DnsServer::start(Ipv4Addr::new(127, s, 0, 2), zone).await?;

        let mut proxies = HashMap::new();
        for i in 0..n {
            for (j, ip) in ips.iter().enumerate() {
                if i != j {
                    let listen = SocketAddr::new(IpAddr::V4(proxy_ip(i, j)), FEDERATION_PORT);
                    let target = SocketAddr::new(IpAddr::V4(*ip), FEDERATION_PORT);
                    proxies.insert((i, j), Proxy::start(listen, target).await?);
                }
            }
        }

        let ca_cert = reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())
            .map_err(|e| Error::new(format!("CA certificate: {e}")))?;
        let mut tls = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([ca_cert])
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5));
        for (i, ip) in ips.iter().enumerate() {
            tls = tls.resolve(&node_name(i), SocketAddr::new(IpAddr::V4(*ip), FEDERATION_PORT));
        }
        let tls = tls.build().map_err(|e| Error::new(format!("TLS client: {e}")))?;

        let mut nodes = Vec::with_capacity(n);
        for (i, ip) in ips.iter().enumerate() {
            let server_name = node_name(i);
            let node_dir = dir.join(&server_name);
            let data_dir = node_dir.join("data");
            std::fs::create_dir_all(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
            let cert = ca.node_cert(&node_dir, &server_name)?;
            nodes.push(Node {
                index: i,
                short: server_name.trim_end_matches(".test").to_string(),
                client_url: format!("http://{ip}:{CLIENT_PORT}"),
                federation_url: format!("https://{server_name}:{FEDERATION_PORT}"),
                log_path: node_dir.join("log"),
                admin: Credentials { username: "admin".into(), password: String::new() },
                dns: dns.views[i],
                data_dir,
                ip: *ip,
                server_name,
                cert,
                child: None,
            });
        }

        let mut net = Testnet {
            options,
            dir,
            nodes,
            ca,
            dns,
            proxies,
            partitions: BTreeSet::new(),
            bin,
            tls,
            tokens: Default::default(),
            control: None,
            extra_env: Default::default(),
        };
        // Admin accounts first (in parallel), then every node (in parallel).
        let admins = futures_join(net.nodes.iter().map(|node| net.ensure_admin(node))).await;
        for (node, admin) in net.nodes.iter_mut().zip(admins) {
            node.admin = admin?;
        }
        for i in 0..n {
            let child = net.spawn(i)?;
            net.nodes[i].child = Some(child);
        }
        let ready = futures_join((0..n).map(|i| net.wait_ready(i))).await;
        for r in ready {
            r?;
        }
        net.write_state()?;
        Ok(net)
    }

    /// The node called `name`: `beta`, `beta.test`, or its index as text.
    pub fn index(&self, name: &str) -> Result<usize> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.nodes
            .iter()
            .position(|n| n.server_name == name || n.short == name || n.index.to_string() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.nodes.iter().map(|n| n.short.as_str()).collect();
                Error::new(format!("no node {name:?} (nodes: {})", known.join(", ")))
            })
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        Ok(&self.nodes[self.index(name)?])
    }

    pub fn client(&self, name: &str) -> Result<NodeClient> {
        Ok(NodeClient::new(&self.node(name)?.client_url))
    }

    pub fn ca_cert_path(&self) -> &Path {
        &self.ca.cert_path
    }

    /// The public DNS view: real addresses of every node.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns.public
    }

    /// Adds a name to every DNS view (A and SRV on `port`), e.g. a rogue server in a test.
    pub fn add_host(&self, name: &str, ip: IpAddr, port: u16) {
        self.dns.add_host(name, ip, port);
    }

    pub fn partitions(&self) -> Vec<(String, String)> {
        self.partitions
            .iter()
            .map(|(a, b)| (self.nodes[*a].server_name.clone(), self.nodes[*b].server_name.clone()))
            .collect()
    }

    async fn ensure_admin(&self, node: &Node) -> Result<Credentials> {
        let path = node.data_dir.parent().unwrap_or(&node.data_dir).join("admin.json");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(c) = serde_json::from_str::<Credentials>(&text)
        {
            return Ok(c);
        }
        let creds = Credentials { username: "admin".into(), password: random_hex(12) };
        let out = Command::new(&self.bin)
            .args(["admin", "create-user", &creds.username, "--admin", "--password", &creds.password])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--server-name", &node.server_name])
            .envs(self.node_env(node))
            .env_remove("HOMESERVER_CONFIG")
            .output()
            .await
            .map_err(|e| Error::new(format!("run {}: {e}", self.bin.display())))?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "{}: creating the admin failed: {}{}",
                node.server_name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&creds).expect("serialises"))
            .map_err(|e| Error::io(&path, e))?;
        Ok(creds)
    }

    fn node_env(&self, node: &Node) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("HOMESERVER_FEDERATION_TLS_CERT".into(), node.cert.cert_path.display().to_string()),
            ("HOMESERVER_FEDERATION_TLS_KEY".into(), node.cert.key_path.display().to_string()),
            ("HOMESERVER_FEDERATION_DNS_SERVER".into(), node.dns.to_string()),
            ("HOMESERVER_FEDERATION_CA_FILE".into(), self.ca.cert_path.display().to_string()),
            ("HOMESERVER_REGISTRATION".into(), "open".into()),
        ];
        env.extend(self.options.env.iter().cloned());
        let extra = self.extra_env.lock().unwrap_or_else(|e| e.into_inner());
        env.extend(extra.get(&node.index).into_iter().flatten().cloned());
        env
    }

    /// Sets an environment variable (a `HOMESERVER_…` setting) for node `name` from its next
    /// start on: stop and start the node for it to take effect.
    pub fn set_node_env(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let i = self.index(name)?;
        let mut extra = self.extra_env.lock().unwrap_or_else(|e| e.into_inner());
        let list = extra.entry(i).or_default();
        list.retain(|(k, _)| k != key);
        list.push((key.to_string(), value.to_string()));
        Ok(())
    }

    fn spawn(&self, i: usize) -> Result<Child> {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(|e| Error::io(&node.log_path, e))?;
        let log2 = log.try_clone().map_err(|e| Error::io(&node.log_path, e))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--server-name", &node.server_name])
            .args(["--listen", &format!("{}:{CLIENT_PORT}", node.ip)])
            .args(["--federation-listen", &format!("{}:{FEDERATION_PORT}", node.ip)])
            .envs(self.node_env(node))
            .env("RUST_LOG", &self.options.log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Its own process group: a Ctrl-C in the terminal reaches the testnet, which then
            // stops the nodes in order.
            .process_group(0);
        // Inherited HOMESERVER_* settings would change the nodes; drop them.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HOMESERVER_")) {
            if !self.node_env(node).iter().any(|(n, _)| *n == k) {
                cmd.env_remove(&k);
            }
        }
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
        // the thread that spawned it dies, so no node outlives a crashed testnet.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let _ = writeln_log(&node.log_path, &format!("--- testnet: starting {}", node.server_name));
        cmd.spawn().map_err(|e| Error::new(format!("start {}: {e}", self.bin.display())))
    }

    /// Waits until node `i` answers `/healthz` and its well-known document over verified TLS.
    async fn wait_ready(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let client = NodeClient::new(&node.client_url);
        let url = format!("{}/.well-known/scaiwave/server", node.federation_url);
        let pid = node.pid();
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if pid.is_some_and(|p| !process_alive(p)) {
                return Err(Error::new(format!(
                    "{} exited during start; log {}:\n{}",
                    node.server_name,
                    node.log_path.display(),
                    log_tail(&node.log_path, 20)
                )));
            }
            let healthy = matches!(client.get("/healthz", None).await, Ok(r) if r.status == 200);
            if healthy && self.serves_well_known(&url, &node.server_name).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "{} not ready within {READY_LIMIT:?}; log {}:\n{}",
                    node.server_name,
                    node.log_path.display(),
                    log_tail(&node.log_path, 20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `url` answers the well-known document of `server_name` over TLS verified against
    /// the testnet CA.
    async fn serves_well_known(&self, url: &str, server_name: &str) -> bool {
        let Ok(resp) = self.tls.get(url).send().await else { return false };
        if !resp.status().is_success() {
            return false;
        }
        matches!(resp.json::<Value>().await, Ok(doc) if doc["server_name"] == server_name)
    }

    /// Starts a stopped node again, on its data dir, and waits until it is ready.
    pub async fn start_node(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if self.nodes[i].child.is_some() {
            return Err(Error::new(format!("{} is already running", self.nodes[i].server_name)));
        }
        let child = self.spawn(i)?;
        self.nodes[i].child = Some(child);
        let ready = self.wait_ready(i).await;
        if ready.is_err()
            && let Some(mut c) = self.nodes[i].child.take()
        {
            let _ = c.kill().await;
        }
        self.write_state()?;
        ready
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 20 s).
    pub async fn stop_node(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        let mut child = self.nodes[i]
            .child
            .take()
            .ok_or_else(|| Error::new(format!("{} is not running", self.nodes[i].server_name)))?;
        let result = stop_child(&mut child).await;
        self.tokens.lock().map(|mut t| t.remove(&i)).ok();
        self.write_state()?;
        result.map(|_| ())
    }

    /// SIGKILL, as in a crash.
    pub async fn kill_node(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        let mut child = self.nodes[i]
            .child
            .take()
            .ok_or_else(|| Error::new(format!("{} is not running", self.nodes[i].server_name)))?;
        child.kill().await.map_err(|e| Error::new(format!("kill {}: {e}", self.nodes[i].server_name)))?;
        self.write_state()?;
        Ok(())
    }

    /// Cuts every connection between `a` and `b`, both ways. Each still reaches the others.
    pub fn partition(&mut self, a: &str, b: &str) -> Result<()> {
        let (i, j) = (self.index(a)?, self.index(b)?);
        if i == j {
            return Err(Error::new("cannot partition a node from itself"));
        }
        for pair in [(i, j), (j, i)] {
            if let Some(p) = self.proxies.get(&pair) {
                p.set_cut(true);
            }
        }
        self.partitions.insert((i.min(j), i.max(j)));
        self.write_state()
    }

    /// Restores every partitioned pair.
    pub fn heal(&mut self) -> Result<()> {
        for p in self.proxies.values() {
            p.set_cut(false);
        }
        self.partitions.clear();
        self.write_state()
    }

    /// Stops every node gracefully (in parallel); the state dir stays for a later `up`.
    pub async fn down(mut self) -> Result<()> {
        self.stop_all().await
    }

    pub async fn stop_all(&mut self) -> Result<()> {
        let mut children: Vec<Child> = self.nodes.iter_mut().filter_map(|n| n.child.take()).collect();
        let results = futures_join(children.iter_mut().map(stop_child)).await;
        let _ = self.write_state();
        results.into_iter().collect::<Result<Vec<_>>>().map(|_| ())
    }

    /// An access token of node `name`'s admin (cached; logs in again after a 401).
    pub async fn admin_token(&self, name: &str) -> Result<String> {
        let i = self.index(name)?;
        if let Some(t) = self.tokens.lock().ok().and_then(|t| t.get(&i).cloned()) {
            return Ok(t);
        }
        let node = &self.nodes[i];
        let token = NodeClient::new(&node.client_url).login(&node.admin.username, &node.admin.password).await?;
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(i, token.clone());
        }
        Ok(token)
    }

    /// `POST /v1/admin/federation/resolve {server_name}` on node `from`, as its admin.
    pub async fn resolve(&self, from: &str, server_name: &str) -> Result<Resp> {
        let client = self.client(from)?;
        let body = json!({"server_name": server_name});
        for _ in 0..2 {
            let token = self.admin_token(from).await?;
            let r = client.post("/v1/admin/federation/resolve", Some(&token), &body).await?;
            if r.status != 401 {
                return Ok(r);
            }
            if let Ok(mut t) = self.tokens.lock() {
                t.remove(&self.index(from)?);
            }
        }
        Err(Error::new(format!("{from}: the admin cannot log in")))
    }

    /// Registers `username` on node `name`.
    pub async fn register(&self, name: &str, username: &str) -> Result<User> {
        self.client(name)?.register(username, &format!("password-of-{username}")).await
    }

    /// Polls `check` with a client of node `name` until it answers `Some` (at most `limit`).
    pub async fn wait_until<T, F, Fut>(&self, name: &str, limit: Duration, mut check: F) -> Result<T>
    where
        F: FnMut(NodeClient) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let client = self.client(name)?;
        let what = format!("condition on {}", self.node(name)?.server_name);
        poll_until(&what, limit, || check(client.clone())).await
    }

    /// The document written to `DIR/testnet.json`.
    pub fn state(&self) -> Value {
        json!({
            "nodes": self.nodes.iter().map(|n| json!({
                "server_name": n.server_name,
                "client_url": n.client_url,
                "federation_url": n.federation_url,
                "federation_addr": n.federation_addr().to_string(),
                "pid": n.pid(),
                "data_dir": n.data_dir,
                "log": n.log_path,
                "dns": n.dns.to_string(),
                "admin": n.admin,
            })).collect::<Vec<_>>(),
            "ca_cert": self.ca.cert_path,
            "dns": self.dns.public.to_string(),
            "control": self.control.map(|c| c.to_string()),
            "pid": std::process::id(),
            "partitions": self.partitions(),
        })
    }

    pub fn write_state(&self) -> Result<()> {
        let path = self.dir.join("testnet.json");
        let tmp = self.dir.join("testnet.json.tmp");
        let text = serde_json::to_vec_pretty(&self.state()).expect("state serialises");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

/// SIGTERM and wait; SIGKILL after [`STOP_LIMIT`].
async fn stop_child(child: &mut Child) -> Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        send_signal(pid, libc::SIGTERM);
    }
    match tokio::time::timeout(STOP_LIMIT, child.wait()).await {
        Ok(r) => r.map_err(|e| Error::new(format!("wait: {e}"))),
        Err(_) => {
            let _ = child.kill().await;
            Err(Error::new(format!("a node did not stop within {STOP_LIMIT:?} after SIGTERM and was killed")))
        }
    }
}

/// Runs futures concurrently on the current task and answers their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futs).await
}

fn writeln_log(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
