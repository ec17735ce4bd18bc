//! `skiff-shim-monitor`: what a shim becomes once its container runs (see
//! `node_agent::runtime::shim_monitor`).

fn main() {
    node_agent::runtime::shim_monitor::main()
}
