#![allow(clippy::unwrap_used, clippy::print_stderr)]
//! A member of the daemon's socket group is not root: the CLI, run as an unprivileged
//! user against an in-process daemon (running as root) on a temp socket, must not get
//! the daemon to read or write host paths the user could not. Needs root (to add a
//! throwaway user), `useradd`/`userdel`, `setpriv` and `mkfs.ext4`; skips otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use banger_host::config::{Config, Paths};
use banger_wire::api::Backend;
use bangerd::vm::{Backends, Manager};
use bangerd::vmm::qemu::Qemu;

fn ready() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root to add a throwaway user");
        return false;
    }
    for tool in ["useradd", "userdel", "setpriv", "mkfs.ext4"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            eprintln!("skipping: {tool} is not installed");
            return false;
        }
    }
    true
}

/// A throwaway unprivileged user with a group of its own, removed on drop.
struct User {
    name: String,
    uid: u32,
}

impl User {
    fn add(tag: &str) -> User {
        let name = format!("bgp{}{tag}", std::process::id());
        let status = Command::new("useradd")
            .args(["-M", "-U", "-s", "/usr/sbin/nologin", &name])
            .status()
            .unwrap();
        assert!(status.success(), "useradd {name}");
        let uid = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        User { name, uid }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// An in-process daemon (as root) whose socket group is the test user's own group, so
/// the user is exactly a member of the socket group.
struct Daemon {
    dir: tempfile::TempDir,
    paths: Paths,
    /// A socket dir made outside `dir`, removed on drop.
    planted: Option<PathBuf>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _rt: tokio::runtime::Runtime,
    user: User,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        Daemon::start_with_socket(tag, |_| None)
    }

    /// Like [`Daemon::start`], listening on `socket(user)` when that gives a path.
    fn start_with_socket(tag: &str, socket: impl FnOnce(&User) -> Option<PathBuf>) -> Daemon {
        let user = User::add(tag);
        let dir = tempfile::tempdir().unwrap();
        fs_err::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut paths = Paths::under(dir.path());
        let planted = socket(&user);
        if let Some(socket) = &planted {
            paths.socket = socket.clone();
        }
        let agent = fake_boot_files(&paths, dir.path());
        let store = Arc::new(bangerd::daemon::open(&paths).unwrap());
        let backends = Backends {
            qemu: Some(Arc::new(Qemu {
                binary: dir.path().join("no-such-qemu"),
                accel: "tcg",
                user: bangerd::vmm::user::VMM_USER.into(),
            })),
            firecracker: None,
            default: Backend::Qemu,
        };
        let manager = Arc::new(Manager::new(
            paths.clone(),
            Config::default(),
            store,
            backends,
            Err("tests run without host networking".into()),
        ));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(async { bangerd::daemon::bind_socket(&paths.socket, &user.name) })
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let deps = bangerd::Deps {
            manager,
            socket: paths.socket.clone(),
            agent: Some(agent),
        };
        rt.spawn(bangerd::serve(listener, deps, async {
            let _ = stopped.await;
        }));
        // The user's own HOME and state dir, outside root's.
        let home = dir.path().join("home");
        fs_err::create_dir(&home).unwrap();
        nix::unistd::chown(&home, Some(user.uid.into()), None).unwrap();
        Daemon {
            dir,
            paths,
            planted: planted.and_then(|s| s.parent().map(Path::to_path_buf)),
            stop: Some(stop),
            _rt: rt,
            user,
        }
    }

    /// Runs the real CLI as root.
    fn banger_as_root(&self, args: &[&str]) -> Output {
        self.env(&mut Command::new(env!("CARGO_BIN_EXE_banger")))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the real CLI as the unprivileged group member, on the test daemon.
    fn banger_as_user(&self, args: &[&str]) -> Output {
        let home = self.dir.path().join("home");
        self.user_cmd()
            .env("BANGER_SOCKET", &self.paths.socket)
            .env("BANGER_STATE_DIR", home.join("state"))
            .env("BANGER_CONFIG_DIR", &self.paths.config_dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// The real CLI as the unprivileged user with a plain environment: HOME and no
    /// banger or XDG variables.
    fn user_cmd(&self) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            &self.user.name,
            "--regid",
            &self.user.name,
            "--init-groups",
            "--",
            env!("CARGO_BIN_EXE_banger"),
        ]);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.dir.path().join("home"))
            .env("BANGER_DAEMON", "/nonexistent/bangerd")
            .env("NO_COLOR", "1");
        cmd
    }

    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("BANGER_SOCKET", &self.paths.socket)
            .env("BANGER_STATE_DIR", &self.paths.state_dir)
            .env("BANGER_CONFIG_DIR", &self.paths.config_dir)
            .env("BANGER_DAEMON", "/nonexistent/bangerd")
            .env("NO_COLOR", "1")
    }

    fn image_exists(&self, name: &str) -> bool {
        self.paths.images_dir().join(name).exists()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(dir) = &self.planted {
            let _ = fs_err::remove_dir_all(dir);
        }
    }
}

