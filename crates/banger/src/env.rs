//! The environment a guest command gets: `--env-file FILE` and `-e`, as docker takes them.
//!
//! A line or argument `KEY=VALUE` sets KEY to VALUE exactly as written (no quotes are
//! removed, nothing is expanded); a bare `KEY` passes the host's value of KEY, and
//! nothing when the host has none. In a file, blank lines and lines starting with `#`
//! are skipped. Files are read in order, then `-e`; a later value of a key wins.

use std::path::{Path, PathBuf};

use banger_wire::{Diagnostic, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("invalid environment variable {entry:?}{where_}")]
    Invalid { entry: String, where_: String },
    #[error("cannot read --env-file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Diagnostic for EnvError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            EnvError::Invalid { .. } => {
                "write KEY=VALUE, or KEY alone to pass the host's value; a key has no \
                 spaces, '=' or NUL"
                    .into()
            }
            EnvError::Read { .. } => "check the path and that you may read the file".into(),
        })
    }
}

/// The variables of `files` then `args`, a bare key taking its value from `host`.
pub fn collect(
    files: &[PathBuf],
    args: &[String],
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |entry: &str, where_: String| -> Result<(), EnvError> {
        let (key, value) = match entry.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (entry, host(entry)),
        };
        if key.is_empty() || key.contains(char::is_whitespace) || entry.contains('\0') {
            return Err(EnvError::Invalid {
                entry: entry.into(),
                where_,
            });
        }
        vars.retain(|(k, _)| k != key);
        if let Some(value) = value {
            vars.push((key.to_string(), value));
        }
        Ok(())
    };
    for path in files {
        for (n, line) in read(path)?.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            set(line, format!(" at {}:{}", path.display(), n + 1))?;
        }
    }
    for arg in args {
        set(arg, String::new())?;
    }
    Ok(vars)
}

fn read(path: &Path) -> Result<String, EnvError> {
    fs_err::read_to_string(path).map_err(|source| EnvError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(key: &str) -> Option<String> {
        (key == "HOME_ONLY").then(|| "from host".to_string())
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_file_then_flags_and_the_last_value_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        fs_err::write(
            &file,
            "# comment\n\nA=1\nB=\"quoted\" stays\n  C=x=y\nHOME_ONLY\nUNSET_ON_HOST\n",
        )
        .unwrap();

        let vars = collect(&[file], &["A=2".into(), "D=".into()], &host).unwrap();

        assert_eq!(
            vars,
            pairs(&[
                ("B", "\"quoted\" stays"),
                ("C", "x=y"),
                ("HOME_ONLY", "from host"),
                ("A", "2"),
                ("D", ""),
            ])
        );
    }

    #[test]
    fn a_bare_flag_passes_the_hosts_value_or_nothing() {
        let vars = collect(&[], &["HOME_ONLY".into(), "NOPE".into()], &host).unwrap();

        assert_eq!(vars, pairs(&[("HOME_ONLY", "from host")]));
    }

    #[test]
    fn bad_keys_and_missing_files_are_refused_with_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        fs_err::write(&file, "OK=1\nBAD KEY=2\n").unwrap();

        let in_file = collect(&[file], &[], &host).unwrap_err();
        let empty = collect(&[], &["=v".into()], &host).unwrap_err();
        let missing = collect(&[dir.path().join("none")], &[], &host).unwrap_err();

        assert!(in_file.to_string().ends_with("env:2"), "{in_file}");
        assert!(matches!(empty, EnvError::Invalid { .. }));
        assert!(matches!(missing, EnvError::Read { .. }));
        assert_eq!(missing.code(), ErrorCode::InvalidArgument);
    }
}
