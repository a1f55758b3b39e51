//! Storage keys (`registry::ResourceType::key`) from a namespace and a name, for every
//! built-in type: a name and namespace that pass kube's checks (the path-segment rule that every
//! request path's name meets, or the type's rule for a created object) give a key the store
//! accepts, under the type's prefix and only that type's, that parses back to the same namespace
//! and name; and any key the store accepts (`storage::validate_key`) has no empty, `.` or `..`
//! segment and no control character, so no name (`..`, `/`, NUL, ...) reaches outside the
//! type's prefix. (Names with control characters, which kube's path-segment rule allows for a few
//! types, are refused by the store with a 400.) The input is the namespace, a NUL, and the name.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use watchcache::registry::{builtin_types, ResourceType};
use watchcache::storage::validate_key;
use watchcache::validation::{path_segment_name, validate_metadata};

fn types() -> &'static [ResourceType] {
    static TYPES: OnceLock<Vec<ResourceType>> = OnceLock::new();
    TYPES.get_or_init(builtin_types)
}

/// The namespace and name the key of `ty` holds, read back.
fn parse_key<'a>(ty: &ResourceType, key: &'a str) -> Option<(Option<&'a str>, &'a str)> {
    let rest = key.strip_prefix(ty.storage_prefix.as_str())?;
    if ty.namespaced {
        let (namespace, name) = rest.split_once('/')?;
        Some((Some(namespace), name))
    } else {
        Some((None, rest))
    }
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let (namespace, name) = text.split_once('\0').unwrap_or(("default", &text));
    for ty in types() {
        let namespace = ty.namespaced.then_some(namespace);
        let key = ty.key(namespace, name);
        // Whatever the store accepts is a clean key.
        if validate_key(&key).is_ok() {
            assert!(!key.chars().any(char::is_control), "{key:?}");
            assert!(key[1..].split('/').all(|segment| !matches!(segment, "" | "." | "..")), "{key:?}");
            assert!(key.starts_with(ty.storage_prefix.as_str()), "{key:?}");
        }
        let segment_ok = |value: &str| {
            !value.is_empty() && path_segment_name(value).is_empty() && !value.chars().any(char::is_control)
        };
        let path_valid = segment_ok(name) && namespace.is_none_or(segment_ok);
        let object = serde_json::json!({"metadata": {"name": name, "namespace": namespace}});
        // kube's path-segment rule (RBAC names, for one) lets control characters through; the
        // store refuses keys with them, so such a create is a 400, not a write: left out here.
        let create_valid = validate_metadata(&object, ty.name_rule, ty.namespaced, true).is_empty()
            && !name.chars().any(char::is_control)
            && namespace.is_none_or(segment_ok);
        if !(path_valid || create_valid) {
            continue;
        }
        assert!(validate_key(&key).is_ok(), "{ty:?}: {namespace:?}/{name:?} gives the bad key {key:?}");
        assert_eq!(parse_key(ty, &key), Some((namespace, name)), "{key:?}");
        // No other type's objects live under this key.
        for other in types() {
            if other.storage_prefix != ty.storage_prefix {
                assert!(
                    !key.starts_with(other.storage_prefix.as_str()),
                    "{key:?} of {} is under {}'s prefix",
                    ty.plural,
                    other.plural
                );
            }
        }
    }
});
