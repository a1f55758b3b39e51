//! Compiles the vendored Kubernetes .proto files (proto/) into one FileDescriptorSet, which
//! src/protobuf reads at start to learn every built-in type's message layout.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut files = Vec::new();
    collect(&PathBuf::from("proto"), &mut files);
    files.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kubernetes.fds");
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into());
    let status = Command::new(&protoc)
        .arg("--proto_path=proto")
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(files.iter().map(|file| file.strip_prefix("proto").expect("under proto/")))
        .status()
        .unwrap_or_else(|error| panic!("cannot run {protoc} (install protobuf-compiler): {error}"));
    assert!(status.success(), "{protoc} failed on the .proto files under proto/");
}

fn collect(directory: &PathBuf, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("proto/ is readable") {
        let path = entry.expect("proto/ is readable").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "proto") {
            files.push(path);
        }
    }
}
