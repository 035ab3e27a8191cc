//! Persisted learned state: what detectors learned (thresholds, patterns), so that a
//! restart loses nothing.
//!
//! The file `<state_dir>/state.json` has two lines: a header
//! `{"format":"kpiwatch-state","version":1,"crc32":…,"bytes":…}` and the JSON payload.
//! The checksum catches truncated or edited files; the version lets a newer agent
//! refuse, with a clear message, a file it does not understand. Writes are atomic
//! (temp file, fsync, rename, fsync of the directory): a crash leaves the old file or
//! the new one, never half of one.
//!
//! Window data and normaliser statistics are not saved: they are a function of the
//! history, which is re-read from Prometheus on start.
//!
//! One agent per directory: [`StateDir`] holds an advisory lock on `<state_dir>/lock`
//! (`lock.rs`). A save that fails leaves the previous file in place and removes its
//! temp file; the failure is counted by [`Error::cause`].

mod lock;
mod policy;

pub(crate) use lock::StateDir;
pub(crate) use policy::{claim, keep_saved_groups, restore_or_fresh, save_off_runtime};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::Snapshot;

/// Current format version.
pub(crate) const VERSION: u32 = 1;
const FORMAT: &str = "kpiwatch-state";
const FILE_NAME: &str = "state.json";
/// The temp file a save writes before renaming it over [`FILE_NAME`].
const TMP_NAME: &str = ".state.json.tmp";

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// I/O on the state directory.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a state file, is corrupt, or has an unknown version.
    #[error("{path}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another process holds the directory's lock.
    #[error(
        "state_dir {dir} is locked by another kpiwatch{}: two agents must not share a state directory (give each its own state_dir)",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The holder's PID, when its lock file says.
        holder: Option<u32>,
    },
}

impl Error {
    /// A bounded label for `kpiwatch_state_save_errors_total{cause}`.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::ReadOnlyFilesystem => "read_only",
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => "no_space",
                std::io::ErrorKind::PermissionDenied => "permission",
                _ => "io",
            },
            Error::Invalid { .. } => "invalid",
            Error::Locked { .. } => "locked",
        }
    }
}

/// Everything learned, by group and detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// Group name → detector name → snapshot.
    pub groups: BTreeMap<String, BTreeMap<String, Snapshot>>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    crc32: u32,
    bytes: usize,
}

/// The path of the state file in `dir`.
pub(crate) fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `state` atomically into `dir`; returns the bytes written.
pub(crate) fn save(dir: &Path, state: &State) -> Result<usize, Error> {
    let path = path_in(dir);
    let payload = serde_json::to_vec(state).map_err(|e| Error::Invalid {
        path: path.clone(),
        message: format!("cannot serialise state: {e}"),
    })?;
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        crc32: crc32fast::hash(&payload),
        bytes: payload.len(),
    };
    let mut bytes = serde_json::to_vec(&header).map_err(|e| Error::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    bytes.extend_from_slice(&payload);

    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(TMP_NAME);
    let written = write_and_rename(&tmp, &path, &bytes);
    if written.is_err() {
        // A partial temp file would hold space a full disk needs back; the previous
        // state file was never touched.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes.len())
}

/// Writes `bytes` to `tmp`, makes them durable, then renames `tmp` over `path`.
fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::File::create(tmp).map_err(io(tmp))?;
    f.write_all(bytes).map_err(io(tmp))?;
    f.sync_all().map_err(io(tmp))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(io(path))
}

/// Removes the temp file a save killed midway (SIGKILL, power loss) left in `dir`;
/// whether there was one. Call only while holding the directory's lock.
pub(crate) fn remove_partial_save(dir: &Path) -> bool {
    std::fs::remove_file(dir.join(TMP_NAME)).is_ok()
}

/// Reads the state in `dir`; `Ok(None)` when there is no state file yet.
pub(crate) fn load(dir: &Path) -> Result<Option<State>, Error> {
    let path = path_in(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    let invalid = |message: String| Error::Invalid {
        path: path.clone(),
        message,
    };
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| invalid("no header line (not a kpiwatch state file)".into()))?;
    let header: Header =
        serde_json::from_slice(&bytes[..split]).map_err(|e| invalid(format!("bad header: {e}")))?;
    if header.format != FORMAT {
        return Err(invalid(format!(
            "format {:?} is not {FORMAT:?}",
            header.format
        )));
    }
    if header.version != VERSION {
        return Err(invalid(format!(
            "state version {} is not supported by this kpiwatch (which writes version {VERSION}); move the file away to start fresh",
            header.version
        )));
    }
    let payload = &bytes[split + 1..];
    if payload.len() != header.bytes || crc32fast::hash(payload) != header.crc32 {
        return Err(invalid(
            "checksum mismatch: the file is truncated or was edited".into(),
        ));
    }
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| invalid(format!("bad payload: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State::default();
        s.groups.entry("node".into()).or_default().insert(
            "uniad".into(),
            serde_json::json!({"thresholds": {"a": 1.5}}),
        );
        s
    }

    #[test]
    fn round_trips_and_is_absent_at_first() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        save(dir.path(), &sample()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join(".state.json.tmp").exists());
    }

    #[test]
    fn a_failed_save_removes_its_temp_file_and_a_leftover_one_does_not_affect_loading() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample()).unwrap();
        let before = std::fs::read(path_in(dir.path())).unwrap();
        // The rename fails: no file can replace a non-empty directory named state.json.
        let blocked = tempfile::tempdir().unwrap();
        std::fs::create_dir(path_in(blocked.path())).unwrap();
        std::fs::write(path_in(blocked.path()).join("x"), b"x").unwrap();
        let err = save(blocked.path(), &sample()).unwrap_err();
        assert_eq!(err.cause(), "io", "{err}");
        assert!(!blocked.path().join(TMP_NAME).exists());
        // A temp file left by a killed save is not the state: the state file loads,
        // and the leftover is removed.
        std::fs::write(dir.path().join(TMP_NAME), b"partial").unwrap();
        assert_eq!(std::fs::read(path_in(dir.path())).unwrap(), before);
        assert_eq!(load(dir.path()).unwrap(), Some(sample()));
        assert!(remove_partial_save(dir.path()));
        assert!(!remove_partial_save(dir.path()));
    }

    #[test]
    fn io_errors_map_to_bounded_causes() {
        let cause = |kind| {
            Error::Io {
                path: PathBuf::from("/s"),
                source: std::io::Error::from(kind),
            }
            .cause()
        };
        use std::io::ErrorKind as K;
        assert_eq!(cause(K::ReadOnlyFilesystem), "read_only");
        assert_eq!(cause(K::StorageFull), "no_space");
        assert_eq!(cause(K::PermissionDenied), "permission");
        assert_eq!(cause(K::Other), "io");
    }

    #[test]
    fn detects_corruption_and_unknown_versions() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample()).unwrap();
        let p = path_in(dir.path());
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("checksum"));

        let text =
            std::fs::read_to_string(&p)
                .unwrap()
                .replacen("\"version\":1", "\"version\":99", 1);
        std::fs::write(&p, text).unwrap();
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("version 99"));

        std::fs::write(&p, "garbage").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
