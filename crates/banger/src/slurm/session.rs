//! The submit side of `vm run --slurm`: one `srun` step running `banger slurm node`,
//! with the step protocol ([`banger_wire::slurm`]) on its stdin and stdout.
//!
//! Each exec in the node's VM is a channel of the step, handed to the caller as a
//! local exec stream (a duplex pipe carrying the agent's frames), so the workspace
//! ship, the interactive pump and the patch export run over it as over the daemon's.
//! srun runs in its own process group: a Ctrl-C reaches this process only, which ends
//! the run by closing the step's input; the node then deletes the VM.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use banger_wire::agent::{self, ExecSpec, GuestFrame, HostFrame, CHUNK, MAX_FRAME};
use banger_wire::api::{Backend, VmCreateSpec};
use banger_wire::slurm::{ClientFrame, NodeFrame, Start, PROTOCOL_VERSION};
use banger_wire::user::GuestUser;
use banger_wire::{ErrorCode, WireError};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec, LinesCodec};

use super::SlurmError;
use crate::error::CliError;
use crate::output;
use crate::workspace::exec::{CaptureError, Captured, Runner};

/// srun's last lines kept for an error.
const SRUN_LINES: usize = 12;

type Channels = Arc<Mutex<HashMap<u32, mpsc::Sender<GuestFrame>>>>;

/// A running step with its VM up.
pub struct Session {
    /// srun; none in tests.
    child: Option<Child>,
    out: mpsc::Sender<ClientFrame>,
    /// Closes the step's input once what was sent before has gone out.
    close: Option<oneshot::Sender<()>>,
    channels: Channels,
    next_id: AtomicU32,
    /// Set when the step's output ended before [`Session::finish`] said it was done.
    broke: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    srun: Arc<Mutex<SrunLines>>,
    pub vm: String,
    pub node: String,
}

/// srun's stderr: shown as it comes while the step waits for a node (queueing and
/// placement), then kept for an error, since the run's own output has begun.
#[derive(Default)]
struct SrunLines {
    quiet: bool,
    kept: VecDeque<String>,
}

