//! Generates the etcd v3 API (our own wire-compatible protos) and Skiff's peer protocol.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded, so setting the variable is sound; prost-build reads it.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // etcd requests travel inside Raft log entries, which are serde-encoded.
        .type_attribute(
            ".etcdserverpb",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(".mvccpb", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_protos(
            &[
                "proto/mvccpb/kv.proto",
                "proto/etcdserverpb/rpc.proto",
                "proto/v3electionpb/v3election.proto",
                "proto/skiffpb/peer.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
