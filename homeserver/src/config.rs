//! Configuration: defaults, then a TOML file, then `HOMESERVER_*` environment variables, then
//! command-line flags — each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How hard a commit holds on to what it wrote (the database's `synchronous` setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=NORMAL`: survives a killed process; the last commits may be lost on power loss.
    Normal,
    /// `synchronous=FULL`: survives power loss, at the cost of an fsync per commit.
    Full,
}

/// The sqlite URL of the default database: `homeserver.db` inside `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("homeserver.db").display())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone may register.
    Open,
    /// Registration needs the configured `registration_token`.
    Token,
    /// Only `homeserver admin create-user` makes accounts.
    Closed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    pub max_participants: i64,
    pub send_rate_per_s: i64,
    pub send_burst: i64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits { max_participants: 10_000, send_rate_per_s: 50, send_burst: 200 }
    }
}

/// A token bucket: `burst` at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_minute: u32, burst: u32) -> Rate {
        Rate { per_minute, burst }
    }
}

/// What one client, address or connection may cost the server (`docs/configuration.md`,
/// "Limits"). Defaults suit a server on the open internet; tests lower them to reach them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A request's head (request line and headers) must arrive within this.
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long is abandoned (408).
    pub body_read_timeout_secs: u64,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout_secs: u64,
    /// Open connections per listener, all clients together. Capped below the process's
    /// file-descriptor limit at start.
    pub max_connections: usize,
    /// Open connections per listener from one client IP address.
    pub max_connections_per_address: usize,
    /// Open WebSocket streams (`/v1/stream`) per participant.
    pub max_streams_per_participant: usize,
    /// After SIGTERM, in-flight requests get this long before connections are dropped.
    pub shutdown_grace_secs: u64,
    /// Longest request URI (path and query), in bytes; over it: 414.
    pub max_uri_bytes: usize,
    /// Largest request head (all header names and values), in bytes; over it: 431.
    pub max_header_bytes: usize,
    /// Password checks (login, register, token grants) per client address.
    pub login_per_address: Rate,
    /// Failed logins per account.
    pub login_failures_per_account: Rate,
    /// Password hashes computed at once; more wait their turn.
    pub password_hash_concurrency: usize,
    /// Rooms (and DMs) created per participant.
    pub room_creation_per_participant: Rate,
    /// Presence changes per participant.
    pub presence_per_participant: Rate,
    /// Typing notices per participant.
    pub typing_per_participant: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 75,
            max_connections: 8192,
            max_connections_per_address: 512,
            max_streams_per_participant: 16,
            shutdown_grace_secs: 10,
            max_uri_bytes: 16 * 1024,
            max_header_bytes: 32 * 1024,
            login_per_address: Rate::new(60, 30),
            login_failures_per_account: Rate::new(6, 10),
            password_hash_concurrency: 2,
            room_creation_per_participant: Rate::new(60, 60),
            presence_per_participant: Rate::new(60, 20),
            typing_per_participant: Rate::new(120, 30),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The DNS name other servers know this one by; the part after `:` in every fqid.
    pub server_name: String,
    /// Client API listener.
    pub listen: SocketAddr,
    /// Server-to-server listener; off unless set.
    pub federation_listen: Option<SocketAddr>,
    /// PEM certificate chain for the federation listener; with `federation_tls_key`, it serves
    /// HTTPS. Off by default (plain HTTP).
    pub federation_tls_cert: Option<PathBuf>,
    /// PEM private key for `federation_tls_cert`.
    pub federation_tls_key: Option<PathBuf>,
    /// DNS server (`ip:port`) used to discover peers instead of the system resolver config.
    pub federation_dns_server: Option<SocketAddr>,
    /// PEM CA certificate(s) trusted for peers in addition to the system roots.
    pub federation_ca_file: Option<PathBuf>,
    /// Where the database and (later) media and keys live.
    pub data_dir: PathBuf,
    /// `sqlite://…`; defaults to `homeserver.db` inside `data_dir`.
    pub database_url: Option<String>,
    /// `normal` (survives a killed process) or `full` (survives power loss; slower commits).
    pub durability: Durability,
    /// How long the write-ahead log may grow before it is started over, in MiB. Starting it
    /// over pauses writes for a couple of disk flushes (tens of milliseconds on slow disks), so
    /// a longer log pauses less often; it is also disk space the server keeps while writes keep
    /// coming (the log is emptied once they pause).
    pub wal_restart_mib: u64,
    /// `open`, `token` or `closed`; unset means open when the client listener is on loopback,
    /// closed otherwise.
    pub registration: Option<RegistrationMode>,
    pub registration_token: Option<String>,
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    /// Largest request body accepted by JSON endpoints.
    pub max_body_bytes: usize,
    /// Largest file accepted by `POST /v1/media/upload`.
    pub max_upload_bytes: u64,
    /// Largest room bundle `POST /v1/rooms/import` accepts, uncompressed (and uploaded).
    pub max_import_bytes: u64,
    /// How long after sending a message its sender may edit it.
    pub edit_window_secs: i64,
    /// Log filter (`RUST_LOG` syntax) used when `RUST_LOG` is not set.
    pub log: String,
    /// Limits given to tenants created without explicit ones (including `default`).
    pub tenant_defaults: TenantLimits,
    /// Connection, time and abuse limits.
    pub limits: Limits,
    /// Federation tuning: delivery back-off, limits on peers, trusted notaries.
    pub federation: FederationSettings,
}

