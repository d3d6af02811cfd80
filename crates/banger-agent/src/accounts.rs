//! The guest's user accounts, for `--user`: finds a user in `/etc/passwd`, or creates
//! it (lines in `/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/gshadow`, a home from
//! `/etc/skel`) the first time a command asks for it. The files are read and written
//! directly, as static binaries have no NSS.

use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_wire::user::{GuestUser, MAX_UID};
use banger_wire::{Diagnostic, ErrorCode};
use fs_err::os::unix::fs::OpenOptionsExt;

/// Where UIDs and GIDs of created users start, as on Debian.
const FIRST_UID: u32 = 1000;

/// Serialises creations: a workspace ships over several execs at once.
static CREATING: Mutex<()> = Mutex::new(());

/// A user as a command is started for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create user {name} in the guest: {what} failed")]
    Write {
        name: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("user {name} exists in the guest with UID {has}, not {asked}")]
    UidMismatch { name: String, has: u32, asked: u32 },
    #[error("UID {uid} belongs to user {owner} in the guest")]
    UidTaken { uid: u32, owner: String },
    #[error("no free UID from {FIRST_UID} to {MAX_UID} in the guest")]
    NoFreeId,
}

impl Diagnostic for AccountError {
    fn code(&self) -> ErrorCode {
        match self {
            AccountError::Read { .. } | AccountError::Write { .. } => ErrorCode::AgentFailed,
            AccountError::UidMismatch { .. } | AccountError::UidTaken { .. } => {
                ErrorCode::FailedPrecondition
            }
            AccountError::NoFreeId => ErrorCode::FailedPrecondition,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            AccountError::UidMismatch { name, .. } => Some(format!(
                "leave the UID out (--user {name}) to run as the existing user"
            )),
            AccountError::UidTaken { .. } => {
                Some("pick another UID, or leave it out to take the next free one".into())
            }
            _ => None,
        }
    }
}

/// The account files under `root`: `/` in a guest, a scratch dir in tests.
#[derive(Debug, Clone)]
pub struct Accounts {
    root: PathBuf,
}

/// One `name:x:id:...` line of `/etc/passwd` or `/etc/group`, split.
struct Entry<'a>(Vec<&'a str>);

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[2].parse::<u32>().is_ok()).then_some(Entry(fields))
    }

    fn name(&self) -> &'a str {
        self.0[0]
    }

    fn id(&self) -> u32 {
        self.0[2].parse().unwrap_or(u32::MAX)
    }

    fn field(&self, i: usize) -> &'a str {
        self.0.get(i).copied().unwrap_or("")
    }
}

