//! Signing keys at rest (private parts sealed with the key-encryption key).
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait};

use super::Store;
use super::audit::AuditRecord;
use super::changes::ChangeKind;
use super::entities::signing_keys;

pub use signing_keys::Model as StoredKey;

fn key_row(key: StoredKey) -> signing_keys::ActiveModel {
    signing_keys::ActiveModel {
        kid: Set(key.kid),
        alg: Set(key.alg),
        public_jwk: Set(key.public_jwk),
        private_key_enc: Set(key.private_key_enc),
        created_at: Set(key.created_at),
        activates_at: Set(key.activates_at),
        retired_at: Set(key.retired_at),
    }
}

impl Store {
    /// A transaction that reads and then writes: on SQLite it takes the write lock at BEGIN
    /// (IMMEDIATE), so it waits for other writers (busy timeout) instead of failing to upgrade.
    async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        if self.is_postgres() {
            return self.db().begin().await;
        }
        let opts = sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        self.db().begin_with_options(opts).await
    }

    pub async fn load_keys(&self) -> Result<Vec<StoredKey>, DbErr> {
        signing_keys::Entity::find().order_by_asc(signing_keys::Column::ActivatesAt).all(self.db()).await
    }

    /// Inserts `key` unless an unretired key already exists; returns whether it was inserted.
    /// Replicas starting together on one PostgreSQL serialise on a table lock, so exactly one
    /// first key is made.
    pub async fn insert_first_key(&self, key: StoredKey, now_ms: i64) -> Result<bool, DbErr> {
        let txn = self.begin_write().await?;
        if self.is_postgres() {
            txn.execute_unprepared("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").await?;
        }
        let existing = signing_keys::Entity::find().all(&txn).await?;
        if existing.iter().any(|k| k.retired_at.is_none()) {
            return Ok(false);
        }
        signing_keys::Entity::insert(key_row(key)).exec_without_returning(&txn).await?;
        self.commit_change(txn, ChangeKind::Keys, "", now_ms, None).await?;
        Ok(true)
    }
}

/// A retired key stays published this long after it stops signing: longer than any token can
/// live (access tokens at most a day, user tokens at most an hour), plus clock skew.
pub const PUBLISH_AFTER_RETIRE_SECS: i64 = 86_400 + 300;

impl Store {
    /// Adds `key` as the next signing key: every key still signing retires at the moment the new
    /// one activates (so exactly one key signs at any instant), keys past their publication
    /// horizon are deleted. With `only_if_older_than` (automatic rotation) nothing happens when a
    /// key is already pending or the newest key activated after that instant; replicas racing to
    /// rotate serialise on a lock, so only one rotates.
    pub async fn rotate_signing_key(
        &self,
        key: StoredKey,
        only_if_older_than: Option<i64>,
        now_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, DbErr> {
        let now = now_ms / 1000;
        let txn = self.begin_write().await?;
        if self.is_postgres() {
            txn.execute_unprepared("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").await?;
        }
        let existing = signing_keys::Entity::find().all(&txn).await?;
        if let Some(cutoff) = only_if_older_than {
            let pending = existing.iter().any(|k| k.retired_at.is_none() && k.activates_at > now);
            let newest = existing.iter().filter(|k| k.retired_at.is_none()).map(|k| k.activates_at).max();
            if pending || newest.is_some_and(|n| n > cutoff) {
                return Ok(false);
            }
        }
        signing_keys::Entity::update_many()
            .col_expr(signing_keys::Column::RetiredAt, Expr::value(key.activates_at))
            .filter(signing_keys::Column::RetiredAt.is_null())
            .exec(&txn)
            .await?;
        signing_keys::Entity::delete_many()
            .filter(signing_keys::Column::RetiredAt.lt(now - PUBLISH_AFTER_RETIRE_SECS))
            .exec(&txn)
            .await?;
        signing_keys::Entity::insert(key_row(key)).exec_without_returning(&txn).await?;
        self.commit_change(txn, ChangeKind::Keys, "", now_ms, audit).await?;
        Ok(true)
    }
}
