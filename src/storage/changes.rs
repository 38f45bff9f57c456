//! The change feed: one row per committed mutation, read by every replica in id order.
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use super::Store;
use super::entities::change_log;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A client, its secrets or its status changed: reload it.
    Client,
    /// A token was revoked: add it to the revocation set.
    Revocation,
    /// The signing keys changed: reload them.
    Keys,
    /// A grant was created or revoked: reload it.
    Grant,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Client => "client",
            ChangeKind::Revocation => "revocation",
            ChangeKind::Keys => "keys",
            ChangeKind::Grant => "grant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client" => Some(ChangeKind::Client),
            "revocation" => Some(ChangeKind::Revocation),
            "keys" => Some(ChangeKind::Keys),
            "grant" => Some(ChangeKind::Grant),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Change {
    pub id: i64,
    pub kind: Option<ChangeKind>,
    pub subject: String,
}

impl From<change_log::Model> for Change {
    fn from(m: change_log::Model) -> Self {
        Change { id: m.id, kind: ChangeKind::parse(&m.kind), subject: m.subject }
    }
}

/// The change-feed row of a mutation (written by [`Store::commit_change`]).
pub(super) async fn record<C: ConnectionTrait>(
    conn: &C,
    kind: ChangeKind,
    subject: &str,
    now_ms: i64,
) -> Result<(), sea_orm::DbErr> {
    let row = change_log::ActiveModel {
        kind: Set(kind.as_str().to_owned()),
        subject: Set(subject.to_owned()),
        created_at_ms: Set(now_ms),
        ..Default::default()
    };
    change_log::Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

impl Store {
    /// Changes with id > `after`, oldest first.
    pub async fn changes_after(&self, after: i64, limit: u64) -> Result<Vec<Change>, sea_orm::DbErr> {
        Ok(change_log::Entity::find()
            .filter(change_log::Column::Id.gt(after))
            .order_by_asc(change_log::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(Change::from)
            .collect())
    }

    /// The given change ids, where they exist (used to pick up late commits into gaps).
    pub async fn changes_by_id(&self, ids: &[i64]) -> Result<Vec<Change>, sea_orm::DbErr> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(change_log::Entity::find()
            .filter(change_log::Column::Id.is_in(ids.iter().copied()))
            .order_by_asc(change_log::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(Change::from)
            .collect())
    }

    pub async fn latest_change_id(&self) -> Result<i64, sea_orm::DbErr> {
        Ok(change_log::Entity::find().order_by_desc(change_log::Column::Id).one(self.db()).await?.map_or(0, |m| m.id))
    }

    /// Deletes feed rows older than `before_ms`; replicas further behind than that resync fully.
    pub async fn prune_changes(&self, before_ms: i64) -> Result<u64, sea_orm::DbErr> {
        Ok(change_log::Entity::delete_many()
            .filter(change_log::Column::CreatedAtMs.lt(before_ms))
            .exec(self.db())
            .await?
            .rows_affected)
    }

    pub async fn oldest_change_id(&self) -> Result<Option<i64>, sea_orm::DbErr> {
        Ok(change_log::Entity::find().order_by_asc(change_log::Column::Id).one(self.db()).await?.map(|m| m.id))
    }
}
