//! Cluster DNS: the zone the Services and Endpoints make (`zone`, pure) and the server that
//! answers from it and forwards every other name to the node's resolvers (`server`).

pub mod server;
pub mod zone;
