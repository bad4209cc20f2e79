//! The testnet's DNS server (hickory-server): A and SRV `_scaiwave._tcp.<name>` records for
//! every node, answered per *view*.
//!
//! There is one public view (real node addresses, for operators and tests) and one view per
//! node, on its own port. A node's view answers every *other* node's name with the address of
//! the TCP proxy from that node to the other (see `proxy.rs`), so the testnet can cut one pair
//! of nodes without touching the rest. Every view answers extra names (e.g. a rogue server in a
//! test) with their real address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::Error;

const TTL: u32 = 2;

/// The names the DNS server knows. Pure data; [`answer`] turns a question into records.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    /// `(server_name, real address)` per node, in node order.
    pub nodes: Vec<(String, Ipv4Addr)>,
    /// Extra names: `name → (address, federation port)`.
    pub extra: BTreeMap<String, (IpAddr, u16)>,
    /// `proxy[i][j]`: the address node `i` must use to reach node `j`.
    pub proxy: Vec<Vec<Ipv4Addr>>,
    pub federation_port: u16,
}

/// What a view answers for one question: `None` is NXDOMAIN, `Some(vec![])` is NODATA. Pure.
pub fn answer(zone: &Zone, asker: Option<usize>, qname: &str, qtype: RecordType) -> Option<Vec<RData>> {
    let name = qname.trim_end_matches('.').to_ascii_lowercase();
    let (target, srv) = match name.strip_prefix("_scaiwave._tcp.") {
        Some(rest) => (rest.to_string(), true),
        None => (name, false),
    };
    let node = zone.nodes.iter().position(|(n, _)| *n == target);
    let (ip, port): (IpAddr, u16) = match (node, zone.extra.get(&target)) {
        (Some(j), _) => {
            let ip = match asker {
                Some(i) if i != j => zone.proxy.get(i).and_then(|row| row.get(j)).copied()?,
                _ => zone.nodes[j].1,
            };
            (IpAddr::V4(ip), zone.federation_port)
        }
        (None, Some(extra)) => *extra,
        (None, None) => return None,
    };
    let rdata = match (srv, qtype, ip) {
        (true, RecordType::SRV, _) => {
            let target = Name::from_ascii(format!("{target}.")).ok()?;
            vec![RData::SRV(SRV::new(0, 0, port, target))]
        }
        (false, RecordType::A, IpAddr::V4(v4)) => vec![RData::A(A(v4))],
        (false, RecordType::AAAA, IpAddr::V6(v6)) => vec![RData::AAAA(AAAA(v6))],
        _ => vec![],
    };
    Some(rdata)
}

#[derive(Clone)]
struct View {
    zone: Arc<RwLock<Zone>>,
    asker: Option<usize>,
}

#[async_trait::async_trait]
impl RequestHandler for View {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        let mut records = Vec::new();
        match request.queries.queries().first() {
            Some(q) => {
                let qname = q.name().to_string();
                let answer = self.zone.read().ok().and_then(|z| answer(&z, self.asker, &qname, q.query_type()));
                match answer {
                    Some(rdata) => {
                        let owner = Name::from(q.name().clone());
                        records = rdata.into_iter().map(|r| Record::from_rdata(owner.clone(), TTL, r)).collect();
                    }
                    None => metadata.response_code = ResponseCode::NXDomain,
                }
            }
            None => metadata.response_code = ResponseCode::FormErr,
        }
        let response = MessageResponseBuilder::new(&request.queries, None).build(metadata, records.iter(), [], [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                let mut m = Metadata::response_from_request(&request.metadata);
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: m, counts: HeaderCounts::default() })
            }
        }
    }
}

/// The running DNS server: its views stop when it is dropped.
pub struct DnsServer {
    pub zone: Arc<RwLock<Zone>>,
    /// The public view's address.
    pub public: SocketAddr,
    /// Each node's view, in node order.
    pub views: Vec<SocketAddr>,
    _servers: Vec<hickory_server::Server<View>>,
}

/// Binds UDP and TCP on the same free port of `ip`.
async fn bind_pair(ip: Ipv4Addr) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), Error> {
    let mut last = None;
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind((ip, 0)).await.map_err(|e| Error::new(format!("DNS bind {ip}: {e}")))?;
        let port = udp.local_addr().map_err(|e| Error::new(e.to_string()))?.port();
        match tokio::net::TcpListener::bind((ip, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::new(format!("DNS: no free UDP+TCP port on {ip}: {last:?}")))
}

impl DnsServer {
    /// Starts the public view and one view per node of `zone` on `ip`.
    pub async fn start(ip: Ipv4Addr, zone: Zone) -> Result<DnsServer, Error> {
        let n = zone.nodes.len();
        let zone = Arc::new(RwLock::new(zone));
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for asker in std::iter::once(None).chain((0..n).map(Some)) {
            let (udp, tcp) = bind_pair(ip).await?;
            addrs.push(udp.local_addr().map_err(|e| Error::new(e.to_string()))?);
            let mut server = hickory_server::Server::new(View { zone: zone.clone(), asker });
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 64);
            servers.push(server);
        }
        let public = addrs.remove(0);
        Ok(DnsServer { zone, public, views: addrs, _servers: servers })
    }

    /// Adds (or replaces) an extra name in every view.
    pub fn add_host(&self, name: &str, ip: IpAddr, port: u16) {
        if let Ok(mut z) = self.zone.write() {
            z.extra.insert(name.trim_end_matches('.').to_ascii_lowercase(), (ip, port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        Zone {
            nodes: vec![
                ("alpha.test".into(), Ipv4Addr::new(127, 0, 0, 10)),
                ("beta.test".into(), Ipv4Addr::new(127, 0, 0, 11)),
            ],
            extra: [("rogue.test".to_string(), ("127.0.0.99".parse().unwrap(), 8448))].into(),
            proxy: vec![
                vec![Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(127, 0, 1, 11)],
                vec![Ipv4Addr::new(127, 0, 2, 10), Ipv4Addr::UNSPECIFIED],
            ],
            federation_port: 8448,
        }
    }

    #[test]
    fn views() {
        let z = zone();
        let a = |asker, name, t| answer(&z, asker, name, t);
        assert_eq!(a(None, "beta.test.", RecordType::A), Some(vec![RData::A(A(Ipv4Addr::new(127, 0, 0, 11)))]));
        assert_eq!(a(Some(0), "beta.test.", RecordType::A), Some(vec![RData::A(A(Ipv4Addr::new(127, 0, 1, 11)))]));
        assert_eq!(a(Some(1), "BETA.test", RecordType::A), Some(vec![RData::A(A(Ipv4Addr::new(127, 0, 0, 11)))]));
        assert_eq!(a(Some(1), "alpha.test", RecordType::A), Some(vec![RData::A(A(Ipv4Addr::new(127, 0, 2, 10)))]));
        assert_eq!(a(Some(1), "alpha.test", RecordType::AAAA), Some(vec![]));
        assert_eq!(
            a(Some(1), "_scaiwave._tcp.alpha.test.", RecordType::SRV),
            Some(vec![RData::SRV(SRV::new(0, 0, 8448, Name::from_ascii("alpha.test.").unwrap()))])
        );
        assert_eq!(a(Some(0), "rogue.test", RecordType::A), Some(vec![RData::A(A(Ipv4Addr::new(127, 0, 0, 99)))]));
        assert_eq!(a(None, "nobody.test", RecordType::A), None);
        assert_eq!(a(None, "_scaiwave._tcp.nobody.test", RecordType::SRV), None);
    }
}
