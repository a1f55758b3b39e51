//! Content negotiation: which form a response takes (`Accept`) and which a request body is in
//! (`Content-Type`), as kube-apiserver decides them.
//!
//! Built-in types are served as JSON or Kubernetes protobuf. Custom resources and
//! `meta.k8s.io` Tables have no protobuf form: a request that accepts nothing else gets 406,
//! and a protobuf body for them gets 415.

use http::{header, HeaderMap};

use super::status::ApiError;
use crate::cacher::object::Wire;
use crate::protobuf::MEDIA_TYPE as PROTOBUF;

/// One entry of an `Accept` header.
struct Accepted<'a> {
    media: &'a str,
    /// Parameters other than `q`, e.g. `as=Table`, `stream=watch`.
    params: Vec<(&'a str, &'a str)>,
    quality: f32,
}

fn parse_accept(accept: &str) -> Vec<Accepted<'_>> {
    let mut entries: Vec<Accepted<'_>> = accept
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().filter(|media| !media.is_empty())?;
            let mut quality = 1.0;
            let mut params = Vec::new();
            for param in parts {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                if name.trim() == "q" {
                    quality = value.trim().parse().unwrap_or(0.0);
                } else {
                    params.push((name.trim(), value.trim()));
                }
            }
            Some(Accepted { media, params, quality })
        })
        .filter(|entry| entry.quality > 0.0)
        .collect();
    // Highest quality first; equal qualities keep the client's order.
    entries.sort_by(|a, b| b.quality.partial_cmp(&a.quality).unwrap_or(std::cmp::Ordering::Equal));
    entries
}

fn accept_header(headers: &HeaderMap) -> &str {
    headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).unwrap_or("").trim()
}

/// The media types a resource is served in, for 406 and 415 messages.
fn accepted_list(protobuf: bool) -> &'static str {
    if protobuf {
        "application/json, application/vnd.kubernetes.protobuf"
    } else {
        "application/json"
    }
}

/// The form of a response on a resource whose kind has a protobuf form when `protobuf`.
pub fn response_wire(headers: &HeaderMap, protobuf: bool) -> Result<Wire, ApiError> {
    let accept = accept_header(headers);
    if accept.is_empty() {
        return Ok(Wire::Json);
    }
    for entry in parse_accept(accept) {
        // A Table or other transformed form (`as=...`) is only served as JSON.
        let transformed = entry.params.iter().any(|(name, _)| *name == "as");
        match entry.media {
            "application/json" | "application/*" | "*/*" => return Ok(Wire::Json),
            PROTOBUF if protobuf && !transformed => return Ok(Wire::Protobuf),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(accepted_list(protobuf)))
}

/// The form of an error (a `Status`, which always has a protobuf form): protobuf when the
/// client prefers it, JSON otherwise.
pub fn error_wire(headers: &HeaderMap) -> Wire {
    response_wire(headers, true).unwrap_or(Wire::Json)
}

/// The form of a request body for a resource whose kind has a protobuf form when `protobuf`.
pub fn request_wire(headers: &HeaderMap, protobuf: bool) -> Result<Wire, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "" | "application/json" | "*/*" => Ok(Wire::Json),
        PROTOBUF if protobuf => Ok(Wire::Protobuf),
        _ => Err(ApiError::unsupported_media_type(content_type, accepted_list(protobuf))),
    }
}

/// The `Content-Type` of a response in `wire`'s form.
pub fn content_type(wire: Wire) -> &'static str {
    match wire {
        Wire::Json => "application/json",
        Wire::Protobuf => PROTOBUF,
    }
}

/// The `Content-Type` of a watch stream in `wire`'s form.
pub fn watch_content_type(wire: Wire) -> &'static str {
    match wire {
        Wire::Json => "application/json",
        Wire::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accepting(accept: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        headers
    }

    #[test]
    fn accept_picks_the_clients_preferred_form_that_the_resource_has() {
        let cases = [
            ("", true, Some(Wire::Json)),
            ("application/json", true, Some(Wire::Json)),
            ("application/vnd.kubernetes.protobuf", true, Some(Wire::Protobuf)),
            ("application/vnd.kubernetes.protobuf, */*", true, Some(Wire::Protobuf)),
            ("application/vnd.kubernetes.protobuf;stream=watch", true, Some(Wire::Protobuf)),
            // Custom resources have no protobuf form.
            ("application/vnd.kubernetes.protobuf, */*", false, Some(Wire::Json)),
            ("application/vnd.kubernetes.protobuf", false, None),
            // Quality values order the entries.
            ("application/vnd.kubernetes.protobuf;q=0.5, application/json", true, Some(Wire::Json)),
            ("application/json;q=0, application/vnd.kubernetes.protobuf", true, Some(Wire::Protobuf)),
            // kubectl get's Table request is JSON.
            ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", true, Some(Wire::Json)),
            ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io", true, None),
            ("application/yaml", true, None),
            ("text/html", true, None),
        ];
        for (accept, protobuf, expected) in cases {
            let got = response_wire(&accepting(accept), protobuf);
            match expected {
                Some(wire) => assert_eq!(got.ok(), Some(wire), "{accept:?}"),
                None => assert_eq!(got.err().map(|error| error.code.as_u16()), Some(406), "{accept:?}"),
            }
        }
    }

    #[test]
    fn request_bodies_are_json_or_protobuf_for_built_ins() {
        let with_type = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
            headers
        };
        assert_eq!(request_wire(&HeaderMap::new(), true).ok(), Some(Wire::Json));
        assert_eq!(request_wire(&with_type("application/json; charset=utf-8"), true).ok(), Some(Wire::Json));
        assert_eq!(request_wire(&with_type(PROTOBUF), true).ok(), Some(Wire::Protobuf));
        let refused = request_wire(&with_type(PROTOBUF), false).unwrap_err();
        assert_eq!(refused.code.as_u16(), 415);
        assert!(
            refused.message.contains("accepted media types include: application/json"),
            "{}",
            refused.message
        );
        assert_eq!(request_wire(&with_type("application/yaml"), true).unwrap_err().code.as_u16(), 415);
    }
}
