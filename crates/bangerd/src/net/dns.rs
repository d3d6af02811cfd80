//! The in-process DNS server: `<name>.vm` from the daemon's VM table, everything else
//! forwarded to the host's resolvers.
//!
//! Answers for `.vm` are authoritative with a short TTL: an A record for a known VM,
//! an empty NOERROR for other types of a known VM, NXDOMAIN for unknown names. A guest
//! only learns the VMs its policy lets it reach (see [`super::policy`]).
//!
//! A guest with an egress allow-list gets REFUSED for every other name; the addresses
//! answered for an allowed name are let through the firewall for that guest before the
//! answer leaves (for at least [`EGRESS_MIN_SECS`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use hickory_server::authority::{Catalog, MessageResponseBuilder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::forwarder::{ForwardAuthority, ForwardConfig};
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};

use super::{port_holder, HostNetwork, NetError, Transport};

/// Resolves a VM name (the `<name>` of `<name>.vm`, lowercase) to its leased address.
pub type VmLookup = Arc<dyn Fn(&str) -> Option<Ipv4Addr> + Send + Sync>;

/// The zone banger answers for.
pub const VM_ZONE: &str = "vm.";
/// TTL of `.vm` answers: VMs come and go.
const VM_TTL: u32 = 5;
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// The least time an allowed egress address stays open after an answer: guests cache
/// names past their TTL.
pub const EGRESS_MIN_SECS: u32 = 600;

/// A running DNS server. Dropping it stops it.
pub struct DnsServer {
    server: ServerFuture<Handler>,
    addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Listens on UDP and TCP at each of `listen` and serves until shut down. `upstreams`
    /// get every non-`.vm` query; with none, those queries are refused.
    pub async fn start(
        listen: &[SocketAddr],
        upstreams: &[SocketAddr],
        lookup: VmLookup,
        net: Option<Arc<HostNetwork>>,
    ) -> Result<DnsServer, NetError> {
        let mut handler = Handler::new(upstreams, lookup)?;
        handler.net = net;
        let mut server = ServerFuture::new(handler);
        let mut addrs = Vec::new();
        for addr in listen {
            let udp = UdpSocket::bind(addr)
                .await
                .map_err(|e| bind_error(*addr, Transport::Udp, e))?;
            let bound = udp.local_addr().map_err(|source| NetError::DnsBind {
                addr: *addr,
                source,
            })?;
            let tcp = TcpListener::bind(bound)
                .await
                .map_err(|e| bind_error(bound, Transport::Tcp, e))?;
            server.register_socket(udp);
            server.register_listener(tcp, TCP_TIMEOUT);
            tracing::info!(addr = %bound, "dns listening");
            addrs.push(bound);
        }
        Ok(DnsServer { server, addrs })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting queries and waits for the listeners to end.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "dns server ended with an error");
        }
    }
}

fn bind_error(addr: SocketAddr, transport: Transport, source: std::io::Error) -> NetError {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => NetError::DnsPortInUse {
            addr,
            holder: port_holder(transport, addr.port()),
            source,
        },
        _ => NetError::DnsBind { addr, source },
    }
}

struct Handler {
    lookup: VmLookup,
    zone: LowerName,
    forward: Option<Catalog>,
    /// Resolves allowed names for guests with an egress allow-list.
    resolver: Option<TokioResolver>,
    /// The guests' policies and firewall; `None` without host networking.
    net: Option<Arc<HostNetwork>>,
}

impl Handler {
    fn new(upstreams: &[SocketAddr], lookup: VmLookup) -> Result<Handler, NetError> {
        let zone = LowerName::from(Name::from_ascii(VM_ZONE).expect("vm. is a valid name"));
        let (forward, resolver) = match upstreams {
            [] => (None, None),
            _ => (Some(forward_catalog(upstreams)?), Some(resolver(upstreams))),
        };
        Ok(Handler {
            lookup,
            zone,
            forward,
            resolver,
            net: None,
        })
    }

    /// The response for a query from `src` inside the `.vm` zone: (code, A record if any).
    fn answer(
        &self,
        src: IpAddr,
        name: &LowerName,
        qtype: RecordType,
    ) -> (ResponseCode, Option<Record>) {
        let full = name.to_string();
        let label = full
            .strip_suffix(&format!(".{VM_ZONE}"))
            .filter(|l| !l.is_empty());
        let visible = |ip: Ipv4Addr| match (&self.net, src) {
            (Some(net), IpAddr::V4(src)) => net.guests().visible(src, ip),
            _ => true,
        };
        let Some(ip) = label
            .and_then(|l| (self.lookup)(l))
            .filter(|ip| visible(*ip))
        else {
            return (ResponseCode::NXDomain, None);
        };
        let record = matches!(qtype, RecordType::A | RecordType::ANY)
            .then(|| Record::from_rdata(Name::from(name.clone()), VM_TTL, RData::A(A(ip))));
        (ResponseCode::NoError, record)
    }
}

fn name_servers(upstreams: &[SocketAddr]) -> NameServerConfigGroup {
    let servers: Vec<NameServerConfig> = upstreams
        .iter()
        .flat_map(|addr| {
            [
                NameServerConfig::new(*addr, Protocol::Udp),
                NameServerConfig::new(*addr, Protocol::Tcp),
            ]
        })
        .collect();
    NameServerConfigGroup::from(servers)
}

fn resolver_options() -> ResolverOpts {
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    options
}

fn resolver(upstreams: &[SocketAddr]) -> TokioResolver {
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers(upstreams));
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(resolver_options())
        .build()
}

