//! Automatic compaction, decided by the Raft leader with etcd's two modes
//! (`--auto-compaction-mode`, `--auto-compaction-retention`):
//!
//! - `periodic` with a retention period P: the leader samples the revision every P/10 (at most
//!   every 6 minutes) and, every P (at most every hour), compacts at the newest sample that is at
//!   least P old. History of the last P is always kept.
//! - `revision` with a retention R: every 5 minutes the leader compacts at `current - R`.
//!
//! Pure: [`AutoCompactor::due`] is given the time and revisions and says what to compact at; the
//! replica's duties loop writes the Compact command. A leader change starts the sampling anew
//! (a new leader compacts no earlier than P after it took over), as in etcd.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How the leader compacts on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep at least this much time of history.
    Periodic(Duration),
    /// Keep at least this many revisions.
    Revision(i64),
}

/// Why a `--auto-compaction-*` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error("--auto-compaction-retention {0:?}: expected a duration such as 5m, 1h or 90s, or a number of hours")]
    BadDuration(String),
    #[error("--auto-compaction-retention {0:?}: expected a number of revisions")]
    BadRevisions(String),
    #[error("--auto-compaction-mode {0:?}: expected periodic or revision")]
    BadMode(String),
}

impl AutoCompaction {
    /// Parses etcd's flag pair. A retention of 0 turns automatic compaction off; for `periodic`
    /// a bare number counts hours (as etcd reads it), otherwise units h, m, s, ms combine
    /// (`1h30m`).
    pub fn parse(mode: &str, retention: &str) -> Result<Self, RetentionError> {
        match mode {
            "periodic" => {
                let period = parse_duration(retention)
                    .ok_or_else(|| RetentionError::BadDuration(retention.into()))?;
                Ok(if period.is_zero() {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Periodic(period)
                })
            }
            "revision" => {
                let keep: i64 = retention
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| RetentionError::BadRevisions(retention.into()))?;
                Ok(if keep == 0 {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Revision(keep)
                })
            }
            other => Err(RetentionError::BadMode(other.into())),
        }
    }
}

/// `5m`, `1h30m`, `90s`, `500ms`, or a bare number of hours (`1`, `0.5`).
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(hours) = s.parse::<f64>() {
        return (hours.is_finite() && hours >= 0.0)
            .then(|| Duration::from_secs_f64(hours * 3600.0));
    }
    parse_go_duration(s)
}

/// A duration written as Go writes them (and etcd's and Kubernetes' flags take them): one or
/// more numbers with a unit each, `h`, `m`, `s`, `ms`, `us`, `ns` (`1h30m`, `90s`, `1.5h`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(n * secs);
    }
    Some(total)
}

/// How often revision mode compacts (etcd: 5 minutes).
const REVISION_MODE_EVERY: Duration = Duration::from_secs(300);

/// The leader's compaction schedule for one leadership term.
#[derive(Debug)]
pub struct AutoCompactor {
    mode: AutoCompaction,
    /// (when, revision) samples, oldest first.
    samples: VecDeque<(Instant, i64)>,
    /// When this leadership began, or the last compaction was decided.
    last: Option<Instant>,
}

impl AutoCompactor {
    pub fn new(mode: AutoCompaction) -> Self {
        Self {
            mode,
            samples: VecDeque::new(),
            last: None,
        }
    }

    /// Forgets the schedule (this replica is no longer the leader).
    pub fn reset(&mut self) {
        self.samples.clear();
        self.last = None;
    }

