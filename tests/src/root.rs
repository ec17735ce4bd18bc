//! Whether root-only tests may run here: as root they do; otherwise they are skipped, except
//! under CI=true (CI runs as root, so a skip there would hide a failure). The one check every
//! root-only helper of this crate asks (network namespaces, VMs, containers).

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    uid == 0
}

/// True as root. Not root: under CI=true a panic naming `what`, else a note and false.
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} needs root, and CI runs as root: refusing to skip");
    }
    eprintln!("skipping {what}: needs root");
    false
}
