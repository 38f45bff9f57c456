//! The admin surface: clients and their secrets. Used by the `tessera` CLI directly on the
//! database and by AdminService; both write through storage, so running replicas learn of
//! every change from the change feed.
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::crypto::secret::{SecretHasher, generate_secret};
use crate::domain::client::DEFAULT_TENANT;
use crate::domain::{Client, ClientId, ClientSecret, Error, NewClient, Result};
use crate::storage::Store;

/// A client as just created, with its secret (shown once).
pub struct CreatedClient {
    pub client: Client,
    pub secret: Zeroizing<String>,
}

/// A newly added secret (shown once).
pub struct AddedSecret {
    pub client: Client,
    pub secret_id: String,
    pub secret: Zeroizing<String>,
}

#[derive(Clone)]
pub struct Admin {
    store: Store,
    hasher: SecretHasher,
    clock: Arc<dyn Clock>,
}

impl Admin {
    pub fn new(store: Store, hasher: SecretHasher, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            hasher,
            clock,
        }
    }

    pub async fn create_client(&self, new: NewClient) -> Result<CreatedClient> {
        new.validate()?;
        let now_ms = self.clock.now_ms();
        let fresh = generate_secret();
        let hash = self
            .hasher
            .hash(fresh.secret.clone())
            .await
            .map_err(Error::Internal)?;
        let client = Client {
            client_id: ClientId::generate(),
            name: new.name.trim().to_owned(),
            tenant: new.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            scopes: new.scopes,
            audiences: new.audiences,
            capabilities: new.capabilities,
            access_token_ttl: new.access_token_ttl.unwrap_or(0),
            disabled: false,
            tokens_revoked_before_ms: 0,
            created_at: now_ms / 1000,
            secrets: vec![ClientSecret {
                secret_id: fresh.secret_id,
                hash,
                created_at: now_ms / 1000,
            }],
        };
        self.store.insert_client(&client, now_ms).await?;
        tracing::info!(client_id = %client.client_id, tenant = %client.tenant, "client created");
        Ok(CreatedClient {
            client,
            secret: fresh.secret,
        })
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Client> {
        let id = ClientId::parse(client_id)?;
        self.store
            .load_client(id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound("no such client".into()))
    }

    pub async fn list_clients(&self, tenant: Option<&str>) -> Result<Vec<Client>> {
        Ok(self.store.list_clients(tenant).await?)
    }

    /// Adds a secret; the old ones stay valid until removed, so a partner rotates without downtime.
    pub async fn rotate_secret(&self, client_id: &str) -> Result<AddedSecret> {
        let id = ClientId::parse(client_id)?;
        let now_ms = self.clock.now_ms();
        let fresh = generate_secret();
        let hash = self
            .hasher
            .hash(fresh.secret.clone())
            .await
            .map_err(Error::Internal)?;
        let secret = ClientSecret {
            secret_id: fresh.secret_id.clone(),
            hash,
            created_at: now_ms / 1000,
        };
        if !self
            .store
            .add_client_secret(id.as_str(), &secret, now_ms)
            .await?
        {
            return Err(Error::NotFound("no such client".into()));
        }
        tracing::info!(client_id = %id, secret_id = %fresh.secret_id, "client secret added");
        Ok(AddedSecret {
            client: self.get_client(id.as_str()).await?,
            secret_id: fresh.secret_id,
            secret: fresh.secret,
        })
    }

    pub async fn remove_secret(&self, client_id: &str, secret_id: &str) -> Result<Client> {
        let client = self.get_client(client_id).await?;
        if !client.secrets.iter().any(|s| s.secret_id == secret_id) {
            return Err(Error::NotFound("no such secret for this client".into()));
        }
        if client.secrets.len() == 1 {
            return Err(Error::invalid_request(
                "refusing to remove the client's only secret; add one first, or disable the client",
            ));
        }
        self.store
            .remove_client_secret(client.client_id.as_str(), secret_id, self.clock.now_ms())
            .await?;
        tracing::info!(client_id = %client.client_id, secret_id, "client secret removed");
        self.get_client(client.client_id.as_str()).await
    }

    pub async fn set_disabled(&self, client_id: &str, disabled: bool) -> Result<Client> {
        let id = ClientId::parse(client_id)?;
        if !self
            .store
            .set_client_disabled(id.as_str(), disabled, self.clock.now_ms())
            .await?
        {
            return Err(Error::NotFound("no such client".into()));
        }
        tracing::info!(client_id = %id, disabled, "client status changed");
        self.get_client(id.as_str()).await
    }

    /// Everything issued to the client until now becomes inactive.
    pub async fn revoke_client_tokens(&self, client_id: &str) -> Result<Client> {
        let id = ClientId::parse(client_id)?;
        let now_ms = self.clock.now_ms();
        if !self
            .store
            .revoke_client_tokens(id.as_str(), now_ms, now_ms)
            .await?
        {
            return Err(Error::NotFound("no such client".into()));
        }
        tracing::info!(client_id = %id, "all tokens of the client revoked");
        self.get_client(id.as_str()).await
    }
}
