//! tessera.v1.AdminService: what the CLI can do, for clients with the `admin` capability.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, admin_service_server::AdminService};
use super::status::to_status;
use crate::domain::{Capability, Client, ClientUpdate, Error, Grant, NewClient, NewGrant, Result, ScopeSet};
use crate::service::Tessera;
use crate::service::keys::KeyInfo;
use crate::storage::audit::{AuditQuery, AuditRecord};

#[derive(Clone, Debug)]
pub struct AdminApi {
    core: Arc<Tessera>,
}

impl AdminApi {
    pub fn new(core: Arc<Tessera>) -> Self {
        Self { core }
    }

    /// The caller's client id, if it has the admin capability.
    async fn authorize<T>(&self, req: &Request<T>) -> Result<String> {
        let caller = self.core.authenticate(&super::credentials(req)?).await?;
        if !caller.client.has(Capability::Admin) {
            return Err(Error::AccessDenied("the admin capability is required".into()));
        }
        Ok(caller.client.client_id.to_string())
    }

    /// Runs an admin operation for an authorized caller (its id is the audit actor), then
    /// applies the change to this replica's memory at once (other replicas follow through the
    /// change feed).
    async fn run<T, R, F, Fut>(&self, name: &str, req: &Request<T>, op: F) -> Result<R, Status>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let result = async {
            let actor = self.authorize(req).await?;
            let out = op(actor).await?;
            if let Err(e) = self.core.sync_changes().await {
                e.log_if_server_error("sync after admin change");
            }
            Ok(out)
        }
        .await;
        result.map_err(|e| to_status(e, name))
    }
}

pub fn client_pb(c: &Client) -> pb::Client {
    pb::Client {
        client_id: c.client_id.to_string(),
        name: c.name.clone(),
        tenant: c.tenant.clone(),
        scopes: c.scopes.to_vec(),
        audiences: c.audiences.clone(),
        access_token_ttl_seconds: c.access_token_ttl,
        capabilities: c.capabilities.iter().map(|c| c.as_str().to_owned()).collect(),
        disabled: c.disabled,
        secrets: c
            .secrets
            .iter()
            .map(|s| pb::ClientSecretInfo { secret_id: s.secret_id.clone(), created_at: s.created_at })
            .collect(),
        created_at: c.created_at,
        tokens_revoked_before_ms: c.tokens_revoked_before_ms,
        act_as: c.act_as.as_str().into(),
        user_token_ttl_seconds: c.user_token_ttl,
    }
}

pub fn grant_pb(g: &Grant, now_secs: i64) -> pb::Grant {
    pb::Grant {
        grant_id: g.grant_id.clone(),
        client_id: g.client_id.clone(),
        subject: g.subject.clone(),
        account: g.account.clone().unwrap_or_default(),
        scopes: g.scopes.to_vec(),
        created_at: g.created_at,
        expires_at: g.expires_at.unwrap_or(0),
        revoked_at: g.revoked_at.unwrap_or(0),
        active: g.is_active(now_secs),
    }
}

fn audit_pb(r: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        at_ms: r.at_ms,
        action: r.action,
        actor: r.actor,
        client_id: r.client_id.unwrap_or_default(),
        subject: r.subject.unwrap_or_default(),
        scopes: r
            .scopes
            .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
        jti: r.jti.unwrap_or_default(),
        grant_id: r.grant_id.unwrap_or_default(),
        outcome: r.outcome,
        detail: r.detail.unwrap_or_default(),
    }
}

fn key_pb(k: &KeyInfo) -> pb::SigningKey {
    pb::SigningKey {
        kid: k.kid.clone(),
        alg: k.alg.clone(),
        state: k.state.as_str().into(),
        created_at: k.created_at,
        activates_at: k.activates_at,
        retired_at: k.retired_at.unwrap_or(0),
        published_until: k.published_until.unwrap_or(0),
    }
}

fn scopes_of(list: &[String]) -> Result<ScopeSet> {
    ScopeSet::from_tokens(list.iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()))
}

