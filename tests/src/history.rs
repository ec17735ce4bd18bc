//! Recording what clients did to registers (keys) and checking that the history is
//! linearizable, with the Wing–Gong–Lowe checker of the todc-utils crate.
//!
//! A write whose outcome is unknown (error or timeout) may have taken effect at any time after it
//! was called, so its response is placed at the very end of the history and its client continues
//! as a new process. A read that failed has no effect and is dropped.

use std::sync::Mutex;

use todc_utils::linearizability::history::{Action, History};
use todc_utils::{Specification, WGLChecker};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read; `Some(0)` means the key was absent.
    Read(Option<u64>),
    Write(u64),
}

/// A register holding a u64, 0 when absent.
pub struct Register;

impl Specification for Register {
    type State = u64;
    type Operation = RegisterOp;

    fn init() -> u64 {
        0
    }

    fn apply(op: &RegisterOp, state: &u64) -> (bool, u64) {
        match op {
            RegisterOp::Read(Some(v)) => (v == state, *state),
            RegisterOp::Read(None) => (false, *state),
            RegisterOp::Write(v) => (true, *v),
        }
    }
}

#[derive(Default)]
struct Log {
    actions: Vec<Option<(usize, Action<RegisterOp>)>>,
    unknown: Vec<(usize, Action<RegisterOp>)>,
}

/// The history of one register, in real-time order.
#[derive(Default)]
pub struct Recorder {
    log: Mutex<Log>,
}

/// A call in progress.
pub struct Pending {
    at: usize,
    process: usize,
    op: RegisterOp,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn call(&self, process: usize, op: RegisterOp) -> Pending {
        let mut log = self.lock();
        log.actions.push(Some((process, Action::Call(op))));
        Pending {
            at: log.actions.len() - 1,
            process,
            op,
        }
    }

    /// The operation completed with this result.
    pub fn done(&self, p: Pending, result: RegisterOp) {
        self.lock()
            .actions
            .push(Some((p.process, Action::Response(result))));
    }

    /// The operation failed or timed out: reads are dropped, writes stay pending to the end.
    pub fn unknown(&self, p: Pending) {
        let mut log = self.lock();
        match p.op {
            RegisterOp::Read(_) => log.actions[p.at] = None,
            RegisterOp::Write(_) => log.unknown.push((p.process, Action::Response(p.op))),
        }
    }

    pub fn operations(&self) -> usize {
        self.lock().actions.iter().flatten().count()
    }

    pub fn is_linearizable(&self) -> bool {
        let log = self.lock();
        let actions: Vec<_> = log
            .actions
            .iter()
            .flatten()
            .cloned()
            .chain(log.unknown.iter().cloned())
            .collect();
        if actions.is_empty() {
            return true;
        }
        WGLChecker::<Register>::is_linearizable(History::from_actions(actions))
    }
}

#[cfg(test)]
mod tests {
    use super::RegisterOp::{Read, Write};
    use super::*;

    #[test]
    fn stale_read_after_acknowledged_write_is_caught() {
        let r = Recorder::default();
        let w = r.call(0, Write(5));
        r.done(w, Write(5));
        let rd = r.call(1, Read(None));
        r.done(rd, Read(Some(0)));
        assert!(!r.is_linearizable());
    }

    #[test]
    fn unknown_write_may_take_effect_later() {
        let r = Recorder::default();
        let w = r.call(0, Write(5));
        r.unknown(w);
        let rd = r.call(1, Read(None));
        r.done(rd, Read(Some(0)));
        let rd = r.call(1, Read(None));
        r.done(rd, Read(Some(5)));
        assert!(r.is_linearizable());
        // But a value never written cannot be read.
        let rd = r.call(1, Read(None));
        r.done(rd, Read(Some(7)));
        assert!(!r.is_linearizable());
    }
}
