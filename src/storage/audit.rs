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

fn statement(backend: DbBackend, rows: usize) -> &'static str {
    const TIERS: usize = MAX_GROUP.trailing_zeros() as usize + 1;
    static POSTGRES: OnceLock<[String; TIERS]> = OnceLock::new();
    static SQLITE: OnceLock<[String; TIERS]> = OnceLock::new();
    let cell = if backend == DbBackend::Postgres { &POSTGRES } else { &SQLITE };
    let all = cell.get_or_init(|| std::array::from_fn(|tier| insert_sql(backend, 1 << tier)));
    all[rows.trailing_zeros() as usize].as_str()
}

fn push_values(values: &mut Vec<Value>, r: &AuditRecord) {
    values.extend([
        Value::BigInt(Some(r.at_ms)),
        r.action.as_str().into(),
        r.actor.as_str().into(),
        r.client_id.as_deref().into(),
        r.subject.as_deref().into(),
        r.scopes.as_deref().into(),
        r.jti.as_deref().into(),
        r.grant_id.as_deref().into(),
        r.outcome.as_str().into(),
        r.detail.as_deref().into(),
    ]);
}

impl Store {
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
