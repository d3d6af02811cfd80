//! `vm cp` with several sources and directories both ways (also from a hostile guest),
//! port forwards (`-p` on 127.0.0.1, `vm port add|ls|rm` on a running VM), and the
//! shallow workspace ship.

use banger_e2e::host::{cmd, tcp_banner, tcp_open, wait_for_listener, WebServer};
use banger_e2e::repo::{git, sh_in, TREE_SUM};
use banger_e2e::{TestVm, BRIDGE};
use banger_wire::api::{PortInfo, PortProto};

/// A guest listener on `port` that answers every connection with `cpport` (perl is in
/// every Debian image: perl-base is essential). Detached from the exec that starts it.
const GUEST_SERVER: &str = r#"setsid -f perl -MIO::Socket::INET -e '
  my $s = IO::Socket::INET->new(LocalPort => $ARGV[0], Listen => 5, ReuseAddr => 1) or die "$!";
  while (my $c = $s->accept) { print $c "cpport\n"; close $c }' "$0" </dev/null >/dev/null 2>&1"#;

#[test]
fn vm_cp_several_sources_and_directories() {
    let Some(h) = banger_e2e::turn("vm_cp_several_sources_and_directories") else {
        return;
    };
    let d = h.run_dir.join("cpmulti");
    let _ = fs_err::remove_dir_all(&d);
    let src = d.join("src");
    sh_in(
        &h.run_dir,
        &format!(
            "mkdir -p '{s}/tree/sub dir' '{d}/back' '{d}/one' && cd '{s}' &&
             printf 'a\\n' >a.txt && printf 'ü\\n' >'tree/sub dir/ünï x' &&
             printf '#!/bin/sh\\n' >tree/run.sh && chmod 750 tree/run.sh &&
             ln -s run.sh tree/link",
            s = src.display(),
            d = d.display()
        ),
    );
    let vm = h.create("cpmulti", &[]);
    let name = vm.name().to_string();
    let remote = |p: &str| format!("{name}:{p}");
    let a = src.join("a.txt");
    let tree = src.join("tree");
    let (a, tree) = (a.to_str().unwrap(), tree.to_str().unwrap());
    vm.sh("mkdir /root/dst");

    // Host to guest: a file and a directory into an existing directory.
    h.ok(&["vm", "cp", a, tree, &remote("/root/dst/")]);
    // Guest to host: both back into one directory, and one directory under a new name.
    let back = d.join("back");
    let one = d.join("one/renamed");
    let (back, one) = (back.to_str().unwrap(), one.to_str().unwrap());
    let (ga, gtree) = (remote("/root/dst/a.txt"), remote("dst/tree"));
    h.ok(&["vm", "cp", &ga, &gtree, back]);
    h.ok(&["vm", "cp", &gtree, one]);

    let in_guest = vm.sh(&format!("cd /root/dst && {TREE_SUM}"));
    assert_eq!(in_guest, sh_in(&src, TREE_SUM));
    assert_eq!(sh_in(&d.join("back"), TREE_SUM), in_guest);
    assert_eq!(
        sh_in(&d.join("one/renamed"), TREE_SUM),
        sh_in(&src.join("tree"), TREE_SUM)
    );
    // Several sources need an existing directory, and distinct names.
    h.banger(&["vm", "cp", a, tree, &remote("/root/dst/a.txt")])
        .failure(Some(3), "is not a directory");
    h.banger(&["vm", "cp", &ga, &gtree, &d.join("nope").to_string_lossy()])
        .failure(Some(3), "is not a directory");
    h.banger(&["vm", "cp", &ga, &remote("/tmp/../root/dst/a.txt"), back])
        .failure(Some(3), "two sources are named \"a.txt\"");

    // A hostile guest: asked for two directories, its tar puts an entry beside the
    // first one, and climbs out of the second.
    let evil = d.join("evil.tar");
    let evil_py = r#"import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for name in ["./x", "./other"]:
        d = tarfile.TarInfo(name); d.type = tarfile.DIRTYPE; d.mode = 0o755; t.addfile(d)
    f = tarfile.TarInfo("./other/pwned"); f.size = 6; t.addfile(f, io.BytesIO(b"owned\n"))
"#;
    cmd("python3", &["-c", evil_py, evil.to_str().unwrap()]);
    h.ok(&[
        "vm",
        "cp",
        evil.to_str().unwrap(),
        &remote("/root/evil.tar"),
    ]);
    vm.sh(
        "mkdir /root/x /root/y && printf '#!/bin/sh\\nexec cat /root/evil.tar\\n' >/usr/local/bin/tar \
         && chmod 755 /usr/local/bin/tar",
    );
    let hostile = d.join("hostile");
    fs_err::create_dir(&hostile).unwrap();

    let refused = h.banger(&[
        "vm",
        "cp",
        &remote("/root/x"),
        &remote("/root/y"),
        hostile.to_str().unwrap(),
    ]);

    refused.failure(Some(11), "refusing entry \"./other");
    assert!(!hostile.join("other").exists());
}

