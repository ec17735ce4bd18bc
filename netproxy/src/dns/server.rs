//! The node's DNS server (hickory-server): names in the cluster's zone are answered from the
//! latest [`Zone`] (authoritative, TTL 5 s, negative answers with the zone's SOA), everything
//! else is forwarded to the resolvers of the node's own /etc/resolv.conf through
//! hickory-resolver, which caches. An ExternalName's CNAME comes with its target's records, as
//! stub resolvers expect the chain from their server. UDP and TCP on one address; the sockets
//! are bound with IP_FREEBIND, so the server can start before the address (the pod bridge's,
//! made with the first pod) exists.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_resolver::config::ResolveHosts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

use super::zone::{Answer, QType, Rec, Zone};

/// The TTL of every answer from the zone (the Kubernetes DNS specification's suggestion).
pub const TTL: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS server on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster domain {domain:?}: {message}")]
    Domain { domain: String, message: String },
    #[error("DNS server: {0}")]
    Serve(String),
}

/// The zone the server answers from; the agent replaces it whenever a Service or Endpoints
/// changes.
#[derive(Clone, Default)]
pub struct ZoneHandle(Arc<RwLock<Arc<Zone>>>);

impl ZoneHandle {
    pub fn set(&self, zone: Zone) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
    }

    pub fn get(&self) -> Arc<Zone> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Answers DNS questions for one node.
pub struct ClusterDns {
    zone: ZoneHandle,
    origin: Name,
    soa: Record,
    /// None: the node has no resolvers (names outside the zone get SERVFAIL).
    upstream: Option<TokioResolver>,
}

/// A caching resolver for the servers `resolv_conf` names.
fn upstream(resolv_conf: &std::path::Path) -> Result<TokioResolver, String> {
    let text = std::fs::read(resolv_conf).map_err(|e| e.to_string())?;
    let (config, options) =
        hickory_resolver::system_conf::parse_resolv_conf(text).map_err(|e| e.to_string())?;
    if config.name_servers().is_empty() {
        return Err("it names no server".into());
    }
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options);
    builder.options_mut().use_hosts_file = ResolveHosts::Never;
    builder.build().map_err(|e| e.to_string())
}

fn qtype(t: RecordType) -> QType {
    match t {
        RecordType::A | RecordType::ANY => QType::A,
        RecordType::SRV => QType::Srv,
        RecordType::PTR => QType::Ptr,
        RecordType::CNAME => QType::Cname,
        _ => QType::Other,
    }
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()
}