impl Session {
    /// Starts `srun [srun_args] banger slurm node`, asks for the VM `vm` and waits
    /// until it runs on the node Slurm chose.
    pub async fn start(srun_args: &[String], vm: VmCreateSpec) -> Result<Session, CliError> {
        let mut child = srun(srun_args, vm.backend)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SlurmError::Link(std::io::Error::other("srun has no pipes")).into());
        };
        let srun_lines = Arc::new(Mutex::new(SrunLines::default()));
        tokio::spawn(relay_stderr(stderr, srun_lines.clone()));
        Session::over(Some(child), stdin, stdout, srun_lines, vm).await
    }

    /// The protocol over a step's stdin and stdout (srun's, or a test's pipes): sends
    /// the request and waits for the node's answer.
    async fn over(
        child: Option<Child>,
        stdin: impl AsyncWrite + Unpin + Send + 'static,
        stdout: impl AsyncRead + Unpin + Send + 'static,
        srun: Arc<Mutex<SrunLines>>,
        vm: VmCreateSpec,
    ) -> Result<Session, CliError> {
        let (out, rx) = mpsc::channel(16);
        let (close, closed) = oneshot::channel();
        tokio::spawn(write_frames(stdin, rx, closed));
        let channels = Channels::default();
        let (ready_tx, ready) = oneshot::channel();
        let (broke, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        tokio::spawn(read_frames(
            stdout,
            channels.clone(),
            ready_tx,
            broke.clone(),
            done.clone(),
        ));
        let start = Start {
            protocol: PROTOCOL_VERSION,
            vm,
        };
        let _ = out.send(ClientFrame::Start(start)).await;
        let mut session = Session {
            child,
            out,
            close: Some(close),
            channels,
            next_id: AtomicU32::new(0),
            broke,
            done,
            srun,
            vm: String::new(),
            node: String::new(),
        };
        match ready.await {
            Ok(Ok((node, vm))) => {
                lock(&session.srun).quiet = true;
                (session.node, session.vm) = (node, vm);
                Ok(session)
            }
            Ok(Err(e)) => {
                session.end().await;
                Err(CliError::Remote(e))
            }
            Err(_) => Err(session.ended("before its node answered").await.into()),
        }
    }

    /// The VM as a [`Runner`], for the workspace ship and export; commands that name
    /// no user run as `user` (`vm run --user`), else as the VM's default one.
    pub fn guest(&self, user: Option<GuestUser>) -> Guest<'_> {
        Guest {
            session: self,
            user,
        }
    }

    /// Opens an exec of `spec` in the VM; the stream carries the agent's frames.
    pub async fn exec(&self, spec: ExecSpec) -> Result<DuplexStream, CliError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (ours, theirs) = tokio::io::duplex(2 * CHUNK);
        let (tx, rx) = mpsc::channel(16);
        lock(&self.channels).insert(id, tx);
        if self.out.send(ClientFrame::Exec { id, spec }).await.is_err() {
            lock(&self.channels).remove(&id);
            return Err(SlurmError::Link(std::io::ErrorKind::BrokenPipe.into()).into());
        }
        tokio::spawn(bridge(
            theirs,
            id,
            rx,
            self.out.clone(),
            self.channels.clone(),
        ));
        Ok(ours)
    }

    /// Ends the run: the node deletes the VM and exits with `code` (or as a cancelled
    /// run with none); waits for srun. An error when the step had ended on its own.
    pub async fn finish(mut self, code: Option<i32>) -> Result<(), SlurmError> {
        if let Some(code) = code {
            if !self.broke.load(Ordering::SeqCst) {
                self.done.store(true, Ordering::SeqCst);
                let _ = self.out.send(ClientFrame::Done { code }).await;
            }
        }
        if self.broke.load(Ordering::SeqCst) {
            return Err(self.ended("before the run was over").await);
        }
        self.end().await;
        Ok(())
    }

    /// Closes the step's input (the node deletes the VM when it sees the end) and waits
    /// for srun to exit.
    async fn end(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        self.child.as_mut()?.wait().await.ok()
    }

    async fn ended(&mut self, when: &'static str) -> SlurmError {
        let status = match self.end().await {
            Some(s) => s.to_string(),
            None => "is gone".into(),
        };
        SlurmError::StepEnded {
            when,
            status,
            srun: lock(&self.srun).kept.drain(..).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `srun` for one task on a node with a free banger slot (and Firecracker, when the
/// run asks for it), with the submit side's `BANGER_*` settings left behind: they name
/// this host's daemon and dirs, and the node uses its own.
fn srun(srun_args: &[String], backend: Option<Backend>) -> Result<Child, SlurmError> {
    let mut cmd = Command::new("srun");
    cmd.args([
        "--job-name=banger",
        "--ntasks=1",
        "--gres=banger:1",
        // Without it, slurmstepd holds back output that does not end in a newline.
        "--unbuffered",
    ]);
    if backend == Some(Backend::Firecracker) {
        cmd.arg("--constraint=firecracker");
    }
    let banger = std::env::current_exe().unwrap_or_else(|_| "banger".into());
    cmd.args(srun_args).arg(banger).args(["slurm", "node"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BANGER_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(SlurmError::NoSrun)
}

async fn relay_stderr(stderr: tokio::process::ChildStderr, lines: Arc<Mutex<SrunLines>>) {
    let mut reader = FramedRead::new(stderr, LinesCodec::new_with_max_length(4096));
    while let Some(line) = reader.next().await {
        let Ok(line) = line else { continue };
        let mut kept = lock(&lines);
        if kept.quiet {
            kept.kept.push_back(line);
            if kept.kept.len() > SRUN_LINES {
                kept.kept.pop_front();
            }
        } else {
            output::note(&line);
        }
    }
}

async fn write_frames(
    stdin: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<ClientFrame>,
    mut close: oneshot::Receiver<()>,
) {
    let mut sink = FramedWrite::new(stdin, super::codec());
    loop {
        let frame = tokio::select! {
            biased;
            frame = rx.recv() => frame,
            _ = &mut close => None,
        };
        let Some(frame) = frame else { break };
        if sink.send(Bytes::from(agent::encode(&frame))).await.is_err() {
            break;
        }
    }
}

type Ready = Result<(String, String), WireError>;

/// Routes the node's frames to the channels until the step's output ends; then fails
/// the channels still open.
async fn read_frames(
    stdout: impl AsyncRead + Unpin,
    channels: Channels,
    ready: oneshot::Sender<Ready>,
    broke: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) {
    let mut frames = FramedRead::new(stdout, super::codec());
    let mut ready = Some(ready);
    let mut fatal = None;
    while let Some(Ok(bytes)) = frames.next().await {
        let Ok(frame) = agent::decode::<NodeFrame>(&bytes) else {
            break;
        };
        let (id, frame) = match frame {
            NodeFrame::Ready { node, vm } => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok((node, vm)));
                }
                continue;
            }
            NodeFrame::Fatal(e) => {
                match ready.take() {
                    Some(tx) => drop(tx.send(Err(e))),
                    None => fatal = Some(e),
                }
                break;
            }
            NodeFrame::Guest { id, frame } => (id, frame),
            NodeFrame::Closed { id, error } => (id, GuestFrame::Error(error)),
        };
        let ends = matches!(frame, GuestFrame::Exit(_) | GuestFrame::Error(_));
        let tx = {
            let mut open = lock(&channels);
            if ends {
                open.remove(&id)
            } else {
                open.get(&id).cloned()
            }
        };
        if let Some(tx) = tx {
            let _ = tx.send(frame).await;
        }
    }
    if !done.load(Ordering::SeqCst) {
        broke.store(true, Ordering::SeqCst);
    }
    let error = fatal.unwrap_or_else(|| {
        WireError::new(
            ErrorCode::Unavailable,
            "the slurm step ended before the command did",
        )
    });
    let open: Vec<_> = lock(&channels).drain().map(|(_, tx)| tx).collect();
    for tx in open {
        let _ = tx.send(GuestFrame::Error(error.clone())).await;
    }
}

/// One channel: the local exec stream's host frames go to the node, the node's guest
/// frames come back into it, until the process ends or the local side lets go.
async fn bridge(
    theirs: DuplexStream,
    id: u32,
    mut guest: mpsc::Receiver<GuestFrame>,
    out: mpsc::Sender<ClientFrame>,
    channels: Channels,
) {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let (mut sink, mut host) = Framed::new(theirs, codec).split();
    // Each way on its own (see `node::Channel::run`).
    let to_node = async {
        while let Some(Ok(bytes)) = host.next().await {
            let Ok(frame) = agent::decode::<HostFrame>(&bytes) else {
                break;
            };
            if out.send(ClientFrame::Host { id, frame }).await.is_err() {
                return;
            }
        }
        // The local side let go before its process ended.
        lock(&channels).remove(&id);
        let _ = out.send(ClientFrame::Hangup { id }).await;
    };
    let from_node = async {
        while let Some(frame) = guest.recv().await {
            let ends = matches!(frame, GuestFrame::Exit(_) | GuestFrame::Error(_));
            if sink.send(Bytes::from(agent::encode(&frame))).await.is_err() || ends {
                break;
            }
        }
    };
    tokio::select! {
        () = to_node => {}
        () = from_node => {}
    }
}

/// The node's VM, reached through the step.
pub struct Guest<'a> {
    session: &'a Session,
    user: Option<GuestUser>,
}

impl Runner for Guest<'_> {
    fn name(&self) -> &str {
        &self.session.vm
    }

    async fn run<R, W>(
        &self,
        mut spec: ExecSpec,
        stdin: R,
        stdout: &mut W,
    ) -> Result<Captured, CaptureError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if spec.user.is_none() {
            spec.user = self.user.clone();
        }
        let io = self.session.exec(spec).await?;
        crate::workspace::exec::pump(io, stdin, stdout).await
    }
}

