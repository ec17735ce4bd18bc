//! The two things the monitor does with its container's cgroup once the container ended: read
//! how many processes the kernel OOM-killed in it (v1 `memory.oom_control`, v2
//! `memory.events`) and remove it from every hierarchy, through the host's cgroup mounts as
//! youki's libcgroups finds them.

use std::path::Path;

/// The `oom_kill N` count of a v1 `memory.oom_control` or v2 `memory.events` text.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("oom_kill"), Some(n)) => n.parse().ok(),
            _ => None,
        }
    })
}

/// How many processes the kernel OOM-killed in the cgroup at `cgroups_path` (as in the OCI
/// spec), on whichever cgroup version this host runs; `None` if it cannot be read.
pub fn oom_kill_count(cgroups_path: &Path) -> Option<u64> {
    use libcgroups::common::{get_cgroup_setup, CgroupSetup};
    let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    let file = match get_cgroup_setup().ok()? {
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {
            let mount = libcgroups::v1::util::get_subsystem_mount_point(
                &libcgroups::v1::ControllerType::Memory,
            )
            .ok()?;
            mount.join(relative).join("memory.oom_control")
        }
        CgroupSetup::Unified => {
            let mount = libcgroups::v2::util::get_unified_mount_point().ok()?;
            mount.join(relative).join("memory.events")
        }
    };
    parse_oom_kill(&std::fs::read_to_string(file).ok()?)
}

/// Removes the cgroup at `cgroups_path` (killing what still runs in it), on every hierarchy.
pub fn remove_cgroup(cgroups_path: &Path) -> Result<(), String> {
    use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: cgroups_path.to_path_buf(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| e.to_string())?;
    manager.remove().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counts() {
        for (text, want) in [
            ("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", Some(2)),
            (
                "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
                Some(1),
            ),
            ("oom_kill_disable 0\nunder_oom 0\n", None),
        ] {
            assert_eq!(parse_oom_kill(text), want, "{text}");
        }
    }
}
