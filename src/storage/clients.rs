//! Clients and their secrets.
use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};

use super::Store;
use super::audit::AuditRecord;
use super::changes::ChangeKind;
use super::entities::{client_secrets, clients};
use crate::domain::{Capability, Client, ClientId, ClientSecret, ClientUpdate, ScopeSet};

fn join(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    items.into_iter().map(|s| s.as_ref().to_owned()).collect::<Vec<_>>().join(" ")
}

fn to_domain(m: clients::Model, secrets: Vec<client_secrets::Model>) -> Client {
    Client {
        // Stored ids were validated on the way in.
        client_id: ClientId::parse(&m.client_id).unwrap_or_else(|_| ClientId::generate()),
        name: m.name,
        tenant: m.tenant,
        scopes: ScopeSet::parse(&m.scopes).unwrap_or_default(),
        audiences: m.audiences.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        capabilities: m.capabilities.split(' ').filter_map(|c| c.parse::<Capability>().ok()).collect(),
        access_token_ttl: m.access_token_ttl_seconds,
        act_as: m.act_as.parse().unwrap_or_default(),
        user_token_ttl: m.user_token_ttl_seconds,
        disabled: m.disabled,
        tokens_revoked_before_ms: m.tokens_revoked_before_ms,
        created_at: m.created_at,
        secrets: secrets
            .into_iter()
            .map(|s| ClientSecret { secret_id: s.secret_id, hash: s.hash, created_at: s.created_at })
            .collect(),
    }
}

impl Store {
    /// Inserts a client with its first secret.
    pub async fn insert_client(&self, client: &Client, now_ms: i64, audit: Option<&AuditRecord>) -> Result<(), DbErr> {
        let txn = self.db().begin().await?;
        let row = clients::ActiveModel {
            client_id: Set(client.client_id.to_string()),
            name: Set(client.name.clone()),
            tenant: Set(client.tenant.clone()),
            scopes: Set(client.scopes.to_string()),
            audiences: Set(join(&client.audiences)),
            capabilities: Set(join(client.capabilities.iter().map(|c| c.as_str()))),
            access_token_ttl_seconds: Set(client.access_token_ttl),
            disabled: Set(client.disabled),
            tokens_revoked_before_ms: Set(client.tokens_revoked_before_ms),
            created_at: Set(client.created_at),
            updated_at: Set(client.created_at),
            act_as: Set(client.act_as.as_str().to_owned()),
            user_token_ttl_seconds: Set(client.user_token_ttl),
        };
        clients::Entity::insert(row).exec_without_returning(&txn).await?;
        for s in &client.secrets {
            let row = client_secrets::ActiveModel {
                secret_id: Set(s.secret_id.clone()),
                client_id: Set(client.client_id.to_string()),
                hash: Set(s.hash.clone()),
                created_at: Set(s.created_at),
            };
            client_secrets::Entity::insert(row).exec_without_returning(&txn).await?;
        }
        self.commit_change(txn, ChangeKind::Client, client.client_id.as_str(), now_ms, audit).await
    }