impl Accounts {
    pub fn under(root: impl Into<PathBuf>) -> Accounts {
        Accounts { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn read(&self, rel: &str) -> Result<String, AccountError> {
        let path = self.path(rel);
        match fs_err::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(AccountError::Read { path, source }),
        }
    }

    /// `user`'s account, created first when the guest has none of that name.
    pub fn ensure(&self, user: &GuestUser) -> Result<Account, AccountError> {
        let _creating = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        let passwd = self.read("/etc/passwd")?;
        let group = self.read("/etc/group")?;
        let users: Vec<Entry<'_>> = passwd.lines().filter_map(Entry::parse).collect();
        if let Some(found) = users.iter().find(|e| e.name() == user.name()) {
            return match user.uid() {
                Some(asked) if asked != found.id() => Err(AccountError::UidMismatch {
                    name: user.name().into(),
                    has: found.id(),
                    asked,
                }),
                _ => Ok(self.account(found, &group)),
            };
        }
        let groups: Vec<Entry<'_>> = group.lines().filter_map(Entry::parse).collect();
        let uid = match user.uid() {
            Some(uid) => match users.iter().find(|e| e.id() == uid) {
                Some(owner) => {
                    return Err(AccountError::UidTaken {
                        uid,
                        owner: owner.name().into(),
                    })
                }
                None => uid,
            },
            None => free_id(&users, None).ok_or(AccountError::NoFreeId)?,
        };
        let gid = match groups.iter().find(|g| g.name() == user.name()) {
            Some(g) => g.id(),
            None => free_id(&groups, Some(uid)).ok_or(AccountError::NoFreeId)?,
        };
        let new_group = !groups.iter().any(|g| g.name() == user.name());
        self.create(user, uid, gid, new_group)?;
        tracing::info!(user = user.name(), uid, gid, "created guest user");
        let passwd = self.read("/etc/passwd")?;
        let group = self.read("/etc/group")?;
        let created = passwd.lines().filter_map(Entry::parse);
        let found = created.into_iter().find(|e| e.name() == user.name());
        found
            .map(|e| self.account(&e, &group))
            .ok_or_else(|| AccountError::Read {
                path: self.path("/etc/passwd"),
                source: io::Error::other("the line just written is not there"),
            })
    }

    fn account(&self, e: &Entry<'_>, group: &str) -> Account {
        let gid: u32 = e.field(3).parse().unwrap_or(e.id());
        let mut groups = vec![gid];
        for g in group.lines().filter_map(Entry::parse) {
            let member = g.field(3).split(',').any(|m| m == e.name());
            if member && !groups.contains(&g.id()) {
                groups.push(g.id());
            }
        }
        Account {
            name: e.name().into(),
            uid: e.id(),
            gid,
            groups,
            home: PathBuf::from(e.field(5)),
            shell: e.field(6).to_string(),
        }
    }

    fn create(
        &self,
        user: &GuestUser,
        uid: u32,
        gid: u32,
        new_group: bool,
    ) -> Result<(), AccountError> {
        let name = user.name();
        let home = user.home();
        let shell = if self.path("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let fail = |what: &str| {
            let what = what.to_string();
            move |source| AccountError::Write {
                name: name.into(),
                what,
                source,
            }
        };
        self.make_home(&home, uid, gid)
            .map_err(fail(&format!("creating {home}")))?;
        if new_group {
            self.append("/etc/group", &format!("{name}:x:{gid}:"))
                .map_err(fail("writing /etc/group"))?;
            self.append_if_present("/etc/gshadow", &format!("{name}:!::"))
                .map_err(fail("writing /etc/gshadow"))?;
        }
        // `*`: no password will ever match, yet the account is not locked (sshd with
        // keys, sudo with NOPASSWD still work).
        self.append_if_present("/etc/shadow", &format!("{name}:*:{}:0:99999:7:::", days()))
            .map_err(fail("writing /etc/shadow"))?;
        // Last: a user in /etc/passwd is a finished one.
        self.append(
            "/etc/passwd",
            &format!("{name}:x:{uid}:{gid}::{home}:{shell}"),
        )
        .map_err(fail("writing /etc/passwd"))
    }

    /// The home, private to the user, with `/etc/skel`'s files.
    fn make_home(&self, home: &str, uid: u32, gid: u32) -> io::Result<()> {
        let dir = self.path(home);
        let mkdir = |path: &Path, mode: u32, recursive: bool| {
            let made = std::fs::DirBuilder::new()
                .recursive(recursive)
                .mode(mode)
                .create(path);
            match made {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::new(
                    e.kind(),
                    format!("mkdir {}: {e}", path.display()),
                )),
                _ => Ok(()),
            }
        };
        if let Some(parent) = dir.parent() {
            mkdir(parent, 0o755, true)?;
        }
        mkdir(&dir, 0o700, false)?;
        if !may_take(&dir, uid)? {
            tracing::warn!(
                home,
                uid,
                "the home exists and is someone else's; left as it is"
            );
            return Ok(());
        }
        chown(&dir, uid, gid)?;
        let Ok(skel) = fs_err::read_dir(self.path("/etc/skel")) else {
            return Ok(());
        };
        for entry in skel.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let to = dir.join(entry.file_name());
            let mut out = match fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&to)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&fs_err::read(entry.path())?)?;
            chown(&to, uid, gid)?;
        }
        Ok(())
    }

    fn append_if_present(&self, rel: &str, line: &str) -> io::Result<()> {
        if self.path(rel).exists() {
            self.append(rel, line)
        } else {
            Ok(())
        }
    }

    /// Appends `line`, on a line of its own even when the file lacks a final newline.
    fn append(&self, rel: &str, line: &str) -> io::Result<()> {
        let path = self.path(rel);
        let text = match fs_err::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let sep = if text.is_empty() || text.ends_with(b"\n") {
            ""
        } else {
            "\n"
        };
        let mut f = fs_err::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&path)?;
        f.write_all(format!("{sep}{line}\n").as_bytes())?;
        f.sync_all()
    }
}

/// The lowest ID from [`FIRST_UID`] up that no entry has, `prefer` when it is free.
fn free_id(entries: &[Entry<'_>], prefer: Option<u32>) -> Option<u32> {
    let taken = |id: u32| entries.iter().any(|e| e.id() == id);
    prefer
        .filter(|&id| !taken(id))
        .or_else(|| (FIRST_UID..=MAX_UID).find(|&id| !taken(id)))
}

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| io::Error::new(e.kind(), format!("chown {}: {e}", path.display())))
}

/// Days since the Unix epoch: the shadow file's "last changed".
fn days() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

