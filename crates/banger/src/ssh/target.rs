//! How OpenSSH reaches one VM: the options for `ssh` and the same as a config block.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::quote::{config_value, percent, remote_command};

/// Where the image installs the guest agent.
pub const GUEST_AGENT: &str = "/usr/local/sbin/banger-agent";

/// Everything ssh needs to reach one VM as one user with banger's key, trusting only
/// the pinned host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The VM name (the `Host` of a config block).
    pub name: String,
    /// The guest user ssh logs in as.
    pub user: String,
    /// The address ssh dials: the VM's IP, or a placeholder when a proxy carries it.
    pub host: String,
    /// The key name in the known_hosts file.
    pub alias: String,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// A shell command that carries the connection, for VMs without a network.
    pub proxy: Option<String>,
}

/// The ProxyCommand for a VM without a network: `banger vm exec` runs the agent's
/// `connect` in the guest, which joins its stdio to the guest's sshd. The socket is
/// named so the proxy reaches the same daemon from any environment.
pub fn agent_proxy(banger: &Path, socket: &Path, vm: &str) -> String {
    let words = [
        "env".to_string(),
        format!("BANGER_SOCKET={}", socket.display()),
        banger.display().to_string(),
        "vm".into(),
        "exec".into(),
        vm.into(),
        "--".into(),
        GUEST_AGENT.into(),
        "connect".into(),
        "127.0.0.1:22".into(),
    ];
    remote_command(&words)
}

impl SshTarget {
    /// Option names and values, in the order ssh gets them.
    fn options(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Path| config_value(&p.display().to_string());
        let mut opts = vec![
            ("User", config_value(&self.user)),
            ("IdentityFile", path(&self.key)),
            ("IdentitiesOnly", "yes".into()),
            ("UserKnownHostsFile", path(&self.known_hosts)),
            ("GlobalKnownHostsFile", "/dev/null".into()),
            ("StrictHostKeyChecking", "yes".into()),
            ("HostKeyAlias", self.alias.clone()),
            ("HostKeyAlgorithms", "ssh-ed25519".into()),
            ("UpdateHostKeys", "no".into()),
            ("CheckHostIP", "no".into()),
            // The guest is not trusted with the user's agent or X display.
            ("ForwardAgent", "no".into()),
            ("ForwardX11", "no".into()),
        ];
        if let Some(proxy) = &self.proxy {
            // ssh takes the rest of the line as is, and expands `%` tokens in it.
            opts.push(("ProxyCommand", percent(proxy)));
        }
        opts
    }

    /// The arguments for `ssh`: options, the host, and the command (if any) quoted for
    /// the remote shell so it arrives exactly as typed. Options on the command line
    /// beat ~/.ssh/config, so a `Host *` there cannot forward anything to the guest.
    pub fn argv(&self, command: &[String]) -> Vec<OsString> {
        let mut argv = Vec::new();
        let mut options = self.options();
        options.push(("ClearAllForwardings", "yes".into()));
        for (key, value) in options {
            argv.push(OsString::from("-o"));
            argv.push(format!("{key}={value}").into());
        }
        // After `--`, nothing is read as an ssh option, also not a command word.
        argv.push("--".into());
        argv.push(self.host.clone().into());
        if !command.is_empty() {
            argv.push(remote_command(command).into());
        }
        argv
    }

    /// A `Host` block for ~/.ssh/config.
    pub fn config_block(&self) -> String {
        let mut out = format!("Host {}\n", config_value(&self.name));
        if self.proxy.is_none() {
            out.push_str(&format!("  HostName {}\n", self.host));
        }
        for (key, value) in self.options() {
            out.push_str(&format!("  {key} {value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(proxy: Option<String>) -> SshTarget {
        SshTarget {
            name: "web".into(),
            user: "root".into(),
            host: "172.30.0.2".into(),
            alias: "banger-0a1b".into(),
            key: "/var/lib/banger/ssh/id_ed25519".into(),
            known_hosts: "/var/lib/banger/ssh/known_hosts/0a1b".into(),
            proxy,
        }
    }

    #[test]
    fn argv_pins_the_host_key_and_quotes_the_command() {
        let argv = target(None).argv(&["sh".into(), "-c".into(), "exit 42".into()]);

        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(argv.contains(&"StrictHostKeyChecking=yes"));
        assert!(!argv.iter().any(|a| a.contains("StrictHostKeyChecking=no")));
        assert!(argv.contains(&"UserKnownHostsFile=/var/lib/banger/ssh/known_hosts/0a1b"));
        assert_eq!(
            argv[argv.len() - 3..],
            ["--", "172.30.0.2", "sh -c 'exit 42'"]
        );
    }

    #[test]
    fn argv_forwards_no_agent_no_x11_and_no_ports() {
        let argv = target(None).argv(&[]);

        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        let end = argv.iter().position(|a| *a == "--").unwrap();
        let options = &argv[..end];
        for wanted in [
            "ForwardAgent=no",
            "ForwardX11=no",
            "ClearAllForwardings=yes",
        ] {
            assert!(options.windows(2).any(|w| w == ["-o", wanted]), "{argv:?}");
        }
    }

    #[test]
    fn no_command_means_a_login_shell() {
        let argv = target(None).argv(&[]);

        assert_eq!(argv.last().unwrap(), "172.30.0.2");
    }

    #[test]
    fn the_proxy_runs_the_agent_connect_through_banger() {
        let proxy = agent_proxy(
            Path::new("/opt/my banger/banger"),
            Path::new("/run/b%.sock"),
            "web",
        );

        assert_eq!(
            proxy,
            "env 'BANGER_SOCKET=/run/b%.sock' '/opt/my banger/banger' vm exec web -- \
             /usr/local/sbin/banger-agent connect 127.0.0.1:22"
        );
        let argv = target(Some(proxy)).argv(&[]);
        assert!(argv.iter().any(|a| a.to_str().unwrap().starts_with(
            "ProxyCommand=env 'BANGER_SOCKET=/run/b%%.sock' '/opt/my banger/banger'"
        )));
    }

    #[test]
    fn the_config_block_has_every_setting() {
        let block = target(None).config_block();

        assert_eq!(
            block,
            "Host web\n  HostName 172.30.0.2\n  User root\n  IdentityFile /var/lib/banger/ssh/id_ed25519\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile /var/lib/banger/ssh/known_hosts/0a1b\n  \
             GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  HostKeyAlias banger-0a1b\n  \
             HostKeyAlgorithms ssh-ed25519\n  UpdateHostKeys no\n  CheckHostIP no\n  \
             ForwardAgent no\n  ForwardX11 no\n"
        );
    }

    #[test]
    fn the_login_is_the_targets_user() {
        let dev = SshTarget {
            user: "dev".into(),
            ..target(None)
        };

        let argv = dev.argv(&[]);

        assert!(dev.config_block().contains("\n  User dev\n"));
        assert!(argv.iter().any(|a| a == "User=dev"), "{argv:?}");
    }

    #[test]
    fn a_vm_without_network_gets_a_proxy_and_no_host_name() {
        let block = target(Some("env x".into())).config_block();

        assert!(block.contains("  ProxyCommand env x\n"), "{block}");
        assert!(!block.contains("HostName"), "{block}");
    }
}
