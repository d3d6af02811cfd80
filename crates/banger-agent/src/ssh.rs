//! SSH access: the host's key from `banger.sshkey`, and sshd if the image has it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

const SSHD: &str = "/usr/sbin/sshd";
/// The host key banger makes (first), and those older images made too, all removed
/// when a clone is rekeyed.
const HOST_KEYS: &[&str] = &[
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_rsa_key",
];

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("banger.sshkey {value:?} is not `type:base64`")]
    MalformedKey { value: String },
    #[error("cannot install the key into {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `type base64` from the boot config's `type:base64`.
fn authorized_key_line(value: &str) -> Result<String, SshError> {
    let malformed = || SshError::MalformedKey {
        value: value.to_string(),
    };
    let (kind, blob) = value.split_once(':').ok_or_else(malformed)?;
    let clean = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    if !clean(kind) || !clean(blob) {
        return Err(malformed());
    }
    Ok(format!("{kind} {blob}"))
}

/// Makes sure `<home>/.ssh/authorized_keys` (0600, in a 0700 dir) holds the key, keeping
/// any other keys already there.
pub fn install_key(value: &str, home: &Path) -> Result<(), SshError> {
    let line = authorized_key_line(value)?;
    let dir = home.join(".ssh");
    let file = dir.join("authorized_keys");
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SshError::Write { path, source }
    };
    fs_err::create_dir_all(&dir).map_err(write_err(&dir))?;
    fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(write_err(&dir))?;
    let existing = fs_err::read_to_string(&file).unwrap_or_default();
    if !existing.lines().any(|l| l.trim() == line) {
        let mut text = existing;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        fs_err::write(&file, text).map_err(write_err(&file))?;
    }
    fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .map_err(write_err(&file))?;
    Ok(())
}

