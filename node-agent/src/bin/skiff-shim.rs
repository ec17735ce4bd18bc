//! `skiff-shim`: holds one container for the agent (see `node_agent::runtime::shim`).

fn main() {
    node_agent::runtime::shim::main()
}