fn new_client(r: &pb::CreateClientRequest) -> Result<NewClient> {
    Ok(NewClient {
        name: r.name.clone(),
        tenant: Some(r.tenant.clone()).filter(|t| !t.is_empty()),
        scopes: scopes_of(&r.scopes)?,
        audiences: r.audiences.clone(),
        capabilities: r.capabilities.iter().map(|c| c.parse()).collect::<Result<_>>()?,
        access_token_ttl: Some(r.access_token_ttl_seconds).filter(|t| *t != 0),
        act_as: if r.act_as.is_empty() { Default::default() } else { r.act_as.parse()? },
        user_token_ttl: Some(r.user_token_ttl_seconds).filter(|t| *t != 0),
    })
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_client(
        &self,
        req: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let r = req.get_ref();
        let created =
            self.run("CreateClient", &req, |actor| async move {
                self.core.admin.create_client(&actor, new_client(r)?).await
            })
            .await?;
        Ok(Response::new(pb::CreateClientResponse {
            client: Some(client_pb(&created.client)),
            client_secret: created.secret.to_string(),
        }))
    }

    async fn list_clients(
        &self,
        req: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let tenant = Some(req.get_ref().tenant.as_str()).filter(|t| !t.is_empty());
        let clients = self.run("ListClients", &req, |_| self.core.admin.list_clients(tenant)).await?;
        Ok(Response::new(pb::ListClientsResponse { clients: clients.iter().map(client_pb).collect() }))
    }

    async fn get_client(&self, req: Request<pb::GetClientRequest>) -> Result<Response<pb::Client>, Status> {
        let c = self.run("GetClient", &req, |_| self.core.admin.get_client(&req.get_ref().client_id)).await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn rotate_client_secret(
        &self,
        req: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::RotateClientSecretResponse>, Status> {
        let r = req.get_ref();
        let added = self
            .run("RotateClientSecret", &req, |actor| async move {
                self.core.admin.rotate_secret(&actor, &r.client_id).await
            })
            .await?;
        Ok(Response::new(pb::RotateClientSecretResponse {
            client: Some(client_pb(&added.client)),
            client_secret: added.secret.to_string(),
            secret_id: added.secret_id,
        }))
    }

    async fn remove_client_secret(
        &self,
        req: Request<pb::RemoveClientSecretRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let r = req.get_ref();
        let c = self
            .run("RemoveClientSecret", &req, |actor| async move {
                self.core.admin.remove_secret(&actor, &r.client_id, &r.secret_id).await
            })
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn disable_client(&self, req: Request<pb::DisableClientRequest>) -> Result<Response<pb::Client>, Status> {
        let r = req.get_ref();
        let c = self
            .run("DisableClient", &req, |actor| async move {
                self.core.admin.set_disabled(&actor, &r.client_id, true).await
            })
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn enable_client(&self, req: Request<pb::EnableClientRequest>) -> Result<Response<pb::Client>, Status> {
        let r = req.get_ref();
        let c = self
            .run("EnableClient", &req, |actor| async move {
                self.core.admin.set_disabled(&actor, &r.client_id, false).await
            })
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn revoke_client_tokens(
        &self,
        req: Request<pb::RevokeClientTokensRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let r = req.get_ref();
        let c = self
            .run("RevokeClientTokens", &req, |actor| async move {
                self.core.admin.revoke_client_tokens(&actor, &r.client_id).await
            })
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn update_client(&self, req: Request<pb::UpdateClientRequest>) -> Result<Response<pb::Client>, Status> {
        let r = req.get_ref();
        let c = self
            .run("UpdateClient", &req, |actor| async move {
                let update = ClientUpdate {
                    act_as: r.act_as.as_deref().map(str::parse).transpose()?,
                    access_token_ttl: r.access_token_ttl_seconds,
                    user_token_ttl: r.user_token_ttl_seconds,
                    scopes: if r.set_scopes { Some(scopes_of(&r.scopes)?) } else { None },
                    audiences: r.set_audiences.then(|| r.audiences.clone()),
                };
                self.core.admin.update_client(&actor, &r.client_id, update).await
            })
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn create_grant(&self, req: Request<pb::CreateGrantRequest>) -> Result<Response<pb::Grant>, Status> {
        let r = req.get_ref();
        let g = self
            .run("CreateGrant", &req, |actor| async move {
                let new = NewGrant {
                    client_id: r.client_id.clone(),
                    subject: r.subject.clone(),
                    account: Some(r.account.clone()).filter(|a| !a.is_empty()),
                    scopes: scopes_of(&r.scopes)?,
                    expires_in: Some(r.expires_in_seconds).filter(|s| *s != 0),
                };
                self.core.admin.create_grant(&actor, new).await
            })
            .await?;
        Ok(Response::new(grant_pb(&g, self.core.clock.now_secs())))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let r = req.get_ref();
        let client = Some(r.client_id.as_str()).filter(|s| !s.is_empty());
        let subject = Some(r.subject.as_str()).filter(|s| !s.is_empty());
        let grants = self.run("ListGrants", &req, |_| self.core.admin.list_grants(client, subject)).await?;
        let now = self.core.clock.now_secs();
        Ok(Response::new(pb::ListGrantsResponse { grants: grants.iter().map(|g| grant_pb(g, now)).collect() }))
    }

    async fn revoke_grant(&self, req: Request<pb::RevokeGrantRequest>) -> Result<Response<pb::Grant>, Status> {
        let r = req.get_ref();
        let g = self
            .run("RevokeGrant", &req, |actor| async move { self.core.admin.revoke_grant(&actor, &r.grant_id).await })
            .await?;
        Ok(Response::new(grant_pb(&g, self.core.clock.now_secs())))
    }

    async fn query_audit(
        &self,
        req: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        let r = req.get_ref();
        let q = AuditQuery {
            client_id: Some(r.client_id.clone()).filter(|s| !s.is_empty()),
            subject: Some(r.subject.clone()).filter(|s| !s.is_empty()),
            since_ms: Some(r.since_ms).filter(|t| *t > 0),
            limit: if r.limit == 0 { 100 } else { u64::from(r.limit) },
        };
        let records = self.run("QueryAudit", &req, |_| async move { self.core.admin.query_audit(&q).await }).await?;
        Ok(Response::new(pb::QueryAuditResponse { records: records.into_iter().map(audit_pb).collect() }))
    }

    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKey>, Status> {
        let r = req.get_ref();
        let key = self
            .run("RotateSigningKey", &req, |actor| async move {
                let alg = if r.alg.is_empty() {
                    None
                } else {
                    Some(r.alg.parse().map_err(|_| Error::invalid_request("alg must be EdDSA, ES256 or RS256"))?)
                };
                let prepublish = match r.prepublish_seconds {
                    0 => None,
                    n if n < 0 => Some(0),
                    n => Some(n),
                };
                let key = self.core.rotate_keys(&actor, alg, prepublish).await.map_err(Error::Internal)?;
                key.ok_or_else(|| Error::Internal(anyhow::anyhow!("rotation did not happen")))
            })
            .await?;
        Ok(Response::new(key_pb(&key)))
    }

    async fn list_signing_keys(
        &self,
        req: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        let keys = self
            .run("ListSigningKeys", &req, |_| async move { self.core.list_keys().await.map_err(Error::Internal) })
            .await?;
        Ok(Response::new(pb::ListSigningKeysResponse { keys: keys.iter().map(key_pb).collect() }))
    }
}
