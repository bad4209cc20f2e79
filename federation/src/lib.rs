//! Server-to-server federation: the protocol, as plain functions over data with I/O at the
//! edges. Storage is the host's, asked for through [`host::Host`], which the homeserver
//! implements; the dependency stays `homeserver → federation → crypto`.
//!
//! - [`event`], [`auth`] and [`state_res`]: rooms as replicated event graphs. A typed view of
//!   an event, the authorization rules as one pure function, and state resolution. All pure:
//!   no I/O, no clock, no panics on any input (`docs/federation.md`, "Authorization rules").
//! - [`wire`]: the wire protocol's shapes and limits (paths, transactions, verdicts, EDUs).
//! - [`client`]: signed requests to peers ([`client::FedClient`]); [`keys`]: peers' signing
//!   keys, cached, with the notary fallback ([`keys::KeyRing`]).
//! - [`verify`]: steps 1–3 of the checks on every inbound event (shape, origin signature,
//!   content hash).
//! - [`inbound`]: the receiving side's pure decisions (order of a batch, fetch back-off).
//! - [`host`]: what the flows ask of their host — storage ([`host::Host`]) and the network
//!   ([`host::Remote`], really [`host::Network`]: a client and a key ring).
//! - [`gaps`]: the gap-filling flow of an inbound event (auth chain, `get_missing_events`
//!   rounds, the state fallback, the per-event fetch back-off), generic over those two.
//! - [`join`]: joins, leaves and invites as functions over data (templates, stripped state,
//!   the checks on a `send_join` answer).
//! - [`sender`]: the per-destination sender's decisions (back-off, transaction ids, batches).
//! - [`peers`]: decisions about peers' participants and media.
//! - **Discovery**, finding a peer by its server name, below.
//!
//!
//! 1. Resolve the name through DNS ([`hickory_resolver`]): an explicit `name:port` or an IP
//!    literal is used as is; otherwise SRV `_scaiwave._tcp.<name>` first (lowest priority,
//!    then highest weight), whose target's A/AAAA records and port are used; otherwise the
//!    name's own A/AAAA records on port [`DEFAULT_PORT`].
//! 2. Fetch `https://<name>:<port>/.well-known/scaiwave/server` over verified TLS, connecting to
//!    the resolved addresses with the server name as SNI and `Host`.
//!    The body is read chunk by chunk and refused as soon as it passes 64 KiB ([`push_capped`]).
//! 3. Check the document ([`check_well_known`], pure): `server_name` equals the server name as
//!    asked for (port included), `valid_until_ts` is not in the past, it lists `verify_keys`,
//!    and it carries a valid self-signature under one of them.
//!
//! The decisions (what is pure, which roots are trusted) are in [`parse_server_name`],
//! [`pick_srv`], [`push_capped`] and [`check_well_known`], which do no I/O and are
//! unit-tested; [`Discovery`] is the thin I/O shell around them.
//!
//! TLS is rustls with the ring provider only. The process must install it
//! (`rustls::crypto::ring::default_provider().install_default()`) before building a
//! [`Discovery`]; [`install_crypto_provider`] does that and is idempotent. Trust roots come
//! from `rustls-platform-verifier` (the system's CA store on Linux), which reqwest's
//! `rustls-no-provider` feature already brings in, plus an optional extra CA.

pub mod auth;
pub mod client;
pub mod event;
pub mod gaps;
pub mod host;
pub mod inbound;
pub mod join;
pub mod keys;
pub mod peers;
pub mod policy;
pub mod sender;
pub mod state_res;
#[cfg(test)]
mod testing;
pub mod verify;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use serde::Serialize;
use serde_json::Value;