/// Whether a new user of `uid` may have `dir` as its home: a real directory (not a
/// link to elsewhere), theirs already or empty. A home left by the image or made by
/// another guest user (a writable `/home`) is not handed over with what it holds.
fn may_take(dir: &Path, uid: u32) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs_err::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(false);
    }
    Ok(meta.uid() == uid || fs_err::read_dir(dir)?.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
alice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:alice,dev\nalice:x:1000:";

    /// A guest tree with the account files; files are owned by whoever runs the test,
    /// so homes are chowned to that user.
    fn guest() -> (tempfile::TempDir, Accounts, u32) {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("etc/skel")).unwrap();
        fs_err::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        fs_err::write(dir.path().join("etc/group"), GROUP).unwrap();
        fs_err::write(dir.path().join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        fs_err::write(dir.path().join("etc/skel/.profile"), "# profile\n").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let accounts = Accounts::under(dir.path());
        (dir, accounts, me)
    }

    fn user(s: &str) -> GuestUser {
        s.parse().unwrap()
    }

    fn read(dir: &tempfile::TempDir, rel: &str) -> String {
        fs_err::read_to_string(dir.path().join(rel)).unwrap()
    }

    #[test]
    fn an_existing_user_is_found_with_its_groups() {
        let (_dir, accounts, _) = guest();

        let alice = accounts.ensure(&user("alice")).unwrap();

        assert_eq!((alice.uid, alice.gid), (1000, 1000));
        assert_eq!(alice.groups, [1000, 27]);
        assert_eq!(alice.home, PathBuf::from("/home/alice"));
    }

    #[test]
    fn a_missing_user_is_created_with_the_next_free_uid_and_a_home() {
        let (dir, accounts, me) = guest();
        if me != 0 {
            eprintln!("skipping: chowning a home to a new UID needs root");
            return;
        }

        let dev = accounts.ensure(&user("dev")).unwrap();
        let again = accounts.ensure(&user("dev")).unwrap();

        assert_eq!(
            (dev.uid, dev.gid, dev.groups.clone()),
            (1001, 1001, vec![1001, 27])
        );
        assert_eq!(dev, again);
        assert!(read(&dir, "etc/passwd").ends_with("dev:x:1001:1001::/home/dev:/bin/sh\n"));
        assert!(read(&dir, "etc/group").ends_with("alice:x:1000:\ndev:x:1001:\n"));
        assert!(read(&dir, "etc/shadow").contains("\ndev:*:"));
        let home = dir.path().join("home/dev");
        use std::os::unix::fs::MetadataExt;
        let meta = fs_err::metadata(&home).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (1001, 0o700));
        assert_eq!(fs_err::metadata(home.join(".profile")).unwrap().uid(), 1001);
    }

    #[test]
    fn a_home_that_is_someone_elses_is_not_handed_over() {
        let (dir, accounts, me) = guest();
        if me != 0 {
            eprintln!("skipping: chowning a home to a new UID needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        // Left by the image for another user, and a link to a place of root's.
        let theirs = dir.path().join("home/dev");
        fs_err::create_dir_all(&theirs).unwrap();
        fs_err::write(theirs.join("notes"), "not dev's").unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
        let elsewhere = dir.path().join("srv");
        fs_err::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("home/ops")).unwrap();

        accounts.ensure(&user("dev")).unwrap();
        accounts.ensure(&user("ops")).unwrap();

        assert_eq!(fs_err::metadata(&theirs).unwrap().uid(), 4242);
        assert_eq!(fs_err::metadata(theirs.join("notes")).unwrap().uid(), 0);
        assert!(!theirs.join(".profile").exists());
        assert_eq!(fs_err::metadata(&elsewhere).unwrap().uid(), 0);
        assert!(!elsewhere.join(".profile").exists());
    }

    #[test]
    fn an_empty_home_is_taken_over() {
        let (dir, accounts, me) = guest();
        if me != 0 {
            eprintln!("skipping: chowning a home to a new UID needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        fs_err::create_dir_all(dir.path().join("home/dev")).unwrap();

        let dev = accounts.ensure(&user("dev")).unwrap();

        let home = dir.path().join("home/dev");
        assert_eq!(fs_err::metadata(&home).unwrap().uid(), dev.uid);
        assert_eq!(
            fs_err::metadata(home.join(".profile")).unwrap().uid(),
            dev.uid
        );
    }

    #[test]
    fn a_given_uid_is_used_or_refused() {
        let (_dir, accounts, me) = guest();

        let taken = accounts.ensure(&user("bob:1000")).unwrap_err();
        let mismatch = accounts.ensure(&user("alice:1500")).unwrap_err();

        assert_eq!(
            taken.to_string(),
            "UID 1000 belongs to user alice in the guest"
        );
        assert_eq!(
            mismatch.to_string(),
            "user alice exists in the guest with UID 1000, not 1500"
        );
        assert!(mismatch.hint().unwrap().contains("--user alice"));
        if me == 0 {
            let bob = accounts.ensure(&user("bob:1500")).unwrap();
            assert_eq!((bob.uid, bob.gid), (1500, 1500));
        }
    }

    #[test]
    fn free_ids_skip_taken_ones() {
        let lines = ["a:x:1000:1000", "b:x:1001:1001", "c:x:1003:1003"];
        let entries: Vec<Entry<'_>> = lines.iter().filter_map(|l| Entry::parse(l)).collect();

        assert_eq!(free_id(&entries, None), Some(1002));
        assert_eq!(free_id(&entries, Some(1001)), Some(1002));
        assert_eq!(free_id(&entries, Some(1500)), Some(1500));
    }
}
