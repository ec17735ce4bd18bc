//! The node conditions the agent reports, decided from measured usage: Ready, and
//! MemoryPressure, DiskPressure and PIDPressure at the kubelet's default hard eviction
//! thresholds (memory.available < 100Mi, nodefs.available < 10%; PIDs: fewer than 5% left).
//! Pure: the caller measures and keeps the transition times.

use super::facts::Usage;

/// Memory that must stay available (the kubelet's default `memory.available<100Mi`).
pub const MEMORY_AVAILABLE_MIN: u64 = 100 * 1024 * 1024;
/// Share of the disk that must stay available, in percent (`nodefs.available<10%`).
pub const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
/// Share of process IDs that must stay free, in percent.
pub const PIDS_AVAILABLE_MIN_PERCENT: u64 = 5;

/// One condition's state: type, whether it holds, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub holds: bool,
    pub reason: &'static str,
    pub message: String,
}

fn pressure(kind: &'static str, under: bool, what: &str, reasons: [&'static str; 2]) -> Condition {
    Condition {
        kind,
        holds: under,
        reason: if under { reasons[0] } else { reasons[1] },
        message: if under {
            format!("node has {what} pressure")
        } else {
            format!("node has sufficient {what}")
        },
    }
}

/// Every condition for `usage`; `runtime_ready` is false (with why) while the node cannot run
/// pods.
pub fn conditions(usage: &Usage, runtime_ready: Result<(), String>) -> Vec<Condition> {
    let memory = usage.memory_available_bytes < MEMORY_AVAILABLE_MIN;
    let disk =
        usage.disk_available_bytes * 100 < usage.disk_total_bytes * DISK_AVAILABLE_MIN_PERCENT;
    let pids =
        usage.pid_max.saturating_sub(usage.pids) * 100 < usage.pid_max * PIDS_AVAILABLE_MIN_PERCENT;
    let ready = match runtime_ready {
        Ok(()) => Condition {
            kind: "Ready",
            holds: true,
            reason: "KubeletReady",
            message: "skiff-agent is posting ready status".into(),
        },
        Err(why) => Condition {
            kind: "Ready",
            holds: false,
            reason: "KubeletNotReady",
            message: why,
        },
    };
    vec![
        pressure(
            "MemoryPressure",
            memory,
            "memory",
            ["KubeletHasInsufficientMemory", "KubeletHasSufficientMemory"],
        ),
        pressure(
            "DiskPressure",
            disk,
            "disk",
            ["KubeletHasDiskPressure", "KubeletHasNoDiskPressure"],
        ),
        pressure(
            "PIDPressure",
            pids,
            "PID",
            ["KubeletHasInsufficientPID", "KubeletHasSufficientPID"],
        ),
        ready,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn usage() -> Usage {
        Usage {
            memory_available_bytes: 8 * GI,
            memory_total_bytes: 16 * GI,
            disk_available_bytes: 50 * GI,
            disk_total_bytes: 100 * GI,
            pids: 300,
            pid_max: 32768,
        }
    }

    fn holding(c: &[Condition]) -> Vec<&'static str> {
        c.iter().filter(|c| c.holds).map(|c| c.kind).collect()
    }

    #[test]
    fn pressure_starts_at_the_thresholds() {
        assert_eq!(holding(&conditions(&usage(), Ok(()))), ["Ready"]);
        type Change = fn(&mut Usage);
        let cases: [(Change, &str); 3] = [
            (
                |u| u.memory_available_bytes = MEMORY_AVAILABLE_MIN - 1,
                "MemoryPressure",
            ),
            (|u| u.disk_available_bytes = 10 * GI - 1, "DiskPressure"),
            (|u| u.pids = 32768 - 1638 + 1, "PIDPressure"),
        ];
        for (change, kind) in cases {
            let mut u = usage();
            change(&mut u);
            assert_eq!(holding(&conditions(&u, Ok(()))), [kind, "Ready"], "{kind}");
        }
        let mut at = usage();
        at.memory_available_bytes = MEMORY_AVAILABLE_MIN;
        at.disk_available_bytes = 10 * GI;
        assert_eq!(holding(&conditions(&at, Ok(()))), ["Ready"]);
        let not_ready = conditions(&usage(), Err("network plugin not ready".into()));
        let ready = not_ready.iter().find(|c| c.kind == "Ready").expect("Ready");
        assert!(!ready.holds);
        assert_eq!(ready.message, "network plugin not ready");
    }
}