/// The federation port when neither SRV nor the name gives one.
pub const DEFAULT_PORT: u16 = 8448;
/// The path of the self-signed discovery document.
pub const WELL_KNOWN_PATH: &str = "/.well-known/scaiwave/server";
/// The largest well-known document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Installs ring as the process-wide rustls provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid server name {0:?}")]
    InvalidName(String),
    #[error("DNS: {0}")]
    Dns(String),
    #[error("DNS: {0} has no address")]
    NoAddress(String),
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("bad well-known document: {0}")]
    BadDocument(String),
    #[error("well-known document names {found:?}, expected {expected:?}")]
    NameMismatch { expected: String, found: String },
    #[error("well-known document expired: valid_until_ts {valid_until_ts} is before now ({now_ms})")]
    Expired { valid_until_ts: u64, now_ms: u64 },
    #[error("well-known document signature: {0}")]
    BadSignature(String),
    #[error("discovery setup: {0}")]
    Setup(String),
}

/// Where a server name points, before any connection is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The host part of the server name, used for SNI and `Host`.
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
}

/// A discovered, verified peer.
#[derive(Clone, Debug, Serialize)]
pub struct ServerInfo {
    pub server_name: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    /// `key_id → unpadded base64 public key`.
    pub verify_keys: BTreeMap<String, String>,
    pub protocol_versions: Vec<String>,
    /// Unix ms until which the keys may be trusted.
    pub valid_until_ts: u64,
    /// The whole document as received (signatures included).
    pub document: Value,
}

/// What the DNS step should do for a server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePlan {
    /// An IP literal: no DNS at all.
    Ip(IpAddr, u16),
    /// `host:port`: A/AAAA of the host only, no SRV.
    HostPort(String, u16),
    /// A bare host: SRV first, then A/AAAA on the default port.
    Host(String),
}

/// Splits a server name into what DNS must resolve. Pure.
pub fn parse_server_name(name: &str) -> Result<NamePlan, DiscoveryError> {
    let bad = || DiscoveryError::InvalidName(name.to_string());
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    // [v6]:port or [v6]; brackets are for IPv6 only.
    if let Some(rest) = name.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?.into();
        let port = match after {
            "" => DEFAULT_PORT,
            p => p.strip_prefix(':').and_then(|p| p.parse().ok()).filter(|p| *p != 0).ok_or_else(bad)?,
        };
        return Ok(NamePlan::Ip(ip, port));
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?)),
        None => (name, None),
    };
    // An IPv6 literal must be bracketed: `::1` would otherwise read as host `::`, port 1.
    if host.contains(':') {
        return Err(bad());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(NamePlan::Ip(ip, port.unwrap_or(DEFAULT_PORT)));
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !host.split('.').all(valid_label) {
        return Err(bad());
    }
    let host = host.to_ascii_lowercase();
    Ok(match port {
        Some(p) => NamePlan::HostPort(host, p),
        None => NamePlan::Host(host),
    })
}

/// One SRV answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// Picks the SRV record to use: lowest priority, then highest weight, then target name (so
/// the choice is deterministic). A target of `.` means "no service" (RFC 2782). Pure.
pub fn pick_srv(records: &[SrvRecord]) -> Option<&SrvRecord> {
    records
        .iter()
        .filter(|r| !r.target.is_empty() && r.target != "." && r.port != 0)
        .min_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)).then(a.target.cmp(&b.target)))
}

/// Appends one chunk of a response body to `buf`, refusing it (and so the whole document) as
/// soon as the total would pass `cap` bytes. Pure; lets the caller stop reading at the cap
/// instead of buffering whatever a peer sends without a `Content-Length`.
pub fn push_capped(buf: &mut Vec<u8>, chunk: &[u8], cap: usize) -> Result<(), DiscoveryError> {
    if chunk.len() > cap.saturating_sub(buf.len()) {
        return Err(DiscoveryError::BadDocument(format!("document too large (more than {cap} bytes)")));
    }
    buf.extend_from_slice(chunk);
    Ok(())
}

/// What a checked well-known document says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WellKnown {
    /// `key_id → unpadded base64 public key`.
    pub verify_keys: BTreeMap<String, String>,
    pub protocol_versions: Vec<String>,
    /// Unix ms until which the keys may be trusted.
    pub valid_until_ts: u64,
}