#[test]
fn ports_publish_and_change_on_a_running_vm() {
    let Some(h) = banger_e2e::turn("ports_publish_and_change_on_a_running_vm") else {
        return;
    };
    let vm = h.create("ports", &["-p", "18193:22"]);
    let name = vm.name();
    let id = vm.info().id;
    vm.wait_for_sshd();

    // `-p` answers on the host's loopback.
    assert_eq!(tcp_banner("127.0.0.1", 18193), "SSH-");

    // A forward added while the VM runs reaches a guest listener at once.
    vm.exec(&["sh", "-c", GUEST_SERVER, "8000"]).success();
    vm.sh("until ss -ltn | grep -q ':8000 '; do sleep 0.2; done");
    assert!(!tcp_open("127.0.0.1", 18194));
    h.ok(&["vm", "port", "add", name, "18194:8000"]);
    assert_eq!(tcp_banner("127.0.0.1", 18194), "cppo");
    let listed: Vec<PortInfo> =
        serde_json::from_str(&h.ok(&["vm", "port", "ls", name, "--json"])).unwrap();
    let fwd = |host, guest| PortInfo {
        host,
        guest,
        proto: PortProto::Tcp,
    };
    assert_eq!(listed, [fwd(18193, 22), fwd(18194, 8000)]);

    // Conflicts: a host port already forwarded, or held by a host process.
    h.banger(&["vm", "port", "add", name, "18194:22"])
        .failure(Some(5), "already forwarded");
    let _web = WebServer::serve("127.0.0.1:18195", "host");
    wait_for_listener("127.0.0.1", 18195);
    h.banger(&["vm", "port", "add", name, "18195:22"])
        .failure(Some(5), "host port 18195/tcp is in use");

    // Kept with the VM across a restart.
    h.ok(&["vm", "restart", name]);
    vm.wait_for_sshd();
    vm.exec(&["sh", "-c", GUEST_SERVER, "8000"]).success();
    vm.sh("until ss -ltn | grep -q ':8000 '; do sleep 0.2; done");
    assert_eq!(tcp_banner("127.0.0.1", 18194), "cppo");

    // Removed at once; an unknown forward is an error.
    h.ok(&["vm", "port", "rm", name, "18194"]);
    assert!(!tcp_open("127.0.0.1", 18194));
    h.banger(&["vm", "port", "rm", name, "18194"])
        .failure(Some(4), "has no forward of host port 18194");
    assert_eq!(h.ok(&["vm", "port", "ls", name]).lines().count(), 2);

    // Nothing is left in the VM's nftables chain once it is deleted.
    let table = format!("banger_{BRIDGE}");
    let chain = format!("vm_{id}");
    assert!(cmd("nft", &["list", "table", "ip", &table]).contains(&chain));
    vm.delete();
    assert!(!cmd("nft", &["list", "table", "ip", &table]).contains(&chain));
    assert!(!tcp_open("127.0.0.1", 18193));
}

#[test]
fn workspace_ships_head_alone_unless_history_is_asked_for() {
    let Some(h) = banger_e2e::turn("workspace_ships_head_alone_unless_history_is_asked_for") else {
        return;
    };
    let r = h.run_dir.join("shallow");
    let _ = fs_err::remove_dir_all(&r);
    fs_err::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    for (i, text) in ["v1", "v2", "v3"].iter().enumerate() {
        fs_err::write(r.join("f.txt"), format!("{text}\n")).unwrap();
        git(&r, &["add", "f.txt"]);
        let msg = format!("commit {i}");
        git(
            &r,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                &msg,
            ],
        );
    }
    let head = sh_in(&r, "git rev-parse HEAD");
    let probe = "git rev-list --count HEAD; cat .git/shallow 2>/dev/null || echo deep; \
                 echo v4 >f.txt; git diff HEAD --stat | tail -n1";
    let run = |extra: &[&str]| {
        let name = h.name("shallow");
        let _vm = TestVm::new(&h, name.clone());
        let mut argv = vec!["vm", "run", "--rm", "--name", &name];
        argv.extend_from_slice(extra);
        argv.extend([r.to_str().unwrap(), "--", "sh", "-c", probe]);
        h.ok(&argv)
    };

    let shallow = run(&[]);
    let deep = run(&["--history"]);

    let changed = " 1 file changed, 1 insertion(+), 1 deletion(-)";
    assert_eq!(shallow, format!("1\n{head}\n{changed}"));
    assert_eq!(deep, format!("3\ndeep\n{changed}"));
}
