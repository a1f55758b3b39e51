//! Applying any PATCH body of any type to any JSON object never panics, and a strategic merge
//! patch never leaves a `$` directive behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watchcache::patch::{apply, builtin_merge_key, PatchType};

fuzz_target!(|input: (&str, &[u8], u8)| {
    let (original, patch, kind) = input;
    let Ok(original) = serde_json::from_str::<serde_json::Value>(original) else { return };
    let patch_type = match kind % 3 {
        0 => PatchType::Json,
        1 => PatchType::Merge,
        _ => PatchType::StrategicMerge,
    };
    if let Ok(patched) = apply(&original, patch, patch_type, &builtin_merge_key) {
        if patch_type == PatchType::StrategicMerge && !original.to_string().contains("\"$") {
            fn keys_ok(value: &serde_json::Value) -> bool {
                match value {
                    serde_json::Value::Object(map) => {
                        map.iter().all(|(key, value)| !key.starts_with('$') && keys_ok(value))
                    }
                    serde_json::Value::Array(items) => items.iter().all(keys_ok),
                    _ => true,
                }
            }
            assert!(keys_ok(&patched), "a directive was stored: {patched}");
        }
    }
});
