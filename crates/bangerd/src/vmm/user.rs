//! The unprivileged system user VMM processes run as. `make install` and
//! `scripts/deps.sh` create it; the daemon refuses to start a VMM without it.

use std::path::Path;

/// Name of the VMM user (and of its group).
pub const VMM_USER: &str = "banger-vmm";

/// The command that creates the VMM user, for hints.
pub const CREATE_VMM_USER: &str =
    "useradd --system --no-create-home --shell /usr/sbin/nologin banger-vmm";

/// Who a VMM runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmmUser {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in the passwd file at `passwd` (normally `/etc/passwd`). Refuses
/// root: a VMM running as uid 0 would defeat the point.
pub fn lookup(passwd: &Path, name: &str) -> Option<VmmUser> {
    let text = fs_err::read_to_string(passwd).ok()?;
    parse(&text, name)
}

fn parse(passwd: &str, name: &str) -> Option<VmmUser> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        (uid != 0 && gid != 0).then_some(VmmUser { uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_user_and_its_group() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      banger-vmm:x:999:995::/home/banger-vmm:/usr/sbin/nologin\n";

        assert_eq!(
            parse(passwd, "banger-vmm"),
            Some(VmmUser { uid: 999, gid: 995 })
        );
        assert_eq!(parse(passwd, "nobody"), None);
    }

    #[test]
    fn a_root_entry_is_not_a_vmm_user() {
        assert_eq!(parse("banger-vmm:x:0:0::/:/bin/sh\n", "banger-vmm"), None);
    }
}
