//! The client-side runtime that the agent, netproxy and tests share, in the shape of kube-rs's
//! `watcher` and `reflector`: a typed watcher that lists, watches from the list's revision,
//! relists when its revision is compacted away and resumes after a broken stream; and a local
//! store of the objects it follows, written by one writer and read by many.

pub mod reflector;
pub mod watcher;

pub use reflector::{ObjectKey, Store, Writer};
pub use watcher::{Config, Event, Watcher};
