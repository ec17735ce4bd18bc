//! This machine as a Node: what it measures about itself (`facts`), the Node and Lease objects
//! made from that (`object`, pure), the pressure conditions (`conditions`, pure), the loop
//! that registers the Node, renews its Lease and reports its status (`heartbeat`), and its
//! local volumes' directory with the sweep of volumes that are gone (`storage`).

pub mod conditions;
pub mod facts;
pub mod heartbeat;
pub mod object;
pub mod storage;
