//! Authentication, as kube-apiserver's: who a request is from, from a verified client
//! certificate (CN the user, O the groups), or a bearer token of the static token file.
//! A request with no credentials is anonymous (when `--anonymous-auth`); a request with bad
//! credentials is refused (401). Tokens never appear in logs or errors.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::{UserInfo, AUTHENTICATED_GROUP};

/// The paths an anonymous user may reach when authentication is on.
pub const ANONYMOUS_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// What the credentials of a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A known user (already in `system:authenticated`).
    User(Arc<UserInfo>),
    /// No credentials at all.
    Anonymous,
    /// Credentials that did not check out.
    Refused,
}

/// Why the authenticators could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The static token file.
    #[error("--token-auth-file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: String,
        /// What is wrong (line number; never a token).
        reason: String,
    },
}

/// The authenticators of a server.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, Arc<UserInfo>>,
    client_certificates: bool,
    /// Whether requests without credentials go on as `system:anonymous`.
    pub anonymous: bool,
}

fn with_authenticated(mut user: UserInfo) -> UserInfo {
    if !user.in_group(AUTHENTICATED_GROUP) {
        user.groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    user
}

impl Authenticator {
    /// No authenticator yet; anonymous requests allowed or not.
    pub fn new(anonymous: bool) -> Authenticator {
        Authenticator { anonymous, ..Authenticator::default() }
    }

    /// Whether any authenticator is configured. Without one, every request is the loopback
    /// admin's.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.client_certificates
    }

    /// Client certificates (verified by TLS against `--client-ca-file`) authenticate.
    pub fn enable_client_certificates(&mut self) {
        self.client_certificates = true;
    }

    /// Adds a bearer token for `user`.
    pub fn add_token(&mut self, token: String, user: UserInfo) {
        self.tokens.insert(token, Arc::new(with_authenticated(user)));
    }

    /// Reads kube's static token file: `token,user,uid,"group1,group2"` per line (the groups
    /// column optional; blank lines and lines starting with `#` skipped).
    pub fn load_token_file(&mut self, path: &Path) -> Result<(), AuthnError> {
        let error = |reason: String| AuthnError::TokenFile { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|io| error(io.to_string()))?;
        let mut count = 0;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 || fields[0].is_empty() || fields[1].is_empty() {
                return Err(error(format!(
                    "line {}: want at least token,user,uid (and optionally \"group1,group2\")",
                    index + 1
                )));
            }
            let groups = fields.get(3).map_or_else(Vec::new, |groups| {
                groups
                    .split(',')
                    .map(str::trim)
                    .filter(|group| !group.is_empty())
                    .map(str::to_owned)
                    .collect()
            });
            let user =
                UserInfo { name: fields[1].clone(), uid: fields[2].clone(), groups, extra: BTreeMap::new() };
            self.add_token(fields[0].clone(), user);
            count += 1;
        }
        if count == 0 {
            return Err(error("no tokens in the file".into()));
        }
        Ok(())
    }

    /// Authenticates a request from its `Authorization` header and the connection's verified
    /// client certificate chain (leaf first), if any.
    pub fn authenticate(&self, headers: &http::HeaderMap, client_certificate: Option<&[u8]>) -> Outcome {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let Some(token) = value.to_str().ok().and_then(bearer_token) else {
                return Outcome::Refused;
            };
            return match self.tokens.get(token) {
                Some(user) => Outcome::User(Arc::clone(user)),
                None => Outcome::Refused,
            };
        }
        if let (true, Some(der)) = (self.client_certificates, client_certificate) {
            return match user_of_certificate(der) {
                Some(user) => Outcome::User(Arc::new(with_authenticated(user))),
                None => Outcome::Refused,
            };
        }
        Outcome::Anonymous
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A certificate's user: CN the name, each O a group.
pub fn user_of_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|organization| organization.as_str().ok())
        .map(str::to_owned)
        .collect();
    Some(UserInfo { name, uid: String::new(), groups, extra: BTreeMap::new() })
}

/// Splits a CSV line: commas separate, double quotes enclose (`""` is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields.iter().map(|field| field.trim().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_reads_as_kube_reads_it() {
        assert_eq!(split_csv(r#"t1,alice,u1,"dev,ops""#), ["t1", "alice", "u1", "dev,ops"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "# comment\nt1,alice,u1,\"dev,ops\"\nt2,bob,u2\n").unwrap();
        let mut authenticator = Authenticator::new(true);
        authenticator.load_token_file(&path).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer t1".parse().unwrap());
        let Outcome::User(alice) = authenticator.authenticate(&headers, None) else { panic!() };
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", AUTHENTICATED_GROUP]);
        headers.insert(http::header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(authenticator.authenticate(&headers, None), Outcome::Refused);
        assert_eq!(authenticator.authenticate(&http::HeaderMap::new(), None), Outcome::Anonymous);
        std::fs::write(&path, "secret-token-value\n").unwrap();
        let error = Authenticator::new(true).load_token_file(&path).unwrap_err().to_string();
        assert!(error.contains("line 1") && !error.contains("secret-token-value"), "{error}");
    }
}
