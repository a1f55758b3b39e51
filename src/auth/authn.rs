//! Authentication, as kube-apiserver's: who a request is from, from a verified client
//! certificate (CN the user, O the groups), or else a bearer token (the static token file, or a
//! ServiceAccount JWT).
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
    /// A ServiceAccount key file.
    #[error("{flag} {path}: {reason}")]
    ServiceAccountKey {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong (never the key).
        reason: String,
    },
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
#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, Arc<UserInfo>>,
    client_certificates: bool,
    service_accounts: Option<ServiceAccountTokens>,
    /// Whether requests without credentials go on as `system:anonymous`.
    pub anonymous: bool,
}

fn with_authenticated(mut user: UserInfo) -> UserInfo {
    if !user.in_group(AUTHENTICATED_GROUP) {
        user.groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    user
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens and keys are not shown.
        formatter
            .debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("client_certificates", &self.client_certificates)
            .field("service_accounts", &self.service_accounts.is_some())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Authenticator {
    /// ServiceAccount tokens are verified (and, with a signing key, issued) by `tokens`.
    pub fn set_service_accounts(&mut self, tokens: ServiceAccountTokens) {
        self.service_accounts = Some(tokens);
    }

    /// ServiceAccount tokens are accepted only while the objects they name exist in `objects`.
    pub fn set_token_objects(&mut self, objects: Arc<dyn TokenObjects>) {
        if let Some(accounts) = self.service_accounts.as_mut() {
            accounts.set_objects(objects);
        }
    }

    /// The ServiceAccount token issuer, when configured.
    pub fn service_accounts(&self) -> Option<&ServiceAccountTokens> {
        self.service_accounts.as_ref()
    }

    /// No authenticator yet; anonymous requests allowed or not.
    pub fn new(anonymous: bool) -> Authenticator {
        Authenticator { anonymous, ..Authenticator::default() }
    }

    /// Whether any authenticator is configured. Without one, every request is the loopback
    /// admin's.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.client_certificates || self.service_accounts.is_some()
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

    /// Authenticates a request from its `Authorization` header (`Some(None)`: present but not
    /// text) and the connection's verified client certificate (DER), if any.
    pub fn authenticate(
        &self,
        authorization: Option<Option<&str>>,
        client_certificate: Option<&[u8]>,
    ) -> Outcome {
        // As kube-apiserver's union of authenticators: a verified client certificate first,
        // then the bearer token.
        let certificate = client_certificate.filter(|_| self.client_certificates);
        if let Some(user) = certificate.and_then(user_of_certificate) {
            return Outcome::User(Arc::new(with_authenticated(user)));
        }
        if let Some(value) = authorization {
            let Some(token) = value.and_then(bearer_token) else {
                return Outcome::Refused;
            };
            if let Some(user) = self.tokens.get(token) {
                return Outcome::User(Arc::clone(user));
            }
            return match self.service_accounts.as_ref().and_then(|accounts| accounts.verify(token)) {
                Some(user) => Outcome::User(Arc::new(with_authenticated(user))),
                None => Outcome::Refused,
            };
        }
        if certificate.is_some() {
            // Verified, but without a user name.
            return Outcome::Refused;
        }
        Outcome::Anonymous
    }
}

/// The issuer named by `--service-account-issuer` when it is not given.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// ServiceAccount tokens: JWTs as kube-apiserver issues them, verified with the public keys of
/// `--service-account-key-file` and signed with `--service-account-signing-key-file`.
///
/// The public keys are read again when their file changes (see [`crate::tls::Reloading`]).
/// A token is accepted only while the ServiceAccount it names exists with the token's uid,
/// and, for a token bound to a Pod or Secret, while that object exists with its uid, as
/// kube-apiserver's validator checks; these are looked up in the watch cache
/// ([`TokenObjects`]), never in storage.
pub struct ServiceAccountTokens {
    issuer: String,
    audiences: Vec<String>,
    verifying: crate::tls::Reloading<VerifyingKeys>,
    signing: Option<(jsonwebtoken::EncodingKey, jsonwebtoken::Algorithm)>,
    objects: Option<Arc<dyn TokenObjects>>,
}

type VerifyingKeys = Vec<(jsonwebtoken::DecodingKey, jsonwebtoken::Algorithm)>;

/// What the token authenticator knows of an object a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectState {
    /// `metadata.uid`.
    pub uid: String,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

/// Where ServiceAccount tokens' objects are looked up: the core/v1 `serviceaccounts`, `pods`
/// and `secrets` as the watch cache has them. Called on the request path: must not block.
pub trait TokenObjects: Send + Sync {
    /// The object `namespace/name` of core/v1 `plural`, if it exists.
    fn lookup(&self, plural: &str, namespace: &str, name: &str) -> Option<ObjectState>;
}

/// [`TokenObjects`] from the registry's watch caches (their current snapshots).
pub struct CacheObjects(pub Arc<crate::registry::Registry>);

impl TokenObjects for CacheObjects {
    fn lookup(&self, plural: &str, namespace: &str, name: &str) -> Option<ObjectState> {
        #[derive(serde::Deserialize)]
        struct Object {
            metadata: Metadata,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Metadata {
            #[serde(default)]
            uid: String,
            #[serde(default)]
            deletion_timestamp: Option<serde::de::IgnoredAny>,
        }
        let resource = self.0.get("", "v1", plural)?;
        let snapshot = resource.cacher.current_snapshot();
        let object = snapshot.get(&resource.ty.key(Some(namespace), name))?;
        let object: Object = serde_json::from_slice(&object.json).ok()?;
        Some(ObjectState { uid: object.metadata.uid, deleting: object.metadata.deletion_timestamp.is_some() })
    }
}

/// The private claims of a ServiceAccount token.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: NamedUid,
    /// The Pod a bound token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<NamedUid>,
    /// The Secret a bound token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<NamedUid>,
}

/// The object a token is bound to (TokenRequest's `boundObjectRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundObject {
    /// A Pod: name and uid.
    Pod(String, String),
    /// A Secret: name and uid.
    Secret(String, String),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct NamedUid {
    name: String,
    uid: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: u64,
    iat: u64,
    nbf: u64,
    #[serde(default)]
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// When it expires, in seconds since the epoch.
    pub expires: u64,
}

impl ServiceAccountTokens {
    /// Reads the keys: every PEM block of `key_file` (RSA or EC public keys) verifies;
    /// `signing_key_file` (an RSA or EC private key) signs.
    pub fn new(
        issuer: String,
        audiences: Vec<String>,
        key_file: &Path,
        signing_key_file: Option<&Path>,
    ) -> Result<ServiceAccountTokens, AuthnError> {
        let error = |flag: &'static str, path: &Path, reason: &str| AuthnError::ServiceAccountKey {
            flag,
            path: path.display().to_string(),
            reason: reason.to_owned(),
        };
        let flag = "--service-account-key-file";
        let file = key_file.to_owned();
        let verifying = crate::tls::Reloading::new(vec![file.clone()], "service account keys", move || {
            read_verifying_keys(&file)
        })
        .map_err(|reason| error(flag, key_file, &reason))?;
        let signing = match signing_key_file {
            None => None,
            Some(path) => {
                let flag = "--service-account-signing-key-file";
                let pem = std::fs::read(path).map_err(|io| error(flag, path, &io.to_string()))?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
                    .map(|key| (key, jsonwebtoken::Algorithm::RS256))
                    .or_else(|_| {
                        jsonwebtoken::EncodingKey::from_ec_pem(&pem)
                            .map(|key| (key, jsonwebtoken::Algorithm::ES256))
                    })
                    .map_err(|_| error(flag, path, "no RSA or EC private key in the file"))?;
                Some(key)
            }
        };
        let audiences = if audiences.is_empty() { vec![issuer.clone()] } else { audiences };
        Ok(ServiceAccountTokens { issuer, audiences, verifying, signing, objects: None })
    }

    /// Tokens are accepted only while the objects they name exist in `objects`.
    pub fn set_objects(&mut self, objects: Arc<dyn TokenObjects>) {
        self.objects = Some(objects);
    }

    /// The audiences tokens are for when a TokenRequest names none.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Whether tokens can be issued (a signing key is configured).
    pub fn can_issue(&self) -> bool {
        self.signing.is_some()
    }

    /// Signs a token for the service account `namespace/name` (uid `uid`) for `audiences`,
    /// valid `seconds` from now.
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        bound: Option<&BoundObject>,
        audiences: Vec<String>,
        seconds: u64,
    ) -> Option<IssuedToken> {
        let (key, algorithm) = self.signing.as_ref()?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: format!("system:serviceaccount:{namespace}:{name}"),
            aud: audiences,
            exp: now + seconds,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaims {
                namespace: namespace.to_owned(),
                serviceaccount: NamedUid { name: name.to_owned(), uid: uid.to_owned() },
                pod: match bound {
                    Some(BoundObject::Pod(name, uid)) => {
                        Some(NamedUid { name: name.clone(), uid: uid.clone() })
                    }
                    _ => None,
                },
                secret: match bound {
                    Some(BoundObject::Secret(name, uid)) => {
                        Some(NamedUid { name: name.clone(), uid: uid.clone() })
                    }
                    _ => None,
                },
            },
        };
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(*algorithm), &claims, key).ok()?;
        Some(IssuedToken { token, expires: now + seconds })
    }

    /// The user of a valid token: signature by one of the keys, the issuer, one of the
    /// audiences, not expired and not before its time; and the ServiceAccount (and the Pod or
    /// Secret the token is bound to) still there with the token's uid.
    pub fn verify(&self, token: &str) -> Option<UserInfo> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let keys = self.verifying.get();
        for (key, algorithm) in keys.iter() {
            if *algorithm != header.alg {
                continue;
            }
            let mut validation = jsonwebtoken::Validation::new(*algorithm);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&self.audiences);
            validation.validate_nbf = true;
            validation.leeway = 0;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &validation) else { continue };
            let claims = data.claims;
            let namespace = &claims.kubernetes.namespace;
            let account = &claims.kubernetes.serviceaccount;
            let name = format!("system:serviceaccount:{namespace}:{}", account.name);
            if claims.sub != name || namespace.is_empty() || account.name.is_empty() {
                return None;
            }
            if let Some(objects) = &self.objects {
                let present = |plural: &str, object: &NamedUid| {
                    let state = objects.lookup(plural, namespace, &object.name);
                    let present = state.is_some_and(|state| !state.deleting && state.uid == object.uid);
                    if !present {
                        // The token's names are not secret; the token is not logged.
                        tracing::debug!(plural, %namespace, name = %object.name, "token refused: its object is gone");
                    }
                    present
                };
                if !present("serviceaccounts", account) {
                    return None;
                }
                let bound = [("pods", &claims.kubernetes.pod), ("secrets", &claims.kubernetes.secret)];
                if !bound
                    .iter()
                    .all(|(plural, object)| object.as_ref().is_none_or(|object| present(plural, object)))
                {
                    return None;
                }
            }
            let mut extra = BTreeMap::new();
            if let Some(pod) = &claims.kubernetes.pod {
                extra.insert("authentication.kubernetes.io/pod-name".to_owned(), vec![pod.name.clone()]);
                extra.insert("authentication.kubernetes.io/pod-uid".to_owned(), vec![pod.uid.clone()]);
            }
            if !claims.jti.is_empty() {
                extra.insert(
                    "authentication.kubernetes.io/credential-id".to_owned(),
                    vec![format!("JTI={}", claims.jti)],
                );
            }
            return Some(UserInfo {
                name,
                uid: account.uid.clone(),
                groups: vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{namespace}"),
                ],
                extra,
            });
        }
        None
    }
}

