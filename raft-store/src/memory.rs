//! Giving freed memory back to the system. Building or installing a snapshot copies the whole
//! key space into many small allocations and frees them again; glibc's allocator keeps the
//! freed pages inside its heap (they are not at its top, so they are never trimmed on their
//! own), and a replica's resident memory stepped up at every snapshot and stayed there (the
//! soak benchmark, docs/benchmarks.md). `release_freed` hands those pages back
//! (`malloc_trim(0)` also releases whole free pages in the middle of the heap).

/// Returns the allocator's free pages to the system; a no-op where the allocator has no such
/// call.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// Resident pages of this process.
    fn resident_pages() -> u64 {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_small_allocations_go_back_to_the_system() {
        // 200 MiB in 4 KiB pieces, every sixteenth kept: the freed runs sit in the middle of
        // the heap, between kept pieces, where freeing alone leaves them resident.
        let mut pieces: Vec<Vec<u8>> = (0..51_200).map(|i| vec![i as u8; 4000]).collect();
        let mut kept = Vec::with_capacity(pieces.len() / 2);
        for (i, p) in pieces.drain(..).enumerate() {
            if i % 16 == 0 {
                kept.push(p);
            }
        }
        let before = resident_pages();
        super::release_freed();
        let after = resident_pages();
        // At least 100 MiB (25,600 pages of 4 KiB) of the freed 187 MiB went back.
        assert!(
            before.saturating_sub(after) > 25_600,
            "resident pages {before} -> {after}"
        );
        drop(kept);
    }
}
