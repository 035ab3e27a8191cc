use std::fmt;

/// One problem in a config file: which file, which key, what is wrong and what was
/// expected. Displayed as `FILE: KEY: MESSAGE`, one line, fit for `check-config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// Key path such as `groups[0].interval` (empty for the whole file).
    pub key_path: String,
    /// What is wrong, including what was expected.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(file: &str, key_path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            key_path: key_path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key_path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key_path, self.message)
        }
    }
}

/// Every problem found in one config file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn one(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
