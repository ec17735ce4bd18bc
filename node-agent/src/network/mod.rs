//! The pod network on this node: a network namespace per pod (`netns`), joined to the node's
//! network through CNI plugins (`cni`), the kernel settings it needs (`sysctl`), and the
//! Services' rules (`service_proxy`, through `netproxy`), and the routes to other nodes' pods
//! (`pod_routes`: `host_gw` decides, `route_table` talks to the kernel), and the cluster DNS
//! server (`cluster_dns`) and the load balancers' health checks (`health_check`), all fed by watch-backed stores (`follow`).

pub mod cluster_dns;
pub mod cni;
pub mod follow;
pub mod health_check;
pub mod host_gw;
pub mod netns;
pub mod pod_routes;
pub mod route_table;
pub mod service_proxy;
pub mod sysctl;