/// Cached boot files (as a build leaves them) and a fake static agent; returns the
/// agent's path.
fn fake_boot_files(paths: &Paths, dir: &Path) -> PathBuf {
    let boot = paths.cache_dir.join("boot/linux-test_1.abc");
    fs_err::create_dir_all(&boot).unwrap();
    for f in ["vmlinux", "bzImage", "initrd.img"] {
        fs_err::write(boot.join(f), f).unwrap();
    }
    fs_err::write(
        boot.join("boot.json"),
        r#"{"kernel_package":"linux-test","kernel_version":"1","kernel_deb_sha256":"00","busybox_version":"1","modules":[]}"#,
    )
    .unwrap();
    let agent = dir.join("agent");
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(64, 0);
    fs_err::write(&agent, elf).unwrap();
    agent
}

/// A directory only root may read, holding one secret file.
fn root_only_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("banger-secret")
        .tempdir_in("/root")
        .unwrap();
    fs_err::create_dir(dir.path().join("etc")).unwrap();
    fs_err::write(dir.path().join("etc/shadow-copy"), "root only").unwrap();
    dir
}

/// A small rootfs tarball anyone may read.
fn public_tarball(dir: &Path) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/motd", &b"hi"[..]).unwrap();
    let path = dir.join("pub.tar");
    fs_err::write(&path, b.into_inner().unwrap()).unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn group_member_cannot_import_a_directory_only_root_can_read() {
    if !ready() {
        return;
    }
    let d = Daemon::start("i");
    let secret = root_only_dir();

    let out = d.banger_as_user(&[
        "image",
        "import",
        secret.path().to_str().unwrap(),
        "--name",
        "stolen",
    ]);

    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    assert!(!d.image_exists("stolen"));
}

