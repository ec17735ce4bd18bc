//! Generated protobuf types: etcd's v3 API (wire-compatible, our own .proto files) and Skiff's
//! peer protocol.
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
pub mod skiffpb {
    tonic::include_proto!("skiffpb");
}
