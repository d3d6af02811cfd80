//! Authorizing banger's key for a guest user other than root: the agent authorizes it
//! for root at boot, and creates any other user on its first command. The key goes into
//! `~/.ssh/authorized_keys` by a command run as that user, so the file and its
//! directory are theirs (0600 in a 0700 `.ssh`), and a user `vm ssh` names first is
//! created the same way.

use super::error::SshError;
use crate::workspace::exec::{self, Runner};

/// Appends the key (`$1`) to the user's authorized_keys unless it is there.
const AUTHORIZE: &str = r#"set -e
umask 077
d="$HOME/.ssh"; f="$d/authorized_keys"
mkdir -p "$d"; chmod 700 "$d"
[ -f "$f" ] && grep -qxF "$1" "$f" || printf '%s\n' "$1" >>"$f"
chmod 600 "$f""#;

/// `type base64` of a public key file's text (its comment dropped).
pub fn key_line(public_key: &str) -> Option<String> {
    let mut parts = public_key.split_whitespace();
    let (kind, blob) = (parts.next()?, parts.next()?);
    Some(format!("{kind} {blob}"))
}

/// Makes sure `key` (`type base64`) may log in as the user `vm` runs commands as.
pub async fn authorize(vm: &impl Runner, key: &str) -> Result<(), SshError> {
    let spec = exec::spec(&["sh", "-c", AUTHORIZE, "authorize", key]);
    vm.run(spec, tokio::io::empty(), &mut tokio::io::sink())
        .await?
        .success(vm.name(), "authorizing banger's SSH key")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_line_drops_the_comment() {
        assert_eq!(
            key_line("ssh-ed25519 AAAAC3 banger\n").as_deref(),
            Some("ssh-ed25519 AAAAC3")
        );
        assert_eq!(key_line("ssh-ed25519"), None);
    }
}
