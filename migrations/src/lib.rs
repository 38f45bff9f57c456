//! Tessera's schema. The same migrations serve SQLite (the embedded default) and PostgreSQL.
//! Times are stored as integer unix seconds or milliseconds (the column name says which), so
//! both engines compare them the same way.
pub use sea_orm_migration::prelude::*;

mod m20261121_000001_core;
mod m20261121_000002_act_for_users;
mod m20261122_000003_audit_subject_partial;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_core::Migration),
            Box::new(m20261121_000002_act_for_users::Migration),
            Box::new(m20261122_000003_audit_subject_partial::Migration),
        ]
    }
}
