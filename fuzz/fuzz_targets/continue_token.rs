//! Continue tokens (`api::request::ContinueToken`), which clients send back verbatim and may
//! forge: a token the server gives out decodes to itself; any other string, or any JSON document
//! in the token's base64, is a 400 BadRequest or a token whose key is a clean storage key (no
//! empty, `.` or `..` segment, no control character), and a token is accepted for a list only
//! when its key is under that list's prefix. The input is a selector byte, then either the
//! token's text, the JSON inside it, or the parts of a token to encode.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use watchcache::api::request::ContinueToken;
use watchcache::storage::validate_key;

/// Prefixes of lists the server serves: all of a type, and one namespace of it.
const PREFIXES: [&str; 4] = ["/configmaps/", "/configmaps/default/", "/pods/kube-system/", "/secrets/"];

fn check_decoded(token: &ContinueToken, text: &str) {
    assert!(token.revision > 0, "{text:?}");
    assert!(validate_key(&token.after).is_ok(), "{text:?} gives the key {:?}", token.after);
    for prefix in PREFIXES {
        if token.within(prefix) {
            // Under the prefix: nothing that could leave it once the key is read as a path.
            let rest = &token.after[prefix.len()..];
            assert!(!rest.is_empty());
            assert!(rest.split('/').all(|segment| !matches!(segment, "" | "." | "..")), "{:?}", token.after);
        }
    }
    // What the server gives out for the token's list decodes to the same token.
    assert_eq!(&ContinueToken::decode(&token.encode()).unwrap(), token);
}

fn decode(text: &str) {
    match ContinueToken::decode(text) {
        Ok(token) => check_decoded(&token, text),
        Err(error) => assert_eq!(error.code.as_u16(), 400, "{error:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let [selector, rest @ ..] = input else { return };
    match selector % 3 {
        // The token's text as a client sends it.
        0 => decode(&String::from_utf8_lossy(rest)),
        // The JSON inside the token, as a forger would write it.
        1 => {
            decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rest));
            decode(&base64::engine::general_purpose::STANDARD.encode(rest));
        }
        // A token's parts: one the server could give out round-trips exactly.
        _ => {
            let Some((revision, key)) = rest.split_first_chunk::<8>() else { return };
            let revision = u64::from_le_bytes(*revision);
            let after = String::from_utf8_lossy(key).into_owned();
            let token = ContinueToken { revision, after };
            let encoded = token.encode();
            match ContinueToken::decode(&encoded) {
                Ok(decoded) => assert_eq!(decoded, token),
                Err(_) => {
                    assert!(revision == 0 || validate_key(&token.after).is_err(), "{token:?} was refused")
                }
            }
        }
    }
});
