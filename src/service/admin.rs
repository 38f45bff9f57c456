//! The admin surface: clients, secrets, grants and the audit trail. Used by the `tessera` CLI
//! directly on the database and by AdminService; both write through storage, so running
//! replicas learn of every change from the change feed. Every change is audited with its actor
//! (`cli`, or the admin client's id).
use std::sync::Arc;

use zeroize::Zeroizing;

use super::Audit;
use crate::clock::Clock;
use crate::crypto::secret::{SecretHasher, generate_secret};
use crate::domain::client::{DEFAULT_TENANT, parse_account, parse_subject};
use crate::domain::grant::generate_grant_id;
use crate::domain::{Client, ClientId, ClientSecret, ClientUpdate, Error, Grant, NewClient, NewGrant, Result};
use crate::storage::Store;
use crate::storage::audit::{AuditQuery, AuditRecord};

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
    audit: Audit,
}

fn no_client() -> Error {
    Error::NotFound("no such client".into())
}

impl Admin {
    pub fn new(store: Store, hasher: SecretHasher, clock: Arc<dyn Clock>, audit: Audit) -> Self {
        Self { store, hasher, clock, audit }
    }

    /// The audit record of a change, which storage writes in the change's own transaction; None
    /// when the audit trail is off.
    fn entry(
        &self,
        actor: &str,
        action: &str,
        client_id: Option<&str>,
        build: impl FnOnce(&mut AuditRecord),
    ) -> Option<AuditRecord> {
        self.audit.enabled().then(|| {
            let mut r = AuditRecord {
                at_ms: self.clock.now_ms(),
                action: action.into(),
                actor: actor.into(),
                client_id: client_id.map(str::to_owned),
                outcome: "ok".into(),
                ..AuditRecord::default()
            };
            build(&mut r);
            r
        })
    }