impl From<SlurmError> for CliError {
    fn from(e: SlurmError) -> CliError {
        CliError::failed(e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use banger_wire::agent::ExitStatus;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::workspace::exec;

    /// The node's end of a step's stdio.
    struct Node {
        input: FramedRead<DuplexStream, LengthDelimitedCodec>,
        output: FramedWrite<DuplexStream, LengthDelimitedCodec>,
    }

    impl Node {
        async fn recv(&mut self) -> ClientFrame {
            agent::decode(&self.input.next().await.unwrap().unwrap()).unwrap()
        }

        async fn send(&mut self, frame: NodeFrame) {
            let bytes = Bytes::from(agent::encode(&frame));
            self.output.send(bytes).await.unwrap();
        }
    }

    /// The two ends of a session's channel: what the client writes and reads, and the
    /// node that reads and writes them.
    fn wire() -> (DuplexStream, DuplexStream, Node) {
        let (to_node, input) = tokio::io::duplex(1 << 16);
        let (output, from_node) = tokio::io::duplex(1 << 16);
        let node = Node {
            input: FramedRead::new(input, super::super::codec()),
            output: FramedWrite::new(output, super::super::codec()),
        };
        (to_node, from_node, node)
    }

    /// A session whose node has said `Ready`, and that node.
    async fn ready() -> (Session, Node) {
        let (to_node, from_node, mut node) = wire();
        let (session, ()) = tokio::join!(
            Session::over(
                None,
                to_node,
                from_node,
                Default::default(),
                Default::default()
            ),
            async {
                assert!(matches!(node.recv().await, ClientFrame::Start(_)));
                let (node_name, vm) = ("nodeb".into(), "slurm-7-0".into());
                node.send(NodeFrame::Ready {
                    node: node_name,
                    vm,
                })
                .await;
            }
        );
        (session.unwrap(), node)
    }

    #[tokio::test]
    async fn a_command_runs_as_a_channel_of_the_step() {
        let (session, mut node) = ready().await;
        let (guest, mut out) = (session.guest(None), Vec::new());

        let (ran, ()) = tokio::join!(
            guest.run(exec::spec(&["true"]), tokio::io::empty(), &mut out),
            async {
                let ClientFrame::Exec { id, .. } = node.recv().await else {
                    panic!("no exec")
                };
                let frame = GuestFrame::Stdout(b"hi".to_vec());
                node.send(NodeFrame::Guest { id, frame }).await;
                let frame = GuestFrame::Exit(ExitStatus::Code(3));
                node.send(NodeFrame::Guest { id, frame }).await;
            }
        );

        assert_eq!(ran.unwrap().code, 3);
        assert_eq!(out, b"hi");
        assert_eq!(
            (session.node.as_str(), session.vm.as_str()),
            ("nodeb", "slurm-7-0")
        );
    }

    #[tokio::test]
    async fn a_step_that_ends_mid_command_fails_the_command_and_the_run() {
        let (session, mut node) = ready().await;
        let (guest, mut out) = (session.guest(None), Vec::new());

        let (ran, ()) = tokio::join!(
            guest.run(exec::spec(&["sleep", "9"]), tokio::io::empty(), &mut out),
            async {
                assert!(matches!(node.recv().await, ClientFrame::Exec { .. }));
                node.output.get_mut().shutdown().await.unwrap();
            }
        );
        let finished = session.finish(None).await;

        let err = ran.unwrap_err().to_string();
        assert!(err.contains("the slurm step ended"), "{err}");
        let err = finished.unwrap_err().to_string();
        assert!(err.contains("ended before the run was over"), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_frame_from_the_node_ends_the_step() {
        let (session, mut node) = ready().await;
        let too_big = (banger_wire::slurm::MAX_FRAME as u32 + 1).to_be_bytes();
        let (guest, mut out) = (session.guest(None), Vec::new());

        let (ran, ()) = tokio::join!(
            guest.run(exec::spec(&["true"]), tokio::io::empty(), &mut out),
            async {
                assert!(matches!(node.recv().await, ClientFrame::Exec { .. }));
                node.output.get_mut().write_all(&too_big).await.unwrap();
            }
        );

        let err = ran.unwrap_err().to_string();
        assert!(err.contains("the slurm step ended"), "{err}");
    }

    #[tokio::test]
    async fn letting_go_of_a_channel_hangs_it_up_on_the_node() {
        let (session, mut node) = ready().await;

        let io = session.exec(exec::spec(&["sleep", "9"])).await.unwrap();
        drop(io);

        let ClientFrame::Exec { id, .. } = node.recv().await else {
            panic!("no exec")
        };
        assert_eq!(node.recv().await, ClientFrame::Hangup { id });
    }

    #[tokio::test]
    async fn a_node_that_cannot_make_the_vm_fails_the_start() {
        let (to_node, from_node, mut node) = wire();

        let (started, ()) = tokio::join!(
            Session::over(
                None,
                to_node,
                from_node,
                Default::default(),
                Default::default()
            ),
            async {
                node.recv().await;
                let e = WireError::new(ErrorCode::Unavailable, "bangerd is not running on node b");
                node.send(NodeFrame::Fatal(e)).await;
            }
        );

        let err = started.err().unwrap().to_string();
        assert_eq!(err, "bangerd is not running on node b");
    }
}
