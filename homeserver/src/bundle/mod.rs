//! Room export and import as ZIP bundles (contract section 7, `docs/export-format.md`).
//!
//! [`export`] writes a bundle to any `Write` while it reads the room page by page, so memory
//! stays flat whatever the room's size; the API streams it through a channel, the CLI writes it
//! to stdout. [`import`] checks a whole bundle before it writes anything, then replays it into
//! a new room in one transaction. Both run on a blocking thread (ZIP is synchronous I/O) and
//! reach the database through the runtime handle they are given.

pub mod cli;
pub mod export;
pub mod format;
pub mod import;
pub mod validate;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{ApiError, ApiResult};
use crate::signing::Keys;
use format::{OldVerifyKey, ServerInfo, VerifyKey};

/// How far a long export or import has come; the CLI shows it on a terminal.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub events: u64,
    pub bytes: u64,
}

/// This server's name and keys as a bundle lists them.
pub fn server_info(server_name: &str, keys: &Keys) -> ServerInfo {
    ServerInfo {
        server_name: server_name.to_string(),
        verify_keys: [(keys.current.key_id().to_string(), VerifyKey { key: keys.current.public_key_base64() })].into(),
        old_verify_keys: keys
            .old
            .iter()
            .map(|k| (k.key_id.clone(), OldVerifyKey { key: k.public_key.clone(), expired_ts: k.expired_ts }))
            .collect(),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A reader that yields at most `limit` bytes and fails if more are there, or if fewer are
/// (a ZIP entry must decompress to exactly its declared size).
pub struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Exact<R> {
    pub fn new(inner: R, size: u64) -> Self {
        Exact { inner, remaining: size }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            // One more byte would exceed the declared size.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, "entry is larger than declared")),
            };
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "entry is shorter than declared"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A temp file in `<data_dir>/tmp` (an import's spooled upload, an export's finished bundle),
/// removed when dropped. Its name carries this process's id, so that [`sweep_stale_temp_files`]
/// at the next start can tell a crashed process's leftovers from a running CLI's files.
pub struct TempFile {
    pub path: PathBuf,
}

/// Name prefixes of the temp files this module makes.
const TEMP_KINDS: [&str; 2] = ["import", "export"];

impl TempFile {
    /// Creates `<data_dir>/tmp/<kind>-<pid>-<random>.zip`, open for reading and writing.
    pub fn create(data_dir: &Path, kind: &str) -> ApiResult<(TempFile, File)> {
        let dir = data_dir.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("{kind}: create {}: {e}", dir.display())))?;
        let path = dir.join(format!("{kind}-{}-{}.zip", std::process::id(), crate::ids::new_session_id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ApiError::internal(format!("{kind}: create {}: {e}", path.display())))?;
        Ok((TempFile { path }, file))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove bundle temp file");
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes `<data_dir>/tmp/import-*` and `export-*` files left by a process that is gone (a
/// crash, a kill). Files of a live process (a CLI import running next to the server) stay.
/// Called once at server start; answers how many files it removed.
pub fn sweep_stale_temp_files(data_dir: &Path) -> usize {
    let dir = data_dir.join("tmp");
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = TEMP_KINDS.iter().find_map(|k| name.strip_prefix(k).and_then(|r| r.strip_prefix('-'))) else {
            continue;
        };
        let owner = rest.split_once('-').and_then(|(pid, _)| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| pid == me || process_alive(pid)) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove stale bundle temp file")
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed stale bundle temp files");
    }
    removed
}
