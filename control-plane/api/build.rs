//! Generates the `skiff.v1` API and the node agent's `skiff.agent.v1` gRPC clients and servers
//! from `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded, so setting the variable is sound; prost-build reads it.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/skiff/agent/v1/agent.proto"], &["proto"])?;
    // skiff.v1 relays some of the agent's messages: they are the same Rust types. Its code goes
    // to a directory of its own, or this pass would write over the agent's file.
    let api_out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("api");
    std::fs::create_dir_all(&api_out)?;
    tonic_prost_build::configure()
        .out_dir(api_out)
        .build_client(true)
        .build_server(true)
        .extern_path(".skiff.agent.v1", "crate::agent_pb")
        .compile_protos(&["proto/skiff/v1/api.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
