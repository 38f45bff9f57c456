//! An SQLite VFS for the audit writer's connection that hands each transaction's WAL frames to
//! the kernel in one write instead of two per page.
//!
//! SQLite writes a WAL frame as two `pwrite`s, its 24-byte header and then the page, so a group
//! commit of about 20 audit records (8 to 11 pages) made 16 to 22 system calls before its
//! `fdatasync`, each taking the file's lock and walking the page cache again: `pwrite` was 4.2%
//! of the server's CPU under issuance, and is 2.1% with this VFS (`perf record`, 6 s at 64
//! connections). The VFS is SQLite's own (`unix`) except for WAL files, whose writes it gathers
//! while they follow one another and passes on in one `pwrite` when anything else touches the
//! file (a sync, a read, a truncation, a size query, a file control, closing it, a write
//! somewhere else) or when the next write would not fit in one (128 KiB).
//!
//! That is safe only while SQLite syncs the WAL at every commit (`synchronous=FULL`, which
//! [`open`] sets and checks): a commit becomes visible to other connections in the WAL index after
//! that sync, so nothing can read a frame that is still in the buffer. Main database files, and
//! every file of a connection opened without this VFS, are untouched.
//!
//! The only `unsafe` code in the crate (`#![deny(unsafe_code)]` elsewhere): a VFS is a C interface.
//! What it relies on: SQLite gives each file `szOsFile` bytes, which it frees after `xClose`; a WAL
//! file's [`WalFile`] is written in `x_open` before SQLite can see our methods (a failed open
//! leaves `pMethods` null, so SQLite calls nothing on it); the underlying file lives in the same
//! allocation at [`REAL_OFFSET`]; and one connection's files are used by one thread at a time (the
//! audit writer's, opened with `SQLITE_OPEN_NO_MUTEX`).
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name the VFS is registered under.
const NAME: &CStr = c"tessera-wal-buffer";
/// The most one write may carry: SQLite's `unix` VFS keeps only the low 17 bits of a write's
/// length (`seekAndWriteFd`). 31 frames of 4 KiB pages; a usual group is 8 to 12.
const MAX_WRITE: usize = 0x1ffff;

/// A WAL file: SQLite's own file (`real`, in the same allocation after this header) and the
/// writes not yet passed on.
#[repr(C)]
struct WalFile {
    /// SQLite's view: must come first.
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    pending: Vec<u8>,
    /// The file offset of `pending[0]`.
    at: i64,
}

/// Where the underlying VFS's file starts in each file allocation.
const REAL_OFFSET: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

/// Opens `path` read-write through the buffering VFS with `synchronous=FULL`. Falls back to
/// SQLite's default VFS if this one cannot be registered (a default VFS other than `unix`).
pub fn open(path: &Path, flags: rusqlite::OpenFlags) -> rusqlite::Result<rusqlite::Connection> {
    let conn = match register() {
        Ok(()) => rusqlite::Connection::open_with_flags_and_vfs(path, flags, NAME)?,
        Err(reason) => {
            tracing::debug!(reason, "audit connection without the WAL write buffer");
            rusqlite::Connection::open_with_flags(path, flags)?
        }
    };
    conn.pragma_update(None, "synchronous", "FULL")?;
    // FULL is what makes buffering safe; refuse to go on without it.
    let level: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    if level < 2 {
        let reason = format!("synchronous is {level}, not FULL");
        return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_MISUSE), Some(reason)));
    }
    Ok(conn)
}

