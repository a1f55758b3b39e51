//! The query string of a list or watch, as the server parses it (`api::request::parse_query`):
//! any string is either a 400 BadRequest or options that, encoded back into a query string,
//! parse to the same options; the resourceVersion rules of a list (`read_version`) and of a
//! watch (`watch_start`), and `includeObject`, then answer without panicking, and a watch that
//! starts after a revision starts after the one given (or the current one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use watchcache::api::request::{parse_query, Query};
use watchcache::cacher::WatchStart;
use watchcache::selector::{FieldSelector, LabelSelector};

/// The query string that asks for `query`.
fn encode(query: &Query) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.append_pair("labelSelector", &query.label_selector);
    out.append_pair("fieldSelector", &query.field_selector);
    if let Some(limit) = query.limit {
        out.append_pair("limit", &limit.to_string());
    }
    if let Some(token) = &query.continue_token {
        out.append_pair("continue", &token.encode());
    }
    if let Some(version) = &query.resource_version {
        out.append_pair("resourceVersion", version);
    }
    if let Some(matching) = &query.resource_version_match {
        out.append_pair("resourceVersionMatch", matching);
    }
    out.append_pair("watch", if query.watch { "true" } else { "false" });
    out.append_pair("allowWatchBookmarks", if query.allow_watch_bookmarks { "true" } else { "false" });
    if let Some(send) = query.send_initial_events {
        out.append_pair("sendInitialEvents", if send { "true" } else { "false" });
    }
    if let Some(timeout) = query.timeout_seconds {
        out.append_pair("timeoutSeconds", &timeout.to_string());
    }
    if query.dry_run {
        out.append_pair("dryRun", "All");
    }
    if let Some(include) = &query.include_object {
        out.append_pair("includeObject", include);
    }
    if let Some(grace) = query.grace_period_seconds {
        out.append_pair("gracePeriodSeconds", &grace.to_string());
    }
    if let Some(policy) = &query.propagation_policy {
        out.append_pair("propagationPolicy", policy);
    }
    if let Some(orphan) = query.orphan_dependents {
        out.append_pair("orphanDependents", if orphan { "true" } else { "false" });
    }
    out.finish()
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let query = match parse_query(Some(text)) {
        Ok(query) => query,
        Err(error) => {
            assert_eq!(error.code.as_u16(), 400, "{error:?}");
            assert!(!error.message.is_empty());
            return;
        }
    };
    let encoded = encode(&query);
    let again = parse_query(Some(&encoded))
        .unwrap_or_else(|error| panic!("{encoded:?} (from {text:?}) does not parse: {error:?}"));
    assert_eq!(format!("{again:?}"), format!("{query:?}"), "{text:?} -> {encoded:?}");
    // The other checks of a request's options answer, and answer the same for the re-parsed
    // options.
    assert_eq!(format!("{:?}", again.read_version()), format!("{:?}", query.read_version()));
    assert_eq!(format!("{:?}", again.include_object()), format!("{:?}", query.include_object()));
    let current = 1_000;
    match query.watch_start(current) {
        Ok(WatchStart::After(revision)) => {
            let given = query.resource_version.as_deref().map(|given| given.parse::<u64>().unwrap());
            assert_eq!(revision, given.filter(|&given| given > 0).unwrap_or(current), "{text:?}");
        }
        Ok(_) => {}
        Err(error) => assert_eq!(error.code.as_u16(), 400, "{error:?}"),
    }
    // The selectors the server will parse next: an error or a selector, never a panic.
    let _ = LabelSelector::parse(&query.label_selector);
    let _ = FieldSelector::parse(
        &query.field_selector,
        &["metadata.name", "metadata.namespace", "spec.nodeName"],
    );
    if let Some(token) = &query.continue_token {
        assert!(watchcache::storage::validate_key(&token.after).is_ok(), "{token:?}");
    }
});
