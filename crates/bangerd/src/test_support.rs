//! Helpers for the crate's unit tests.

use std::path::Path;
use std::process::Command;

/// Writes an executable script at `path` (making its directory). A child process writes
/// it, so no writable descriptor of the file ever lives in this multi-threaded test
/// process: another test thread forking at that moment would carry one into its child,
/// and running the script would then fail with ETXTBSY ("text file busy").
pub fn write_script(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir).unwrap();
    }
    let status = Command::new("sh")
        .args([
            "-c",
            r#"printf '%s' "$1" >"$2" && chmod 755 "$2""#,
            "sh",
            text,
        ])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "cannot write {}", path.display());
}