/// The `[federation]` table (`docs/configuration.md`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationSettings {
    /// Servers whose `keys/query` answers are trusted for peers that cannot be reached.
    pub notaries: Vec<String>,
    /// First retry delay after a failed delivery, in milliseconds; doubled per failure.
    pub backoff_base_ms: u64,
    /// Longest delay between delivery attempts to a peer, in seconds.
    pub backoff_cap_secs: u64,
    /// Bound on one request to a peer, in seconds.
    pub request_timeout_secs: u64,
    /// Requests one peer may have in flight here at once.
    pub max_inflight_per_origin: u32,
    /// Requests one peer may make here per second (sustained) and in a burst.
    pub requests_per_origin_per_s: u32,
    pub requests_per_origin_burst: u32,
    /// A `send_join?omit_members=true` leaves others' member events out (a join in stages)
    /// only when the room has more member events than this: a small room's joiner gets its
    /// whole member list at once.
    pub omit_members_above: u32,
    /// A destination more than this many events behind (back from an outage) catches up: the
    /// newest event of each room goes, and the peer pulls the rest. 0 replays everything.
    pub catch_up_above: u32,
}

impl Default for FederationSettings {
    fn default() -> Self {
        FederationSettings {
            notaries: Vec::new(),
            backoff_base_ms: 500,
            backoff_cap_secs: 300,
            request_timeout_secs: 30,
            max_inflight_per_origin: 32,
            requests_per_origin_per_s: 100,
            requests_per_origin_burst: 400,
            omit_members_above: 100,
            catch_up_above: 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost".into(),
            listen: "127.0.0.1:8008".parse().expect("valid default address"),
            federation_listen: None,
            federation_tls_cert: None,
            federation_tls_key: None,
            federation_dns_server: None,
            federation_ca_file: None,
            data_dir: PathBuf::from("./data"),
            database_url: None,
            durability: Durability::Normal,
            wal_restart_mib: 256,
            registration: None,
            registration_token: None,
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            max_body_bytes: 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            max_import_bytes: 256 * 1024 * 1024,
            edit_window_secs: 24 * 3600,
            log: "info".into(),
            tenant_defaults: TenantLimits::default(),
            limits: Limits::default(),
            federation: FederationSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The flags `serve` and the admin commands share; `None` leaves the configured value.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigFlags {
    /// TOML configuration file.
    #[arg(long, env = "HOMESERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the database, keys and media [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL [default: sqlite in the data dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// This server's name, as it appears in fqids [default: localhost].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

impl Config {
    /// Builds the configuration: defaults ← file ← `HOMESERVER_*` variables ← flags.
    pub fn load(flags: &ConfigFlags, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = &flags.config {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.clone(), e))?;
            let file: toml::Table =
                text.parse().map_err(|e: toml::de::Error| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            merge(&mut table, file);
        }
        apply_env(&mut table, env)?;
        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        if let Some(d) = &flags.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(u) = &flags.database_url {
            config.database_url = Some(u.clone());
        }
        if let Some(n) = &flags.server_name {
            config.server_name = n.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !crate::ids::is_server_name(&self.server_name) {
            return Err(ConfigError::Invalid(format!("server_name {:?} is not a DNS name", self.server_name)));
        }
        if self.access_token_ttl_secs < 1 || self.refresh_token_ttl_secs < 1 {
            return Err(ConfigError::Invalid("token lifetimes must be at least 1 second".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("max_body_bytes must be at least 1024".into()));
        }
        if !(1..=64 * 1024).contains(&self.wal_restart_mib) {
            return Err(ConfigError::Invalid("wal_restart_mib must be from 1 to 65536".into()));
        }
        if self.max_upload_bytes < 1 || self.max_upload_bytes > i64::MAX as u64 {
            return Err(ConfigError::Invalid("max_upload_bytes must be at least 1 and fit in 63 bits".into()));
        }
        if self.max_import_bytes < 1 || self.max_import_bytes > i64::MAX as u64 {
            return Err(ConfigError::Invalid("max_import_bytes must be at least 1 and fit in 63 bits".into()));
        }
        if self.federation_tls_cert.is_some() != self.federation_tls_key.is_some() {
            return Err(ConfigError::Invalid("federation_tls_cert and federation_tls_key go together".into()));
        }
        let l = &self.limits;
        if l.header_read_timeout_secs < 1 || l.body_read_timeout_secs < 1 || l.idle_timeout_secs < 1 {
            return Err(ConfigError::Invalid("limits: timeouts must be at least 1 second".into()));
        }
        if l.max_connections < 1 || l.max_connections_per_address < 1 || l.max_streams_per_participant < 1 {
            return Err(ConfigError::Invalid("limits: connection and stream caps must be at least 1".into()));
        }
        if l.password_hash_concurrency < 1 {
            return Err(ConfigError::Invalid("limits.password_hash_concurrency must be at least 1".into()));
        }
        if l.max_uri_bytes < 256 || l.max_header_bytes < 1024 {
            return Err(ConfigError::Invalid("limits: max_uri_bytes >= 256 and max_header_bytes >= 1024".into()));
        }
        for (name, r) in [
            ("login_per_address", l.login_per_address),
            ("login_failures_per_account", l.login_failures_per_account),
            ("room_creation_per_participant", l.room_creation_per_participant),
            ("presence_per_participant", l.presence_per_participant),
            ("typing_per_participant", l.typing_per_participant),
        ] {
            if r.per_minute < 1 || r.burst < 1 {
                return Err(ConfigError::Invalid(format!("limits.{name}: per_minute and burst must be at least 1")));
            }
        }
        if self.registration == Some(RegistrationMode::Token) && self.registration_token.is_none() {
            return Err(ConfigError::Invalid("registration = \"token\" needs registration_token".into()));
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| sqlite_url(&self.data_dir))
    }

    pub fn registration_mode(&self) -> RegistrationMode {
        self.registration.unwrap_or(if self.listen.ip().is_loopback() {
            RegistrationMode::Open
        } else {
            RegistrationMode::Closed
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `HOMESERVER_ACCESS_TOKEN_TTL_SECS=60` sets `access_token_ttl_secs`;
/// `HOMESERVER_TENANT_DEFAULTS__SEND_BURST=5` sets `tenant_defaults.send_burst`. Values parse as
/// TOML (numbers, booleans) and fall back to strings. Variables naming no setting are ignored,
/// since the environment is shared with other programs.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    const KNOWN_OPTIONAL: &[&str] = &[
        "federation_listen",
        "federation_tls_cert",
        "federation_tls_key",
        "federation_dns_server",
        "federation_ca_file",
        "database_url",
        "registration",
        "registration_token",
    ];
    for (name, raw) in env {
        let Some(key) = name.strip_prefix("HOMESERVER_") else { continue };
        if key == "CONFIG" {
            continue;
        }
        let path: Vec<String> = key.to_lowercase().split("__").map(str::to_string).collect();
        let value = parse_env_value(&raw);
        let (last, parents) = path.split_last().expect("split yields at least one part");
        let Some(cur) = table_at(table, parents) else { continue };
        if cur.contains_key(last) || (parents.is_empty() && KNOWN_OPTIONAL.contains(&last.as_str())) {
            let value = match cur.get(last) {
                Some(toml::Value::String(_)) | None => toml::Value::String(raw.clone()),
                _ => value,
            };
            cur.insert(last.clone(), value);
        }
    }
    Ok(())
}

fn table_at<'a>(t: &'a mut toml::Table, path: &[String]) -> Option<&'a mut toml::Table> {
    match path.split_first() {
        None => Some(t),
        Some((head, rest)) => match t.get_mut(head) {
            Some(toml::Value::Table(inner)) => table_at(inner, rest),
            _ => None,
        },
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_embedded() {
        let c = Config::load(&ConfigFlags::default(), vec![]).unwrap();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8008");
        assert_eq!(c.registration_mode(), RegistrationMode::Open);
        assert!(c.database_url().ends_with("data/homeserver.db"));
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "server_name = \"file.test\"\nlisten = \"0.0.0.0:9000\"\n[tenant_defaults]\nsend_burst = 7\n",
        )
        .unwrap();
        let flags = ConfigFlags { config: Some(file.clone()), ..Default::default() };
        let c = Config::load(&flags, env(&[("HOMESERVER_ACCESS_TOKEN_TTL_SECS", "5")])).unwrap();
        assert_eq!(c.server_name, "file.test");
        assert_eq!(c.tenant_defaults.send_burst, 7);
        assert_eq!(c.access_token_ttl_secs, 5);
        assert_eq!(c.registration_mode(), RegistrationMode::Closed);

        let c = Config::load(
            &flags,
            env(&[
                ("HOMESERVER_SERVER_NAME", "env.test"),
                ("HOMESERVER_TENANT_DEFAULTS__SEND_BURST", "9"),
                ("HOMESERVER_UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server_name, "env.test");
        assert_eq!(c.tenant_defaults.send_burst, 9);

        let flags = ConfigFlags { server_name: Some("flag.test".into()), ..flags };
        let c =
            Config::load(&flags, env(&[("HOMESERVER_SERVER_NAME", "env.test"), ("HOMESERVER_REGISTRATION", "token")]));
        assert!(c.is_err(), "token registration without a token is refused");
        let c = Config::load(&flags, env(&[("HOMESERVER_SERVER_NAME", "env.test")])).unwrap();
        assert_eq!(c.server_name, "flag.test");
    }

    #[test]
    fn federation_tls_and_discovery_settings() {
        let c = Config::load(
            &ConfigFlags::default(),
            env(&[
                ("HOMESERVER_FEDERATION_TLS_CERT", "/tmp/tls.pem"),
                ("HOMESERVER_FEDERATION_TLS_KEY", "/tmp/tls.key"),
                ("HOMESERVER_FEDERATION_DNS_SERVER", "127.0.0.2:5353"),
                ("HOMESERVER_FEDERATION_CA_FILE", "/tmp/ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(c.federation_tls_key.as_deref(), Some(Path::new("/tmp/tls.key")));
        assert_eq!(c.federation_dns_server, Some("127.0.0.2:5353".parse().unwrap()));
        assert_eq!(c.federation_ca_file.as_deref(), Some(Path::new("/tmp/ca.pem")));
        let half = Config::load(&ConfigFlags::default(), env(&[("HOMESERVER_FEDERATION_TLS_CERT", "/tmp/tls.pem")]));
        assert!(half.is_err(), "a certificate without its key is refused");
        let bad = Config::load(&ConfigFlags::default(), env(&[("HOMESERVER_FEDERATION_DNS_SERVER", "nonsense")]));
        assert!(bad.is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "sever_name = \"typo\"\n").unwrap();
        let flags = ConfigFlags { config: Some(file), ..Default::default() };
        assert!(Config::load(&flags, vec![]).is_err());
        assert!(Config::load(&ConfigFlags::default(), env(&[("HOMESERVER_LISTEN", "nonsense")])).is_err());
    }

    #[test]
    fn wal_restart_size_is_bounded() {
        assert_eq!(Config::default().wal_restart_mib, 256);
        let load = |mib: &str| Config::load(&ConfigFlags::default(), env(&[("HOMESERVER_WAL_RESTART_MIB", mib)]));
        assert_eq!(load("8").unwrap().wal_restart_mib, 8);
        assert!(load("0").is_err(), "a log started over at every write is refused");
        assert!(load("65537").is_err());
    }
}
