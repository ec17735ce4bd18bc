//! Skiff on a host whose cgroups are pure v2, from a host that has v1 (or hybrid) cgroups: the
//! node agent's runtime tests (containers, lifecycle, limits; exec in a VM of its own, as it
//! takes as long as the rest) and the whole agent with real pods under its QoS-level cgroups
//! (a replica, a registry and an agent inside the VM), each run in a VM booted by
//! `tests/vm/run` (see `tests::vm`). On a pure v2 host these tests already run as they are.

use std::time::Duration;

use tests::vm::{run_in_vm, VmTests};

/// How long one VM may take, boot included (about 1.5 to 4 minutes each on an idle 2-core
/// machine under emulation).
const VM_TIMEOUT: Duration = Duration::from_secs(1200);

#[test]
fn runtime_tests_pass_on_pure_cgroup_v2() -> anyhow::Result<()> {
    run_in_vm(
        "runtime_tests_pass_on_pure_cgroup_v2",
        VmTests {
            targets: &["runtime_containers", "runtime_lifecycle", "runtime_limits"],
            // A benchmark, meaningless under emulation.
            skip: &["time_to_run_true"],
            timeout: VM_TIMEOUT,
        },
    )
}

#[test]
fn exec_tests_pass_on_pure_cgroup_v2() -> anyhow::Result<()> {
    run_in_vm(
        "exec_tests_pass_on_pure_cgroup_v2",
        VmTests {
            targets: &["runtime_exec"],
            skip: &[],
            timeout: VM_TIMEOUT,
        },
    )
}

#[test]
fn the_agent_runs_pods_on_pure_cgroup_v2() -> anyhow::Result<()> {
    run_in_vm(
        "the_agent_runs_pods_on_pure_cgroup_v2",
        VmTests {
            targets: &["agent_pod_limits", "agent_pods"],
            skip: &[],
            timeout: VM_TIMEOUT,
        },
    )
}
