//! The agent's claim on its state directory: an advisory lock (`flock`) on
//! `<state_dir>/lock`, held for the life of the process, so that two agents pointed at
//! one directory cannot overwrite each other's state. The kernel drops the lock when the
//! process dies, SIGKILL included, so a crashed agent never blocks its successor. The
//! file holds the holder's PID, for the second agent's error message.
//!
//! A directory removed under the running agent takes the lock file with it; the lock
//! is then taken again, on a fresh file, before the next save ([`StateDir::ensure_locked`]),
//! and a save is refused when another agent took it first.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{io, Error};

/// Name of the lock file in the state directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// The state directory and, when held, the lock on it.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    /// The lock; `None` while the directory cannot be locked (read-only, missing
    /// permissions): saves try again first.
    lock: Mutex<Option<Held>>,
}

/// A lock this process holds.
#[derive(Debug)]
struct Held {
    /// The lock file, open read-only.
    file: File,
    /// Whether the file names this process (a read-only directory keeps the PID of
    /// the agent before).
    pid_written: bool,
}

impl StateDir {
    /// Claims `dir`. Fails with [`Error::Locked`] when another process holds it. Any
    /// other trouble (a read-only directory, one without permission) is returned beside
    /// the `StateDir`, which then may or may not hold the lock (an existing lock file
    /// can be locked on a read-only file system) and takes it before its first save.
    pub(crate) fn claim(dir: &Path) -> Result<(StateDir, Option<Error>), Error> {
        let (lock, trouble) = match acquire(dir) {
            Ok((held, pid_not_written)) => (Some(held), pid_not_written),
            Err(e @ Error::Locked { .. }) => return Err(e),
            Err(e) => (None, Some(e)),
        };
        let state_dir = StateDir {
            dir: dir.to_path_buf(),
            lock: Mutex::new(lock),
        };
        Ok((state_dir, trouble))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether this process holds the lock now.
    pub(crate) fn is_locked(&self) -> bool {
        self.held().is_some()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        // A panic while holding this mutex cannot leave the Option half-written.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure this process holds the lock on the lock file now in the directory:
    /// takes it when it was never taken (the directory was read-only at start) or
    /// when the file was removed or replaced (the directory was deleted), recreating
    /// the directory. Fails when another agent holds it or the directory is unusable.
    pub(crate) fn ensure_locked(&self) -> Result<(), Error> {
        let mut held = self.held();
        let path = self.dir.join(LOCK_FILE);
        if let Some(h) = held.as_mut() {
            if same_file(&h.file, &path) {
                if !h.pid_written {
                    h.pid_written = write_pid(&path).is_ok();
                }
                return Ok(());
            }
        }
        // The old lock was on a file no longer reachable by name: another agent
        // could lock the new one, so it protects nothing; drop it and lock the new.
        *held = None;
        // A PID that could not be written is no reason not to save: the save says
        // itself whether the directory is writable.
        *held = Some(acquire(&self.dir)?.0);
        Ok(())
    }
}

/// Whether `f` is the file at `path` (same device and inode).
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Creates `dir` and takes the lock on `dir/lock`, writing this process's PID into it;
/// returns the error of that write beside the lock (a read-only directory).
/// The lock is held through a read-only handle: a file open for writing would keep the
/// file system from being remounted read-only (`EBUSY`).
fn acquire(dir: &Path) -> Result<(Held, Option<Error>), Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(LOCK_FILE);
    // A read-only directory may still hold a lock file from an earlier run: a lock on
    // it keeps a second agent away even though nothing can be saved.
    let created = OpenOptions::new().append(true).create(true).open(&path);
    let mut file = File::open(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: created.err().unwrap_or(e),
    })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                holder: holder_pid(&mut file),
            })
        }
        // Some file systems cannot lock (NFS without a lock manager, some FUSE ones):
        // saving unlocked beats never saving.
        Err(TryLockError::Error(e)) => {
            tracing::warn!(state_dir = %dir.display(), error = %e, "The state directory cannot be locked on this file system; saving without the lock. Make sure no other kpiwatch uses it.");
        }
    }
    // The PID is a courtesy for the next agent's message; a read-only file keeps the
    // lock without it.
    let written = write_pid(&path);
    let held = Held {
        file,
        pid_written: written.is_ok(),
    };
    Ok((held, written.err().map(|source| Error::Io { path, source })))
}

fn write_pid(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// The PID the lock holder wrote into the lock file, when readable.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (first, pending) = StateDir::claim(&state).unwrap();
        assert!(pending.is_none() && first.is_locked());
        // flock locks belong to the open file description: a second open in the same
        // process conflicts like a second process would.
        let err = StateDir::claim(&state).unwrap_err();
        assert!(
            matches!(err, Error::Locked { holder: Some(pid), .. } if pid == std::process::id()),
            "{err:?}"
        );
        assert_eq!(err.cause(), "locked");
        assert!(err.to_string().contains(&state.display().to_string()));
        drop(first);
        let (again, _) = StateDir::claim(&state).unwrap();
        assert!(again.is_locked());
    }

    #[test]
    fn a_deleted_directory_is_recreated_and_locked_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (held, _) = StateDir::claim(&state).unwrap();
        std::fs::remove_dir_all(&state).unwrap();
        // Before the next save nothing holds the new directory: another agent could
        // take it, and then this one must not write.
        let (other, _) = StateDir::claim(&state).unwrap();
        assert!(matches!(held.ensure_locked(), Err(Error::Locked { .. })));
        drop(other);
        held.ensure_locked().unwrap();
        assert!(state.join(LOCK_FILE).exists());
        assert!(matches!(StateDir::claim(&state), Err(Error::Locked { .. })));
    }
}
