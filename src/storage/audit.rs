//! The audit trail: who did what, for whom, with which token id (never the token or a secret).
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};

use super::Store;
use super::entities::audit_log;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `client_credentials`, `token_exchange`, `revoke`, `client.create`, `grant.revoke`, …
    pub action: String,
    /// Who asked: a client id, or `cli` for the command line.
    pub actor: String,
    /// The client the action concerns (whose token, which client was changed).
    pub client_id: Option<String>,
    /// The end user acted for, if any.
    pub subject: Option<String>,
    pub scopes: Option<String>,
    pub jti: Option<String>,
    pub grant_id: Option<String>,
    /// `ok`, or the OAuth error code of a denial.
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: u64,
}

fn to_row(r: &AuditRecord) -> audit_log::ActiveModel {
    audit_log::ActiveModel {
        at_ms: Set(r.at_ms),
        action: Set(r.action.clone()),
        actor: Set(r.actor.clone()),
        client_id: Set(r.client_id.clone()),
        subject: Set(r.subject.clone()),
        scopes: Set(r.scopes.clone()),
        jti: Set(r.jti.clone()),
        grant_id: Set(r.grant_id.clone()),
        outcome: Set(r.outcome.clone()),
        detail: Set(r.detail.clone()),
        ..Default::default()
    }
}

impl Store {
    /// Writes a batch in one transaction: one commit (one fsync) for the whole group.
    pub async fn insert_audit(&self, records: &[AuditRecord]) -> Result<(), DbErr> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin().await?;
        // Bounded statement size: SQLite allows 32766 bind variables, 10 per row.
        for chunk in records.chunks(500) {
            audit_log::Entity::insert_many(chunk.iter().map(to_row)).exec_without_returning(&txn).await?;
        }
        txn.commit().await
    }

    /// Newest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, DbErr> {
        let mut find = audit_log::Entity::find().order_by_desc(audit_log::Column::Id);
        if let Some(c) = &q.client_id {
            find = find.filter(audit_log::Column::ClientId.eq(c.as_str()));
        }
        if let Some(s) = &q.subject {
            find = find.filter(audit_log::Column::Subject.eq(s.as_str()));
        }
        if let Some(t) = q.since_ms {
            find = find.filter(audit_log::Column::AtMs.gte(t));
        }
        Ok(find
            .limit(q.limit.clamp(1, 10_000))
            .all(self.db())
            .await?
            .into_iter()
            .map(|m| AuditRecord {
                at_ms: m.at_ms,
                action: m.action,
                actor: m.actor,
                client_id: m.client_id,
                subject: m.subject,
                scopes: m.scopes,
                jti: m.jti,
                grant_id: m.grant_id,
                outcome: m.outcome,
                detail: m.detail,
            })
            .collect())
    }
}