#[test]
fn group_member_cannot_export_into_a_directory_only_root_can_write() {
    if !ready() {
        return;
    }
    let d = Daemon::start("e");
    let tarball = public_tarball(d.dir.path());
    let out = d.banger_as_root(&["image", "import", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let secret = root_only_dir();
    let target = secret.path().join("planted");

    let out = d.banger_as_user(&["image", "export", "pub", target.to_str().unwrap()]);

    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());
}

#[test]
fn group_member_cannot_pull_a_local_bundle_only_root_can_read() {
    if !ready() {
        return;
    }
    let d = Daemon::start("p");
    let tarball = public_tarball(d.dir.path());
    let out = d.banger_as_root(&["image", "import", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let secret = root_only_dir();
    let bundle = secret.path().join("bundle");
    let out = d.banger_as_root(&["image", "export", "pub", bundle.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let url = format!("file://{}", bundle.display());
    let out = d.banger_as_user(&["image", "pull", &url, "--name", "stolen"]);

    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint: "), "{}", stderr(&out));
    assert!(!d.image_exists("stolen"));
}

#[test]
fn root_still_imports_a_directory_and_exports_a_bundle() {
    if !ready() {
        return;
    }
    let d = Daemon::start("r");
    let tree = tempfile::tempdir().unwrap();
    fs_err::create_dir(tree.path().join("etc")).unwrap();
    fs_err::write(tree.path().join("etc/motd"), "hi").unwrap();

    let out = d.banger_as_root(&[
        "image",
        "import",
        tree.path().to_str().unwrap(),
        "--name",
        "tree",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bundle = tree.path().join("bundle");
    let out = d.banger_as_root(&["image", "export", "tree", bundle.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    let mut names: Vec<String> = fs_err::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bzImage.gz",
            "initrd.img.gz",
            "manifest.json",
            "rootfs.ext4.gz",
            "vmlinux.gz"
        ]
    );
}

#[test]
fn a_socket_planted_in_tmp_by_another_user_is_not_used() {
    if !ready() {
        return;
    }
    // Another user (root here) listens where the CLI used to fall back to without
    // XDG_RUNTIME_DIR.
    let d = Daemon::start_with_socket("t", |user| {
        Some(PathBuf::from(format!(
            "/tmp/banger-{}/bangerd.sock",
            user.uid
        )))
    });

    let out = d.user_cmd().args(["daemon", "status"]).output().unwrap();

    let planted = d.paths.socket.display().to_string();
    assert!(!stdout(&out).contains(&planted), "{}", stdout(&out));
    assert!(!stdout(&out).starts_with("running"), "{}", stdout(&out));
}

#[test]
fn a_runtime_dir_of_another_user_is_refused_with_a_hint() {
    if !ready() {
        return;
    }
    let d = Daemon::start("o");
    let theirs = d.dir.path().join("theirs");
    fs_err::create_dir(&theirs).unwrap();
    fs_err::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();

    let out = d
        .user_cmd()
        .env("BANGER_RUNTIME_DIR", &theirs)
        .args(["vm", "list"])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: runtime directory {} belongs to uid 0, not to you (uid {})\n\
             hint: someone else may have made it to catch your daemon's socket; have it \
             removed, or point BANGER_RUNTIME_DIR at a directory of your own\n",
            theirs.display(),
            d.user.uid
        )
    );
    assert_eq!(fs_err::read_dir(&theirs).unwrap().count(), 0);
}

#[test]
fn an_import_the_daemon_refuses_reports_the_daemons_error() {
    if !ready() {
        return;
    }
    let d = Daemon::start("x");
    let tarball = public_tarball(d.dir.path());
    let out = d.banger_as_root(&["image", "import", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // More than the upload buffers hold, so the CLI is still sending when refused.
    let tree = tempfile::tempdir().unwrap();
    fs_err::write(tree.path().join("big"), vec![1u8; 32 << 20]).unwrap();

    let out = d.banger_as_root(&[
        "image",
        "import",
        tree.path().to_str().unwrap(),
        "--name",
        "pub",
    ]);

    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

/// The daemon reads a refused upload to its end before it answers: were it to close
/// the connection with bytes unread, a client still sending would get a reset and
/// lose the answer (the CLI test above then fails now and then, under load).
#[test]
fn a_refused_upload_is_read_to_its_end() {
    use std::io::{Read, Write};
    if !ready() {
        return;
    }
    let d = Daemon::start("u");
    let tarball = public_tarball(d.dir.path());
    let out = d.banger_as_root(&["image", "import", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = serde_json::to_string(&banger_wire::api::Request::ImageImport {
        source: "/big".into(),
        name: Some("pub".into()),
    })
    .unwrap();
    let size: usize = 32 << 20;
    let mut sock = std::os::unix::net::UnixStream::connect(&d.paths.socket).unwrap();

    write!(
        sock,
        "POST {} HTTP/1.1\r\nhost: bangerd\r\nconnection: close\r\n{}: {}\r\n\
         content-length: {size}\r\n\r\n",
        banger_wire::api::UPLOAD_PATH,
        banger_wire::api::REQUEST_HEADER,
        req
    )
    .unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..size / chunk.len() {
        // Far more than the socket buffers hold: this fails if the daemon stops reading.
        sock.write_all(&chunk).unwrap();
    }
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();

    assert!(answer.contains("already exists"), "{answer}");
}

#[test]
fn group_member_cannot_forward_a_port_only_root_may_bind() {
    if !ready() {
        return;
    }
    let d = Daemon::start("f");

    let added = d.banger_as_user(&["vm", "port", "add", "web", "22:22"]);
    let created = d.banger_as_user(&["vm", "create", "web", "--no-start", "-p", "443:443"]);

    for out in [&added, &created] {
        assert_eq!(out.status.code(), Some(11), "{}", stderr(out));
        assert!(
            stderr(out).contains("only root may bind"),
            "{}",
            stderr(out)
        );
        assert!(stderr(out).contains("hint: "), "{}", stderr(out));
    }
    let listed = d.banger_as_root(&["vm", "list", "--json"]);
    assert_eq!(stdout(&listed).trim(), "[]", "{}", stderr(&listed));
}
