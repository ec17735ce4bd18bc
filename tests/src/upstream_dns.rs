//! A stand-in for a site's own DNS server, for tests of what the node's cluster DNS forwards:
//! authoritative for one domain with fixed A records, NXDOMAIN for its other names, REFUSED
//! for everything else; it counts the questions it got. UDP only, on port 53 of an address of
//! the calling thread's network namespace.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

struct Handler {
    domain: Name,
    records: HashMap<Name, Ipv4Addr>,
    questions: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.questions.fetch_add(1, Ordering::SeqCst);
        let mut answers = vec![];
        let code = match request.request_info() {
            Ok(info) => {
                let name: Name = info.query.name().into();
                match self.records.get(&name) {
                    Some(ip) if info.query.query_type() == RecordType::A => {
                        answers.push(Record::from_rdata(name, 30, RData::A(A(*ip))));
                        ResponseCode::NoError
                    }
                    Some(_) => ResponseCode::NoError,
                    None if self.domain.zone_of(&name) => ResponseCode::NXDomain,
                    None => ResponseCode::Refused,
                }
            }
            Err(_) => ResponseCode::FormErr,
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = code != ResponseCode::Refused;
        metadata.response_code = code;
        let response = MessageResponseBuilder::new(&request.queries, None).build(
            metadata,
            answers.iter(),
            [],
            [],
            [],
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: HeaderCounts::default(),
            }),
        }
    }
}

/// A running upstream server, on a thread and runtime of its own (a test blocked on a child
/// process must not stop it answering); stops when dropped.
pub struct UpstreamDns {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    questions: Arc<AtomicUsize>,
}

impl UpstreamDns {
    /// Serves `domain` with `records` (name → address, names fully qualified or not) on
    /// `ip`:53, in the calling thread's network namespace.
    pub async fn start(ip: Ipv4Addr, domain: &str, records: &[(&str, Ipv4Addr)]) -> UpstreamDns {
        let name = |n: &str| {
            Name::from_ascii(format!("{}.", n.trim_end_matches('.')))
                .expect("name")
                .to_lowercase()
        };
        let questions = Arc::new(AtomicUsize::new(0));
        let handler = Handler {
            domain: name(domain),
            records: records.iter().map(|(n, ip)| (name(n), *ip)).collect(),
            questions: questions.clone(),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // A new thread shares the network namespace of the thread that makes it.
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let socket = tokio::net::UdpSocket::bind(SocketAddr::from((ip, 53)))
                    .await
                    .expect("upstream DNS binds");
                let mut server = Server::new(handler);
                server.register_socket(socket);
                let _ = ready_tx.send(());
                let _ = stopped.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        ready_rx.await.expect("upstream DNS started");
        UpstreamDns {
            stop: Some(stop),
            thread: Some(thread),
            questions,
        }
    }

    /// How many questions it has been asked.
    pub fn questions(&self) -> usize {
        self.questions.load(Ordering::SeqCst)
    }
}

impl Drop for UpstreamDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
