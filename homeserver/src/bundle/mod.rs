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

use std::io::{self, Read};

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