    /// Every client, handed to `each` a page at a time: a hundred thousand clients load at start
    /// without holding every row twice (database models and domain clients) at once.
    pub async fn for_each_client_page(&self, mut each: impl FnMut(Vec<Client>)) -> Result<(), DbErr> {
        const PAGE: u64 = 5_000;
        let mut after: Option<String> = None;
        loop {
            let mut query = clients::Entity::find().order_by_asc(clients::Column::ClientId).limit(PAGE);
            if let Some(a) = &after {
                query = query.filter(clients::Column::ClientId.gt(a.as_str()));
            }
            let rows = query.all(self.db()).await?;
            let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                return Ok(());
            };
            let mut secrets: HashMap<String, Vec<client_secrets::Model>> = HashMap::new();
            for s in client_secrets::Entity::find()
                .filter(client_secrets::Column::ClientId.gte(first.client_id.as_str()))
                .filter(client_secrets::Column::ClientId.lte(last.client_id.as_str()))
                .order_by_asc(client_secrets::Column::CreatedAt)
                .all(self.db())
                .await?
            {
                secrets.entry(s.client_id.clone()).or_default().push(s);
            }
            let full = rows.len() as u64 == PAGE;
            after = Some(last.client_id.clone());
            each(
                rows.into_iter()
                    .map(|m| {
                        let s = secrets.remove(&m.client_id).unwrap_or_default();
                        to_domain(m, s)
                    })
                    .collect(),
            );
            if !full {
                return Ok(());
            }
        }
    }

    pub async fn list_clients(&self, tenant: Option<&str>) -> Result<Vec<Client>, DbErr> {
        let mut query = clients::Entity::find().order_by_asc(clients::Column::CreatedAt);
        if let Some(t) = tenant {
            query = query.filter(clients::Column::Tenant.eq(t));
        }
        let rows = query.all(self.db()).await?;
        let mut secrets: HashMap<String, Vec<client_secrets::Model>> = HashMap::new();
        for s in client_secrets::Entity::find().order_by_asc(client_secrets::Column::CreatedAt).all(self.db()).await? {
            secrets.entry(s.client_id.clone()).or_default().push(s);
        }
        Ok(rows
            .into_iter()
            .map(|m| {
                let s = secrets.remove(&m.client_id).unwrap_or_default();
                to_domain(m, s)
            })
            .collect())
    }

    pub async fn load_client(&self, client_id: &str) -> Result<Option<Client>, DbErr> {
        let Some(m) = clients::Entity::find_by_id(client_id.to_owned()).one(self.db()).await? else {
            return Ok(None);
        };
        let secrets = client_secrets::Entity::find()
            .filter(client_secrets::Column::ClientId.eq(client_id))
            .order_by_asc(client_secrets::Column::CreatedAt)
            .all(self.db())
            .await?;
        Ok(Some(to_domain(m, secrets)))
    }

    /// Adds a secret; false if the client does not exist.
    pub async fn add_client_secret(
        &self,
        client_id: &str,
        secret: &ClientSecret,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        let txn = self.db().begin().await?;
        let touched = clients::Entity::update_many()
            .col_expr(clients::Column::UpdatedAt, Expr::value(now_ms / 1000))
            .filter(clients::Column::ClientId.eq(client_id))
            .exec(&txn)
            .await?
            .rows_affected;
        if touched == 0 {
            return Ok(false);
        }
        let row = client_secrets::ActiveModel {
            secret_id: Set(secret.secret_id.clone()),
            client_id: Set(client_id.to_owned()),
            hash: Set(secret.hash.clone()),
            created_at: Set(secret.created_at),
        };
        client_secrets::Entity::insert(row).exec_without_returning(&txn).await?;
        self.commit_change(txn, ChangeKind::Client, client_id, now_ms, audit).await?;
        Ok(true)
    }

    /// Removes one secret; false if no such secret for this client.
    pub async fn remove_client_secret(
        &self,
        client_id: &str,
        secret_id: &str,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        let txn = self.db().begin().await?;
        let removed = client_secrets::Entity::delete_many()
            .filter(client_secrets::Column::ClientId.eq(client_id))
            .filter(client_secrets::Column::SecretId.eq(secret_id))
            .exec(&txn)
            .await?
            .rows_affected;
        if removed == 0 {
            return Ok(false);
        }
        self.commit_change(txn, ChangeKind::Client, client_id, now_ms, audit).await?;
        Ok(true)
    }

    /// Updates one column of a client (with the change-feed row); false if it does not exist.
    async fn update_client(
        &self,
        client_id: &str,
        col: clients::Column,
        value: sea_orm::Value,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        self.update_client_columns(client_id, vec![(col, value)], now_ms, audit).await
    }

    /// Updates columns of a client with its change-feed row; false if it does not exist.
    async fn update_client_columns(
        &self,
        client_id: &str,
        cols: Vec<(clients::Column, sea_orm::Value)>,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        let txn = self.db().begin().await?;
        let mut update = clients::Entity::update_many();
        for (col, value) in cols {
            update = update.col_expr(col, Expr::value(value));
        }
        let touched = update
            .col_expr(clients::Column::UpdatedAt, Expr::value(now_ms / 1000))
            .filter(clients::Column::ClientId.eq(client_id))
            .exec(&txn)
            .await?
            .rows_affected;
        if touched == 0 {
            return Ok(false);
        }
        self.commit_change(txn, ChangeKind::Client, client_id, now_ms, audit).await?;
        Ok(true)
    }

    /// Applies a policy update; false if the client does not exist.
    pub async fn update_client_policy(
        &self,
        client_id: &str,
        u: &ClientUpdate,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        let mut cols: Vec<(clients::Column, sea_orm::Value)> = Vec::new();
        if let Some(a) = u.act_as {
            cols.push((clients::Column::ActAs, a.as_str().into()));
        }
        if let Some(t) = u.access_token_ttl {
            cols.push((clients::Column::AccessTokenTtlSeconds, t.into()));
        }
        if let Some(t) = u.user_token_ttl {
            cols.push((clients::Column::UserTokenTtlSeconds, t.into()));
        }
        if let Some(s) = &u.scopes {
            cols.push((clients::Column::Scopes, s.to_string().into()));
        }
        if let Some(a) = &u.audiences {
            cols.push((clients::Column::Audiences, join(a).into()));
        }
        self.update_client_columns(client_id, cols, now_ms, audit).await
    }

    pub async fn set_client_disabled(
        &self,
        client_id: &str,
        disabled: bool,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        self.update_client(client_id, clients::Column::Disabled, disabled.into(), now_ms, audit).await
    }

    /// Every token issued to the client before `before_ms` becomes inactive.
    pub async fn revoke_client_tokens(
        &self,
        client_id: &str,
        before_ms: i64,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        self.update_client(client_id, clients::Column::TokensRevokedBeforeMs, before_ms.into(), now_ms, audit).await
    }
}
