//! Signing keys at rest (private parts sealed with the key-encryption key).
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QueryOrder, Set, TransactionTrait};

use super::Store;
use super::changes::{ChangeKind, record};
use super::entities::signing_keys;

pub use signing_keys::Model as StoredKey;

impl Store {
    pub async fn load_keys(&self) -> Result<Vec<StoredKey>, DbErr> {
        signing_keys::Entity::find().order_by_asc(signing_keys::Column::ActivatesAt).all(self.db()).await
    }

    /// Inserts `key` unless an unretired key already exists; returns whether it was inserted.
    /// Replicas starting together on one PostgreSQL serialise on a table lock, so exactly one
    /// first key is made.
    pub async fn insert_first_key(&self, key: StoredKey, now_ms: i64) -> Result<bool, DbErr> {
        let txn = self.db().begin().await?;
        if self.is_postgres() {
            txn.execute_unprepared("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").await?;
        }
        let existing = signing_keys::Entity::find().all(&txn).await?;
        if existing.iter().any(|k| k.retired_at.is_none()) {
            return Ok(false);
        }
        let row = signing_keys::ActiveModel {
            kid: Set(key.kid),
            alg: Set(key.alg),
            public_jwk: Set(key.public_jwk),
            private_key_enc: Set(key.private_key_enc),
            created_at: Set(key.created_at),
            activates_at: Set(key.activates_at),
            retired_at: Set(key.retired_at),
        };
        signing_keys::Entity::insert(row).exec_without_returning(&txn).await?;
        record(&txn, ChangeKind::Keys, "", now_ms).await?;
        self.notify(&txn).await?;
        txn.commit().await?;
        Ok(true)
    }
}
