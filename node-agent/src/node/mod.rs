//! This machine as a Node: what it measures about itself (`facts`), the Node and Lease objects
//! made from that (`object`, pure), the pressure conditions (`conditions`, pure), and the loop
//! that registers the Node, renews its Lease and reports its status (`heartbeat`).

pub mod conditions;
pub mod facts;
pub mod heartbeat;
pub mod object;