/// Checks a well-known document against the server name it was fetched for, exactly as asked
/// for (`alpha.test:8448` and `[::1]:8448` keep their port; ASCII case is ignored), at
/// `now_ms` (Unix milliseconds): a document whose `valid_until_ts` is missing or in the past is
/// refused. Pure.
pub fn check_well_known(doc: &Value, expected_name: &str, now_ms: u64) -> Result<WellKnown, DiscoveryError> {
    let obj = doc.as_object().ok_or_else(|| DiscoveryError::BadDocument("not a JSON object".into()))?;
    let found = obj
        .get("server_name")
        .and_then(Value::as_str)
        .ok_or_else(|| DiscoveryError::BadDocument("missing server_name".into()))?;
    if !found.eq_ignore_ascii_case(expected_name) {
        return Err(DiscoveryError::NameMismatch { expected: expected_name.into(), found: found.into() });
    }
    let valid_until_ts = obj
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .ok_or_else(|| DiscoveryError::BadDocument("missing or invalid valid_until_ts".into()))?;
    if valid_until_ts < now_ms {
        return Err(DiscoveryError::Expired { valid_until_ts, now_ms });
    }
    let keys = obj
        .get("verify_keys")
        .and_then(Value::as_object)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| DiscoveryError::BadDocument("missing verify_keys".into()))?;
    let mut verify_keys = BTreeMap::new();
    for (id, v) in keys {
        let key = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| DiscoveryError::BadDocument(format!("verify_keys.{id} has no key")))?;
        verify_keys.insert(id.clone(), key.to_string());
    }
    let sigs = doc
        .get("signatures")
        .and_then(|s| s.get(found))
        .and_then(Value::as_object)
        .ok_or_else(|| DiscoveryError::BadSignature(format!("not signed by {found}")))?;
    // At least one signature by a listed key must verify; a signature by an unlisted key or a
    // failing one does not count.
    let mut last_error = format!("no signature by a key in verify_keys (signed with {:?})", sigs.keys());
    let mut verified = false;
    for key_id in sigs.keys() {
        let Some(key) = verify_keys.get(key_id) else { continue };
        let public = match crypto::PublicKey::from_base64(key) {
            Ok(p) => p,
            Err(e) => {
                last_error = format!("{key_id}: bad public key: {e}");
                continue;
            }
        };
        match crypto::verify_json(doc, found, key_id, &public) {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(e) => last_error = format!("{key_id}: {e}"),
        }
    }
    if !verified {
        return Err(DiscoveryError::BadSignature(last_error));
    }
    let protocol_versions = obj
        .get("protocol_versions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(WellKnown { verify_keys, protocol_versions, valid_until_ts })
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How discovery reaches the network.
#[derive(Clone, Debug, Default)]
pub struct DiscoveryConfig {
    /// A DNS server (`ip:port`, UDP and TCP) to use instead of the system's resolver config.
    pub nameserver: Option<SocketAddr>,
    /// PEM certificates trusted in addition to the system's roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Bound on the whole discovery of one name [default: 10 s].
    pub timeout: Option<Duration>,
}

/// Finds and verifies peers. Cheap to clone; build once and share.
#[derive(Clone)]
pub struct Discovery {
    resolver: TokioResolver,
    http: reqwest::Client,
    pinned: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
    timeout: Duration,
    extra_ca: Option<Vec<reqwest::Certificate>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Feeds reqwest the addresses discovery resolved, so the TLS connection goes exactly where DNS
/// said while the URL (SNI, `Host`) keeps the server name.
struct PinnedResolver {
    pinned: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs = self.pinned.lock().map(|m| m.get(name.as_str()).cloned()).unwrap_or(None);
        let host = name.as_str().to_string();
        Box::pin(async move {
            match addrs {
                Some(a) if !a.is_empty() => {
                    let it: reqwest::dns::Addrs = Box::new(a.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(it)
                }
                _ => Err(format!("{host} was not resolved by discovery").into()),
            }
        })
    }
}

/// The error and its causes on one line: reqwest hides the TLS reason in the source chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

impl Discovery {
    /// Builds the resolver and the HTTPS client. Installs the ring provider if none is.
    pub fn new(config: DiscoveryConfig) -> Result<Discovery, DiscoveryError> {
        install_crypto_provider();
        let timeout = config.timeout.unwrap_or(Duration::from_secs(10));
        let resolver = match config.nameserver {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                let mut builder = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                );
                *builder.options_mut() = resolver_opts();
                builder.build()
            }
            None => TokioResolver::builder_tokio().and_then(|mut b| {
                let opts = b.options_mut();
                opts.timeout = Duration::from_secs(3);
                b.build()
            }),
        }
        .map_err(|e| DiscoveryError::Setup(format!("resolver: {e}")))?;

        let pinned = Arc::new(Mutex::new(HashMap::new()));
        let mut http = reqwest::Client::builder()
            .https_only(true)
            .dns_resolver(Arc::new(PinnedResolver { pinned: pinned.clone() }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            // Discovery answers "can I reach this peer now": never reuse a pooled connection.
            .pool_max_idle_per_host(0);
        let mut extra_ca = None;
        if let Some(pem) = &config.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| DiscoveryError::Setup(format!("extra CA: {e}")))?;
            if certs.is_empty() {
                return Err(DiscoveryError::Setup("extra CA: no certificate in the PEM".into()));
            }
            http = http.tls_certs_merge(certs.clone());
            extra_ca = Some(certs);
        }
        let http = http.build().map_err(|e| DiscoveryError::Setup(format!("HTTPS client: {}", error_chain(&e))))?;
        Ok(Discovery { resolver, http, pinned, timeout, extra_ca })
    }

    /// Makes requests to `resolved.host` connect to its resolved addresses.
    pub fn pin(&self, resolved: &Resolved) {
        if let Ok(mut m) = self.pinned.lock() {
            m.insert(resolved.host.clone(), resolved.addresses.clone());
        }
    }

    /// An HTTPS client that pools connections, trusts what discovery trusts and connects where
    /// [`Discovery::pin`] says: for signed requests to peers ([`crate::client::FedClient`]).
    pub fn pooled_client(&self, timeout: Duration) -> Result<reqwest::Client, DiscoveryError> {
        let mut http = reqwest::Client::builder()
            .https_only(true)
            .dns_resolver(Arc::new(PinnedResolver { pinned: self.pinned.clone() }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(8);
        if let Some(certs) = &self.extra_ca {
            http = http.tls_certs_merge(certs.clone());
        }
        http.build().map_err(|e| DiscoveryError::Setup(format!("HTTPS client: {}", error_chain(&e))))
    }

    /// DNS only: where does `server_name` point?
    pub async fn resolve_address(&self, server_name: &str) -> Result<Resolved, DiscoveryError> {
        match parse_server_name(server_name)? {
            NamePlan::Ip(ip, port) => Ok(Resolved { host: ip.to_string(), addresses: vec![ip], port }),
            NamePlan::HostPort(host, port) => {
                let addresses = self.lookup_ip(&host).await?;
                Ok(Resolved { host, addresses, port })
            }
            NamePlan::Host(host) => {
                let srv_name = format!("_scaiwave._tcp.{host}.");
                let srv = match self.resolver.srv_lookup(srv_name.as_str()).await {
                    Ok(lookup) => lookup
                        .answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::SRV(s) => Some(SrvRecord {
                                priority: s.priority,
                                weight: s.weight,
                                port: s.port,
                                target: s.target.to_ascii().trim_end_matches('.').to_string(),
                            }),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                    Err(e) if e.is_no_records_found() || e.is_nx_domain() => Vec::new(),
                    Err(e) => return Err(DiscoveryError::Dns(format!("SRV {srv_name}: {e}"))),
                };
                match pick_srv(&srv) {
                    Some(r) => {
                        let addresses = self.lookup_ip(&r.target).await?;
                        Ok(Resolved { host, addresses, port: r.port })
                    }
                    None => {
                        let addresses = self.lookup_ip(&host).await?;
                        Ok(Resolved { host, addresses, port: DEFAULT_PORT })
                    }
                }
            }
        }
    }

    async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{host}.");
        let lookup = self.resolver.lookup_ip(fqdn.as_str()).await.map_err(|e| {
            if e.is_no_records_found() || e.is_nx_domain() {
                DiscoveryError::NoAddress(host.to_string())
            } else {
                DiscoveryError::Dns(format!("{host}: {e}"))
            }
        })?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(DiscoveryError::NoAddress(host.to_string()));
        }
        Ok(addrs)
    }

    /// The full discovery: DNS, the well-known document over verified TLS, its checks.
    pub async fn discover(&self, server_name: &str) -> Result<ServerInfo, DiscoveryError> {
        tokio::time::timeout(self.timeout, self.discover_inner(server_name)).await.unwrap_or_else(|_| {
            Err(DiscoveryError::Fetch {
                url: server_name.to_string(),
                reason: format!("discovery took longer than {:?}", self.timeout),
            })
        })
    }

    async fn discover_inner(&self, server_name: &str) -> Result<ServerInfo, DiscoveryError> {
        let resolved = self.resolve_address(server_name).await?;
        let authority = match resolved.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", resolved.port),
            _ => format!("{}:{}", resolved.host, resolved.port),
        };
        let url = format!("https://{authority}{WELL_KNOWN_PATH}");
        if let Ok(mut m) = self.pinned.lock() {
            m.insert(resolved.host.clone(), resolved.addresses.clone());
        }
        let fetch_err = |e: reqwest::Error| DiscoveryError::Fetch { url: url.clone(), reason: error_chain(&e) };
        let mut resp = self.http.get(&url).send().await.map_err(fetch_err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DiscoveryError::Status { url, status: status.as_u16() });
        }
        if resp.content_length().is_some_and(|l| l > MAX_DOCUMENT_BYTES as u64) {
            return Err(DiscoveryError::BadDocument("document too large".into()));
        }
        // Read chunk by chunk and stop at the cap: without a Content-Length the peer could
        // otherwise make us buffer an unbounded body.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
            push_capped(&mut bytes, &chunk, MAX_DOCUMENT_BYTES)?;
        }
        let doc = crypto::parse_strict(&bytes).map_err(|e| DiscoveryError::BadDocument(e.to_string()))?;
        // The document names the server exactly as it is asked for, port included.
        let checked = check_well_known(&doc, server_name, now_ms())?;
        Ok(ServerInfo {
            server_name: server_name.to_string(),
            addresses: resolved.addresses,
            port: resolved.port,
            verify_keys: checked.verify_keys,
            protocol_versions: checked.protocol_versions,
            valid_until_ts: checked.valid_until_ts,
            document: doc,
        })
    }
}

