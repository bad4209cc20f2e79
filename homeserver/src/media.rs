//! Media: content-addressed files under `<data_dir>/media/`, and their metadata in storage.
//!
//! An upload streams into `media/tmp/` while it is hashed and counted, never held in memory.
//! Once complete it is fsynced and renamed to `media/<first 2 hex>/<sha256 hex>`, so identical
//! bytes are stored once and a file under its final name is always complete. Only then is the
//! metadata row written: a row never names a missing file. (A crash between the two leaves an
//! unreferenced but harmless file.) An upload that fails or is abandoned removes its temp file;
//! files left in `tmp/` by a crashed process are swept by the first upload of the next one.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::storage::{MediaRow, Store};

/// The type given to uploads that name none (or an unusable one).
pub const DEFAULT_MIME_TYPE: &str = "application/octet-stream";

/// Longest stored file name, in characters; longer names are cut.
const MAX_FILENAME_CHARS: usize = 255;

/// Temp files of this process start with this prefix; others in `tmp/` are leftovers.
static TMP_PREFIX: LazyLock<String> = LazyLock::new(|| crate::ids::new_session_id().chars().take(8).collect());
static SWEPT: AtomicBool = AtomicBool::new(false);

/// For a process sharing the data dir with a running server (the CLI): its uploads must not
/// sweep the server's in-flight temp files as leftovers.
pub fn skip_leftover_sweep() {
    SWEPT.store(true, Ordering::Release);
}

pub fn media_root(data_dir: &Path) -> PathBuf {
    data_dir.join("media")
}

fn tmp_dir(data_dir: &Path) -> PathBuf {
    media_root(data_dir).join("tmp")
}

/// Where the content with this (lowercase hex) SHA-256 lives.
pub fn content_path(data_dir: &Path, sha256: &str) -> PathBuf {
    media_root(data_dir).join(&sha256[..2]).join(sha256)
}

fn io_error(what: &str, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("media: {what}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A temp file that is removed when dropped, unless it was renamed away.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove media temp file");
        }
    }
}

/// The content of a finished upload, stored under its hash.
#[derive(Clone, Debug)]
pub struct StoredContent {
    pub sha256: String,
    pub size: u64,
}

/// An upload in progress: feed it chunks with [`Upload::write`], then [`Upload::finish`].
/// Dropping it unfinished removes its temp file.
pub struct Upload {
    tmp: TempFile,
    file: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
    max: u64,
    data_dir: PathBuf,
}

impl Upload {
    pub async fn begin(data_dir: &Path, max_bytes: u64) -> ApiResult<Upload> {
        let tmp_dir = tmp_dir(data_dir);
        tokio::fs::create_dir_all(&tmp_dir).await.map_err(|e| io_error("create tmp dir", e))?;
        if !SWEPT.swap(true, Ordering::AcqRel) {
            sweep_leftovers(tmp_dir.clone()).await;
        }
        let path = tmp_dir.join(format!("{}-{}.part", *TMP_PREFIX, crate::ids::new_session_id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_error("create temp file", e))?;
        Ok(Upload {
            tmp: TempFile { path, armed: true },
            file: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
            max: max_bytes,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Appends a chunk; over the size limit answers `SW_CONTENT_TOO_LARGE` (and the temp file
    /// goes when the upload is dropped).
    pub async fn write(&mut self, chunk: &[u8]) -> ApiResult<()> {
        let size = self.size.saturating_add(chunk.len() as u64);
        if size > self.max {
            return Err(ApiError::ContentTooLarge(format!("uploads are limited to {} bytes", self.max)));
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await.map_err(|e| io_error("write temp file", e))?;
        self.size = size;
        Ok(())
    }

    /// Makes the content durable under its hash. Content already stored is kept as it is.
    pub async fn finish(self) -> ApiResult<StoredContent> {
        let Upload { mut tmp, mut file, hasher, size, data_dir, .. } = self;
        file.flush().await.map_err(|e| io_error("flush temp file", e))?;
        let file = file.into_inner();
        file.sync_all().await.map_err(|e| io_error("fsync temp file", e))?;
        drop(file);

        let sha256 = hex(&hasher.finalize());
        let dest = content_path(&data_dir, &sha256);
        let dir = dest.parent().expect("content path has a parent").to_path_buf();
        let exists = tokio::fs::try_exists(&dest).await.map_err(|e| io_error("stat content file", e))?;
        if !exists {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| io_error("create content dir", e))?;
            tokio::fs::rename(&tmp.path, &dest).await.map_err(|e| io_error("rename temp file", e))?;
            tmp.armed = false;
            // Make the new directory entries durable too.
            sync_dir(&dir).await?;
            sync_dir(&media_root(&data_dir)).await?;
        }
        // When the content was already there, dropping `tmp` removes the duplicate.
        Ok(StoredContent { sha256, size })
    }
}

#[cfg(unix)]
async fn sync_dir(dir: &Path) -> ApiResult<()> {
    let d = tokio::fs::File::open(dir).await.map_err(|e| io_error("open dir", e))?;
    d.sync_all().await.map_err(|e| io_error("fsync dir", e))
}

#[cfg(not(unix))]
async fn sync_dir(_dir: &Path) -> ApiResult<()> {
    Ok(())
}

/// Removes temp files that no upload of this process owns (left by a crash or kill).
async fn sweep_leftovers(tmp_dir: PathBuf) {
    let own = format!("{}-", *TMP_PREFIX);
    let _ = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&tmp_dir) else { return };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&own)
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove stale media temp file");
            }
        }
    })
    .await;
}

