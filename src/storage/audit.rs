//! The audit trail: who did what, for whom, with which token id (never the token or a secret).
use std::fmt::Write as _;
use std::sync::OnceLock;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait, Value,
};

use super::Store;
use super::entities::audit_log;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `client_credentials`, `token_exchange`, `revoke`, `client.create`, `grant.revoke`, …
    pub action: String,
    /// Who asked: a client id, `cli` for the command line, or `tessera` for the server's own
    /// scheduled work (automatic key rotation).
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

/// The columns written, in order.
const COLUMNS: [&str; 10] =
    ["at_ms", "action", "actor", "client_id", "subject", "scopes", "jti", "grant_id", "outcome", "detail"];
/// The largest group one statement writes (the audit writer never hands over more).
pub const MAX_GROUP: usize = 512;

/// One statement writes a whole group, and a single INSERT is its own transaction: a group costs
/// one round trip to the database and one commit (one fsync), whatever its size. The statement
/// has room for a power of two of rows; the rows a group does not fill are NULL and filtered out,
/// so the database only ever sees ten statements and each stays prepared on its connection.
/// (Unpacking a JSON array parameter instead cost SQLite more CPU than the inserts themselves.)
fn insert_sql(backend: DbBackend, rows: usize) -> String {
    let postgres = backend == DbBackend::Postgres;
    let mut sql = format!("INSERT INTO audit_log ({}) SELECT * FROM (VALUES ", COLUMNS.join(", "));
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..COLUMNS.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            if postgres {
                let _ = write!(sql, "${}", r * COLUMNS.len() + c + 1);
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    if postgres {
        let _ = write!(sql, ") AS v({}) WHERE v.at_ms IS NOT NULL", COLUMNS.join(", "));
    } else {
        // SQLite names the columns of a VALUES list column1, column2, …
        sql.push_str(") WHERE column1 IS NOT NULL");
    }
    sql
}

/// Statement room (rows) for a group of `n`: the next power of two.
fn room(n: usize) -> usize {
    n.next_power_of_two()
}

/// How many statement sizes there are (1, 2, 4, … [`MAX_GROUP`] rows).
const TIERS: usize = MAX_GROUP.trailing_zeros() as usize + 1;

fn statement(backend: DbBackend, rows: usize) -> &'static str {
    static POSTGRES: OnceLock<[String; TIERS]> = OnceLock::new();
    static SQLITE: OnceLock<[String; TIERS]> = OnceLock::new();
    let cell = if backend == DbBackend::Postgres { &POSTGRES } else { &SQLITE };
    let all = cell.get_or_init(|| std::array::from_fn(|tier| insert_sql(backend, 1 << tier)));
    all[rows.trailing_zeros() as usize].as_str()
}

/// A record's values in [`COLUMNS`] order: `at_ms`, then the nine text columns. Both writers
/// (sea-orm's values and the SQLite file's bindings) take them from here, so they cannot drift.
fn row(r: &AuditRecord) -> (i64, [Option<&str>; 9]) {
    let texts = [
        Some(r.action.as_str()),
        Some(r.actor.as_str()),
        r.client_id.as_deref(),
        r.subject.as_deref(),
        r.scopes.as_deref(),
        r.jti.as_deref(),
        r.grant_id.as_deref(),
        Some(r.outcome.as_str()),
        r.detail.as_deref(),
    ];
    (r.at_ms, texts)
}

fn push_values(values: &mut Vec<Value>, r: &AuditRecord) {
    let (at_ms, texts) = row(r);
    values.push(Value::BigInt(Some(at_ms)));
    values.extend(texts.map(Value::from));
}

/// Where the audit writer's groups go: an SQLite file, through a connection of the writer's own
/// that it drives directly on its thread, or the database behind sea-orm (PostgreSQL, in-memory
/// SQLite).
///
/// On an SQLite file, sqlx would run the statement on a worker thread of its own and hand the
/// result back through a channel: two more thread wake-ups per group, on a path that is one
/// statement and one fdatasync. Called directly, the writer's thread does the work itself, and
/// the group's statement skips the conversions from sea-orm's values to sqlx's arguments.
pub enum GroupWriter {
    Orm(Store),
    File(AuditFile),
}

impl GroupWriter {
    /// Whether the writer should have a thread of its own: it has a connection of its own (an
    /// SQLite file, or PostgreSQL's audit connection), which no other thread touches.
    pub fn wants_thread(&self) -> bool {
        match self {
            GroupWriter::File(_) => true,
            GroupWriter::Orm(store) => store.has_audit_connection(),
        }
    }

    /// Writes a group atomically (see [`Store::insert_audit`]).
    pub async fn insert(&mut self, records: &[AuditRecord]) -> Result<(), DbErr> {
        match self {
            GroupWriter::Orm(store) => store.insert_audit(records).await,
            // Blocking, on purpose: this runs on the writer's own thread, where nothing else waits.
            GroupWriter::File(file) => file.insert(records),
        }
    }
}

