//! When a container that stopped is started again: by restart policy (Always, OnFailure, Never)
//! and the kubelet's crash-loop back-off — the first restart at once, then after 10 s, doubling
//! to 5 minutes, counted from when the container last finished; a container that had run for 10
//! minutes before it stopped starts over at no delay. The same back-off paces image pulls that
//! failed. Pure.

use std::time::Duration;

use jiff::Timestamp;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Whether a container that exited with `exit_code` is to run again under `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// A back-off: the current delay (zero: the next try goes at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackOff {
    pub delay_secs: u64,
}

impl BackOff {
    /// How long is still to wait before trying again after a failure at `since`; None when a
    /// try may go now.
    pub fn remaining(&self, since: Timestamp, now: Timestamp) -> Option<Duration> {
        let until = since
            .checked_add(Duration::from_secs(self.delay_secs))
            .ok()?;
        let left = until.duration_since(now);
        (left.is_positive()).then(|| left.unsigned_abs())
    }

    /// Records a try made now: the next failure waits longer.
    pub fn tried(&mut self) {
        self.delay_secs = if self.delay_secs == 0 {
            INITIAL.as_secs()
        } else {
            (self.delay_secs * 2).min(MAX.as_secs())
        };
    }

    /// Forgets earlier failures when the last run lasted long enough.
    pub fn reset_after_run(&mut self, started: Option<Timestamp>, finished: Option<Timestamp>) {
        if let (Some(s), Some(f)) = (started, finished) {
            if f.duration_since(s).unsigned_abs() >= RESET_AFTER {
                self.delay_secs = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("Always", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 2));
        assert!(!should_restart("Never", 2));
    }

    #[test]
    fn delays_go_0_10_20_40_and_stop_at_300() {
        let mut b = BackOff::default();
        let mut delays = vec![];
        for _ in 0..8 {
            delays.push(b.delay_secs);
            b.tried();
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        let b = BackOff { delay_secs: 10 };
        assert_eq!(b.remaining(t(0), t(4)), Some(Duration::from_secs(6)));
        assert_eq!(b.remaining(t(0), t(10)), None);
        assert_eq!(BackOff::default().remaining(t(0), t(0)), None);
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let mut b = BackOff { delay_secs: 160 };
        b.reset_after_run(Some(t(0)), Some(t(599)));
        assert_eq!(b.delay_secs, 160);
        b.reset_after_run(Some(t(0)), Some(t(600)));
        assert_eq!(b.delay_secs, 0);
    }
}