/// Records a finished upload and answers its row.
pub async fn record(
    store: &Store,
    uploader_id: &str,
    content: StoredContent,
    mime_type: String,
    filename: Option<String>,
) -> ApiResult<MediaRow> {
    let row = MediaRow {
        media_id: crate::ids::new_media_id(),
        sha256: content.sha256,
        size: i64::try_from(content.size).map_err(|_| ApiError::internal("media size overflows i64"))?,
        mime_type,
        filename,
        uploader_id: uploader_id.to_string(),
        created_at: now_secs(),
    };
    store.insert_media(&row).await?;
    Ok(row)
}

/// The metadata of a media id that must exist.
pub async fn get(store: &Store, media_id: &str) -> ApiResult<MediaRow> {
    store.media(media_id).await?.ok_or(ApiError::MediaNotFound)
}

/// Opens the content of `row`, positioned at `start`. A missing or wrong-sized file is a server
/// fault (the row promised it), so it is an internal error, not a not-found.
pub async fn open_content(data_dir: &Path, row: &MediaRow, start: u64) -> ApiResult<tokio::fs::File> {
    if row.sha256.len() != 64 || !row.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::internal(format!("media {} has a bad sha256", row.media_id)));
    }
    let path = content_path(data_dir, &row.sha256);
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| io_error("open content file", e))?;
    let len = file.metadata().await.map_err(|e| io_error("stat content file", e))?.len();
    if i64::try_from(len).ok() != Some(row.size) {
        return Err(ApiError::internal(format!(
            "media {}: file {} has {len} bytes, expected {}",
            row.media_id,
            path.display(),
            row.size
        )));
    }
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| io_error("seek content file", e))?;
    }
    Ok(file)
}

