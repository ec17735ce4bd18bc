//! The pod network on this node: a network namespace per pod (`netns`), joined to the node's
//! network through CNI plugins (`cni`), and the kernel settings it needs (`sysctl`).

pub mod cni;
pub mod netns;
pub mod sysctl;
