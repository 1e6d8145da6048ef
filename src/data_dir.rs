//! Files the stages keep under `data_dir`: setting a broken SQLite file
//! aside (the outbox and the broker store share the rule: a broken file is
//! renamed, never a crash loop). A leaf: owns no state; must not open
//! databases or import a stage.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Renames `path` to `<path>.corrupt-<unix seconds>` (a free name), its WAL
/// along, and removes its shared-memory file. Returns the new name; on
/// failure, the file that could not be moved or removed and the error.
pub fn set_aside(path: &Path) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut to = PathBuf::from(&base);
    let mut n = 1;
    while to.exists() {
        to = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &to).map_err(|e| (to.clone(), e))?;
    let wal = sidecar(path, "-wal");
    if wal.exists() {
        let wal_to = sidecar(&to, "-wal");
        std::fs::rename(&wal, &wal_to).map_err(|e| (wal_to, e))?;
    }
    let shm = sidecar(path, "-shm");
    if shm.exists() {
        std::fs::remove_file(&shm).map_err(|e| (shm.clone(), e))?;
    }
    Ok(to)
}

/// `path` with `suffix` appended to its file name (`outbox.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
