//! The kernel's main IPv4 routing table as the host-gw routes see it, over netlink
//! (`rtnetlink`): which routes are Skiff's (they carry routing protocol [`ROUTE_PROTOCOL`], so
//! `ip route show proto 83` lists them and nothing else is ever taken for one), which
//! destinations someone else routes, and adding, replacing and removing Skiff's routes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::RouteMessageBuilder;

use super::host_gw::{Plan, PodRoute};

/// The routing protocol number on Skiff's routes (unassigned in iproute2's rt_protos).
pub const ROUTE_PROTOCOL: u8 = 83;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    #[error("route {route}: {source}")]
    Route {
        route: String,
        source: rtnetlink::Error,
    },
    #[error("listing routes: {0}")]
    List(rtnetlink::Error),
}

/// The routes in the main table, split by owner.
#[derive(Debug, Default)]
pub struct Routes {
    /// Skiff's routes.
    pub ours: BTreeSet<PodRoute>,
    /// Destinations that other routes cover exactly.
    pub others: BTreeSet<Ipv4Net>,
}

/// A netlink connection to this network namespace's routing tables.
pub struct RouteTable {
    handle: rtnetlink::Handle,
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn destination(m: &RouteMessage) -> Option<Ipv4Net> {
    let addr = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Net::new(addr, m.header.destination_prefix_length).ok()
}

fn gateway(m: &RouteMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn message(route: &PodRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.cidr.addr(), route.cidr.prefix_len())
        .gateway(route.via)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

impl RouteTable {
    /// Opens a connection (its driver runs on the current tokio runtime).
    pub fn open() -> Result<RouteTable, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(RouteTable { handle })
    }

    /// The main table's IPv4 routes.
    pub async fn routes(&self) -> Result<Routes, RouteError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut stream = self.handle.route().get(query).execute();
        let mut found = Routes::default();
        while let Some(m) = stream.try_next().await.map_err(RouteError::List)? {
            if table_of(&m) != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let Some(cidr) = destination(&m) else {
                continue;
            };
            match (m.header.protocol, gateway(&m)) {
                (RouteProtocol::Other(ROUTE_PROTOCOL), Some(via)) => {
                    found.ours.insert(PodRoute { cidr, via });
                }
                _ => {
                    found.others.insert(cidr);
                }
            }
        }
        Ok(found)
    }

    /// Adds `route`, replacing a route to the same CIDR.
    pub async fn add(&self, route: &PodRoute) -> Result<(), RouteError> {
        self.handle
            .route()
            .add(message(route))
            .replace()
            .execute()
            .await
            .map_err(|source| RouteError::Route {
                route: route.to_string(),
                source,
            })
    }

    /// Removes `route`.
    pub async fn remove(&self, route: &PodRoute) -> Result<(), RouteError> {
        self.handle
            .route()
            .del(message(route))
            .execute()
            .await
            .map_err(|source| RouteError::Route {
                route: route.to_string(),
                source,
            })
    }

    /// Carries out `plan`: every change is tried; the errors of those that failed are
    /// returned (a gateway that is not on a directly connected network, for one).
    pub async fn apply(&self, plan: &Plan) -> Vec<RouteError> {
        let mut errors = vec![];
        for r in &plan.add {
            if let Err(e) = self.add(r).await {
                errors.push(e);
            }
        }
        for r in &plan.remove {
            if let Err(e) = self.remove(r).await {
                errors.push(e);
            }
        }
        errors
    }

    /// Removes every route of Skiff's (`skiff-agent --cleanup`); returns how many went.
    pub async fn clean_up(&self) -> Result<usize, RouteError> {
        let found = self.routes().await?;
        for r in &found.ours {
            self.remove(r).await?;
        }
        Ok(found.ours.len())
    }
}