/// Registers the VFS once (not as the default).
fn register() -> Result<(), &'static str> {
    static REGISTERED: OnceLock<Result<(), &'static str>> = OnceLock::new();
    *REGISTERED.get_or_init(|| unsafe {
        let base = ffi::sqlite3_vfs_find(std::ptr::null());
        if base.is_null() {
            return Err("no default VFS");
        }
        if CStr::from_ptr((*base).zName) != c"unix" || (*base).xOpen.is_none() {
            return Err("the default VFS is not unix");
        }
        let size = REAL_OFFSET + usize::try_from((*base).szOsFile).map_err(|_| "bad szOsFile")?;
        let vfs = Box::new(ffi::sqlite3_vfs {
            szOsFile: c_int::try_from(size).map_err(|_| "bad szOsFile")?,
            pNext: std::ptr::null_mut(),
            zName: NAME.as_ptr(),
            pAppData: base.cast(),
            xOpen: Some(x_open),
            // Everything else is the default VFS's own; none of it reads `pAppData`.
            ..*base
        });
        // Registered for the life of the process: SQLite keeps the pointer.
        let vfs = Box::into_raw(vfs);
        if ffi::sqlite3_vfs_register(vfs, 0) != ffi::SQLITE_OK {
            drop(Box::from_raw(vfs));
            return Err("sqlite3_vfs_register failed");
        }
        Ok(())
    })
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // No shared memory or memory mapping: SQLite asks those of the main database file only.
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    unsafe {
        let base: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        let Some(open) = (*base).xOpen else { return ffi::SQLITE_CANTOPEN };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Any other file is the underlying VFS's, in place.
            return open(base, name, file, flags, out_flags);
        }
        let real: *mut ffi::sqlite3_file = file.cast::<u8>().add(REAL_OFFSET).cast();
        let rc = open(base, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*real).pMethods.is_null() {
            (*file).pMethods = std::ptr::null();
            return if rc == ffi::SQLITE_OK { ffi::SQLITE_CANTOPEN } else { rc };
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file { pMethods: &WAL_METHODS },
            real,
            pending: Vec::new(),
            at: 0,
        });
        ffi::SQLITE_OK
    }
}

/// The WAL file behind SQLite's pointer, and its underlying file's methods.
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (&'a mut WalFile, &'a ffi::sqlite3_io_methods) {
    unsafe {
        let wal = &mut *file.cast::<WalFile>();
        let methods = &*(*wal.real).pMethods;
        (wal, methods)
    }
}

impl WalFile {
    /// Passes the gathered writes on. They are gone either way: after an error SQLite abandons
    /// the transaction, whose frames the WAL index never points at.
    unsafe fn flush(&mut self, methods: &ffi::sqlite3_io_methods) -> c_int {
        if self.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = methods.xWrite else { return ffi::SQLITE_IOERR_WRITE };
        let Ok(len) = c_int::try_from(self.pending.len()) else { return ffi::SQLITE_IOERR_WRITE };
        let rc = unsafe { write(self.real, self.pending.as_ptr().cast(), len, self.at) };
        self.pending.clear();
        rc
    }
}

/// Flushes, then calls the underlying method (`$method` on `real`, with `$args`).
macro_rules! after_flush {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let (wal, methods) = unsafe { parts($file) };
        let rc = unsafe { wal.flush(methods) };
        match methods.$method {
            _ if rc != ffi::SQLITE_OK => rc,
            Some(f) => unsafe { f(wal.real $(, $arg)*) },
            None => $missing,
        }
    }};
}

/// Calls the underlying method; nothing pending matters to it.
macro_rules! forward {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let (wal, methods) = unsafe { parts($file) };
        match methods.$method {
            Some(f) => unsafe { f(wal.real $(, $arg)*) },
            None => $missing,
        }
    }};
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let (wal, methods) = unsafe { parts(file) };
    // The underlying file is closed whatever the flush returns: SQLite forgets this one either
    // way, and an early return would leak its descriptor and locks.
    let flushed = unsafe { wal.flush(methods) };
    let closed = methods.xClose.map_or(ffi::SQLITE_OK, |close| unsafe { close(wal.real) });
    // SQLite frees the allocation; the buffer is ours to drop.
    unsafe { std::ptr::drop_in_place(&mut wal.pending) };
    if flushed != ffi::SQLITE_OK { flushed } else { closed }
}

unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    after_flush!(file, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset)
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let (wal, methods) = unsafe { parts(file) };
    let Ok(len) = usize::try_from(amount) else { return ffi::SQLITE_IOERR_WRITE };
    let end = wal.at.saturating_add(wal.pending.len() as i64);
    if !wal.pending.is_empty() && (offset != end || wal.pending.len() + len > MAX_WRITE) {
        let rc = unsafe { wal.flush(methods) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if len > MAX_WRITE {
        // Larger than any page SQLite writes; passed on as it comes.
        return match methods.xWrite {
            Some(write) => unsafe { write(wal.real, data, amount, offset) },
            None => ffi::SQLITE_IOERR_WRITE,
        };
    }
    if wal.pending.is_empty() {
        wal.at = offset;
    }
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    wal.pending.extend_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    after_flush!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    after_flush!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    after_flush!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xLock, ffi::SQLITE_OK, level)
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xUnlock, ffi::SQLITE_OK, level)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward!(file, xCheckReservedLock, ffi::SQLITE_OK, out)
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // Some file controls do I/O (size hints, chunk sizes); they see the file as SQLite wrote it.
    after_flush!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xSectorSize, 4096)
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xDeviceCharacteristics, 0)
}
