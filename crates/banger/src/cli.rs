//! Command-line grammar (clap derive). Behaviour lives in `cmd/`.

use banger_wire::user::GuestUser;
use banger_wire::Diagnostic;
use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    success (for exec/run: the guest command's own exit code is passed through,
       a command killed by signal N gives 128+N, one killed at --timeout 124;
       vm run --export/--apply: the command's code, unless it was 0 and the changes
       did not come back, then that failure's code, or 1 for conflicts left)
  1    the command ran and reported failure (e.g. doctor found a FAIL)
  2    usage error
  3    invalid argument          4  not found           5  already exists
  6    wrong state for the verb  7  daemon unavailable   8  VMM failed
  9    guest agent failed        10 timeout             11 permission denied
  12   host resource failed      13 internal error

Environment: BANGER_SOCKET, BANGER_STATE_DIR, BANGER_CONFIG_DIR, BANGER_CACHE_DIR,
BANGER_RUNTIME_DIR override where banger keeps things; NO_COLOR disables colour.";

/// Disposable, real, isolated Linux microVMs.
#[derive(Debug, Parser)]
#[command(name = "banger", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print no progress and no informational lines on stderr (errors and warnings
    /// still print).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing variants would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Create, run and manage VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Build, list and delete guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Ship a git working tree into a VM, and bring the changes back as a patch.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Start, stop and inspect the banger daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// The daemon's public HTTP API (docs/api.md).
    #[command(subcommand)]
    Api(ApiCommand),
    /// Check that this host can run banger, with fixes for what is missing.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions {
        /// The shell to print completions for.
        shell: clap_complete::Shell,
    },
    /// Delete stopped VMs, snapshots, and images no VM or snapshot uses (but the
    /// default image). Warm snapshots go only with their image.
    Prune {
        /// Delete without asking (needed when stdin is not a terminal).
        #[arg(long, short)]
        force: bool,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Run banger on a Slurm cluster's nodes: their slurm.conf lines, the epilog's
    /// clean-up (see docs/slurm.md; `vm run --slurm` places a run).
    #[command(subcommand)]
    Slurm(SlurmCommand),
    /// Serve VMs as tools to an MCP client (Model Context Protocol over stdin/stdout).
    Mcp {
        /// A host directory tools may read repositories from and write patches to
        /// (repeatable). Without it, tools that take host paths are refused.
        #[arg(long = "allow-path", value_name = "DIR")]
        allow_path: Vec<std::path::PathBuf>,
        /// A VM the tools may act on besides those they create (repeatable).
        #[arg(long = "allow-vm", value_name = "NAME")]
        allow_vm: Vec<String>,
        /// Let the tools act on every VM of this host.
        #[arg(long = "all-vms")]
        all_vms: bool,
    },
}

