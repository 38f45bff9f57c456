//! Settings that need resolving: the database URL (default: a SQLite file in the working
//! directory) and the key-encryption key (required on PostgreSQL; generated beside the SQLite
//! file otherwise, with a loud warning).
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::crypto::Kek;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://tessera.db?mode=rwc";

/// A value given directly, or read from a file (Kubernetes Secret mounts), trimmed.
pub fn value_or_file(value: Option<String>, file: Option<&Path>, what: &str) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("{what}: give the value or the file, not both"),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(f)) => Ok(Some(
            std::fs::read_to_string(f).with_context(|| format!("{what}: read {}", f.display()))?.trim().to_owned(),
        )),
        (None, None) => Ok(None),
    }
}

/// The file behind a SQLite URL, if it names one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || path.starts_with(":memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

pub fn resolve_kek(value: Option<String>, database_url: &str) -> anyhow::Result<Kek> {
    if let Some(v) = value {
        return Kek::from_base64(&v).context("TESSERA_KEY_ENCRYPTION_KEY");
    }
    if !database_url.starts_with("sqlite:") {
        bail!(
            "no key-encryption key: set TESSERA_KEY_ENCRYPTION_KEY (32 random bytes, base64; e.g. `head -c 32 /dev/urandom | base64`) \
             or TESSERA_KEY_ENCRYPTION_KEY_FILE. It is required with PostgreSQL."
        );
    }
    let Some(db_path) = sqlite_path(database_url) else {
        tracing::warn!("no key-encryption key and an in-memory database: using a throwaway key");
        return Ok(Kek::generate());
    };
    let mut kek_path = db_path.into_os_string();
    kek_path.push(".kek");
    let kek_path = PathBuf::from(kek_path);
    if kek_path.exists() {
        let text = std::fs::read_to_string(&kek_path).with_context(|| format!("read {}", kek_path.display()))?;
        tracing::warn!(
            path = %kek_path.display(),
            "using the key-encryption key stored beside the SQLite database; set TESSERA_KEY_ENCRYPTION_KEY in production"
        );
        return Kek::from_base64(&text);
    }
    let kek = Kek::generate();
    write_private_file(&kek_path, kek.to_base64().as_bytes())?;
    tracing::warn!(
        path = %kek_path.display(),
        "NO KEY-ENCRYPTION KEY CONFIGURED: generated one and stored it beside the SQLite database. \
         Anyone who can read both files can forge tokens. Set TESSERA_KEY_ENCRYPTION_KEY in production."
    );
    Ok(kek)
}

fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://tessera.db?mode=rwc"), Some(PathBuf::from("tessera.db")));
        assert_eq!(sqlite_path("sqlite:///tmp/x.db"), Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn kek_required_on_postgres() {
        assert!(resolve_kek(None, "postgres://postgres@127.0.0.1/x").is_err());
    }

    #[test]
    fn kek_generated_beside_sqlite_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let a = resolve_kek(None, &url).unwrap();
        let b = resolve_kek(None, &url).unwrap();
        assert_eq!(*a.to_base64(), *b.to_base64());
    }
}
