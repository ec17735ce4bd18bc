//! Service proxying for Skiff nodes, in the shape of kube-proxy's iptables proxier: the
//! Services and Endpoints a node follows are read into service ports ([`model`]), one pure
//! function renders every rule for them into iptables-restore text ([`render`]) under chain
//! names of Skiff's own ([`chains`]) — all of it, or only what changed since the last sync
//! ([`ruleset`]) — and a thin layer applies that text atomically with one
//! `iptables-restore --noflush` per sync ([`apply`]); stale UDP flows are deleted after it
//! ([`conntrack`]). Cluster DNS is [`dns`]; what load balancers' health checks are answered is
//! [`health`].

pub mod apply;
pub mod chains;
pub mod conntrack;
pub mod dns;
pub mod health;
pub mod model;
pub mod render;
pub mod ruleset;

pub use apply::{ApplyError, Iptables, SyncReport};
pub use chains::CHAIN_PREFIX;
pub use health::{health_checks, HealthCheck};
pub use model::{service_ports, with_node_dns, Endpoint, Protocol, ServicePort};
pub use render::{render, render_rules, NodeContext, Rendered};
pub use ruleset::{Ruleset, Written};
