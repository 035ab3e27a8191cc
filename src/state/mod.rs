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

mod policy;

pub(crate) use policy::{restore_or_fresh, save_off_runtime};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::Snapshot;

/// Current format version.
pub(crate) const VERSION: u32 = 1;
const FORMAT: &str = "kpiwatch-state";
const FILE_NAME: &str = "state.json";

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
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes.len())
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
