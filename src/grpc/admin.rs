//! tessera.v1.AdminService: what the CLI can do, for clients with the `admin` capability.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, admin_service_server::AdminService};
use super::status::to_status;
use crate::domain::{Capability, Client, Error, NewClient, Result, ScopeSet};
use crate::service::Tessera;

#[derive(Clone, Debug)]
pub struct AdminApi {
    core: Arc<Tessera>,
}

impl AdminApi {
    pub fn new(core: Arc<Tessera>) -> Self {
        Self { core }
    }

    async fn authorize<T>(&self, req: &Request<T>) -> Result<()> {
        let caller = self.core.authenticate(&super::credentials(req)?).await?;
        if !caller.client.has(Capability::Admin) {
            return Err(Error::AccessDenied(
                "the admin capability is required".into(),
            ));
        }
        Ok(())
    }

    /// Runs an admin operation for an authorized caller, then applies the change to this
    /// replica's memory at once (other replicas follow through the change feed).
    async fn run<T, R>(
        &self,
        name: &str,
        req: &Request<T>,
        op: impl Future<Output = Result<R>>,
    ) -> Result<R, Status> {
        let result = async {
            self.authorize(req).await?;
            let out = op.await?;
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
        capabilities: c
            .capabilities
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        disabled: c.disabled,
        secrets: c
            .secrets
            .iter()
            .map(|s| pb::ClientSecretInfo {
                secret_id: s.secret_id.clone(),
                created_at: s.created_at,
            })
            .collect(),
        created_at: c.created_at,
        tokens_revoked_before_ms: c.tokens_revoked_before_ms,
    }
}

fn new_client(r: &pb::CreateClientRequest) -> Result<NewClient> {
    Ok(NewClient {
        name: r.name.clone(),
        tenant: Some(r.tenant.clone()).filter(|t| !t.is_empty()),
        scopes: ScopeSet::from_tokens(
            r.scopes
                .iter()
                .flat_map(|s| s.split(' '))
                .filter(|s| !s.is_empty()),
        )?,
        audiences: r.audiences.clone(),
        capabilities: r
            .capabilities
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_>>()?,
        access_token_ttl: Some(r.access_token_ttl_seconds).filter(|t| *t != 0),
    })
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_client(
        &self,
        req: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let admin = &self.core.admin;
        let created = self
            .run("CreateClient", &req, async {
                admin.create_client(new_client(req.get_ref())?).await
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
        let clients = self
            .run("ListClients", &req, self.core.admin.list_clients(tenant))
            .await?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: clients.iter().map(client_pb).collect(),
        }))
    }

    async fn get_client(
        &self,
        req: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let c = self
            .run(
                "GetClient",
                &req,
                self.core.admin.get_client(&req.get_ref().client_id),
            )
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn rotate_client_secret(
        &self,
        req: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::RotateClientSecretResponse>, Status> {
        let added = self
            .run(
                "RotateClientSecret",
                &req,
                self.core.admin.rotate_secret(&req.get_ref().client_id),
            )
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
            .run(
                "RemoveClientSecret",
                &req,
                self.core.admin.remove_secret(&r.client_id, &r.secret_id),
            )
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn disable_client(
        &self,
        req: Request<pb::DisableClientRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let c = self
            .run(
                "DisableClient",
                &req,
                self.core.admin.set_disabled(&req.get_ref().client_id, true),
            )
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn enable_client(
        &self,
        req: Request<pb::EnableClientRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let c = self
            .run(
                "EnableClient",
                &req,
                self.core
                    .admin
                    .set_disabled(&req.get_ref().client_id, false),
            )
            .await?;
        Ok(Response::new(client_pb(&c)))
    }

    async fn revoke_client_tokens(
        &self,
        req: Request<pb::RevokeClientTokensRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let c = self
            .run(
                "RevokeClientTokens",
                &req,
                self.core
                    .admin
                    .revoke_client_tokens(&req.get_ref().client_id),
            )
            .await?;
        Ok(Response::new(client_pb(&c)))
    }
}