    pub async fn create_client(&self, actor: &str, new: NewClient) -> Result<CreatedClient> {
        new.validate()?;
        let now_ms = self.clock.now_ms();
        let fresh = generate_secret();
        let hash = self.hasher.hash(fresh.secret.clone()).await.map_err(Error::Internal)?;
        let client = Client {
            client_id: ClientId::generate(),
            name: new.name.trim().to_owned(),
            tenant: new.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            scopes: new.scopes,
            audiences: new.audiences,
            capabilities: new.capabilities,
            access_token_ttl: new.access_token_ttl.unwrap_or(0),
            act_as: new.act_as,
            user_token_ttl: new.user_token_ttl.unwrap_or(0),
            disabled: false,
            tokens_revoked_before_ms: 0,
            created_at: now_ms / 1000,
            secrets: vec![ClientSecret { secret_id: fresh.secret_id, hash, created_at: now_ms / 1000 }],
        };
        let audit = self.entry(actor, "client.create", Some(client.client_id.as_str()), |r| {
            r.scopes = Some(client.scopes.to_string());
            r.detail = Some(format!("tenant {} act-as {}", client.tenant, client.act_as));
        });
        self.store.insert_client(&client, now_ms, audit.as_ref()).await?;
        tracing::info!(client_id = %client.client_id, tenant = %client.tenant, "client created");
        Ok(CreatedClient { client, secret: fresh.secret })
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Client> {
        let id = ClientId::parse(client_id)?;
        self.store.load_client(id.as_str()).await?.ok_or_else(no_client)
    }

    pub async fn list_clients(&self, tenant: Option<&str>) -> Result<Vec<Client>> {
        Ok(self.store.list_clients(tenant).await?)
    }

    /// Changes a client's act-as policy, lifetimes, scopes or audiences.
    pub async fn update_client(&self, actor: &str, client_id: &str, update: ClientUpdate) -> Result<Client> {
        let id = ClientId::parse(client_id)?;
        update.validate()?;
        // The record says what this update set (the rest of the client is as it was).
        let audit = self.entry(actor, "client.update", Some(id.as_str()), |r| {
            r.scopes = update.scopes.as_ref().map(ToString::to_string);
            r.detail = Some(describe_update(&update));
        });
        if !self.store.update_client_policy(id.as_str(), &update, self.clock.now_ms(), audit.as_ref()).await? {
            return Err(no_client());
        }
        self.get_client(id.as_str()).await
    }

    /// Adds a secret; the old ones stay valid until removed, so a partner rotates without downtime.
    pub async fn rotate_secret(&self, actor: &str, client_id: &str) -> Result<AddedSecret> {
        let id = ClientId::parse(client_id)?;
        let now_ms = self.clock.now_ms();
        let fresh = generate_secret();
        let hash = self.hasher.hash(fresh.secret.clone()).await.map_err(Error::Internal)?;
        let secret = ClientSecret { secret_id: fresh.secret_id.clone(), hash, created_at: now_ms / 1000 };
        let audit = self.entry(actor, "client.secret.add", Some(id.as_str()), |r| {
            r.detail = Some(format!("secret {}", fresh.secret_id))
        });
        if !self.store.add_client_secret(id.as_str(), &secret, now_ms, audit.as_ref()).await? {
            return Err(no_client());
        }
        tracing::info!(client_id = %id, secret_id = %fresh.secret_id, "client secret added");
        Ok(AddedSecret {
            client: self.get_client(id.as_str()).await?,
            secret_id: fresh.secret_id,
            secret: fresh.secret,
        })
    }

    pub async fn remove_secret(&self, actor: &str, client_id: &str, secret_id: &str) -> Result<Client> {
        let client = self.get_client(client_id).await?;
        if !client.secrets.iter().any(|s| s.secret_id == secret_id) {
            return Err(Error::NotFound("no such secret for this client".into()));
        }
        if client.secrets.len() == 1 {
            return Err(Error::invalid_request(
                "refusing to remove the client's only secret; add one first, or disable the client",
            ));
        }
        let audit = self.entry(actor, "client.secret.remove", Some(client.client_id.as_str()), |r| {
            r.detail = Some(format!("secret {secret_id}"))
        });
        let id = client.client_id.as_str();
        if !self.store.remove_client_secret(id, secret_id, self.clock.now_ms(), audit.as_ref()).await? {
            return Err(Error::NotFound("no such secret for this client".into()));
        }
        tracing::info!(client_id = %id, secret_id, "client secret removed");
        self.get_client(id).await
    }

    pub async fn set_disabled(&self, actor: &str, client_id: &str, disabled: bool) -> Result<Client> {
        let id = ClientId::parse(client_id)?;
        let action = if disabled { "client.disable" } else { "client.enable" };
        let audit = self.entry(actor, action, Some(id.as_str()), |_| {});
        if !self.store.set_client_disabled(id.as_str(), disabled, self.clock.now_ms(), audit.as_ref()).await? {
            return Err(no_client());
        }
        tracing::info!(client_id = %id, disabled, "client status changed");
        self.get_client(id.as_str()).await
    }

    /// Everything issued to the client until now becomes inactive.
    pub async fn revoke_client_tokens(&self, actor: &str, client_id: &str) -> Result<Client> {
        let id = ClientId::parse(client_id)?;
        let now_ms = self.clock.now_ms();
        let audit = self.entry(actor, "client.revoke_tokens", Some(id.as_str()), |_| {});
        if !self.store.revoke_client_tokens(id.as_str(), now_ms, now_ms, audit.as_ref()).await? {
            return Err(no_client());
        }
        tracing::info!(client_id = %id, "all tokens of the client revoked");
        self.get_client(id.as_str()).await
    }

    /// A platform user enabled an integration: the client may act for them within `scopes`.
    pub async fn create_grant(&self, actor: &str, new: NewGrant) -> Result<Grant> {
        let client = self.get_client(&new.client_id).await?;
        let subject = parse_subject(&new.subject)?;
        let account = new.account.as_deref().map(parse_account).transpose()?;
        if new.scopes.is_empty() {
            return Err(Error::InvalidScope("a grant needs at least one scope".into()));
        }
        if !new.scopes.is_subset(&client.scopes) {
            return Err(Error::InvalidScope("granted scopes exceed the client's allowed scopes".into()));
        }
        if new.expires_in.is_some_and(|s| s <= 0) {
            return Err(Error::invalid_request("expires-in must be positive"));
        }
        let now_ms = self.clock.now_ms();
        let grant = Grant {
            grant_id: generate_grant_id(),
            client_id: client.client_id.to_string(),
            subject,
            account,
            scopes: new.scopes,
            created_at: now_ms / 1000,
            expires_at: new.expires_in.map(|s| now_ms / 1000 + s),
            revoked_at: None,
        };
        let audit = self.entry(actor, "grant.create", Some(&grant.client_id), |r| {
            r.subject = Some(grant.subject.clone());
            r.scopes = Some(grant.scopes.to_string());
            r.grant_id = Some(grant.grant_id.clone());
            r.detail = grant.account.as_ref().map(|a| format!("account {a}"));
        });
        self.store.insert_grant(&grant, now_ms, audit.as_ref()).await?;
        tracing::info!(grant_id = %grant.grant_id, client_id = %grant.client_id, "grant created");
        Ok(grant)
    }

    pub async fn list_grants(&self, client_id: Option<&str>, subject: Option<&str>) -> Result<Vec<Grant>> {
        Ok(self.store.list_grants(client_id, subject).await?)
    }

    /// The user disabled the integration: every token minted under the grant stops working.
    pub async fn revoke_grant(&self, actor: &str, grant_id: &str) -> Result<Grant> {
        let grant = self.store.load_grant(grant_id).await?.ok_or_else(|| Error::NotFound("no such grant".into()))?;
        if grant.revoked_at.is_none() {
            let audit = self.entry(actor, "grant.revoke", Some(&grant.client_id), |r| {
                r.subject = Some(grant.subject.clone());
                r.grant_id = Some(grant.grant_id.clone());
            });
            // False when a concurrent call revoked it first: that call wrote the record.
            if self.store.revoke_grant(grant_id, self.clock.now_ms(), audit.as_ref()).await? {
                tracing::info!(grant_id, "grant revoked");
            }
        }
        self.store.load_grant(grant_id).await?.ok_or_else(|| Error::NotFound("no such grant".into()))
    }

    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        Ok(self.store.query_audit(q).await?)
    }
}

/// What a policy update sets, for its audit record.
fn describe_update(u: &ClientUpdate) -> String {
    let mut parts = Vec::new();
    if let Some(a) = u.act_as {
        parts.push(format!("act-as {a}"));
    }
    if let Some(t) = u.access_token_ttl {
        parts.push(format!("access-token-ttl {t}s"));
    }
    if let Some(t) = u.user_token_ttl {
        parts.push(format!("user-token-ttl {t}s"));
    }
    if let Some(a) = &u.audiences {
        parts.push(if a.is_empty() { "audiences none".to_owned() } else { format!("audiences {}", a.join(" ")) });
    }
    if u.scopes.is_some() {
        parts.push("scopes".to_owned());
    }
    if parts.is_empty() { "nothing changed".to_owned() } else { parts.join(", ") }
}
