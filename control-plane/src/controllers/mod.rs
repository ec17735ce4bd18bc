//! Control loops that keep stored objects consistent. Each is level-triggered: it reads the
//! objects, decides with a pure function what to change, and writes through the API's own
//! paths. They act only on the replica elected to run them (`election`), and every write they
//! make carries that election's fence.

pub mod election;
pub mod gc;
pub mod ipam;
pub mod replicaset;
pub mod runner;
