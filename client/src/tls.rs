//! [`Tls`]: how a client reaches a server that serves TLS: the CA to trust, and a certificate
//! to present when the server asks for one (mutual TLS).
//!
//! Files are PEM. Without a CA the system's roots are trusted (a server with a publicly signed
//! certificate); with one, only it. The server's certificate must name the host of the address
//! dialled (a DNS name or an IP address). A client given TLS dials `host:port` addresses as
//! `https://`; an address written `http://` stays plaintext, and an `https://` address is TLS
//! even without [`Tls`] (with the system's roots).

use std::io::Read;
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::Error;

/// The largest TLS file read, so a path to a FIFO or `/dev/zero` given by mistake is refused
/// instead of read forever.
pub const TLS_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// TLS settings for [`crate::Client::connect_tls`] and [`crate::ClusterAdmin::connect_tls`].
#[derive(Clone, Debug)]
pub struct Tls {
    config: ClientTlsConfig,
}

impl Default for Tls {
    /// The system's roots, no client certificate.
    fn default() -> Tls {
        Tls {
            config: ClientTlsConfig::new().with_native_roots(),
        }
    }
}

impl Tls {
    /// From PEM files: `ca` to trust (else the system's roots), and `cert` with `key` to
    /// present. `cert` and `key` come together or not at all.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Tls, Error> {
        let mut config = match ca {
            None => ClientTlsConfig::new().with_native_roots(),
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
        };
        match (cert, key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            (Some(_), None) => return Err(tls_error("a client certificate needs its key too")),
            (None, Some(_)) => return Err(tls_error("a client key needs its certificate too")),
        }
        Ok(Tls { config })
    }

    /// The tonic configuration, for an endpoint the caller builds.
    pub fn config(&self) -> &ClientTlsConfig {
        &self.config
    }
}

fn tls_error(detail: impl Into<String>) -> Error {
    Error::Tls {
        detail: detail.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    let fail = |detail: String| tls_error(format!("{}: {detail}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(TLS_FILE_BYTES_MAX + 1).read_to_end(&mut bytes))
        .map_err(|err| fail(err.to_string()))?;
    if bytes.len() as u64 > TLS_FILE_BYTES_MAX {
        return Err(fail(format!(
            "over TLS_FILE_BYTES_MAX = {TLS_FILE_BYTES_MAX} bytes"
        )));
    }
    Ok(bytes)
}