fn resolver_opts() -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts.ndots = 0;
    // Short caching: a testnet changes its answers (partitions, restarts) and operators
    // expect a resolve to see the current state.
    opts.positive_max_ttl = Some(Duration::from_secs(5));
    opts.negative_max_ttl = Some(Duration::from_secs(1));
    opts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_names() {
        assert_eq!(parse_server_name("alpha.test").unwrap(), NamePlan::Host("alpha.test".into()));
        assert_eq!(parse_server_name("Alpha.Test:9000").unwrap(), NamePlan::HostPort("alpha.test".into(), 9000));
        assert_eq!(parse_server_name("127.0.0.1").unwrap(), NamePlan::Ip("127.0.0.1".parse().unwrap(), DEFAULT_PORT));
        assert_eq!(parse_server_name("[::1]:8000").unwrap(), NamePlan::Ip("::1".parse().unwrap(), 8000));
        assert_eq!(parse_server_name("[::1]").unwrap(), NamePlan::Ip("::1".parse().unwrap(), DEFAULT_PORT));
        assert_eq!(parse_server_name("127.0.0.1:9000").unwrap(), NamePlan::Ip("127.0.0.1".parse().unwrap(), 9000));
        for bad in [
            "",
            "a b",
            "alpha.test:0",
            "alpha.test:x",
            "-a.test",
            "a..test",
            "[::1",
            "a/b",
            "alpha.test:99999",
            // IPv6 only in brackets, and brackets only for IPv6.
            "::1",
            "::1:8448",
            "2001:db8::1",
            "[127.0.0.1]:8448",
            "[::1]8448",
            "[::1]:",
            "[alpha.test]:8448",
        ] {
            assert!(parse_server_name(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn srv_choice() {
        let r = |p, w, port, t: &str| SrvRecord { priority: p, weight: w, port, target: t.into() };
        assert_eq!(pick_srv(&[]), None);
        assert_eq!(pick_srv(&[r(0, 0, 8448, ".")]), None);
        let recs = [r(10, 5, 1, "b.test"), r(5, 1, 2, "c.test"), r(5, 9, 3, "d.test")];
        assert_eq!(pick_srv(&recs).unwrap().target, "d.test");
    }

    /// A fixed "now" for the pure checks (2025-01-01T00:00:00Z in Unix ms).
    const NOW: u64 = 1_735_689_600_000;
    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn signed_doc_until(name: &str, valid_until_ts: Value) -> (Value, crypto::ServerKey) {
        let key = crypto::ServerKey::generate("k1").unwrap();
        let mut doc = json!({
            "server_name": name,
            "protocol_versions": ["v1"],
            "verify_keys": {key.key_id(): {"key": key.public_key_base64()}},
        });
        if !valid_until_ts.is_null() {
            doc["valid_until_ts"] = valid_until_ts;
        }
        crypto::sign_json(&mut doc, name, &key).unwrap();
        (doc, key)
    }

    fn signed_doc(name: &str) -> (Value, crypto::ServerKey) {
        signed_doc_until(name, json!(NOW + 7 * DAY_MS))
    }

    #[test]
    fn well_known_checks() {
        let (doc, key) = signed_doc("alpha.test");
        let checked = check_well_known(&doc, "alpha.test", NOW).unwrap();
        assert_eq!(checked.verify_keys[key.key_id()], key.public_key_base64());
        assert_eq!(checked.protocol_versions, vec!["v1".to_string()]);
        assert_eq!(checked.valid_until_ts, NOW + 7 * DAY_MS);
        // Server names are DNS names: ASCII case does not matter.
        assert!(check_well_known(&doc, "Alpha.TEST", NOW).is_ok());

        assert!(matches!(check_well_known(&doc, "beta.test", NOW), Err(DiscoveryError::NameMismatch { .. })));

        let mut tampered = doc.clone();
        tampered["protocol_versions"] = json!(["v2"]);
        assert!(matches!(check_well_known(&tampered, "alpha.test", NOW), Err(DiscoveryError::BadSignature(_))));

        // Signed by a key the document does not list.
        let (other, _) = signed_doc("alpha.test");
        let mut swapped = doc.clone();
        swapped["signatures"] = other["signatures"].clone();
        assert!(matches!(check_well_known(&swapped, "alpha.test", NOW), Err(DiscoveryError::BadSignature(_))));

        let mut unsigned = doc.clone();
        unsigned.as_object_mut().unwrap().remove("signatures");
        assert!(matches!(check_well_known(&unsigned, "alpha.test", NOW), Err(DiscoveryError::BadSignature(_))));

        assert!(matches!(check_well_known(&json!([]), "alpha.test", NOW), Err(DiscoveryError::BadDocument(_))));
        assert!(matches!(
            check_well_known(&json!({"server_name": "alpha.test", "valid_until_ts": NOW + 1}), "alpha.test", NOW),
            Err(DiscoveryError::BadDocument(_))
        ));
    }

    #[test]
    fn well_known_name_keeps_its_port() {
        // A server whose name carries a port names itself with that port.
        let (doc, _) = signed_doc("alpha.test:8448");
        assert!(check_well_known(&doc, "alpha.test:8448", NOW).is_ok());
        assert!(check_well_known(&doc, "ALPHA.test:8448", NOW).is_ok());
        // The port is part of the name: neither the bare host nor another port matches.
        for other in ["alpha.test", "alpha.test:9000"] {
            assert!(
                matches!(check_well_known(&doc, other, NOW), Err(DiscoveryError::NameMismatch { .. })),
                "{other:?} must not match alpha.test:8448"
            );
        }
        let (bare, _) = signed_doc("alpha.test");
        assert!(matches!(check_well_known(&bare, "alpha.test:8448", NOW), Err(DiscoveryError::NameMismatch { .. })));

        // IP literals, IPv6 in brackets, with and without a port.
        for name in ["127.0.0.1:8448", "[::1]:8448", "[::1]", "[2001:db8::1]:9000"] {
            let (doc, _) = signed_doc(name);
            assert!(parse_server_name(name).is_ok(), "{name}");
            assert!(check_well_known(&doc, name, NOW).is_ok(), "{name}");
        }
        let (v6, _) = signed_doc("[::1]:8448");
        assert!(matches!(check_well_known(&v6, "[::1]", NOW), Err(DiscoveryError::NameMismatch { .. })));
        assert!(matches!(check_well_known(&v6, "[::1]:9000", NOW), Err(DiscoveryError::NameMismatch { .. })));
    }

    #[test]
    fn well_known_validity() {
        // Valid up to and including valid_until_ts.
        let (doc, _) = signed_doc_until("alpha.test", json!(NOW));
        assert!(check_well_known(&doc, "alpha.test", NOW).is_ok());
        assert!(matches!(
            check_well_known(&doc, "alpha.test", NOW + 1),
            Err(DiscoveryError::Expired { valid_until_ts: NOW, now_ms }) if now_ms == NOW + 1
        ));
        let (expired, _) = signed_doc_until("alpha.test", json!(NOW - DAY_MS));
        let err = check_well_known(&expired, "alpha.test", NOW).unwrap_err();
        assert!(matches!(err, DiscoveryError::Expired { .. }));
        assert!(err.to_string().contains("expired"), "{err}");
        // Missing, negative or non-integer: refused, since the keys would be trusted forever.
        for bad in [Value::Null, json!(-1), json!("1735689600000"), json!(true)] {
            let (doc, _) = signed_doc_until("alpha.test", bad.clone());
            assert!(
                matches!(check_well_known(&doc, "alpha.test", NOW), Err(DiscoveryError::BadDocument(_))),
                "valid_until_ts {bad} must be refused"
            );
        }
    }

    #[test]
    fn body_is_capped_while_reading() {
        let mut buf = Vec::new();
        push_capped(&mut buf, b"0123", 10).unwrap();
        push_capped(&mut buf, b"456789", 10).unwrap();
        assert_eq!(buf, b"0123456789");
        // Exactly at the cap is fine; one byte more is refused and nothing more is buffered.
        assert!(matches!(push_capped(&mut buf, b"x", 10), Err(DiscoveryError::BadDocument(_))));
        assert_eq!(buf.len(), 10);
        push_capped(&mut buf, b"", 10).unwrap();

        // A body streamed in small chunks with no Content-Length stops at the first chunk past
        // the cap, long before the whole body would have been read.
        let mut buf = Vec::new();
        let chunk = [b'a'; 1000];
        let mut chunks_read = 0;
        let result = std::iter::repeat_n(&chunk[..], 1_000_000).try_for_each(|c| {
            chunks_read += 1;
            push_capped(&mut buf, c, MAX_DOCUMENT_BYTES)
        });
        assert!(matches!(result, Err(DiscoveryError::BadDocument(_))));
        assert_eq!(chunks_read, MAX_DOCUMENT_BYTES / 1000 + 1);
        assert!(buf.len() <= MAX_DOCUMENT_BYTES);

        // One huge chunk is refused without being copied.
        let mut buf = Vec::new();
        assert!(push_capped(&mut buf, &vec![0; MAX_DOCUMENT_BYTES + 1], MAX_DOCUMENT_BYTES).is_err());
        assert!(buf.is_empty());
    }
}