    /// Called by the leader now and then: the revision to compact at now, if any.
    pub fn due(&mut self, now: Instant, current: i64, compacted: i64) -> Option<i64> {
        let last = *self.last.get_or_insert(now);
        match self.mode {
            AutoCompaction::Off => None,
            AutoCompaction::Revision(keep) => {
                if now.duration_since(last) < REVISION_MODE_EVERY {
                    return None;
                }
                self.last = Some(now);
                let at = current - keep;
                (at > compacted && at > 0).then_some(at)
            }
            AutoCompaction::Periodic(period) => {
                let every = period.min(Duration::from_secs(3600));
                let sample_every = every / 10;
                let newest = self.samples.back().map(|(t, _)| *t);
                if newest.is_none_or(|t| now.duration_since(t) >= sample_every) {
                    self.samples.push_back((now, current));
                }
                if now.duration_since(last) < every {
                    return None;
                }
                // The newest sample at least `period` old; older ones are no longer needed.
                let mut target = None;
                while let Some(&(t, rev)) = self.samples.front() {
                    if now.duration_since(t) < period {
                        break;
                    }
                    target = Some(rev);
                    self.samples.pop_front();
                }
                let at = target?;
                self.last = Some(now);
                (at > compacted && at > 0).then_some(at)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_etcd_reads_them() {
        let p = |m, r| AutoCompaction::parse(m, r);
        assert_eq!(
            p("periodic", "5m"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(300)))
        );
        assert_eq!(
            p("periodic", "1h30m"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(5400)))
        );
        assert_eq!(
            p("periodic", "1"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            p("periodic", "500ms"),
            Ok(AutoCompaction::Periodic(Duration::from_millis(500)))
        );
        assert_eq!(p("periodic", "0"), Ok(AutoCompaction::Off));
        assert_eq!(p("revision", "1000"), Ok(AutoCompaction::Revision(1000)));
        assert_eq!(p("revision", "0"), Ok(AutoCompaction::Off));
        for bad in ["", "5x", "m", "-1", "1h-2m", "five", "1..2s"] {
            assert!(p("periodic", bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("60"), None, "a unit is required");
        assert_eq!(
            p("revision", "5m"),
            Err(RetentionError::BadRevisions("5m".into()))
        );
        assert_eq!(
            p("hourly", "1"),
            Err(RetentionError::BadMode("hourly".into()))
        );
    }

    /// Drives the schedule every second for `secs`, the revision growing 10 per second; returns
    /// (second, revision) of every compaction.
    fn drive(mode: AutoCompaction, secs: u64) -> Vec<(u64, i64)> {
        let start = Instant::now();
        let mut c = AutoCompactor::new(mode);
        let mut compacted = 0;
        let mut out = Vec::new();
        for s in 0..=secs {
            let now = start + Duration::from_secs(s);
            let current = 1 + 10 * s as i64;
            if let Some(at) = c.due(now, current, compacted) {
                assert!(at <= current);
                compacted = at;
                out.push((s, at));
            }
        }
        out
    }

    #[test]
    fn periodic_keeps_at_least_the_period_and_compacts_once_a_period() {
        let got = drive(AutoCompaction::Periodic(Duration::from_secs(60)), 300);
        // Every 60 s, at the revision of 60 s earlier.
        assert_eq!(
            got,
            vec![(60, 1), (120, 601), (180, 1201), (240, 1801), (300, 2401)]
        );
    }

    #[test]
    fn revision_mode_compacts_every_five_minutes_keeping_the_retention() {
        let got = drive(AutoCompaction::Revision(100), 900);
        assert_eq!(got, vec![(300, 2901), (600, 5901), (900, 8901)]);
    }

    #[test]
    fn off_never_compacts_and_a_reset_restarts_the_schedule() {
        assert!(drive(AutoCompaction::Off, 1000).is_empty());
        let start = Instant::now();
        let mut c = AutoCompactor::new(AutoCompaction::Periodic(Duration::from_secs(10)));
        for s in 0..9 {
            assert_eq!(
                c.due(start + Duration::from_secs(s), 100 + s as i64, 0),
                None
            );
        }
        c.reset();
        // A new term: nothing before 10 s of its own.
        for s in 9..19 {
            assert_eq!(
                c.due(start + Duration::from_secs(s), 200 + s as i64, 0),
                None,
                "{s}"
            );
        }
        assert_eq!(c.due(start + Duration::from_secs(19), 300, 0), Some(209));
    }
}
