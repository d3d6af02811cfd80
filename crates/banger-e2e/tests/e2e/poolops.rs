//! Operating the hot pool: an image's own pool size (`image warm --pool N`), resized at
//! once, kept across daemon restarts and put back on the config's by `--pool default`;
//! the pool in `doctor`; MCP's `run` with `no_pool` leaving the pool's clones alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdout, Stdio};

use banger_e2e::host::{taps_on, vmm_pids};
use banger_e2e::{Harness, BRIDGE};
use banger_wire::api::ImageInfo;
use serde_json::{json, Value};

use super::pool::{pool_holds, status, Warm};

fn image(h: &Harness) -> ImageInfo {
    let out = h.banger(&["image", "show", "default", "--json"]).success();
    serde_json::from_slice(&out.stdout).expect("image show --json is an ImageInfo")
}

/// `banger doctor --json`'s `pool` row.
fn doctor_pool(h: &Harness) -> Value {
    // Other rows may fail on this host (exit 1): only the pool's matters here.
    let out = h.banger(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == "pool"))
        .cloned()
        .unwrap_or_else(|| panic!("no pool row: {report}"))
}

#[test]
fn image_warm_pool_sizes_the_image_pool_zero_empties_it_default_resets_it() {
    let Some(h) =
        banger_e2e::turn("image_warm_pool_sizes_the_image_pool_zero_empties_it_default_resets_it")
    else {
        return;
    };
    let ours = [h.state_dir.as_path(), h.runtime_dir.as_path()];
    let warm = Warm::with(&h, &["--pool", "1"]);
    assert!(pool_holds(&h, 1), "the pool never filled: {:?}", status(&h));

    let pools = status(&h).pools;
    let doctor = doctor_pool(&h);

    assert_eq!(image(&h).pool_size, Some(1));
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!((pools[0].ready, pools[0].target), (1, 1));
    assert!(pools[0].pss_kib > 0, "{pools:?}");
    assert_eq!(doctor["status"], "pass", "{doctor}");
    let detail = doctor["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("default (") && detail.contains(": 1/1 ready, "),
        "{detail}"
    );
    assert_eq!(vmm_pids(&ours).len(), 1);
    let taps = taps_on(BRIDGE);

    // The machine is warm: only the pool changes, and its clone is gone on the answer.
    let resized = h.ok(&["image", "warm", "--pool", "0"]);

    assert_eq!(resized.split_whitespace().next(), Some(warm.1.as_str()));
    assert_eq!(status(&h).pool_vms, 0);
    assert_eq!(vmm_pids(&ours), Vec::<u32>::new());
    assert_eq!(h.vms(), vec![]);
    let vm_dirs = fs_err::read_dir(h.state_dir.join("vms")).unwrap().count();
    assert_eq!(vm_dirs, 0, "a pooled clone's files are left");
    assert_eq!(taps_on(BRIDGE), taps - 1, "the clone's tap is left");

    // Kept across a restart: the new daemon fills no pool for the image.
    h.restart_daemon();

    assert_eq!(image(&h).pool_size, Some(0));
    assert_eq!(status(&h).pools, vec![]);
    assert!(doctor_pool(&h)["detail"]
        .as_str()
        .unwrap()
        .starts_with("no pool"));

    // `default` puts the image back on the config's pool size.
    let _config = h.with_config("pool_size = 1");
    assert_eq!(
        status(&h).pool_vms,
        0,
        "the image's own size of 0 is not kept"
    );
    h.ok(&["image", "warm", "--pool", "default"]);

    assert_eq!(image(&h).pool_size, None);
    assert!(pool_holds(&h, 1), "the pool never filled: {:?}", status(&h));
}

/// `banger mcp` over its stdio: one JSON-RPC message a line.
struct Mcp {
    child: std::process::Child,
    out: BufReader<ChildStdout>,
    next: u64,
}

impl Mcp {
    fn start(h: &Harness) -> Mcp {
        let mut cmd = h.command();
        cmd.arg("mcp").stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn banger mcp");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut mcp = Mcp {
            child,
            out,
            next: 1,
        };
        mcp.call(
            "initialize",
            json!({"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "e2e", "version": "0"}}),
        );
        mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mcp
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends request `method` and returns its answer's `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            assert_ne!(
                self.out.read_line(&mut line).unwrap(),
                0,
                "banger mcp ended"
            );
            let msg: Value = serde_json::from_str(&line).unwrap();
            if msg["id"] == id {
                return msg
                    .get("result")
                    .cloned()
                    .unwrap_or_else(|| panic!("{msg}"));
            }
        }
    }

    /// The `run` tool's structured answer.
    fn run(&mut self, args: Value) -> Value {
        let result = self.call("tools/call", json!({"name": "run", "arguments": args}));
        assert_ne!(result["isError"], true, "{result}");
        result["structuredContent"].clone()
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn mcp_run_with_no_pool_leaves_the_pool_alone() {
    let Some(h) = banger_e2e::turn("mcp_run_with_no_pool_leaves_the_pool_alone") else {
        return;
    };
    let ours = [h.state_dir.as_path(), h.runtime_dir.as_path()];
    let _warm = Warm::make(&h);
    assert!(pool_holds(&h, 2), "the pool never filled: {:?}", status(&h));
    let pooled = vmm_pids(&ours);
    let mut mcp = Mcp::start(&h);

    let fresh = mcp.run(json!({"command": ["hostname"], "no_pool": true}));
    let after_fresh = vmm_pids(&ours);
    let taken = mcp.run(json!({"command": ["hostname"]}));

    let log = h.ok(&["daemon", "logs"]);
    let from_pool = |vm: &Value| {
        let name = format!("vm={}", vm.as_str().unwrap());
        log.lines()
            .any(|l| l.contains("vm taken from the pool") && l.contains(&name))
    };
    assert_eq!(fresh["exit_code"], 0, "{fresh}");
    assert_eq!(
        fresh["stdout"],
        format!("{}\n", fresh["vm"].as_str().unwrap())
    );
    assert!(
        !from_pool(&fresh["vm"]),
        "a no_pool run took a pooled clone"
    );
    assert!(
        pooled.iter().all(|p| after_fresh.contains(p)),
        "a no_pool run took a pooled clone: {pooled:?} {after_fresh:?}"
    );
    assert_eq!(taken["exit_code"], 0, "{taken}");
    assert!(
        from_pool(&taken["vm"]),
        "a plain run took no pooled clone:\n{log}"
    );
}
