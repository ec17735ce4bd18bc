//! Control loops that keep stored objects consistent. Each is level-triggered: it reads the
//! objects, decides with a pure function what to change, and writes through the API's own
//! paths. Until controller leader election lands, they run on the replica that leads the store.

pub mod gc;
