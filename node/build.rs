//! Compiles etcd's wire schema (and detcd's log record) without a system `protoc`:
//! protox parses the .proto files in pure Rust, prost/tonic generate the code.
//! The simulator build (`--cfg madsim`) needs only the messages, not the gRPC service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/kv.proto", "proto/auth.proto", "proto/rpc.proto", "proto/detcd.proto", "proto/v3lock.proto", "proto/v3election.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let simulator_build = std::env::var_os("CARGO_CFG_MADSIM").is_some();
    let descriptors = protox::compile(protos, ["proto"])?;
    if !simulator_build {
        // serde for etcd's messages, for the JSON gateway: proto field names as written
        // (grpc-gateway's OrigName), 64-bit integers as strings, bytes as base64, enums
        // by name, defaults left out; unknown fields ignored, as etcd's gateway does.
        let encoded = prost::Message::encode_to_vec(&descriptors);
        pbjson_build::Builder::new()
            .register_descriptors(&encoded)?
            .preserve_proto_field_names()
            .ignore_unknown_fields()
            .build(&[".etcdserverpb", ".mvccpb", ".authpb", ".v3lockpb", ".v3electionpb"])?;
    }
    tonic_prost_build::configure()
        // A put's value is `Bytes`: decoded from a log entry, it is a slice of the
        // entry's buffer, which the store then shares with the raft log (see
        // `mvcc::KeyRecord::value`). A key-value's too: the events a put makes for
        // watchers and the answers of ranges share the stored value, never copy it.
        .bytes(".etcdserverpb.PutRequest.value")
        .bytes(".mvccpb.KeyValue.value")
        // One client: a follower forwards MemberPromote to the leader (etcd does too).
        .build_client(!simulator_build)
        .build_server(!simulator_build)
        .compile_fds(descriptors)?;
    Ok(())
}