impl ClusterDns {
    /// A server for the zone `domain`, forwarding to the node's resolvers (read once, from
    /// `resolv_conf`, the node's /etc/resolv.conf).
    pub fn new(
        domain: &str,
        zone: ZoneHandle,
        resolv_conf: &std::path::Path,
    ) -> Result<ClusterDns, DnsError> {
        let bad = |message: String| DnsError::Domain {
            domain: domain.to_string(),
            message,
        };
        let origin = fqdn(domain).ok_or_else(|| bad("not a domain name".into()))?;
        let ns = fqdn(&format!("ns.dns.{domain}")).ok_or_else(|| bad("too long".into()))?;
        let mailbox =
            fqdn(&format!("hostmaster.{domain}")).ok_or_else(|| bad("too long".into()))?;
        let soa = Record::from_rdata(
            origin.clone(),
            TTL,
            RData::SOA(SOA::new(ns, mailbox, 1, 7200, 1800, 86400, TTL)),
        );
        let upstream = match upstream(resolv_conf) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "DNS: no upstream resolvers from {} ({e}); only {domain} answers",
                    resolv_conf.display()
                );
                None
            }
        };
        Ok(ClusterDns {
            zone,
            origin,
            soa,
            upstream,
        })
    }

    fn record(name: &Name, rec: &Rec) -> Option<Record> {
        let data = match rec {
            Rec::A(ip) => RData::A(A(*ip)),
            Rec::Srv {
                weight,
                port,
                target,
            } => RData::SRV(SRV::new(0, *weight, *port, fqdn(target)?)),
            Rec::Ptr(target) => RData::PTR(PTR(fqdn(target)?)),
            Rec::Cname(target) => RData::CNAME(CNAME(fqdn(target)?)),
        };
        Some(Record::from_rdata(name.clone(), TTL, data))
    }

    /// (response code, authoritative, answers, authorities) for one question.
    async fn resolve(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> (ResponseCode, bool, Vec<Record>, Vec<Record>) {
        let text = name.to_ascii();
        if rtype == RecordType::SOA && name.eq_ignore_root(&self.origin) {
            return (ResponseCode::NoError, true, vec![self.soa.clone()], vec![]);
        }
        let zone = self.zone.get();
        match zone.answer(&text, qtype(rtype)) {
            Answer::Records(recs) => {
                let mut answers: Vec<Record> =
                    recs.iter().filter_map(|r| Self::record(name, r)).collect();
                if let (Some(Rec::Cname(target)), false) =
                    (recs.first(), rtype == RecordType::CNAME)
                {
                    if let Some(target) = fqdn(target) {
                        let (_, _, more, _) = Box::pin(self.forward(&target, rtype)).await;
                        answers.extend(more);
                    }
                }
                (ResponseCode::NoError, true, answers, vec![])
            }
            Answer::NoData => (ResponseCode::NoError, true, vec![], self.authority(name)),
            Answer::NxDomain => (ResponseCode::NXDomain, true, vec![], vec![self.soa.clone()]),
            Answer::NotOurs => self.forward(name, rtype).await,
        }
    }

    /// The SOA for a negative answer about `name`, when the name is in the zone.
    fn authority(&self, name: &Name) -> Vec<Record> {
        if self.origin.zone_of(name) {
            vec![self.soa.clone()]
        } else {
            vec![]
        }
    }

    async fn forward(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> (ResponseCode, bool, Vec<Record>, Vec<Record>) {
        let Some(upstream) = &self.upstream else {
            return (ResponseCode::ServFail, false, vec![], vec![]);
        };
        let mut name = name.clone();
        name.set_fqdn(true);
        match upstream.lookup(name, rtype).await {
            Ok(lookup) => (
                ResponseCode::NoError,
                false,
                lookup.answers().to_vec(),
                vec![],
            ),
            Err(e) => {
                let code = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else if e.is_no_records_found() {
                    ResponseCode::NoError
                } else {
                    tracing::debug!("DNS: forwarding failed: {e}");
                    ResponseCode::ServFail
                };
                let soa = e
                    .into_soa()
                    .map(|s| vec![s.into_record_of_rdata()])
                    .unwrap_or_default();
                (code, false, vec![], soa)
            }
        }
    }
}

/// A response that could not be sent still needs a ResponseInfo.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let (code, authoritative, answers, authorities) = match request.request_info() {
            Ok(info) if info.query.query_class() == DNSClass::IN => {
                let name: Name = info.query.name().into();
                self.resolve(&name, info.query.query_type()).await
            }
            Ok(_) => (ResponseCode::Refused, false, vec![], vec![]),
            Err(_) => (ResponseCode::FormErr, false, vec![], vec![]),
        };
        // Echo EDNS, or UDP answers are cut at 512 bytes.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = authoritative;
        metadata.recursion_available = true;
        metadata.response_code = code;
        let response = builder.build(metadata, answers.iter(), authorities.iter(), [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("DNS: answer not sent: {e}");
                failed(request)
            }
        }
    }
}

fn bind_socket(addr: SocketAddr, kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, kind, None)?;
    match addr.ip() {
        IpAddr::V4(_) => socket.set_freebind_v4(true)?,
        IpAddr::V6(_) => socket.set_freebind_v6(true)?,
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Serves `handler` on `addr` (UDP and TCP) until the process ends.
pub async fn serve(addr: SocketAddr, handler: ClusterDns) -> Result<(), DnsError> {
    let bind_err = |source| DnsError::Bind { addr, source };
    let udp = bind_socket(addr, socket2::Type::DGRAM).map_err(bind_err)?;
    let udp = tokio::net::UdpSocket::from_std(udp.into()).map_err(bind_err)?;
    let tcp = bind_socket(addr, socket2::Type::STREAM).map_err(bind_err)?;
    tcp.listen(1024).map_err(bind_err)?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into()).map_err(bind_err)?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 65535);
    tracing::info!(%addr, "cluster DNS serving");
    server
        .block_until_done()
        .await
        .map_err(|e| DnsError::Serve(e.to_string()))
}