/// Wakes [`run_sshd`] to give this guest new host keys (see [`rekey`]).
static REKEY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Where sshd stands, for [`ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Listening,
    /// No sshd in the image, or it failed.
    Absent,
}

static STATE: std::sync::OnceLock<tokio::sync::watch::Sender<State>> = std::sync::OnceLock::new();

fn state() -> &'static tokio::sync::watch::Sender<State> {
    STATE.get_or_init(|| tokio::sync::watch::channel(State::Starting).0)
}

/// How long sshd may take to listen before [`ready`] gives up on it.
const LISTEN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until sshd accepts connections; `false` when the guest has none.
pub async fn ready() -> bool {
    let mut rx = state().subscribe();
    let settled = async { rx.wait_for(|s| *s != State::Starting).await.map(|s| *s) };
    let result = tokio::time::timeout(LISTEN_DEADLINE, settled).await;
    matches!(result, Ok(Ok(State::Listening)))
}

/// Marks sshd listening once the kernel lists a socket listening on port 22 (polled:
/// sshd gives no other sign), or absent after [`LISTEN_DEADLINE`]. Never by connecting:
/// sshd forks and re-executes itself for every connection, work that a pooled clone
/// paused in the middle of would finish in the run that takes it.
async fn watch_listening() {
    let started = std::time::Instant::now();
    while started.elapsed() < LISTEN_DEADLINE {
        let tables = ["/proc/net/tcp", "/proc/net/tcp6"];
        if tables
            .iter()
            .any(|t| fs_err::read_to_string(t).is_ok_and(|t| listens_on(&t, 22)))
        {
            state().send_replace(State::Listening);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tracing::warn!("sshd did not listen on port 22");
    state().send_replace(State::Absent);
}

/// Whether a `/proc/net/tcp{,6}` table lists a socket listening (state `0A`) on local
/// port `port`.
fn listens_on(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        local.is_some_and(|a| a.ends_with(&port)) && state == Some("0A")
    })
}

/// A restored clone must not share the snapshot's SSH host keys with every other clone:
/// sshd is stopped, the keys are deleted, and a new ed25519 key is made before sshd
/// starts again. The host reads the key to pin only once sshd listens again, so it
/// never pins a key that is about to go.
pub fn rekey() {
    state().send_replace(State::Starting);
    REKEY.notify_one();
}

/// Makes the host key if missing and runs sshd with it in the foreground (its log goes
/// to the console), restarting it with a new key on [`rekey`]. Never fails the boot:
/// problems are logged.
pub async fn run_sshd() {
    if !Path::new(SSHD).exists() {
        tracing::info!("no {SSHD} in the image; not starting sshd");
        state().send_replace(State::Absent);
        return;
    }
    loop {
        ensure_host_key().await;
        if let Err(e) = fs_err::create_dir_all("/run/sshd") {
            tracing::error!(cause = %e, "cannot create /run/sshd");
        }
        let spawned = Command::new(SSHD)
            .args(["-D", "-e", "-h", HOST_KEYS[0]])
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                state().send_replace(State::Absent);
                return tracing::error!(cause = %e, "cannot start sshd");
            }
        };
        tracing::info!(pid = child.id(), "sshd started");
        let listening = tokio::spawn(watch_listening());
        tokio::select! {
            status = child.wait() => {
                match status {
                    Ok(status) => tracing::error!(%status, "sshd exited"),
                    Err(e) => tracing::error!(cause = %e, "cannot wait for sshd"),
                }
                listening.abort();
                state().send_replace(State::Absent);
                return;
            }
            () = REKEY.notified() => {
                // Killed and reaped before the old keys go, so its listener is gone
                // before a new key exists.
                listening.abort();
                let _ = child.kill().await;
                for key in HOST_KEYS {
                    for path in [key.to_string(), format!("{key}.pub")] {
                        if let Err(e) = fs_err::remove_file(&path) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                tracing::error!(cause = %e, "cannot remove an old host key");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Makes the guest's ed25519 host key when it has none (first boot, or a rekeyed clone).
/// Only ed25519: RSA keys take seconds of CPU under emulation, and every OpenSSH client
/// of the last decade takes ed25519. sshd is started with this key alone (`-h`).
async fn ensure_host_key() {
    let key = HOST_KEYS[0];
    if Path::new(key).exists() {
        return;
    }
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-t", "ed25519", "-N", "", "-f", key]);
    let t0 = std::time::Instant::now();
    match command.stdin(Stdio::null()).output().await {
        Ok(out) if out.status.success() => {
            tracing::info!(ms = t0.elapsed().as_millis() as u64, "SSH host key made");
        }
        Ok(out) => tracing::error!(
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "ssh-keygen failed"
        ),
        Err(e) => tracing::error!(cause = %e, "cannot run ssh-keygen"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_on_the_port_is_found_in_the_kernels_table() {
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let listening = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n";
        let connected = "   1: 0100007F:0016 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        let other_port = "   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        let v6 = "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n";

        assert!(listens_on(&format!("{header}{other_port}{listening}"), 22));
        assert!(listens_on(&format!("{header}{v6}"), 22));
        assert!(!listens_on(&format!("{header}{connected}{other_port}"), 22));
        assert!(!listens_on(header, 22));
        assert!(listens_on(&format!("{header}{other_port}"), 80));
    }

    #[test]
    fn key_colon_becomes_space() {
        assert_eq!(
            authorized_key_line("ssh-ed25519:AAAAC3Nz").unwrap(),
            "ssh-ed25519 AAAAC3Nz"
        );
    }

    #[test]
    fn key_without_type_is_refused() {
        assert!(matches!(
            authorized_key_line("AAAAC3Nz"),
            Err(SshError::MalformedKey { .. })
        ));
    }

    #[test]
    fn key_is_installed_once_with_private_modes() {
        let home = tempfile::tempdir().unwrap();

        install_key("ssh-ed25519:AAAA", home.path()).unwrap();
        install_key("ssh-ed25519:AAAA", home.path()).unwrap();

        let file = home.path().join(".ssh/authorized_keys");
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(fs_err::read_to_string(&file).unwrap(), "ssh-ed25519 AAAA\n");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&home.path().join(".ssh")), 0o700);
    }
}
