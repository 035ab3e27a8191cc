//! A secret kept in a file (a bearer token), read again when the file changes.
//!
//! Kubernetes rotates projected service-account tokens and mounted Secrets in place, so
//! both the Prometheus client's `bearer_token_file` and the admin server's
//! `write_token_file` cache the content with the file's modification time and re-read
//! it when that time moves. The content never appears in `Debug` output or logs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// A file holding one secret (surrounding whitespace trimmed).
pub(crate) struct SecretFile {
    path: PathBuf,
    cache: Mutex<Option<(SystemTime, String)>>,
}

impl SecretFile {
    /// A secret read from `path` on first use.
    pub(crate) fn new(path: PathBuf) -> SecretFile {
        SecretFile {
            path,
            cache: Mutex::new(None),
        }
    }

    /// Where the secret lives (for messages; the content is never shown).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The current secret: the cached copy while the file's modification time is
    /// unchanged, else the file read again.
    pub(crate) fn read(&self) -> std::io::Result<String> {
        let modified = std::fs::metadata(&self.path)?.modified()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, secret)) = cache.as_ref() {
            if *at == modified {
                return Ok(secret.clone());
            }
        }
        let secret = read_trimmed(&self.path)?;
        *cache = Some((modified, secret.clone()));
        Ok(secret)
    }
}

// Never print the secret, even in debug output.
impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({}, content redacted)", self.path.display())
    }
}

/// The file's content without surrounding whitespace (editors and `echo` add a newline).
pub(crate) fn read_trimmed(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// Compares two secrets in time that depends on their length only, so that a caller
/// cannot find a token byte by byte from response times.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_is_read_again_and_debug_hides_the_content() {
        let dir = std::env::temp_dir().join(format!("kpiwatch-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let secret = SecretFile::new(path.clone());
        assert_eq!(secret.read().unwrap(), "first");
        // A rotation writes a new file; make sure its modification time differs.
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        let later = written + std::time::Duration::from_secs(5);
        std::fs::write(&path, "second").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(secret.read().unwrap(), "second");
        assert!(!format!("{secret:?}").contains("second"));
        std::fs::remove_file(&path).unwrap();
        assert!(
            secret.read().is_err(),
            "a removed file is an error, not the old token"
        );
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cres", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
