//! Client authentication (RFC 6749 §2.3.1). The steady path costs a digest and a map lookup:
//! argon2 runs only for a secret this replica has not verified yet.
use std::sync::Arc;

use zeroize::Zeroizing;

use super::Tessera;
use crate::crypto::secret::secret_id_of;
use crate::domain::{ClientId, Error, Result};
use crate::state::ClientEntry;
use crate::state::clients::secret_digest;

/// A presented client id and secret. Debug never shows the secret.
#[derive(Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Zeroizing<String>,
    /// The peer address, for throttling failed attempts per source.
    pub source: Option<std::net::IpAddr>,
}

impl ClientCredentials {
    pub fn from(mut self, source: Option<std::net::IpAddr>) -> Self {
        self.source = source;
        self
    }
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials").field("client_id", &self.client_id).field("secret", &"<redacted>").finish()
    }
}

impl Tessera {
    pub async fn authenticate(&self, creds: &ClientCredentials) -> Result<Arc<ClientEntry>> {
        let m = &crate::metrics::METRICS;
        let result = self.authenticate_inner(creds).await;
        match &result {
            Ok(e) => {
                tracing::Span::current().record("client_id", e.client.client_id.as_str());
            }
            Err(Error::InvalidClient) => {
                m.auth_failures.inc();
                self.throttle.failed(self.attempt_of(creds), self.clock.now_ms());
                // Only the id of a client that exists reaches the log: a misconfigured partner may
                // put its secret (or a token) in the id field, and those look like ids.
                match self.clients.get(&creds.client_id) {
                    Some(e) => tracing::info!(client_id = %e.client.client_id, "client authentication failed"),
                    None => tracing::info!("client authentication failed (unknown client_id)"),
                }
            }
            Err(Error::Throttled { .. }) => {
                m.throttled.inc();
                // Tarpit: answering a throttled attempt late slows a closed-loop flood to a
                // trickle per connection, so it cannot take the CPU from honest clients.
                if !self.settings.throttle_delay.is_zero() {
                    tokio::time::sleep(self.settings.throttle_delay).await;
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Who a (failed or coming) attempt is charged to: a real secret id of a client this replica
    /// knows, or a guess.
    fn attempt_of<'a>(&self, creds: &'a ClientCredentials) -> crate::service::throttle::Attempt<'a> {
        use crate::service::throttle::Attempt;
        let known = secret_id_of(&creds.secret).filter(|sid| {
            self.clients.get(&creds.client_id).is_some_and(|e| e.client.secrets.iter().any(|s| s.secret_id == *sid))
        });
        // A malformed id is never a throttle key (it could be anything, even a secret): such
        // guesses share one key and are charged to their source address.
        let client_id =
            if ClientId::parse(&creds.client_id).is_ok() { creds.client_id.as_str() } else { "<malformed>" };
        match known {
            Some(secret_id) => Attempt::KnownSecret { client_id, secret_id },
            None => Attempt::Guess { client_id, source: creds.source },
        }
    }

    async fn authenticate_inner(&self, creds: &ClientCredentials) -> Result<Arc<ClientEntry>> {
        let m = &crate::metrics::METRICS;
        if ClientId::parse(&creds.client_id).is_err() || creds.secret.is_empty() || creds.secret.len() > 512 {
            return Err(Error::InvalidClient);
        }
        let digest = secret_digest(&creds.secret);
        let cached = self.clients.get(&creds.client_id);
        if let Some(e) = &cached
            && e.is_verified(&digest)
        {
            m.credential_cache_hit.inc();
            return if e.client.disabled { Err(Error::InvalidClient) } else { Ok(Arc::clone(e)) };
        }
        m.credential_cache_miss.inc();
        // The slow path, guarded: a flood of wrong secrets is refused here, before any database
        // read or argon2 run.
        if let Some(retry_after_secs) = self.throttle.check(self.attempt_of(creds), self.clock.now_ms()) {
            return Err(Error::Throttled { retry_after_secs });
        }
        let entry = match cached {
            Some(entry) => Some(entry),
            // Not in memory: perhaps created a moment ago on another replica or by the CLI and
            // not yet seen through the change feed.
            None => self.store.load_client(&creds.client_id).await?.map(|c| self.clients.upsert(c)),
        };
        // One verification at a time per client; whoever waited may find the secret cached now.
        let flight = entry.clone();
        let _single_flight = match &flight {
            Some(e) => {
                let guard = e.verify_lock.lock().await;
                if e.is_verified(&digest) {
                    return if e.client.disabled { Err(Error::InvalidClient) } else { Ok(Arc::clone(e)) };
                }
                Some(guard)
            }
            None => None,
        };
        // One argon2 run whatever the case: unknown client, unknown secret id and wrong secret
        // all cost the same.
        let hash = entry.as_ref().and_then(|e| {
            let sid = secret_id_of(&creds.secret)?;
            e.client.secrets.iter().find(|s| s.secret_id == sid).map(|s| s.hash.clone())
        });
        m.argon2_verifications.inc();
        let ok = match self.hasher.verify(hash, creds.secret.clone()).await {
            Ok(ok) => ok,
            // Too many verifications waiting already: shed load rather than queue without bound.
            Err(e) if e.is::<crate::crypto::secret::Busy>() => return Err(Error::Throttled { retry_after_secs: 1 }),
            Err(e) => return Err(Error::Internal(e)),
        };
        match entry {
            Some(e) if ok => {
                e.remember_verified(digest);
                if e.client.disabled { Err(Error::InvalidClient) } else { Ok(e) }
            }
            _ => Err(Error::InvalidClient),
        }
    }
}

/// Parses an `Authorization: Basic …` value (the scheme name is matched case-insensitively).
/// Per RFC 6749 §2.3.1 the id and secret are form-urlencoded before base64, so both are decoded.
/// Anything malformed is a failed client authentication.
pub fn parse_basic_authorization(value: &str) -> Result<ClientCredentials> {
    use base64::Engine;
    let value = value.trim();
    let (scheme, b64) = value.split_once(' ').ok_or(Error::InvalidClient)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Error::InvalidClient);
    }
    let raw =
        Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| Error::InvalidClient)?);
    let text = std::str::from_utf8(&raw).map_err(|_| Error::InvalidClient)?;
    let (id, secret) = text.split_once(':').ok_or(Error::InvalidClient)?;
    let id = crate::http::form::decode_component(id).map_err(|_| Error::InvalidClient)?;
    let secret = Zeroizing::new(crate::http::form::decode_component(secret).map_err(|_| Error::InvalidClient)?);
    if id.is_empty() || secret.is_empty() {
        return Err(Error::InvalidClient);
    }
    Ok(ClientCredentials { client_id: id, secret, source: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(s: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s))
    }

    #[test]
    fn basic_header_forms() {
        let c = parse_basic_authorization(&basic("cl_1:s3cret")).unwrap();
        assert_eq!((c.client_id.as_str(), c.secret.as_str()), ("cl_1", "s3cret"));
        // RFC 6749 §2.3.1: form-urlencoded before base64.
        let c = parse_basic_authorization(&basic("a%3Ab:x%2By+z")).unwrap();
        assert_eq!((c.client_id.as_str(), c.secret.as_str()), ("a:b", "x+y z"));
        assert!(parse_basic_authorization(&basic("a:b:c")).is_ok(), "secret may contain ':'");
        for bad in [
            basic("nocolon"),
            basic(":secret"),
            basic("id:"),
            "Basic !!!".into(),
            "Bearer abc".into(),
            "Basic".into(),
            basic("a:%zz"),
        ] {
            assert!(matches!(parse_basic_authorization(&bad), Err(Error::InvalidClient)), "{bad}");
        }
    }

    #[test]
    fn debug_hides_secret() {
        let c = parse_basic_authorization(&basic("cl_1:topsecret")).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
