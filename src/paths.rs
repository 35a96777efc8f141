//! `AXTARY_HOME` and every file under it, resolved in one place (SPEC 2).

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state directory and the files Axtary keeps in it.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `AXTARY_HOME`, else `~/.axtary`.
    pub fn from_env() -> Result<Home, String> {
        if let Some(dir) = std::env::var_os("AXTARY_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home {
                root: PathBuf::from(dir),
            });
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(Home {
                root: PathBuf::from(home).join(".axtary"),
            }),
            None => Err(
                "neither AXTARY_HOME nor HOME is set: set AXTARY_HOME to a directory \
                         Axtary may keep its state in"
                    .to_string(),
            ),
        }
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.ca_dir().join("ca-key.pem")
    }

    pub fn ledger(&self) -> PathBuf {
        self.root.join("ledger.jsonl")
    }

    pub fn credentials(&self) -> PathBuf {
        self.root.join("credentials.json")
    }

    /// Creates the home directory (0700) when missing.
    pub fn ensure(&self) -> io::Result<()> {
        ensure_private_dir(&self.root)
    }

    /// Expands a leading `$AXTARY_HOME` or `~` in a configured path.
    pub fn expand(&self, raw: &str) -> PathBuf {
        if let Some(rest) = raw.strip_prefix("$AXTARY_HOME") {
            return self.root.join(rest.trim_start_matches('/'));
        }
        if let Some(rest) = raw.strip_prefix("~/") {
            if let Some(home) = std::env::var_os("HOME") {
                return PathBuf::from(home).join(rest);
            }
        }
        PathBuf::from(raw)
    }
}

/// Creates `dir` and its parents with mode 0700 (an existing directory keeps its mode).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Refuses a file that group or others may read: secrets and keys must be 0600.
pub fn check_private_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {mode:o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_home_and_tilde() {
        let home = Home::at("/h/.axtary");
        assert_eq!(
            home.expand("$AXTARY_HOME/ledger.jsonl"),
            PathBuf::from("/h/.axtary/ledger.jsonl")
        );
        assert_eq!(home.expand("/abs/x"), PathBuf::from("/abs/x"));
    }
}
