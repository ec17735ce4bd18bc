//! The pod network on this node: a network namespace per pod (`netns`), joined to the node's
//! network through CNI plugins (`cni`), the kernel settings it needs (`sysctl`), and the
//! Services' rules (`service_proxy`, through `netproxy`).

pub mod cni;
pub mod netns;
pub mod service_proxy;
pub mod sysctl;
