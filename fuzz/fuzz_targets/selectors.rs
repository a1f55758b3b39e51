//! Label and field selector parsing never panics, and a parsed selector's text form parses back
//! to a selector that matches the same label sets.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use watchcache::selector::{validate_label_key, validate_label_value, FieldSelector, LabelSelector};

const FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "spec.nodeName"];

fuzz_target!(|input: (String, Vec<(String, String)>)| {
    let (text, labels) = input;
    let labels: BTreeMap<String, String> = labels.into_iter().take(8).collect();
    let _ = validate_label_key(&text);
    let _ = validate_label_value(&text);
    if let Ok(selector) = LabelSelector::parse(&text) {
        let again = LabelSelector::parse(&selector.to_string()).unwrap_or_else(|error| {
            panic!("{text:?} displays as {:?}, which fails: {error}", selector.to_string())
        });
        assert_eq!(selector.matches(&labels), again.matches(&labels), "{text:?} vs {}", selector);
    }
    if let Ok(selector) = FieldSelector::parse(&text, FIELDS) {
        let again = FieldSelector::parse(&selector.to_string(), FIELDS).unwrap_or_else(|error| {
            panic!("{text:?} displays as {:?}, which fails: {error}", selector.to_string())
        });
        assert_eq!(selector.to_string(), again.to_string());
    }
});
