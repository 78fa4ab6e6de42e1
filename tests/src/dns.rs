//! A DNS server for discovery tests: UDP on `127.0.0.1:0`, answering SRV, A
//! and AAAA queries from a [`Zone`] the test changes while it runs
//! (messages built with hickory-proto). Authoritative for the names it
//! holds, NXDOMAIN for the rest; every record has TTL 0. No recursion, no
//! TCP (its answers are small), no zone files.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::cluster::eventually;

/// What the server answers. Names are compared lower-case, without the
/// trailing dot.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// SRV name → its records, (target host, port) each.
    pub srv: HashMap<String, Vec<(String, u16)>>,
    /// Host name → its addresses (A and AAAA records).
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// Send the targets' addresses along with an SRV answer, in the
    /// additional section, as CoreDNS and Consul do; off, the client must
    /// look each target up.
    pub glue: bool,
}

/// A running test DNS server.
#[derive(Debug)]
pub struct TestDns {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TestDns {
    /// Serves `zone` on a fresh loopback UDP port.
    pub async fn start(zone: Zone) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = socket.local_addr().expect("addr");
        let zone = Arc::new(Mutex::new(zone));
        let queries = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(socket, zone.clone(), queries.clone()));
        Self {
            addr,
            zone,
            queries,
            task,
        }
    }

    /// Changes what the server answers from the next query on.
    pub fn update(&self, change: impl FnOnce(&mut Zone)) {
        change(&mut self.zone.lock().unwrap());
    }

    /// Queries answered since start.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Waits until `n` more queries than now have been answered: with a
    /// client polling, every poll that started before this call has
    /// finished by then when `n` is more than one poll's queries.
    pub async fn wait_queries(&self, n: u64) {
        let start = self.queries();
        eventually(Duration::from_secs(20), || async {
            self.queries() >= start + n
        })
        .await
        .expect("the DNS server is asked again");
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>, queries: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let reply = answer(&zone.lock().unwrap(), &request);
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
        queries.fetch_add(1, Ordering::Relaxed);
    }
}

/// `name` as the zone's maps hold it.
fn key(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn absolute(host: &str) -> Name {
    Name::from_ascii(format!("{}.", host.trim_end_matches('.'))).expect("a DNS name")
}

fn address_record(name: Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, 0, data)
}

fn answer(zone: &Zone, request: &Message) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        reply.set_edns(Edns::new());
    }
    let Some(query) = request.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    let name = key(&query.name);
    if !zone.srv.contains_key(&name) && !zone.hosts.contains_key(&name) {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    }
    let ips = |host: &str| zone.hosts.get(host).into_iter().flatten().copied();
    match query.query_type {
        RecordType::SRV => {
            for (target, port) in zone.srv.get(&name).into_iter().flatten() {
                let data = RData::SRV(SRV::new(0, 10, *port, absolute(target)));
                reply.add_answer(Record::from_rdata(query.name.clone(), 0, data));
                if zone.glue {
                    let host = target.trim_end_matches('.').to_ascii_lowercase();
                    for ip in ips(&host) {
                        reply.add_additional(address_record(absolute(target), ip));
                    }
                }
            }
        }
        RecordType::A | RecordType::AAAA => {
            let v4 = query.query_type == RecordType::A;
            for ip in ips(&name).filter(|ip| ip.is_ipv4() == v4) {
                reply.add_answer(address_record(query.name.clone(), ip));
            }
        }
        _ => {}
    }
    reply
}