fn forward_catalog(upstreams: &[SocketAddr]) -> Result<Catalog, NetError> {
    let config = ForwardConfig {
        name_servers: name_servers(upstreams),
        options: Some(resolver_options()),
    };
    let authority = ForwardAuthority::builder_tokio(config)
        .build()
        .map_err(|reason| NetError::DnsForwarder { reason })?;
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(authority)]);
    Ok(catalog)
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let query = match request.request_info() {
            Ok(info) => info.query.clone(),
            Err(_) => {
                let msg = builder.error_msg(request.header(), ResponseCode::FormErr);
                return send(&mut response, msg, request.header()).await;
            }
        };
        let is_query =
            request.message_type() == MessageType::Query && request.op_code() == OpCode::Query;
        let src = request.src().ip();
        // `.vm` names follow the group rules, not the allow-list.
        let egress_limited = self
            .egress_guest(src)
            .filter(|_| !self.zone.zone_of(query.name()));
        if let Some(guest) = &egress_limited {
            if !is_query || !guest.rules.egress_allows(&query.name().to_string()) {
                tracing::debug!(name = %query.name(), %guest.ip, "dns name outside the egress allow-list");
                let msg = builder.error_msg(request.header(), ResponseCode::Refused);
                return send(&mut response, msg, request.header()).await;
            }
            if query.query_type() == RecordType::A {
                return self.answer_allowed(guest, request, response).await;
            }
        }
        if !is_query || !self.zone.zone_of(query.name()) {
            return match &self.forward {
                Some(catalog) => catalog.handle_request(request, response).await,
                None => {
                    let msg = builder.error_msg(request.header(), ResponseCode::Refused);
                    send(&mut response, msg, request.header()).await
                }
            };
        }
        let (code, record) = self.answer(src, query.name(), query.query_type());
        tracing::debug!(name = %query.name(), ?code, "dns .vm query");
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        header.set_recursion_available(self.forward.is_some());
        header.set_response_code(code);
        let msg = builder.build(header, record.iter(), None, None, None);
        send(&mut response, msg, request.header()).await
    }
}

impl Handler {
    /// The guest at `src` when it has an egress allow-list.
    fn egress_guest(&self, src: IpAddr) -> Option<super::Guest> {
        let (Some(net), IpAddr::V4(src)) = (&self.net, src) else {
            return None;
        };
        net.guests()
            .by_ip(src)
            .filter(|g| !g.rules.egress.is_empty())
    }

    /// Resolves an allowed name's A records, opens the firewall to them for this guest,
    /// then answers.
    async fn answer_allowed<R: ResponseHandler>(
        &self,
        guest: &super::Guest,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let (Some(resolver), Some(net)) = (&self.resolver, &self.net) else {
            let msg = builder.error_msg(request.header(), ResponseCode::Refused);
            return send(&mut response, msg, request.header()).await;
        };
        let name = Name::from(
            request
                .request_info()
                .map(|i| i.query.name().clone())
                .unwrap_or_default(),
        );
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let records: Vec<Record> = match resolver.lookup(name.clone(), RecordType::A).await {
            Ok(lookup) => lookup.records().to_vec(),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => {
                tracing::debug!(%name, cause = %e, "allowed name did not resolve");
                let msg = builder.error_msg(request.header(), ResponseCode::ServFail);
                return send(&mut response, msg, request.header()).await;
            }
        };
        let addrs: Vec<Ipv4Addr> = records
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        if !addrs.is_empty() {
            let ttl = records.iter().map(|r| r.ttl()).min().unwrap_or(0);
            let secs = ttl.max(EGRESS_MIN_SECS);
            if let Err(e) = net.allow_egress(guest.ip, &addrs, secs).await {
                tracing::warn!(%name, cause = %e, "cannot open egress to an allowed name");
                let msg = builder.error_msg(request.header(), ResponseCode::ServFail);
                return send(&mut response, msg, request.header()).await;
            }
            tracing::debug!(%name, guest = %guest.ip, ?addrs, secs, "egress allowed");
        }
        let msg = builder.build(header, records.iter(), None, None, None);
        send(&mut response, msg, request.header()).await
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request_header: &Header,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "could not send dns response");
            let mut header = Header::response_from_request(request_header);
            header.set_response_code(ResponseCode::ServFail);
            header.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> Handler {
        let lookup: VmLookup =
            Arc::new(|name| (name == "web").then_some(Ipv4Addr::new(172, 30, 0, 2)));
        Handler::new(&[], lookup).unwrap()
    }

    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn name(s: &str) -> LowerName {
        LowerName::from(Name::from_ascii(s).unwrap())
    }

    #[test]
    fn known_vm_gets_an_a_record() {
        let (code, record) = handler().answer(HOST, &name("web.vm."), RecordType::A);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(
            record.unwrap().data(),
            &RData::A(A(Ipv4Addr::new(172, 30, 0, 2)))
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        let (code, _) = handler().answer(HOST, &name("WEB.VM."), RecordType::A);
        assert_eq!(code, ResponseCode::NoError);
    }

    #[test]
    fn known_vm_without_aaaa_is_empty_noerror() {
        let (code, record) = handler().answer(HOST, &name("web.vm."), RecordType::AAAA);
        assert_eq!((code, record), (ResponseCode::NoError, None));
    }

    #[test]
    fn unknown_vm_and_zone_apex_are_nxdomain() {
        assert_eq!(
            handler().answer(HOST, &name("db.vm."), RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            handler().answer(HOST, &name("vm."), RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            handler().answer(HOST, &name("a.web.vm."), RecordType::A).0,
            ResponseCode::NXDomain
        );
    }
}
