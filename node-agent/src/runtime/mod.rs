//! Containers: OCI runtime bundles (config.json built from a pod's container with `oci-spec`)
//! run by one shim process each (`skiff-shim`), which creates the container with youki's
//! `libcontainer`, owns its output, and records how it ended. The agent never forks a
//! container itself: it writes the bundle, mounts the rootfs and talks to the shim through files
//! in the container's directory (see [`containers`]).
//!
//! | module | owns |
//! |---|---|
//! | `spec` | [`ContainerConfig`](spec::ContainerConfig) → OCI `Spec`, Docker's/containerd's defaults (pure) |
//! | `capabilities` | default set, add/drop, the host's bounding set (pure but one read) |
//! | `seccomp` | the RuntimeDefault profile (pure) |
//! | `host` | what the host contributes to a spec: bounding set, NOFILE limit, devices |
//! | `rootfs` | overlay of image layers at `<dir>/rootfs`, per-pod file bind mounts |
//! | `cgroups` | QoS class, pod and container cgroup paths, CPU conversions, OOM kill counts |
//! | `cri_log` | the CRI log format and the pump from a container's stream |
//! | `shim_state` | the shim's files (started, start error, exit) and pid identity checks |
//! | `shim` | the `skiff-shim` process |
//! | `containers` | [`Containers`](containers::Containers): start, state, list, signal, remove |
//! | `exec` | [`ExecProcess`](exec::ExecProcess): a command run in a running container, the agent's side |
//! | `exec_output` | a command run to its end with its output kept: exec probes and hooks |
//! | `exec_shim` | `skiff-shim exec`: joins the container with libcontainer's tenant builder |
//! | `exec_workload` | the command's last steps inside the container: PATH lookup, seccomp, exec |
//! | `exec_report` | the socket through which `skiff-shim exec` reports to the agent |
//! | `pty` | terminal window sizes and the agent's end of an exec's terminal |

pub mod capabilities;
pub mod cgroups;
pub mod containers;
pub mod exec;
pub mod exec_output;
pub mod exec_report;
pub mod exec_shim;
pub mod exec_workload;
pub mod host;
pub mod monitor_program;
pub mod pod_cgroup;
pub mod pty;
pub mod qos_cgroups;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod spec;

// The monitor's package owns these; the agent and the shim use them from here as before.
pub use skiff_shim_monitor::monitor as shim_monitor;
pub use skiff_shim_monitor::{cri_log, log_rotation, shim_state};

pub use containers::{
    ContainerInfo, ContainerState, Containers, ExitStatus, RuntimeError, StartRequest,
};
pub use spec::{CapabilityChanges, ContainerConfig, MountSpec, Resources, SeccompMode};
