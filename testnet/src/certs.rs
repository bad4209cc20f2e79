//! The testnet's certificate authority and one certificate per node (rcgen, ring).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::Error;

/// The CA: its certificate on disk (trusted by every node) and its key, kept to sign node
/// certificates.
pub struct Ca {
    pub cert_path: PathBuf,
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A node's certificate and key files.
#[derive(Clone, Debug)]
pub struct NodeCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

fn rc(e: rcgen::Error) -> Error {
    Error::new(format!("certificate: {e}"))
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
}

impl Ca {
    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca, Error> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let params = || -> Result<CertificateParams, Error> {
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, "scaiwave testnet CA");
            p.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            Ok(p)
        };
        if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(|e| Error::io(&key_path, e))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| Error::io(&cert_path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(rc)?;
            // Same subject and key: certificates it signs chain to the stored CA certificate.
            return Ok(Ca { cert_path, cert_pem, issuer: Issuer::new(params()?, key) });
        }
        let key = KeyPair::generate().map_err(rc)?;
        let params = params()?;
        let cert = params.self_signed(&key).map_err(rc)?;
        let cert_pem = cert.pem();
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, &cert_pem).map_err(|e| Error::io(&cert_path, e))?;
        Ok(Ca { cert_path, cert_pem, issuer: Issuer::new(params, key) })
    }

    /// Issues (or reuses) `dir/tls.pem` + `dir/tls.key` for `server_name`.
    pub fn node_cert(&self, dir: &Path, server_name: &str) -> Result<NodeCert, Error> {
        let cert_path = dir.join("tls.pem");
        let key_path = dir.join("tls.key");
        if !(cert_path.exists() && key_path.exists()) {
            let key = KeyPair::generate().map_err(rc)?;
            let mut params = CertificateParams::new(vec![server_name.to_string()]).map_err(rc)?;
            params.distinguished_name.push(DnType::CommonName, server_name);
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &self.issuer).map_err(rc)?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).map_err(|e| Error::io(&cert_path, e))?;
        }
        Ok(NodeCert { cert_path, key_path })
    }
}

/// A self-signed certificate and key for `name`, trusted by nobody: for rogue servers in tests.
pub fn self_signed(name: &str) -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(rc)?;
    let params = CertificateParams::new(vec![name.to_string()]).map_err(rc)?;
    let cert = params.self_signed(&key).map_err(rc)?;
    Ok((cert.pem(), key.serialize_pem()))
}