/// The audit writer's connection to an SQLite file, opened lazily (and again after an I/O
/// error) on the writer's thread, with the pool's settings: WAL, set on the file by the pool,
/// `synchronous=FULL`, the same busy timeout. It writes the WAL through
/// [`super::wal_buffer`]: one `pwrite` per group commit.
pub struct AuditFile {
    path: std::path::PathBuf,
    conn: Option<rusqlite::Connection>,
}

impl AuditFile {
    pub fn new(path: std::path::PathBuf) -> Self {
        Self { path, conn: None }
    }

    fn connection(&mut self) -> Result<&mut rusqlite::Connection, DbErr> {
        if self.conn.is_none() {
            use rusqlite::OpenFlags;
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = super::wal_buffer::open(&self.path, flags).map_err(sqlite_err)?;
            conn.busy_timeout(super::SQLITE_BUSY_TIMEOUT).map_err(sqlite_err)?;
            conn.set_prepared_statement_cache_capacity(TIERS);
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| DbErr::Custom("audit connection not open".into()))
    }

    /// One statement, its own transaction, for a group of up to [`MAX_GROUP`]; larger groups
    /// take one transaction of several.
    pub fn insert(&mut self, records: &[AuditRecord]) -> Result<(), DbErr> {
        let result = self.try_insert(records);
        if matches!(result, Err(DbErr::Conn(_))) {
            // Reopen next time: the file may have been replaced or the disk come back.
            self.conn = None;
        }
        result
    }

    fn try_insert(&mut self, records: &[AuditRecord]) -> Result<(), DbErr> {
        if records.is_empty() {
            return Ok(());
        }
        let conn = self.connection()?;
        if records.len() <= MAX_GROUP {
            return insert_file_group(conn, records);
        }
        let txn = conn.transaction().map_err(sqlite_err)?;
        for chunk in records.chunks(MAX_GROUP) {
            insert_file_group(&txn, chunk)?;
        }
        txn.commit().map_err(sqlite_err)
    }
}

fn insert_file_group(conn: &rusqlite::Connection, records: &[AuditRecord]) -> Result<(), DbErr> {
    let rows = room(records.len());
    let mut stmt = conn.prepare_cached(statement(DbBackend::Sqlite, rows)).map_err(sqlite_err)?;
    let mut index = 0;
    let mut bind = |value: &dyn rusqlite::ToSql| {
        index += 1;
        stmt.raw_bind_parameter(index, value).map_err(sqlite_err)
    };
    for r in records {
        let (at_ms, texts) = row(r);
        bind(&at_ms)?;
        for text in texts {
            bind(&text)?;
        }
    }
    for _ in records.len() * COLUMNS.len()..rows * COLUMNS.len() {
        bind(&rusqlite::types::Null)?;
    }
    stmt.raw_execute().map_err(sqlite_err)?;
    Ok(())
}

/// SQLite's errors as sea-orm's, so the writer treats both paths alike: a busy or locked
/// database, one that cannot be opened and an I/O error are the database being unreachable
/// (`Conn`, answered `temporarily_unavailable`); anything else is an execution error.
fn sqlite_err(e: rusqlite::Error) -> DbErr {
    use rusqlite::ErrorCode;
    let unreachable = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::NotADatabase
        )
    );
    let inner = sea_orm::RuntimeErr::Internal(format!("audit trail (SQLite): {e}"));
    if unreachable { DbErr::Conn(inner) } else { DbErr::Exec(inner) }
}

impl Store {
    /// The audit writer's target: the file itself for SQLite files, else sea-orm.
    pub fn group_writer(&self) -> GroupWriter {
        match self.sqlite_file() {
            Some(path) => GroupWriter::File(AuditFile::new(path.to_owned())),
            None => GroupWriter::Orm(self.clone()),
        }
    }

    /// Writes a group atomically with one statement (see [`insert_sql`]); larger groups than
    /// [`MAX_GROUP`] take one transaction of several.
    pub async fn insert_audit(&self, records: &[AuditRecord]) -> Result<(), DbErr> {
        if records.len() > MAX_GROUP {
            let txn = self.audit_db().begin().await?;
            for chunk in records.chunks(MAX_GROUP) {
                self.insert_group(&txn, chunk).await?;
            }
            return txn.commit().await;
        }
        self.insert_group(self.audit_db(), records).await
    }

    pub(super) async fn insert_group(&self, db: &impl ConnectionTrait, records: &[AuditRecord]) -> Result<(), DbErr> {
        if records.is_empty() {
            return Ok(());
        }
        let backend = self.backend();
        let rows = room(records.len());
        let mut values = Vec::with_capacity(rows * COLUMNS.len());
        for r in records {
            push_values(&mut values, r);
        }
        for _ in records.len()..rows {
            values.push(Value::BigInt(None));
            values.extend(std::iter::repeat_n(Value::String(None), COLUMNS.len() - 1));
        }
        db.execute_raw(Statement::from_sql_and_values(backend, statement(backend, rows), values)).await?;
        Ok(())
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
