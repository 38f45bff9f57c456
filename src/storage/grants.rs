//! Grants: created and revoked by the platform's backend (AdminService) or the CLI.
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};

use super::Store;
use super::audit::AuditRecord;
use super::changes::ChangeKind;
use super::entities::grants;
use crate::domain::{Grant, ScopeSet};

fn to_domain(m: grants::Model) -> Grant {
    Grant {
        grant_id: m.grant_id,
        client_id: m.client_id,
        subject: m.subject,
        account: m.account,
        scopes: ScopeSet::parse(&m.scopes).unwrap_or_default(),
        created_at: m.created_at,
        expires_at: m.expires_at,
        revoked_at: m.revoked_at,
    }
}

impl Store {
    pub async fn insert_grant(&self, g: &Grant, now_ms: i64, audit: Option<&AuditRecord>) -> Result<(), DbErr> {
        let txn = self.db().begin().await?;
        let row = grants::ActiveModel {
            grant_id: Set(g.grant_id.clone()),
            client_id: Set(g.client_id.clone()),
            subject: Set(g.subject.clone()),
            account: Set(g.account.clone()),
            scopes: Set(g.scopes.to_string()),
            created_at: Set(g.created_at),
            expires_at: Set(g.expires_at),
            revoked_at: Set(g.revoked_at),
        };
        grants::Entity::insert(row).exec_without_returning(&txn).await?;
        self.commit_change(txn, ChangeKind::Grant, &g.grant_id, now_ms, audit).await
    }

    /// Marks a grant revoked; false if it does not exist or was already revoked.
    pub async fn revoke_grant(&self, grant_id: &str, now_ms: i64, audit: Option<&AuditRecord>) -> Result<bool, DbErr> {
        let txn = self.db().begin().await?;
        let touched = grants::Entity::update_many()
            .col_expr(grants::Column::RevokedAt, Expr::value(now_ms / 1000))
            .filter(grants::Column::GrantId.eq(grant_id))
            .filter(grants::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        if touched == 0 {
            return Ok(false);
        }
        self.commit_change(txn, ChangeKind::Grant, grant_id, now_ms, audit).await?;
        Ok(true)
    }

    pub async fn load_grant(&self, grant_id: &str) -> Result<Option<Grant>, DbErr> {
        Ok(grants::Entity::find_by_id(grant_id.to_owned()).one(self.db()).await?.map(to_domain))
    }

    /// Grants that are active, or ended after `ended_after_secs` (tombstones for introspection).
    pub async fn load_recent_grants(&self, ended_after_secs: i64) -> Result<Vec<Grant>, DbErr> {
        Ok(grants::Entity::find()
            .filter(grants::Column::RevokedAt.is_null().or(grants::Column::RevokedAt.gt(ended_after_secs)))
            .filter(grants::Column::ExpiresAt.is_null().or(grants::Column::ExpiresAt.gt(ended_after_secs)))
            .all(self.db())
            .await?
            .into_iter()
            .map(to_domain)
            .collect())
    }

    /// Active grants of one subject to one client (the exchange path's fallback on a miss).
    pub async fn find_active_grants(&self, client_id: &str, subject: &str, now_secs: i64) -> Result<Vec<Grant>, DbErr> {
        Ok(grants::Entity::find()
            .filter(grants::Column::ClientId.eq(client_id))
            .filter(grants::Column::Subject.eq(subject))
            .filter(grants::Column::RevokedAt.is_null())
            .filter(grants::Column::ExpiresAt.is_null().or(grants::Column::ExpiresAt.gt(now_secs)))
            .all(self.db())
            .await?
            .into_iter()
            .map(to_domain)
            .collect())
    }

    pub async fn list_grants(&self, client_id: Option<&str>, subject: Option<&str>) -> Result<Vec<Grant>, DbErr> {
        let mut q = grants::Entity::find().order_by_asc(grants::Column::CreatedAt);
        if let Some(c) = client_id {
            q = q.filter(grants::Column::ClientId.eq(c));
        }
        if let Some(s) = subject {
            q = q.filter(grants::Column::Subject.eq(s));
        }
        Ok(q.all(self.db()).await?.into_iter().map(to_domain).collect())
    }
}
