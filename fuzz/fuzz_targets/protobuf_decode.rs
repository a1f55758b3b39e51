//! Any request body, read the way the HTTP handlers read a create's or an update's body
//! (`api::handlers::decode_body`, from its Content-Type), never panics, hangs or allocates
//! without bound, and every failure is a 400 BadRequest or a 415 UnsupportedMediaType Status.
//!
//! The first byte picks the resource type the body is posted to (built-ins, and a custom
//! resource, which has no protobuf form) and the kind an envelope names; the second how the
//! rest is sent: as the message of a `k8s\0` + `runtime.Unknown` envelope (so that the fuzzer
//! reaches the message decoders without having to find the envelope first) or as the whole
//! body, under a protobuf, JSON or foreign Content-Type.
#![no_main]

use std::sync::LazyLock;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use watchcache::api::handlers::decode_body;
use watchcache::cacher::object::Wire;
use watchcache::registry::{builtin_types, ResourceType};

/// (plural, apiVersion, kind) of the built-in types the envelope may name.
const KINDS: &[(&str, &str, &str)] = &[
    ("pods", "v1", "Pod"),
    ("configmaps", "v1", "ConfigMap"),
    ("secrets", "v1", "Secret"),
    ("services", "v1", "Service"),
    ("deployments", "apps/v1", "Deployment"),
    ("jobs", "batch/v1", "Job"),
    ("cronjobs", "batch/v1", "CronJob"),
    ("nodes", "v1", "Node"),
];

/// The types bodies are posted to: those of `KINDS`, then a custom resource.
static TYPES: LazyLock<Vec<ResourceType>> = LazyLock::new(|| {
    let builtins = builtin_types();
    let mut types: Vec<ResourceType> = KINDS
        .iter()
        .map(|(plural, _, _)| builtins.iter().find(|ty| ty.plural == *plural).unwrap().clone())
        .collect();
    let mut custom = types[1].clone();
    custom.group = "stable.example.com".into();
    custom.plural = "crontabs".into();
    custom.kind = "CronTab".into();
    custom.list_kind = "CronTabList".into();
    assert!(!custom.protobuf());
    types.push(custom);
    types
});

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `k8s\0` + a `runtime.Unknown` whose typeMeta names `api_version`/`kind` and whose raw is
/// `message`.
fn envelope(api_version: &str, kind: &str, message: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut body = b"k8s\0".to_vec();
    put_bytes(&mut body, 1, &type_meta);
    put_bytes(&mut body, 2, message);
    body
}

fuzz_target!(|data: &[u8]| {
    let [choice, mode, rest @ ..] = data else { return };
    let types = &*TYPES;
    let ty = &types[usize::from(choice & 0x0f) % types.len()];
    let (_, api_version, kind) = KINDS[usize::from(choice >> 4) % KINDS.len()];
    let wrapped;
    let (body, content_type) = match mode % 4 {
        0 => {
            wrapped = envelope(api_version, kind, rest);
            (&wrapped[..], "application/vnd.kubernetes.protobuf")
        }
        1 => (rest, "application/vnd.kubernetes.protobuf"),
        2 => (rest, "application/json"),
        _ => (rest, "text/plain"),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    match decode_body(&headers, body, ty) {
        Ok(object) => {
            assert!(object.is_object(), "{object}");
            if content_type != "application/json" {
                assert!(ty.protobuf(), "a protobuf body for {} was read", ty.kind);
                assert!(object["kind"].is_string() && object["apiVersion"].is_string(), "{object}");
            }
        }
        Err(error) => {
            let expected = match (content_type, ty.protobuf()) {
                ("text/plain", _) | ("application/vnd.kubernetes.protobuf", false) => {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                }
                _ => StatusCode::BAD_REQUEST,
            };
            assert_eq!(error.code, expected, "{content_type} for {}: {}", ty.kind, error.to_status());
            let status = error.to_status();
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["code"], expected.as_u16());
            let reason =
                if expected == StatusCode::BAD_REQUEST { "BadRequest" } else { "UnsupportedMediaType" };
            assert_eq!(status["reason"], reason, "{status}");
            // A protobuf client gets the Status as protobuf.
            let response = error.to_response_in(Wire::Protobuf);
            assert_eq!(response.status(), expected);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/vnd.kubernetes.protobuf");
        }
    }
});
