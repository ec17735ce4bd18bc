//! `skiff-shim-monitor`: what a shim becomes once its container runs, and the files it shares
//! with the shim and the agent. The shim needs youki's libcontainer to create and start a
//! container, which makes a large program; holding a running container needs much less (see
//! [`monitor`]). This package is kept small so that its program, built on its own and linked
//! statically, costs each running container as little memory as it can (node-agent/build.rs).

pub mod cgroup;
pub mod cri_log;
pub mod log_rotation;
pub mod monitor;
pub mod shim_state;

/// Caps glibc's malloc arenas at `arenas`. glibc gives each thread that allocates its own arena
/// (up to eight per core), each keeping freed memory resident; the agent's and the shims'
/// threads allocate little, so a couple of shared arenas keep their resident sets small at no
/// measurable cost. Call it before any thread starts.
pub fn limit_malloc_arenas(arenas: i32) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; an unknown one is refused, not UB.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = arenas;
}