#[derive(Debug, Args)]
pub struct Resources {
    /// Virtual CPUs.
    #[arg(long)]
    pub vcpu: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    pub memory: Option<u32>,
    /// Writable disk capacity in MiB.
    #[arg(long = "disk-size")]
    pub disk_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct NetArgs {
    /// Forward a host port to the guest: HOST:GUEST or HOST:GUEST/udp (repeatable).
    #[arg(long, short = 'p')]
    pub publish: Vec<String>,
    /// Give the VM no network interface.
    #[arg(long)]
    pub no_network: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// What a guest may reach. By default: the internet through NAT and banger's DNS on
/// its gateway, and nothing else (no host service, LAN, link-local or other VM). On
/// `vm set`, each flag given replaces that part of the VM's policy: an empty group
/// leaves the group, `none` empties a list.
#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    /// `open`: the guest also reaches every host service and the LAN (use with care);
    /// `isolated`: the default.
    #[arg(long = "net", value_name = "MODE", value_parser = ["isolated", "open"])]
    pub mode: Option<String>,
    /// Join a group: VMs of one group reach each other, by address and <name>.vm.
    #[arg(long = "net-group", value_name = "NAME")]
    pub group: Option<String>,
    /// Let the guest reach this host port on its gateway: PORT or PORT/udp (repeatable).
    #[arg(long = "allow-host", value_name = "PORT")]
    pub allow_host: Vec<String>,
    /// Let the guest reach a network: CIDR, CIDR:PORT or CIDR:PORT/udp (repeatable).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Limit egress to this domain and its subdomains, as banger's DNS resolves them
    /// (repeatable).
    #[arg(long = "egress-allow", value_name = "DOMAIN")]
    pub egress_allow: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM (and start it, unless --no-start).
    Create {
        /// A DNS label, unique on this host (default: a generated name).
        name: Option<String>,
        /// The image to boot (default: the configured default image).
        #[arg(long)]
        image: Option<String>,
        #[command(flatten)]
        res: Resources,
        #[command(flatten)]
        net: NetArgs,
        /// The VMM (default: firecracker where KVM runs guests at speed, else qemu).
        #[arg(long, value_parser = ["firecracker", "qemu"])]
        backend: Option<String>,
        /// Create the VM stopped.
        #[arg(long)]
        no_start: bool,
        /// Clone this snapshot: resume it on a copy of its disk, with a new address
        /// and agent token (see `banger vm snapshot`).
        #[arg(long, value_name = "SNAP")]
        from_snapshot: Option<String>,
        /// Delete the VM DUR after it is created (30s, 5m, 2h, 1d), also across daemon
        /// restarts.
        #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
        ttl: Option<std::time::Duration>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Run the VM's commands as this user unless they name another (created in the
        /// guest on first use, with a home in /home; UID: the next free from 1000).
        #[arg(long, value_name = "NAME[:UID]", value_parser = parse_user)]
        user: Option<GuestUser>,
        /// Delete the VM once nothing has used it for DUR (no exec, copy, workspace or
        /// detached command running, no request naming it).
        #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
        idle_timeout: Option<std::time::Duration>,
    },
    /// Create a VM, run a command in it, stream its output and exit with its code.
    Run(RunArgs),
    /// Start a stopped VM.
    Start {
        /// The VM.
        name: String,
    },
    /// Stop a VM (clean guest shutdown, then a kill after the timeout).
    Stop {
        /// The VM.
        name: String,
        /// Kill the VMM at once.
        #[arg(long, short)]
        force: bool,
    },
    /// Stop and start a VM.
    Restart {
        /// The VM.
        name: String,
    },
    /// Delete a VM and its disk.
    #[command(alias = "rm")]
    Delete {
        /// The VMs (running ones are stopped first).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List VMs.
    #[command(alias = "ls")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one VM.
    Show {
        /// The VM.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a stopped VM's resources or network policy.
    ///
    /// Each policy flag replaces that part of the VM's policy: an empty --net-group
    /// leaves the group, `none` empties a list (e.g. --allow-host none).
    Set {
        /// The stopped VM.
        name: String,
        #[command(flatten)]
        res: Resources,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Print the VM's serial console, or a detached command's output (--exec ID).
    Logs {
        /// The VM.
        name: String,
        /// Keep printing what the console writes, until Ctrl-C; with --exec, until the
        /// command ends.
        #[arg(long, short)]
        follow: bool,
        /// The output of detached command ID (`vm exec -d`) instead: stdout to stdout,
        /// stderr to stderr. Once an ended command's output was printed, it is forgotten.
        #[arg(long = "exec", value_name = "ID")]
        exec: Option<String>,
    },
    /// Run a command in a running VM.
    Exec(ExecArgs),
    /// List a VM's detached commands (`vm exec -d`): running ones, and ended ones whose
    /// output was not fetched yet.
    Ps {
        /// The running VM.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a detached command's process group.
    Kill {
        /// The running VM.
        name: String,
        /// The detached command's id (`vm ps`).
        id: String,
        /// The signal: a name (TERM, SIGTERM) or a number.
        #[arg(long, short, default_value = "KILL", value_parser = crate::detached::parse_signal)]
        signal: i32,
    },
    /// Copy files and directories between the host and a VM.
    ///
    /// `NAME:/path` names the guest side. The copy runs as `--user`, else the VM's
    /// default user (`vm create --user`), else root; relative guest paths start at that
    /// user's home.
    /// Directories are copied with their contents, like `cp -r` (no flag needed). Modes
    /// are kept. Into an existing directory a copy keeps its name; otherwise it is
    /// created as DST. With several sources (all on the host, or all in one VM), DST
    /// must be an existing directory: `vm cp a b NAME:/dst`, `vm cp NAME:/x NAME:/y dir`.
    Cp {
        /// The sources, then the destination: host paths, or NAME:/path in a VM.
        #[arg(value_name = "SRC... DST", num_args = 2.., required = true)]
        paths: Vec<String>,
        /// Copy as this guest user (created if missing; relative guest paths start at
        /// its home) instead of the VM's default user (`vm create --user`), or root.
        #[arg(long, value_name = "NAME[:UID]", value_parser = parse_user)]
        user: Option<GuestUser>,
    },
    /// Open an SSH session in a VM, or run a command there over SSH, as the VM's
    /// default user (`vm create --user`, else root).
    Ssh {
        /// The running VM.
        name: String,
        /// Log in as this user (created in the guest if missing) instead of the VM's
        /// default user (`vm create --user`), or root when it has none.
        #[arg(long, value_name = "NAME[:UID]", value_parser = parse_user)]
        user: Option<GuestUser>,
        /// The command and its arguments, quoted so they arrive exactly as given.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print a ~/.ssh/config block for a VM.
    SshConfig {
        /// The VM.
        name: String,
        /// The block's user instead of the VM's default user (or root).
        #[arg(long, value_name = "NAME[:UID]", value_parser = parse_user)]
        user: Option<GuestUser>,
    },
    /// Snapshot a running VM (it pauses while its memory and disk are saved), or list
    /// and delete snapshots. `vm create --from-snapshot SNAP` clones one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Snapshot(SnapshotArgs),
    /// List, add and remove a VM's port forwards, also while it runs. They are kept
    /// with the VM (like `--publish`) and answer on every host address, 127.0.0.1
    /// included.
    #[command(subcommand)]
    Port(PortCommand),
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Forward a host port to the VM; refused when the host port is already forwarded
    /// or something on the host listens on it.
    Add {
        /// The VM.
        name: String,
        /// HOST:GUEST, or HOST:GUEST/udp.
        #[arg(value_name = "HOST:GUEST[/udp]")]
        port: String,
    },
    /// Remove the VM's forward of a host port.
    #[command(alias = "remove")]
    Rm {
        /// The VM.
        name: String,
        /// The host port; GUEST and /tcp or /udp narrow which forward goes.
        #[arg(value_name = "HOST[:GUEST][/PROTO]")]
        port: String,
    },
    /// List the VM's port forwards.
    #[command(alias = "list")]
    Ls {
        /// The VM.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: Option<SnapshotCommand>,
    /// The running VM to snapshot.
    #[arg(required = true)]
    pub vm: Option<String>,
    /// The snapshot's name (default: VM-YYYYMMDD-HHMMSS).
    pub name: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots.
    #[command(alias = "ls")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete snapshots (VMs cloned from them are not affected).
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ExecOpts {
    /// Keep stdin attached (it is forwarded whenever stdin is not a terminal).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (K=V), repeatable; a bare K passes the host's value.
    #[arg(long = "env", short = 'e', value_name = "K[=V]")]
    pub env: Vec<String>,
    /// Read variables from FILE (docker's format: K=V or K per line, # comments),
    /// repeatable; -e wins over a file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Working directory in the guest.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// Kill the command and its process group after DUR (30, 30s, 5m, 2h) and exit
    /// 124, as timeout(1) does.
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
    pub timeout: Option<std::time::Duration>,
    /// Run as this user, created in the guest when missing (home /home/NAME; UID: the
    /// next free from 1000); it starts in its home. Default: the VM's user, else root.
    #[arg(long, value_name = "NAME[:UID]", value_parser = parse_user)]
    pub user: Option<GuestUser>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The running VM.
    pub name: String,
    #[command(flatten)]
    pub opts: ExecOpts,
    /// Start the command in the background and print its id; it runs on after banger
    /// exits. `vm ps` lists it, `vm logs NAME --exec ID` prints its output.
    #[arg(short = 'd', long, conflicts_with_all = ["interactive", "tty"])]
    pub detach: bool,
    /// With -d: print the started command as JSON.
    #[arg(long, requires = "detach")]
    pub json: bool,
    /// The command and its arguments, passed to the guest exactly as given.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Delete the VM afterwards, also on failure or Ctrl-C.
    #[arg(long)]
    pub rm: bool,
    /// Reuse this VM if it exists, else create it with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// The image to boot (default: the configured default image).
    #[arg(long)]
    pub image: Option<String>,
    #[command(flatten)]
    pub res: Resources,
    #[command(flatten)]
    pub net: NetArgs,
    /// The VMM (default: firecracker where KVM runs guests at speed, else qemu).
    #[arg(long, value_parser = ["firecracker", "qemu"])]
    pub backend: Option<String>,
    /// Boot from scratch even when the image has a warm snapshot for this machine
    /// (see `banger image warm`).
    #[arg(long)]
    pub cold: bool,
    /// Restore a fresh clone of the warm snapshot instead of taking a ready one from
    /// the daemon's pool (see `pool_size`).
    #[arg(long, conflicts_with = "cold")]
    pub no_pool: bool,
    /// Delete the VM DUR after it is created (30s, 5m, 2h, 1d), also across daemon
    /// restarts.
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
    pub ttl: Option<std::time::Duration>,
    /// Delete the VM once nothing has used it for DUR (no exec, copy, workspace or
    /// detached command running, no request naming it).
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
    pub idle_timeout: Option<std::time::Duration>,
    #[command(flatten)]
    pub opts: ExecOpts,
    /// A git repository to ship into the VM (its tracked files as they are in the
    /// working tree, with HEAD's commit); the command then runs in it.
    #[arg(value_name = "PATH")]
    pub path: Option<std::path::PathBuf>,
    /// With PATH: also ship untracked files that are not ignored.
    #[arg(long, requires = "path")]
    pub include_untracked: bool,
    /// With PATH: print the files that would be shipped, one per line, and exit
    /// without creating a VM.
    #[arg(long, requires = "path")]
    pub dry_run: bool,
    /// With PATH: where the repository goes in the guest (default: /root/repo, or
    /// /home/NAME/repo when the command runs as user NAME).
    #[arg(long, value_name = "DIR", visible_alias = "dest")]
    pub workdir_in_guest: Option<String>,
    /// With PATH: once the command ends (whatever its exit code, also at --timeout),
    /// write the guest's changes to FILE as a patch against the shipped HEAD, for
    /// `git apply` on a clean checkout (new untracked files included).
    #[arg(long, value_name = "FILE", requires = "path")]
    pub export: Option<std::path::PathBuf>,
    /// With PATH: once the command ends, apply the changes it made to the working tree
    /// at PATH, as `workspace export --apply` does (paths outside the repository, in
    /// .git or through symlinks are refused and nothing is written).
    #[arg(long, requires = "path")]
    pub apply: bool,
    /// With PATH: ship HEAD's whole git history, not HEAD's commit alone (by default the
    /// guest repository is shallow, as after `git clone --depth 1`).
    #[arg(long, requires = "path")]
    pub history: bool,
    /// The command and its arguments (default: a login shell).
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Run on a node of a Slurm cluster, in a VM of that node's bangerd: one `srun`
    /// step, placed where a banger slot is free (see docs/slurm.md).
    #[arg(long, conflicts_with_all = ["name", "dry_run"])]
    pub slurm: bool,
    /// With --slurm: an option for srun, e.g. --srun-arg=--nodelist=nodeb or
    /// --srun-arg=--time=10 (repeatable).
    #[arg(
        long,
        value_name = "ARG",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    pub srun_arg: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SlurmCommand {
    /// Print this node's slurm.conf `NodeName` line and its gres.conf line: its VM
    /// slots as the GRES `banger`, and what `bangerd doctor` finds as features (`kvm`,
    /// `firecracker`, `qemu`).
    Conf {
        /// VM slots to advertise (default: one per CPU).
        #[arg(long)]
        slots: Option<u32>,
    },
    /// Delete the VMs a job's steps left on this node (the Slurm epilog runs this).
    Cleanup {
        /// The job id (default: $SLURM_JOB_ID).
        #[arg(long, env = "SLURM_JOB_ID")]
        job: String,
    },
    /// The program of a `vm run --slurm` step on the node: speaks the step protocol
    /// on stdin and stdout.
    #[command(hide = true)]
    Node,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Ship a git repository's working tree into a running VM: tracked files as they
    /// are now (uncommitted edits included), with HEAD and the index, so `git status`
    /// in the guest matches the host.
    Prepare {
        /// The running VM.
        name: String,
        /// The git repository on the host.
        path: std::path::PathBuf,
        /// Also ship untracked files that are not ignored.
        #[arg(long)]
        include_untracked: bool,
        /// Where the repository goes in the guest (default: /root/repo, or
        /// /home/NAME/repo in a VM created with --user NAME).
        #[arg(long, value_name = "DIR")]
        dest: Option<String>,
        /// Ship HEAD's whole git history, not HEAD's commit alone (by default the guest
        /// repository is shallow, as after `git clone --depth 1`).
        #[arg(long)]
        history: bool,
    },
    /// Print the guest's changes as a git patch relative to the shipped HEAD (so it
    /// applies to a clean checkout), or apply them here with --apply.
    Export {
        /// The VM the workspace was shipped into.
        name: String,
        /// Write the patch to FILE instead of stdout.
        #[arg(short = 'o', long, value_name = "FILE", conflicts_with = "apply")]
        output: Option<std::path::PathBuf>,
        /// Apply the changes made in the guest since the ship to the host working
        /// tree (3-way merge if they do not apply cleanly). Paths outside the
        /// repository, in .git, or through symlinks are refused.
        #[arg(long)]
        apply: bool,
        /// The repository to apply to (with --apply).
        #[arg(long, value_name = "PATH", default_value = ".", requires = "apply")]
        repo: std::path::PathBuf,
        /// Where the repository is in the guest (default: where `workspace prepare`
        /// puts it for the VM's user).
        #[arg(long, value_name = "DIR")]
        dest: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from Debian packages (debootstrap + Debian's cloud kernel).
    Build {
        /// The image's name (default: the configured default image, `default`).
        name: Option<String>,
        /// The Debian suite to bootstrap (default: bookworm).
        #[arg(long)]
        suite: Option<String>,
        /// Extra packages, comma separated.
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
        /// Root filesystem size in MiB (suffixes G and M accepted).
        #[arg(long)]
        size: Option<String>,
        /// The Debian mirror (default: the one in the host's apt sources, else
        /// deb.debian.org).
        #[arg(long)]
        mirror: Option<String>,
        /// Rebuild even if an image with these inputs exists.
        #[arg(long)]
        force: bool,
        /// Create this user in the image, with a home in /home (UID: given, else the
        /// next free from 1000).
        #[arg(long, value_name = "NAME[:UID]", value_parser = parse_user)]
        user: Option<GuestUser>,
        /// Give --user passwordless sudo (adds the sudo package).
        #[arg(long, requires = "user")]
        sudo: bool,
    },
    /// Import a rootfs tarball, a directory, a `docker save` archive or an OCI layout.
    Import {
        /// A .tar/.tar.gz rootfs, a directory, a `docker save` archive, or an OCI layout
        /// (directory or tarball).
        path: std::path::PathBuf,
        /// The image's name (default: made from the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an image from an OCI registry (`python:3.12`, `ghcr.io/org/img@sha256:…`,
    /// `localhost:5000/x:1`), or fetch and verify a published image bundle (an http(s)
    /// URL where its manifest.json is).
    Pull {
        /// A registry reference, or a bundle's base URL.
        url: String,
        /// The image's name (default: made from the reference, e.g. `python-3-12`; a
        /// bundle's own name).
        #[arg(long)]
        name: Option<String>,
        /// The registry speaks plain HTTP or has a self-signed certificate (registries
        /// on localhost are always taken so).
        #[arg(long)]
        insecure: bool,
        /// Print the result as JSON (the image, and which layers were downloaded or
        /// found in the layer cache).
        #[arg(long)]
        json: bool,
    },
    /// Write an image as a bundle into a directory (serve it over HTTP for `image pull`).
    Export {
        /// The image.
        name: String,
        /// The directory to write the bundle into (created if missing).
        dir: std::path::PathBuf,
    },
    /// List images.
    #[command(alias = "ls")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one image.
    Show {
        /// The image.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an image no VM uses.
    #[command(alias = "rm")]
    Delete {
        /// The image.
        name: String,
    },
    /// Boot the image once, let it settle, and keep a snapshot that `vm run` resumes
    /// instead of booting (for VMs of the same vcpu, memory, disk size, backend and
    /// networking). Replaces an earlier one. Warm VMs are clones, each with its own
    /// name, address, agent token and SSH host key.
    Warm {
        /// The image (default: the configured default image).
        name: Option<String>,
        #[command(flatten)]
        res: Resources,
        /// The VMM the snapshot is for.
        #[arg(long, value_parser = ["firecracker", "qemu"])]
        backend: Option<String>,
        /// For VMs run with --no-network.
        #[arg(long)]
        no_network: bool,
        /// Keep N paused clones ready for this image's `vm run`s (0: no pool), over the
        /// config's `pool_size`; `default` puts the image back on `pool_size`. With the
        /// machine already warm, only the pool changes.
        #[arg(long, value_name = "N|default")]
        pool: Option<banger_wire::api::PoolSize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Print the API's OpenAPI document, as the daemon serves it.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start bangerd in the background.
    Start,
    /// Stop bangerd. Running VMs keep running and are adopted at the next start.
    Stop,
    /// Show whether bangerd runs, and its facts.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the daemon's log.
    Logs,
}

/// `--user NAME[:UID]`, refused with the rule it broke before anything else happens.
fn parse_user(text: &str) -> Result<GuestUser, String> {
    text.parse().map_err(|e: banger_wire::user::UserError| {
        format!("{e}\n\n  hint: {}", e.hint().unwrap_or_default())
    })
}
