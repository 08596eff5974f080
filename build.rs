//! Compiles the protos without a system `protoc` (protox) and writes the encoded descriptor set
//! that reflection serves and the Envoy gRPC-JSON transcoder loads.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/roster/v1/common.proto",
        "proto/roster/v1/auth.proto",
        "proto/roster/v1/users.proto",
        "proto/roster/v1/teams.proto",
        "proto/roster/v1/roles.proto",
        "proto/roster/v1/two_factor.proto",
        "proto/roster/v1/sessions.proto",
        "proto/roster/v1/activity.proto",
        "proto/roster/v1/security.proto",
        "proto/roster/v1/events.proto",
        "proto/roster/v1/service_accounts.proto",
        "proto/roster/v1/webhooks.proto",
        // Imported by every service proto too; listed so that reflection clients and the Envoy
        // transcoder can always decode the google.rpc error details every refusal carries.
        "proto/google/rpc/error_details.proto",
        "proto/google/rpc/status.proto",
    ];
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files)?;

    // encode_file_descriptor_set keeps extension options such as google.api.http, which the
    // prost_types set from file_descriptor_set() would drop.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("roster_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