/// The next `len` bytes of `file` as a stream of chunks; a file that ends early is an error,
/// which aborts the response instead of sending short content.
pub fn content_stream(
    file: tokio::fs::File,
    len: u64,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Send + 'static {
    const CHUNK: u64 = 64 * 1024;
    futures_util::stream::unfold((file, len), |(mut file, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let mut buf = vec![0u8; remaining.min(CHUNK) as usize];
        match file.read(&mut buf).await {
            Ok(0) => {
                Some((Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "media file ended early")), (file, 0)))
            }
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), (file, remaining - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

/// The name to keep for an uploaded file: its last path component, control characters
/// dropped, at most 255 characters; `None` when nothing usable is left.
pub fn clean_filename(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let name: String = base.chars().filter(|c| !c.is_control()).take(MAX_FILENAME_CHARS).collect();
    let name = name.trim();
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_string())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A part's content type when it is a well-formed `type/subtype[; params]` (the type and
/// subtype lowercased), else [`DEFAULT_MIME_TYPE`].
pub fn clean_mime_type(raw: Option<&str>) -> String {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return DEFAULT_MIME_TYPE.to_string();
    };
    if raw.len() > 255 || !raw.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return DEFAULT_MIME_TYPE.to_string();
    }
    let (essence, params) = match raw.split_once(';') {
        Some((e, p)) => (e.trim(), Some(p.trim())),
        None => (raw, None),
    };
    let Some((ty, sub)) = essence.split_once('/') else {
        return DEFAULT_MIME_TYPE.to_string();
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(is_tchar);
    if !token(ty) || !token(sub) {
        return DEFAULT_MIME_TYPE.to_string();
    }
    let essence = format!("{}/{}", ty.to_ascii_lowercase(), sub.to_ascii_lowercase());
    match params.filter(|p| !p.is_empty()) {
        Some(p) => format!("{essence}; {p}"),
        None => essence,
    }
}

/// `Content-Disposition: inline`, with the file name when known: a quoted ASCII fallback
/// (anything else, `"` and `\` become `_`) and, when that lost something, the exact name as
/// RFC 8187 `filename*`.
pub fn content_disposition(filename: Option<&str>) -> String {
    let Some(name) = filename else { return "inline".to_string() };
    let fallback: String = name
        .chars()
        .map(|c| if (c == ' ' || c.is_ascii_graphic()) && c != '"' && c != '\\' { c } else { '_' })
        .collect();
    if fallback == name {
        return format!("inline; filename=\"{fallback}\"");
    }
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("inline; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// A single satisfiable `bytes=` range of a `size`-byte file as inclusive `(first, last)`.
/// Anything else (several ranges, malformed, unsatisfiable) is `None`: the whole file is sent.
pub fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let (unit, spec) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    if a.is_empty() {
        let n = num(b)?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let first = num(a)?;
    let last = if b.is_empty() { size - 1 } else { num(b)?.min(size - 1) };
    (first <= last).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames() {
        assert_eq!(clean_filename(Some("a.txt")), Some("a.txt".into()));
        assert_eq!(clean_filename(Some("C:\\x\\y\\photo.jpg")), Some("photo.jpg".into()));
        assert_eq!(clean_filename(Some("../../etc/passwd")), Some("passwd".into()));
        assert_eq!(clean_filename(Some("..")), None);
        assert_eq!(clean_filename(Some("")), None);
        assert_eq!(clean_filename(Some("a\nb\u{0}c")), Some("abc".into()));
        assert_eq!(clean_filename(Some(&"é".repeat(300))).unwrap().chars().count(), 255);
        assert_eq!(clean_filename(None), None);
    }

    #[test]
    fn mime_types() {
        assert_eq!(clean_mime_type(None), DEFAULT_MIME_TYPE);
        assert_eq!(clean_mime_type(Some("Image/PNG")), "image/png");
        assert_eq!(clean_mime_type(Some("text/plain;charset=utf-8")), "text/plain; charset=utf-8");
        assert_eq!(clean_mime_type(Some("nonsense")), DEFAULT_MIME_TYPE);
        assert_eq!(clean_mime_type(Some("a/b\r\nx: y")), DEFAULT_MIME_TYPE);
        assert_eq!(clean_mime_type(Some("a b/c")), DEFAULT_MIME_TYPE);
    }

    #[test]
    fn dispositions() {
        assert_eq!(content_disposition(None), "inline");
        assert_eq!(content_disposition(Some("a b.txt")), "inline; filename=\"a b.txt\"");
        assert_eq!(
            content_disposition(Some("ünï \"q\".txt")),
            "inline; filename=\"_n_ _q_.txt\"; filename*=UTF-8''%C3%BCn%C3%AF%20%22q%22.txt"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-500", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-500", 100), Some((0, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-4", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=+1-2", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
