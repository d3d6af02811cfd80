//! Pinning a VM's SSH host key at first use.
//!
//! The key is read from the guest over the agent channel (authenticated by the per-VM
//! token), never from the network, and written to a known_hosts file of that VM alone
//! under the alias `banger-<id>`. ssh then runs with `StrictHostKeyChecking=yes`
//! against that file, so a different key, on the VM's IP or anywhere else, is refused.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::SshError;
use crate::workspace::exec::{self, Runner};

/// Where the guest agent's first boot puts the key (`ssh-keygen -A`).
pub const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key.pub";

/// Prints the host public key once sshd listens on port 22. Under software emulation
/// key generation and sshd's start can take seconds after the agent is ready, so the
/// guest waits (up to about two minutes) instead of the host polling over the channel.
const WAIT_AND_READ: &str = r#"f=$1
[ -x /usr/sbin/sshd ] || exit 100
i=0
until [ -s "$f" ] && grep -qE ':0016 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
  i=$((i+1)); [ "$i" -le 1200 ] || exit 101
  sleep 0.1
done
exec cat "$f""#;

/// The most a guest may print for its host key (an ed25519 line is ~100 bytes).
const MAX_KEY_BYTES: u64 = 16 * 1024;

/// The name ssh looks the VM's key up by (`HostKeyAlias`), whatever address it dials.
pub fn alias(vm_id: &str) -> String {
    format!("banger-{vm_id}")
}

/// The per-VM known_hosts file.
pub fn known_hosts_file(state_dir: &Path, vm_id: &str) -> PathBuf {
    state_dir.join("ssh").join("known_hosts").join(vm_id)
}

/// Waits for sshd in the guest and makes sure `file` pins its host key. A file that
/// pins another key is left alone and reported.
pub async fn pin(vm: &impl Runner, vm_id: &str, file: &Path) -> Result<(), SshError> {
    let mut out = Vec::new();
    let spec = exec::spec(&["sh", "-c", WAIT_AND_READ, "hostkey", HOST_KEY]);
    let mut capped = exec::Capped::new(&mut out, MAX_KEY_BYTES);
    let ran = vm.run(spec, tokio::io::empty(), &mut capped).await;
    let name = vm.name().to_string();
    if capped.over() {
        return Err(SshError::BadHostKey {
            vm: name,
            text: format!("more than {MAX_KEY_BYTES} bytes"),
        });
    }
    let done = ran?;
    match done.code {
        0 => {}
        100 => return Err(SshError::NoSshd { vm: name }),
        101 => return Err(SshError::SshdTimeout { vm: name }),
        _ => done.success(&name, "reading the SSH host key")?,
    }
    let line = known_hosts_line(vm_id, &out).ok_or_else(|| SshError::BadHostKey {
        vm: name.clone(),
        text: String::from_utf8_lossy(&out)
            .trim()
            .chars()
            .take(200)
            .collect(),
    })?;
    match fs_err::read_to_string(file) {
        Ok(pinned) if pinned == line => Ok(()),
        Ok(_) => Err(SshError::HostKeyChanged {
            vm: name,
            file: file.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_pin(file, &line),
        Err(source) => Err(SshError::Write {
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// The known_hosts line for the guest's `ssh-ed25519 <base64> [comment]` text, or
/// `None` if it is anything else (the guest does not get to write other lines).
fn known_hosts_line(vm_id: &str, text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    let mut words = line.split_whitespace();
    let (kind, blob) = (words.next()?, words.next()?);
    let base64 = |c: char| c.is_ascii_alphanumeric() || "+/=".contains(c);
    if kind != "ssh-ed25519" || blob.len() < 16 || blob.len() > 200 || !blob.chars().all(base64) {
        return None;
    }
    if !vm_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    Some(format!("{} {kind} {blob}\n", alias(vm_id)))
}

/// Writes `line` as the whole file, atomically, 0600 in a 0700 directory.
fn write_pin(file: &Path, line: &str) -> Result<(), SshError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SshError::Write { path, source }
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(err(dir))?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err(dir))?;
    tmp.write_all(line.as_bytes()).map_err(err(file))?;
    tmp.persist(file).map_err(|e| SshError::Write {
        path: file.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBvR0bVaVJY4NHWVYnNR3KGUAnUNi0sGo1nAcNJiM9Mt";

    /// A guest that answers the key read with endless output.
    struct Flood;

    impl Runner for Flood {
        fn name(&self) -> &str {
            "flood"
        }

        async fn run<R, W>(
            &self,
            _spec: banger_wire::agent::ExecSpec,
            _stdin: R,
            stdout: &mut W,
        ) -> Result<exec::Captured, exec::CaptureError>
        where
            R: tokio::io::AsyncRead + Unpin,
            W: tokio::io::AsyncWrite + Unpin,
        {
            use tokio::io::AsyncReadExt;
            let mut data = tokio::io::repeat(b'A').take(1 << 30);
            tokio::io::copy(&mut data, stdout)
                .await
                .map_err(exec::CaptureError::Output)?;
            Ok(exec::Captured {
                code: 0,
                stderr: Vec::new(),
            })
        }
    }

    #[tokio::test]
    async fn a_guest_flooding_its_host_key_is_refused_early() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");

        let err = pin(&Flood, "abc", &file).await.unwrap_err();

        let SshError::BadHostKey { text, .. } = err else {
            panic!("{err}");
        };
        assert_eq!(text, format!("more than {MAX_KEY_BYTES} bytes"));
        assert!(!file.exists());
    }

    #[test]
    fn the_guest_key_is_pinned_under_the_vm_alias_without_its_comment() {
        let text = format!("ssh-ed25519 {KEY} root@web\n");

        let line = known_hosts_line("0a1b2c", text.as_bytes()).unwrap();

        assert_eq!(line, format!("banger-0a1b2c ssh-ed25519 {KEY}\n"));
    }

    #[test]
    fn anything_but_one_ed25519_key_is_refused() {
        let two = format!("ssh-ed25519 {KEY}\n* ssh-ed25519 {KEY}\n");
        let wildcard = format!("ssh-ed25519 {KEY}* x");
        for text in [
            "".to_string(),
            format!("ssh-rsa {KEY}"),
            two,
            wildcard,
            format!("ssh-ed25519 {KEY},*"),
        ] {
            assert_eq!(known_hosts_line("0a1b", text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn the_pin_file_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let file = known_hosts_file(tmp.path(), "0a1b");

        write_pin(&file, "banger-0a1b ssh-ed25519 AAAA\n").unwrap();

        assert_eq!(
            fs_err::read_to_string(&file).unwrap(),
            "banger-0a1b ssh-ed25519 AAAA\n"
        );
        assert_eq!(fs_err::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs_err::metadata(file.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
    }
}
