//! Clients and their secrets, signing keys, revoked tokens and the change feed.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Clients {
    Table,
    ClientId,
    Name,
    Tenant,
    Scopes,
    Audiences,
    Capabilities,
    AccessTokenTtlSeconds,
    Disabled,
    TokensRevokedBeforeMs,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ClientSecrets {
    Table,
    SecretId,
    ClientId,
    Hash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    Alg,
    PublicJwk,
    PrivateKeyEnc,
    CreatedAt,
    ActivatesAt,
    RetiredAt,
}

#[derive(DeriveIden)]
enum RevokedTokens {
    Table,
    Jti,
    ClientId,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum ChangeLog {
    Table,
    Id,
    Kind,
    Subject,
    CreatedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Clients::Table)
                    .col(ColumnDef::new(Clients::ClientId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Clients::Name).string_len(200).not_null())
                    .col(ColumnDef::new(Clients::Tenant).string_len(128).not_null())
                    .col(ColumnDef::new(Clients::Scopes).text().not_null())
                    .col(ColumnDef::new(Clients::Audiences).text().not_null())
                    .col(ColumnDef::new(Clients::Capabilities).text().not_null())
                    .col(ColumnDef::new(Clients::AccessTokenTtlSeconds).big_integer().not_null())
                    .col(ColumnDef::new(Clients::Disabled).boolean().not_null().default(false))
                    .col(ColumnDef::new(Clients::TokensRevokedBeforeMs).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Clients::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Clients::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_clients_tenant").table(Clients::Table).col(Clients::Tenant).to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClientSecrets::Table)
                    .col(ColumnDef::new(ClientSecrets::SecretId).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(ClientSecrets::ClientId).string_len(64).not_null())
                    .col(ColumnDef::new(ClientSecrets::Hash).text().not_null())
                    .col(ColumnDef::new(ClientSecrets::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_client_secrets_client")
                            .from(ClientSecrets::Table, ClientSecrets::ClientId)
                            .to(Clients::Table, Clients::ClientId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_client_secrets_client")
                    .table(ClientSecrets::Table)
                    .col(ClientSecrets::ClientId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .col(ColumnDef::new(SigningKeys::Kid).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(SigningKeys::Alg).string_len(16).not_null())
                    .col(ColumnDef::new(SigningKeys::PublicJwk).text().not_null())
                    .col(ColumnDef::new(SigningKeys::PrivateKeyEnc).text().not_null())
                    .col(ColumnDef::new(SigningKeys::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(SigningKeys::ActivatesAt).big_integer().not_null())
                    .col(ColumnDef::new(SigningKeys::RetiredAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RevokedTokens::Table)
                    .col(ColumnDef::new(RevokedTokens::Jti).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(RevokedTokens::ClientId).string_len(64).not_null())
                    .col(ColumnDef::new(RevokedTokens::ExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(RevokedTokens::RevokedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_revoked_tokens_expires")
                    .table(RevokedTokens::Table)
                    .col(RevokedTokens::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChangeLog::Table)
                    .col(ColumnDef::new(ChangeLog::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(ChangeLog::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(ChangeLog::Subject).string_len(128).not_null())
                    .col(ColumnDef::new(ChangeLog::CreatedAtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_change_log_created")
                    .table(ChangeLog::Table)
                    .col(ChangeLog::CreatedAtMs)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ChangeLog::Table.into_iden(),
            RevokedTokens::Table.into_iden(),
            SigningKeys::Table.into_iden(),
            ClientSecrets::Table.into_iden(),
            Clients::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
