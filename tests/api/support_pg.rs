//! A private PostgreSQL cluster for tests that stop and restart the database: its own data
//! directory, its own loopback port, started and stopped with `pg_ctl` as the `postgres` user.
//! The machine's shared PostgreSQL (port 5432) is never touched. Dropping the guard stops the
//! cluster (immediate mode) and deletes its files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct PrivatePg {
    pub port: u16,
    bin: PathBuf,
    root: tempfile::TempDir,
    running: AtomicBool,
}

/// The newest PostgreSQL under /usr/lib/postgresql.
fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version with bin/pg_ctl").1
}

/// A port nobody listens on right now (bind to 0, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("addr").port()
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("id postgres");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id of the postgres user")
    };
    (id("-u"), id("-g"))
}

fn run_as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .arg("-u")
        .arg("postgres")
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser -u postgres")
}

impl PrivatePg {
    /// initdb in a fresh directory, then start on a free loopback port.
    pub fn start() -> Self {
        let bin = pg_bin_dir();
        let root = tempfile::Builder::new().prefix("tessera-pg-").tempdir().expect("tempdir");
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).expect("chown cluster directory");
        let data = root.path().join("data");
        let out = run_as_postgres(
            &bin.join("initdb"),
            &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        );
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // Another process may take the port between probing and binding: retry on a new one.
        for attempt in 0..5 {
            let port = free_port();
            if pg_ctl_start(&bin, root.path(), port) {
                return Self { port, bin, root, running: AtomicBool::new(true) };
            }
            eprintln!("private PostgreSQL did not start on port {port} (attempt {attempt}); retrying");
        }
        panic!("private PostgreSQL did not start in 5 attempts");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn try_start(&self) -> bool {
        let ok = pg_ctl_start(&self.bin, self.root.path(), self.port);
        self.running.store(ok, Ordering::SeqCst);
        ok
    }

    /// Starts it again on the same port (after `stop`).
    pub fn restart(&self) {
        for attempt in 0..20 {
            if self.try_start() {
                return;
            }
            eprintln!("private PostgreSQL restart attempt {attempt} failed; retrying");
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("private PostgreSQL did not restart; log:\n{}", self.log());
    }

    /// `pg_ctl stop -m fast|immediate`, waiting until it is down.
    pub fn stop(&self, mode: &str) {
        let out = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", self.data().to_str().unwrap(), "-m", mode, "-w", "-t", "30", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        self.running.store(false, Ordering::SeqCst);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        // Unconditionally: a start that reported failure may still have left a server behind.
        let _ = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "-t", "30", "stop"],
        );
        self.running.store(false, Ordering::SeqCst);
    }
}

/// `pg_ctl start` of the cluster in `root/data`, socket in `root`, log in `root/server.log`.
fn pg_ctl_start(bin: &Path, root: &Path, port: u16) -> bool {
    let opts = format!("-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200", root.display());
    let data = root.join("data");
    let log = root.join("server.log");
    let out = run_as_postgres(
        &bin.join("pg_ctl"),
        &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "30", "start"],
    );
    if !out.status.success() {
        eprintln!("pg_ctl start: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}
