//! Cross-process locks, one per fingerprint, so two processes never write the same outputs at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::EngineError;

/// An exclusive lock, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FingerprintLock {
    _file: File,
}

fn open(dir: &Path, fingerprint: &str) -> Result<File, EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let path: PathBuf = dir.join(format!("{fingerprint}.lock"));
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::Io {
            path: path.display().to_string(),
            source: e,
        })
}

/// Takes the lock if it is free.
pub fn try_lock(dir: &Path, fingerprint: &str) -> Result<Option<FingerprintLock>, EngineError> {
    let file = open(dir, fingerprint)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(FingerprintLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(EngineError::Io {
            path: dir.join(fingerprint).display().to_string(),
            source: e,
        }),
    }
}

/// Waits for the lock; `on_wait` is called once if another process holds it.
pub async fn lock(
    dir: &Path,
    fingerprint: &str,
    on_wait: impl FnOnce(),
) -> Result<FingerprintLock, EngineError> {
    let mut on_wait = Some(on_wait);
    loop {
        if let Some(lock) = try_lock(dir, fingerprint)? {
            return Ok(lock);
        }
        if let Some(f) = on_wait.take() {
            f();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
