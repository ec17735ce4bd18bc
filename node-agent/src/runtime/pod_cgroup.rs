//! A pod's own cgroup and its limits, as the kubelet's pod-level cgroups: the pod's containers
//! sit below it, so the sum of what they use is held to what the pod may use (CPU shares from
//! the requests, a CFS quota and a memory limit when every container has one, and the
//! `--pod-pids-limit` for all of the pod's processes together). [`ensure`] creates the
//! directory — in each v1 hierarchy the limits need, or on v2 with the controllers enabled
//! from the root down — and has libcgroups write the values, in the files of whichever
//! version the host runs; the QoS levels above the pods are written by it too. Devices are
//! left to the containers: a level allows them all, as the kubelet's levels leave them be.

use std::path::{Path, PathBuf};

use libcgroups::common::{
    create_cgroup_manager, get_cgroup_setup, CgroupConfig, CgroupManager, CgroupSetup,
    ControllerOpt,
};

use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

use super::spec::{cgroup_limits, Resources};

/// The v1 hierarchies a pod's limits are written to (libcgroups also writes its default
/// device rules, which only allow, into the devices one).
const V1_CONTROLLERS: [libcgroups::v1::ControllerType; 5] = [
    libcgroups::v1::ControllerType::Cpu,
    libcgroups::v1::ControllerType::CpuAcct,
    libcgroups::v1::ControllerType::Memory,
    libcgroups::v1::ControllerType::Pids,
    libcgroups::v1::ControllerType::Devices,
];

/// The v2 controllers enabled for the levels above a pod.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

fn create_dir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

/// Creates `path` (a cgroup path such as `/skiff/burstable/pod<uid>`) in every hierarchy the
/// limits need. Returns whether the host's cgroups are v2 alone.
fn create(path: &Path) -> Result<bool, String> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let setup = get_cgroup_setup().map_err(|e| format!("finding the host's cgroups: {e}"))?;
    match setup {
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {
            for controller in V1_CONTROLLERS {
                let mount = libcgroups::v1::util::get_subsystem_mount_point(&controller)
                    .map_err(|e| format!("finding the {controller} cgroup hierarchy: {e}"))?;
                create_dir(&mount.join(relative))?;
            }
        }
        CgroupSetup::Unified => {
            let root = libcgroups::v2::util::get_unified_mount_point()
                .map_err(|e| format!("finding the cgroup2 mount: {e}"))?;
            let available = std::fs::read_to_string(root.join("cgroup.controllers"))
                .map_err(|e| format!("reading {}/cgroup.controllers: {e}", root.display()))?;
            let enable: Vec<String> = V2_CONTROLLERS
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c))
                .map(|c| format!("+{c}"))
                .collect();
            let mut level: PathBuf = root;
            for component in relative.components() {
                let control = level.join("cgroup.subtree_control");
                std::fs::write(&control, enable.join(" "))
                    .map_err(|e| format!("writing {}: {e}", control.display()))?;
                level = level.join(component);
                if !level.is_dir() {
                    create_dir(&level)?;
                }
            }
        }
    }
    Ok(matches!(setup, CgroupSetup::Unified))
}

/// Creates the cgroup at `path` (a pod's, or a level above the pods) and writes `limits`
/// into it. libcgroups always writes device rules. On v2 they are a program the kernel runs
/// for every cgroup below as well, so a rule allowing every device keeps a level from
/// narrowing what its containers' own rules allow. On v1 a level inherits allowing all, and
/// the kernel refuses that rule once the level has children, so none is added there.
pub fn ensure(path: &Path, limits: &Resources) -> Result<(), String> {
    let unified = create(path)?;
    let mut builder = cgroup_limits(limits)?;
    if unified {
        let all_devices = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::A)
            .access("rwm")
            .build()
            .map_err(|e| e.to_string())?;
        builder = builder.devices(vec![all_devices]);
    }
    let resources = builder.build().map_err(|e| e.to_string())?;
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| format!("opening the cgroup {}: {e}", path.display()))?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| format!("writing the cgroup {}'s limits: {e}", path.display()))
}
