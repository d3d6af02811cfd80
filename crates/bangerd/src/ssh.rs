//! banger's own SSH key pair, authorized in every guest it boots.

use std::process::Command;

use banger_host::config::Paths;

/// Creates the key pair under the state dir if it does not exist yet.
pub fn ensure_key(paths: &Paths) -> std::io::Result<()> {
    let key = paths.ssh_key();
    if key.exists() {
        return Ok(());
    }
    if let Some(dir) = key.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f"])
        .arg(&key)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The public key in the kernel-command-line form `type:base64` (no spaces).
pub fn authorized_key(paths: &Paths) -> Option<String> {
    let text = fs_err::read_to_string(paths.ssh_key().with_extension("pub")).ok()?;
    encode_pubkey(&text)
}

fn encode_pubkey(line: &str) -> Option<String> {
    let mut parts = line.split_whitespace();
    let (kind, blob) = (parts.next()?, parts.next()?);
    Some(format!("{kind}:{blob}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_drops_the_comment_and_spaces() {
        assert_eq!(
            encode_pubkey("ssh-ed25519 AAAAC3Nza banger\n").as_deref(),
            Some("ssh-ed25519:AAAAC3Nza")
        );
        assert_eq!(encode_pubkey("garbage"), None);
    }
}
