//! Act-as policy per client, grants (platform users who enabled an integration) and the audit trail.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Clients {
    Table,
    ActAs,
    UserTokenTtlSeconds,
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    GrantId,
    ClientId,
    Subject,
    Account,
    Scopes,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    AtMs,
    Action,
    Actor,
    ClientId,
    Subject,
    Scopes,
    Jti,
    GrantId,
    Outcome,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Clients::Table)
                    .add_column(ColumnDef::new(Clients::ActAs).string_len(16).not_null().default("none"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Clients::Table)
                    .add_column(ColumnDef::new(Clients::UserTokenTtlSeconds).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Grants::Table)
                    .col(ColumnDef::new(Grants::GrantId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Grants::ClientId).string_len(64).not_null())
                    .col(ColumnDef::new(Grants::Subject).string_len(255).not_null())
                    .col(ColumnDef::new(Grants::Account).string_len(255).null())
                    .col(ColumnDef::new(Grants::Scopes).text().not_null())
                    .col(ColumnDef::new(Grants::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Grants::ExpiresAt).big_integer().null())
                    .col(ColumnDef::new(Grants::RevokedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_grants_client_subject")
                    .table(Grants::Table)
                    .col(Grants::ClientId)
                    .col(Grants::Subject)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_grants_subject").table(Grants::Table).col(Grants::Subject).to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(ColumnDef::new(AuditLog::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(AuditLog::AtMs).big_integer().not_null())
                    .col(ColumnDef::new(AuditLog::Action).string_len(64).not_null())
                    .col(ColumnDef::new(AuditLog::Actor).string_len(128).not_null())
                    .col(ColumnDef::new(AuditLog::ClientId).string_len(64).null())
                    .col(ColumnDef::new(AuditLog::Subject).string_len(255).null())
                    .col(ColumnDef::new(AuditLog::Scopes).text().null())
                    .col(ColumnDef::new(AuditLog::Jti).string_len(64).null())
                    .col(ColumnDef::new(AuditLog::GrantId).string_len(64).null())
                    .col(ColumnDef::new(AuditLog::Outcome).string_len(64).not_null())
                    .col(ColumnDef::new(AuditLog::Detail).text().null())
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_audit_at", AuditLog::AtMs),
            ("idx_audit_client", AuditLog::ClientId),
            ("idx_audit_subject", AuditLog::Subject),
        ] {
            manager.create_index(Index::create().name(name).table(AuditLog::Table).col(col).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AuditLog::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Grants::Table).to_owned()).await?;
        for col in [Clients::UserTokenTtlSeconds, Clients::ActAs] {
            manager.alter_table(Table::alter().table(Clients::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
