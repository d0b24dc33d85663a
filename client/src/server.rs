//! The gateway to talk to: plaintext for `http://` URLs, TLS (rustls) for `https://` ones.
//!
//! An `https://` server is only ever reached over TLS: the server's certificate must chain to a
//! trusted root (the system's, or only those of a CA file) and name the URL's host, and a failed
//! handshake is an error, never a reason to fall back to plaintext. Over `http://`, passwords
//! and tokens cross the network in the clear, which is fine on this machine (loopback) only:
//! [`Server::is_plaintext_beyond_loopback`] tells the program when to warn, and a profile that
//! logged in to a host over TLS refuses a plaintext login to the same host
//! ([`Server::check_no_downgrade`]).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use crate::{Error, Result, profile::Profile};

/// How long the TCP connection, and then the TLS handshake, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A gateway URL with the TLS settings to reach it.
#[derive(Clone, Debug)]
pub struct Server {
    url: String,
    uri: Uri,
    endpoint: Endpoint,
}

impl Server {
    /// The gateway at `url` (`http://host:port` or `https://host:port`). For `https://`, the
    /// server's certificate must chain to one of the certificates in `ca_file` (PEM) when given
    /// (like curl's `--cacert`, it replaces the system's roots), else to one of the system's
    /// roots. `ca_file` is not read for an `http://` URL.
    ///
    /// # Errors
    /// [`Error::Usage`] for a URL that is not `http://` or `https://` with a host, or a CA file
    /// that cannot be read or holds no certificate; [`Error::Tls`] when the system has no root
    /// certificates and no CA file is given.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Server> {
        let not_a_url = || {
            let suggestion = if url.contains('/') || url.trim().is_empty() {
                String::new()
            } else {
                // A bare host:port, the usual slip: say what it should have been.
                format!(" (did you mean http://{url}?)")
            };
            Error::usage(format!(
                "not a server URL: {url:?}{suggestion}; use http://host:port, or https://host:port \
                 for TLS"
            ))
        };
        let uri: Uri = url.parse().map_err(|_| not_a_url())?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(not_a_url());
        }
        let endpoint = Endpoint::from(uri.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let endpoint = match uri.scheme_str() {
            Some("http") => endpoint,
            Some("https") => endpoint
                .tls_config(tls_config(ca_file)?)
                .map_err(|error| Error::Tls(error_chain(&error), None))?,
            _ => return Err(not_a_url()),
        };
        Ok(Server {
            url: url.to_owned(),
            uri,
            endpoint,
        })
    }

    /// The URL as given.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is an `http://` server that is not on this machine, where a password or a
    /// token would cross the network unencrypted. Loopback means `localhost` (and names under
    /// `.localhost`), 127.0.0.0/8 and `::1`, as written in the URL.
    #[must_use]
    pub fn is_plaintext_beyond_loopback(&self) -> bool {
        !self.is_tls() && !is_loopback(self.uri.host().unwrap_or_default())
    }

    /// Refuses a plaintext login to a host that `profile` reached over TLS: someone who can
    /// make the user type `http://` (or strip an `s`) must not get the password.
    ///
    /// # Errors
    /// [`Error::Usage`] naming both URLs.
    pub fn check_no_downgrade(&self, profile: &Profile) -> Result<()> {
        let Some(account) = profile.account()? else {
            return Ok(());
        };
        let Ok(known) = account.server.parse::<Uri>() else {
            return Ok(());
        };
        let same_host = known
            .host()
            .zip(self.uri.host())
            .is_some_and(|(known, new)| known.eq_ignore_ascii_case(new));
        if known.scheme_str() == Some("https") && !self.is_tls() && same_host {
            return Err(Error::usage(format!(
                "this profile reaches {} over TLS: refusing to send the password over plaintext to {}",
                account.server, self.url
            )));
        }
        Ok(())
    }

    /// A lazily connecting channel (nothing is sent until the first call).
    pub(crate) fn channel(&self) -> Channel {
        self.endpoint.connect_lazy()
    }

    fn is_tls(&self) -> bool {
        self.uri.scheme_str() == Some("https")
    }
}

/// Trust the certificates of `ca_file`, or else the system's roots.
fn tls_config(ca_file: Option<&Path>) -> Result<ClientTlsConfig> {
    let config = ClientTlsConfig::new().timeout(CONNECT_TIMEOUT);
    Ok(match ca_file {
        Some(path) => config.ca_certificate(read_ca_file(path)?),
        None => config.with_native_roots(),
    })
}

fn read_ca_file(path: &Path) -> Result<Certificate> {
    let shown = || PathBuf::from(path).display().to_string();
    let pem = std::fs::read(path)
        .map_err(|error| Error::usage(format!("cannot read the CA file {}: {error}", shown())))?;
    // rustls skips what it cannot parse: check here, so a wrong file fails with its name.
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| Error::usage(format!("the CA file {} is not PEM: {error}", shown())))?;
    if certificates.is_empty() {
        return Err(Error::usage(format!(
            "the CA file {} holds no certificate",
            shown()
        )));
    }
    Ok(Certificate::from_pem(pem))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(address) = host.parse::<IpAddr>() {
        return address.to_canonical().is_loopback();
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// An error and its causes, joined: tonic's own messages ("transport error") say little.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warns(url: &str) -> bool {
        Server::new(url, None)
            .unwrap()
            .is_plaintext_beyond_loopback()
    }

    #[test]
    fn plaintext_is_fine_on_loopback_only() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3:8080",
            "http://[::1]:8080",
            "http://[::ffff:127.0.0.1]:8080",
            "http://localhost:8080",
            "http://LocalHost.:8080",
            "http://chat.localhost",
        ] {
            assert!(!warns(url), "{url}");
        }
        for url in [
            "http://192.0.2.1:8080",
            "http://0.0.0.0:8080",
            "http://[2001:db8::1]:8080",
            "http://chat.example.com",
            "http://localhost.example.com",
        ] {
            assert!(warns(url), "{url}");
        }
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_servers() {
        for url in [
            "ftp://example.com",
            "127.0.0.1:8080",
            "http://",
            "not a url",
            "",
        ] {
            let error = Server::new(url, None).unwrap_err();
            assert!(matches!(error, Error::Usage(..)), "{url}: {error}");
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_by_name() {
        let path = std::env::temp_dir().join(format!("chat-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, "not a certificate\n").unwrap();

        let error = Server::new("https://127.0.0.1:1", Some(&path)).unwrap_err();
        let missing = Server::new(
            "https://127.0.0.1:1",
            Some(Path::new("/nonexistent/ca.pem")),
        );

        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(&error, Error::Usage(message, _) if message.contains("no certificate")),
            "{error}"
        );
        assert!(
            matches!(missing, Err(Error::Usage(message, _)) if message.contains("/nonexistent/ca.pem"))
        );
    }
}
