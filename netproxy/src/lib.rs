//! Service proxying for Skiff nodes.
//!
//! Renders ClusterIP/NodePort rules from (services, endpoints, node) into iptables-restore text in
//! one pure function and applies it atomically. The rules land with the networking issue; until
//! then this crate only fixes the chain-name prefix every rule will use.

/// Every chain Skiff creates starts with this prefix, so its rules never collide with others'.
pub const CHAIN_PREFIX: &str = "SKIFF-";
