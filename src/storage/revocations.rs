//! Revoked, not yet expired token ids.
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};

use super::Store;
use super::audit::AuditRecord;
use super::changes::ChangeKind;
use super::entities::revoked_tokens;

#[derive(Clone, Debug)]
pub struct Revocation {
    pub jti: String,
    pub client_id: String,
    /// Unix seconds; after this the row is only history.
    pub expires_at: i64,
}

impl Store {
    /// Durably records a revocation (idempotent) with its change-feed row.
    pub async fn insert_revocation(
        &self,
        r: &Revocation,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<(), DbErr> {
        let txn = self.db().begin().await?;
        let row = revoked_tokens::ActiveModel {
            jti: Set(r.jti.clone()),
            client_id: Set(r.client_id.clone()),
            expires_at: Set(r.expires_at),
            revoked_at: Set(now_ms / 1000),
        };
        revoked_tokens::Entity::insert(row)
            .on_conflict_do_nothing_on([revoked_tokens::Column::Jti])
            .exec_without_returning(&txn)
            .await?;
        self.commit_change(txn, ChangeKind::Revocation, &r.jti, now_ms, audit).await
    }

    pub async fn load_revocation(&self, jti: &str) -> Result<Option<Revocation>, DbErr> {
        Ok(revoked_tokens::Entity::find_by_id(jti.to_owned()).one(self.db()).await?.map(|m| Revocation {
            jti: m.jti,
            client_id: m.client_id,
            expires_at: m.expires_at,
        }))
    }

    /// Every revocation that still matters at `now_secs`, as (jti, expiry), handed to `each` a
    /// page at a time: a million revocations load in bounded memory.
    pub async fn for_each_live_revocation(&self, now_secs: i64, mut each: impl FnMut(&str, i64)) -> Result<u64, DbErr> {
        const PAGE: u64 = 20_000;
        let mut after = String::new();
        let mut total = 0;
        loop {
            let page: Vec<(String, i64)> = revoked_tokens::Entity::find()
                .select_only()
                .column(revoked_tokens::Column::Jti)
                .column(revoked_tokens::Column::ExpiresAt)
                .filter(revoked_tokens::Column::ExpiresAt.gt(now_secs))
                .filter(revoked_tokens::Column::Jti.gt(after.as_str()))
                .order_by_asc(revoked_tokens::Column::Jti)
                .limit(PAGE)
                .into_tuple()
                .all(self.db())
                .await?;
            for (jti, expires_at) in &page {
                each(jti, *expires_at);
            }
            total += page.len() as u64;
            let full = page.len() as u64 == PAGE;
            match page.into_iter().next_back() {
                Some((last, _)) if full => after = last,
                _ => return Ok(total),
            }
        }
    }

    /// Drops revocations of tokens that expired before `before_secs`.
    pub async fn prune_revocations(&self, before_secs: i64) -> Result<u64, DbErr> {
        Ok(revoked_tokens::Entity::delete_many()
            .filter(revoked_tokens::Column::ExpiresAt.lt(before_secs))
            .exec(self.db())
            .await?
            .rows_affected)
    }
}
