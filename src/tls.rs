//! TLS: the serving certificate (from PEM files, or self-signed under the data directory), its
//! reload when the files change (and the client CA's, and, through [`Reloading`], the
//! ServiceAccount keys'), and the rustls server configuration (TLS 1.2 minimum, ALPN
//! `h2` and `http/1.1`, client certificates verified against `--client-ca-file` but optional).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// How often the serving certificate's files are looked at for a change, at most.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Why TLS could not be set up. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The configuration was refused by rustls.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: reason.to_string() }
}

/// Reads every certificate in the PEM file at `path` (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certificates)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and private key and makes the key rustls signs with.
fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certificates = read_certificates(cert_file)?;
    // The key's parse error is not shown: it could quote the file.
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|_| file_error(key_file, "no readable PEM private key in the file"))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| file_error(key_file, "unsupported private key type"))?;
    let certified = CertifiedKey::new(certificates, signing_key);
    certified
        .keys_match()
        .map_err(|_| file_error(key_file, "the private key does not match the certificate"))?;
    Ok(certified)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok()
}

/// A value read from files and read again when their modification times change: checked at
/// most every [`RELOAD_CHECK_INTERVAL`], by whoever asks for the value then (a caller that finds
/// another one checking does not wait; it takes the current value). A new file that does not
/// load keeps the previous value. Serves the serving certificate, the client CA and the
/// ServiceAccount public keys alike.
pub struct Reloading<T> {
    files: Vec<PathBuf>,
    what: &'static str,
    load: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
    current: ArcSwap<T>,
    /// The files' modification times the current value was read at, and the last check.
    state: Mutex<(Vec<Option<SystemTime>>, Instant)>,
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Reloading").field("what", &self.what).field("files", &self.files).finish()
    }
}

impl<T> Reloading<T> {
    /// Loads the value once with `load`, which reads `files`; its error if that fails.
    /// `what` names the value in the log lines of reloads.
    pub fn new<E: fmt::Display>(
        files: Vec<PathBuf>,
        what: &'static str,
        load: impl Fn() -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, E> {
        let stamps = files.iter().map(|file| modified(file)).collect();
        let value = load()?;
        Ok(Reloading {
            files,
            what,
            load: Box::new(move || load().map_err(|error| error.to_string())),
            current: ArcSwap::from_pointee(value),
            state: Mutex::new((stamps, Instant::now())),
        })
    }

    /// The current value, after reading the files again if they changed.
    pub fn get(&self) -> arc_swap::Guard<Arc<T>> {
        self.maybe_reload();
        self.current.load()
    }

    /// The current value, without looking at the files.
    pub fn current(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    fn maybe_reload(&self) {
        // Someone else is checking: take the current value rather than wait.
        let Ok(mut state) = self.state.try_lock() else { return };
        if state.1.elapsed() < RELOAD_CHECK_INTERVAL {
            return;
        }
        state.1 = Instant::now();
        let stamps: Vec<Option<SystemTime>> = self.files.iter().map(|file| modified(file)).collect();
        if stamps == state.0 {
            return;
        }
        match (self.load)() {
            Ok(value) => {
                self.current.store(Arc::new(value));
                state.0 = stamps;
                tracing::info!(what = self.what, files = ?self.files, "reloaded");
            }
            // Half-written files: try again at the next check.
            Err(error) => tracing::warn!(what = self.what, %error, "not reloaded"),
        }
    }
}

/// The serving certificate, re-read when its files change (see [`Reloading`]; checked on a
/// handshake). Open connections keep the certificate they were made with.
#[derive(Debug)]
pub struct ReloadingCertificate(Reloading<CertifiedKey>);

impl ReloadingCertificate {
    /// Reads the files once; an error if they do not make a certificate.
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<ReloadingCertificate, TlsError> {
        let (cert, key) = (cert_file.to_owned(), key_file.to_owned());
        Reloading::new(vec![cert.clone(), key.clone()], "serving certificate", move || {
            load_certified_key(&cert, &key)
        })
        .map(ReloadingCertificate)
    }

    /// The certificate chain served now.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.0.current().cert.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.get()))
    }
}

fn client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|error| file_error(path, error))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|error| TlsError::Config(error.to_string()))
}

/// Client certificates verified against the CAs of `--client-ca-file`, re-read when the file
/// changes (see [`Reloading`]; checked when a client presents a certificate). Clients without
/// a certificate are let through to the other authenticators. No CA names are hinted to
/// clients (they change with the file); clients send their certificate regardless.
#[derive(Debug)]
pub struct ReloadingClientCa(Reloading<Arc<dyn ClientCertVerifier>>);

impl ReloadingClientCa {
    /// Reads `path` once; an error if it holds no usable CA certificate.
    pub fn new(path: &Path) -> Result<ReloadingClientCa, TlsError> {
        let file = path.to_owned();
        Reloading::new(vec![file.clone()], "client CA", move || client_verifier(&file)).map(ReloadingClientCa)
    }
}

impl ClientCertVerifier for ReloadingClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.get().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// The rustls server configuration: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, and client
/// certificates verified against `client_ca` when given (clients without one are let through
/// to the other authenticators); both the certificate and the client CA follow their files.
pub fn server_config(
    certificate: Arc<ReloadingCertificate>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(Arc::new(ReloadingClientCa::new(path)?)),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The files of `--tls-self-signed`.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The CA's certificate (what clients trust).
    pub ca_cert: PathBuf,
    /// The serving certificate, signed by the CA.
    pub cert: PathBuf,
    /// The serving certificate's private key.
    pub key: PathBuf,
}

/// Makes a CA and a serving certificate for localhost, 127.0.0.1, ::1 and `host` under
/// `dir/tls`, or reuses the ones there.
pub fn self_signed(dir: &Path, host: IpAddr) -> Result<SelfSigned, TlsError> {
    let tls_dir = dir.join("tls");
    let files = SelfSigned {
        ca_cert: tls_dir.join("ca.crt"),
        cert: tls_dir.join("serving.crt"),
        key: tls_dir.join("serving.key"),
    };
    if files.ca_cert.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&tls_dir).map_err(|error| file_error(&tls_dir, error))?;
    let generate = |reason: rcgen::Error| TlsError::Config(format!("cannot make a certificate: {reason}"));
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "watchcache-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca_params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca = ca_params.self_signed(&ca_key).map_err(generate)?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !host.is_unspecified() && !names.contains(&host.to_string()) {
        names.push(host.to_string());
    }
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "watchcache");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let serving = params.signed_by(&key, &ca, &ca_key).map_err(generate)?;
    write_private(&files.key, key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, serving.pem()).map_err(|error| file_error(&files.cert, error))?;
    std::fs::write(&files.ca_cert, ca.pem()).map_err(|error| file_error(&files.ca_cert, error))?;
    Ok(files)
}

/// Writes `contents` to a file only its owner may read (mode 0600).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| file_error(path, error))?;
    file.write_all(contents).map_err(|error| file_error(path, error))?;
    // An existing file keeps its mode on open: make sure.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| file_error(path, error))
}
