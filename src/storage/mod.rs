//! Storage: sea-orm over SQLite (embedded default) or PostgreSQL (production). Every mutation
//! writes a row to `change_log` in the same transaction, which is how every running replica
//! (and the CLI's changes) reach every other replica's in-memory state, and its audit record.
pub mod audit;
pub mod changes;
pub mod clients;
pub mod entities;
pub mod grants;
pub mod keys;
pub mod revocations;
#[allow(unsafe_code)]
mod wal_buffer;

use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend};
use tessera_migrations::{Migrator, MigratorTrait};

pub use changes::{Change, ChangeKind};

/// The NOTIFY channel PostgreSQL writers signal after committing a change.
pub const NOTIFY_CHANNEL: &str = "tessera_changes";

/// How long an SQLite connection waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// PostgreSQL: one connection of its own for the audit trail's group commits, opened lazily
    /// by the audit writer on its own thread and runtime. A PostgreSQL connection's socket
    /// belongs to the runtime that opened it, so the writer's runtime drives it and is woken
    /// without waiting in the server's queues.
    audit_db: Option<DatabaseConnection>,
    /// An SQLite file: the audit writer opens a connection of its own to it (see
    /// [`audit::GroupWriter`]). SQLite drops a connection's page cache whenever another
    /// connection has written since its last transaction, so audit groups spread over the pool
    /// re-read the B-tree pages they append to (about 17 reads per group); on one connection
    /// those pages stay cached. In-memory SQLite has no file (`sqlite_path` is None): it exists
    /// once per pool, so its audit records go through the pool.
    sqlite_file: Option<std::path::PathBuf>,
}

impl Store {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut opts = ConnectOptions::new(url.to_owned());
        // Statements carry hashes and token ids as bind values: never log them.
        opts.sqlx_logging(false).connect_timeout(Duration::from_secs(3)).acquire_timeout(Duration::from_secs(3));
        if url.starts_with("sqlite:") {
            // A local file has no stale connections to weed out: skip the ping sqlx would send
            // (one more round trip to SQLite's thread) before every statement or transaction.
            opts.max_connections(8).min_connections(1).test_before_acquire(false).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        } else {
            opts.max_connections(16).min_connections(1);
        }
        let sqlite_file = crate::config::sqlite_path(url);
        let audit_opts = (!url.starts_with("sqlite:")).then(|| {
            let mut o = opts.clone();
            o.max_connections(1).min_connections(0).connect_lazy(true);
            o
        });
        let context = || format!("connect to {}", redact_url(url));
        let db = Database::connect(opts).await.with_context(context)?;
        let audit_db = match audit_opts {
            Some(o) => Some(Database::connect(o).await.with_context(context)?),
            None => None,
        };
        Ok(Self { db, audit_db, sqlite_file })
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Where sea-orm writes audit groups: PostgreSQL's audit connection, else the pool.
    pub(crate) fn audit_db(&self) -> &DatabaseConnection {
        self.audit_db.as_ref().unwrap_or(&self.db)
    }

    /// Whether audit groups have a PostgreSQL connection of their own, used by nothing else.
    pub(crate) fn has_audit_connection(&self) -> bool {
        self.audit_db.is_some()
    }

    /// The SQLite file behind the store, if it is one.
    pub(crate) fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.sqlite_file.as_deref()
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub fn is_postgres(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        Migrator::up(&self.db, None).await.context("apply migrations")
    }

    /// Pending migration names (empty = up to date).
    pub async fn pending_migrations(&self) -> anyhow::Result<Vec<String>> {
        Ok(Migrator::get_pending_migrations(&self.db).await?.iter().map(|m| m.name().to_owned()).collect())
    }

    /// Pool connections (in use, idle).
    pub fn pool_usage(&self) -> (u32, u32) {
        match self.backend() {
            DbBackend::Postgres => {
                let p = self.db.get_postgres_connection_pool();
                let idle = u32::try_from(p.num_idle()).unwrap_or(0);
                (p.size().saturating_sub(idle), idle)
            }
            _ => {
                let p = self.db.get_sqlite_connection_pool();
                let idle = u32::try_from(p.num_idle()).unwrap_or(0);
                (p.size().saturating_sub(idle), idle)
            }
        }
    }

    /// Cheap liveness check of the database.
    pub async fn ping(&self) -> Result<(), sea_orm::DbErr> {
        self.db.ping().await
    }

    /// Ends a mutation: its change-feed row, its audit record, the replicas' wake-up and the
    /// commit. The audit record shares the change's transaction, so no change stands unaudited
    /// and no record describes a change that rolled back.
    async fn commit_change(
        &self,
        txn: DatabaseTransaction,
        kind: changes::ChangeKind,
        subject: &str,
        now_ms: i64,
        audit: Option<&audit::AuditRecord>,
    ) -> Result<(), sea_orm::DbErr> {
        changes::record(&txn, kind, subject, now_ms).await?;
        if let Some(r) = audit {
            self.insert_group(&txn, std::slice::from_ref(r)).await?;
        }
        self.notify(&txn).await?;
        txn.commit().await
    }

    /// Wake other replicas (PostgreSQL only). Inside a transaction, NOTIFY is delivered at commit.
    async fn notify(&self, txn: &DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
        if self.is_postgres() {
            txn.execute_unprepared(&format!("NOTIFY {NOTIFY_CHANNEL}")).await?;
        }
        Ok(())
    }
}

/// A database URL with any password removed, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact_url("sqlite://x.db?mode=rwc"), "sqlite://x.db?mode=rwc");
    }
}