/// Every RSA or EC public key in the PEM file at `path` (at least one).
fn read_verifying_keys(path: &Path) -> Result<VerifyingKeys, String> {
    let text = std::fs::read_to_string(path).map_err(|io| io.to_string())?;
    let mut verifying = Vec::new();
    for block in pem_blocks(&text) {
        if let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(block.as_bytes()) {
            verifying.push((key, jsonwebtoken::Algorithm::RS256));
        } else if let Ok(key) = jsonwebtoken::DecodingKey::from_ec_pem(block.as_bytes()) {
            verifying.push((key, jsonwebtoken::Algorithm::ES256));
        }
    }
    if verifying.is_empty() {
        return Err("no RSA or EC public key in the file".to_owned());
    }
    Ok(verifying)
}

/// The PEM blocks of a file, each with its BEGIN and END lines.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END ") {
            blocks.extend(current.take());
        }
    }
    blocks
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
        let Outcome::User(alice) = authenticator.authenticate(Some(Some("Bearer t1")), None) else {
            panic!()
        };
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", AUTHENTICATED_GROUP]);
        assert_eq!(authenticator.authenticate(Some(Some("Bearer nope")), None), Outcome::Refused);
        assert_eq!(authenticator.authenticate(Some(Some("Basic dTpw")), None), Outcome::Refused);
        assert_eq!(authenticator.authenticate(None, None), Outcome::Anonymous);
        std::fs::write(&path, "secret-token-value\n").unwrap();
        let error = Authenticator::new(true).load_token_file(&path).unwrap_err().to_string();
        assert!(error.contains("line 1") && !error.contains("secret-token-value"), "{error}");
    }

    #[test]
    fn a_client_certificate_names_its_user_by_cn_and_groups_by_o() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "dev");
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let mut authenticator = Authenticator::new(true);
        authenticator.enable_client_certificates();
        let Outcome::User(alice) = authenticator.authenticate(Some(Some("Bearer wrong")), Some(&der)) else {
            panic!()
        };
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", AUTHENTICATED_GROUP]);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "dev");
        let nameless = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(authenticator.authenticate(None, Some(&nameless)), Outcome::Refused);
    }
}
