//! `skiff-shim-monitor`: what a shim becomes once its container runs (see
//! `skiff_shim_monitor::monitor`).

fn main() {
    skiff_shim_monitor::monitor::main()
}
