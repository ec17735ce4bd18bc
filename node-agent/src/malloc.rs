//! The allocator setting the agent's long-running processes (the agent, each shim monitor)
//! share: few malloc arenas, for small resident sets.

/// Caps how many malloc arenas glibc keeps (`M_ARENA_MAX`). By default every thread that
/// allocates may get an arena of its own (up to eight per core), each keeping freed memory
/// resident; the agent's and the shims' threads allocate little, so a couple of shared arenas
/// keep their resident sets small at no measurable cost. Call it before any thread starts.
pub fn limit_malloc_arenas(arenas: i32) {
    // SAFETY: mallopt only sets an allocator parameter; an unknown one is refused, not UB.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}
