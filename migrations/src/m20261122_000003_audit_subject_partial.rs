//! The audit trail's subject index covers only the records that have a subject (tokens for users,
//! grant changes). Client-credentials records, most of the trail, have none and no longer pay for
//! an index entry at every group commit. Queries by subject (`subject = ?` implies NOT NULL) use
//! the partial index on both engines.
//!
//! The statements use a new name and IF [NOT] EXISTS on purpose: the migration runs over a pool,
//! and an SQLite connection that has not yet seen another connection's schema change decides
//! "no such index" / "already exists" from its stale copy while parsing. With IF [NOT] EXISTS
//! the check happens when the statement runs, after SQLite has noticed the change and reloaded.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_audit_subject_present ON audit_log (subject) WHERE subject IS NOT NULL",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_audit_subject").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX IF NOT EXISTS idx_audit_subject ON audit_log (subject)").await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_audit_subject_present").await?;
        Ok(())
    }
}
