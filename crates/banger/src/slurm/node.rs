//! `banger slurm node`: the program of a `vm run --slurm` step, on the node Slurm
//! chose. It makes a VM in the node's own bangerd (named `slurm-<job>-<step>`, so the
//! epilog finds what a killed step left), relays the submit side's exec channels into
//! it, and deletes it however the step ends: the run's end, an end of input (the
//! client died), or SIGTERM (`scancel`, the time limit).
//!
//! What the submit side sends is untrusted: frames are capped, execs run only in this
//! step's VM, and at most [`MAX_CHANNELS`] at once.

use std::collections::HashMap;
use std::os::fd::AsFd;

use banger_wire::agent::{self, ExecSpec, GuestFrame, HostFrame};
use banger_wire::api::{ExecRequest, Request, VmCreateSpec};
use banger_wire::slurm::{
    vm_prefix, ClientFrame, NodeFrame, Start, MAX_CHANNELS, PROTOCOL_VERSION,
};
use banger_wire::{ErrorCode, WireError};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncRead;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::SlurmError;
use crate::client::{self, Client};
use crate::error::CliError;
use crate::exec_stream::{self, Event};
use crate::output;
use crate::vm;

/// Why the relay stopped.
enum Ended {
    /// The submit side is done; the command exited with this code.
    Done(i32),
    /// Its input ended or broke without a `Done`: the client is gone.
    Gone,
    /// SIGTERM: Slurm cancels the step.
    Cancelled,
}

pub async fn run() -> Result<i32, CliError> {
    let job = std::env::var("SLURM_JOB_ID").map_err(|_| SlurmError::NotAStep)?;
    let step = std::env::var("SLURM_STEP_ID").unwrap_or_else(|_| "0".into());
    let node = std::env::var("SLURMD_NODENAME")
        .ok()
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .unwrap_or_default();
    raw_stdout();
    let mut input = FramedRead::new(tokio::io::stdin(), super::codec());
    let (out, rx) = mpsc::channel(32);
    let writer = tokio::spawn(write_frames(rx));
    let mut sigterm = signal(SignalKind::terminate())?;
    let (term_tx, mut term) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        if sigterm.recv().await.is_some() {
            let _ = term_tx.send(()).await;
        }
    });

    let name = format!("{}{step}", vm_prefix(&job));
    // A SIGTERM meanwhile waits in `term`: the relay sees it first thing and deletes
    // the VM just made.
    let code = match make_vm(&mut input, &node, &name).await {
        Err(e) => {
            let _ = out.send(NodeFrame::Fatal(e)).await;
            1
        }
        Ok(client) => {
            let vm = name.clone();
            let _ = out.send(NodeFrame::Ready { node, vm }).await;
            let ended = relay(&mut input, &client, &name, &out, &mut term).await;
            if let Err(e) = vm::delete(&client, &name).await {
                output::note(&format!("could not delete vm {name}: {e}"));
            }
            match ended {
                Ended::Done(code) => code,
                Ended::Gone => 1,
                Ended::Cancelled => 128 + nix::sys::signal::Signal::SIGTERM as i32,
            }
        }
    };
    drop(out);
    let _ = writer.await;
    Ok(code)
}

/// Under `srun --unbuffered` the step's stdout is a terminal: raw, so frames pass
/// byte for byte.
fn raw_stdout() {
    use nix::sys::termios;
    let stdout = std::io::stdout();
    if let Ok(mut t) = termios::tcgetattr(stdout.as_fd()) {
        termios::cfmakeraw(&mut t);
        let _ = termios::tcsetattr(stdout.as_fd(), termios::SetArg::TCSANOW, &t);
    }
}

/// The submit side's frames (the step's stdin).
type Input<R> = FramedRead<R, tokio_util::codec::LengthDelimitedCodec>;

async fn next_frame<R: AsyncRead + Unpin>(input: &mut Input<R>) -> Option<ClientFrame> {
    let bytes = input.next().await?.ok()?;
    agent::decode(&bytes).ok()
}

/// Reads the [`Start`], reaches the node's daemon (it never starts one: a node runs
/// the system daemon) and makes the VM.
async fn make_vm<R: AsyncRead + Unpin>(
    input: &mut Input<R>,
    node: &str,
    name: &str,
) -> Result<Client, WireError> {
    let daemon = |what, detail: String| {
        WireError::from_diagnostic(&SlurmError::Daemon {
            what,
            node: node.into(),
            detail,
        })
    };
    let Some(ClientFrame::Start(Start { protocol, vm })) = next_frame(input).await else {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            "the step did not start with a request",
        ));
    };
    if protocol != PROTOCOL_VERSION {
        return Err(WireError::from_diagnostic(&SlurmError::Protocol {
            theirs: protocol,
            ours: PROTOCOL_VERSION,
        }));
    }
    let (paths, _) = client::locate(banger_host::config::Paths::from_env())
        .await
        .map_err(|e| daemon("is not reachable", e.to_string()))?;
    let client = Client::new(&paths.socket);
    client
        .rpc(&Request::Ping)
        .await
        .map_err(|e| daemon("is not running", e.to_string()))?;
    let spec = VmCreateSpec {
        name: Some(name.into()),
        exec_only: true,
        ephemeral: true,
        no_start: false,
        ..vm
    };
    vm::create(&client, spec)
        .await
        .map_err(|e| WireError::from_diagnostic(&e))?;
    Ok(client)
}

/// Relays the submit side's channels until it is done, gone, or the step is cancelled
/// (a message on `term`).
async fn relay<R: AsyncRead + Unpin>(
    input: &mut Input<R>,
    client: &Client,
    vm: &str,
    out: &mpsc::Sender<NodeFrame>,
    term: &mut mpsc::Receiver<()>,
) -> Ended {
    let mut open: HashMap<u32, mpsc::Sender<HostFrame>> = HashMap::new();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    loop {
        let frame = tokio::select! {
            frame = next_frame(input) => frame,
            Some(id) = closed.recv() => {
                open.remove(&id);
                continue;
            }
            Some(()) = term.recv() => return Ended::Cancelled,
        };
        match frame {
            None => return Ended::Gone,
            Some(ClientFrame::Done { code }) => return Ended::Done(code),
            Some(ClientFrame::Exec { id, spec }) => {
                if open.len() >= MAX_CHANNELS || open.contains_key(&id) {
                    let error = WireError::new(
                        ErrorCode::InvalidArgument,
                        format!("exec channel {id} refused: in use, or {MAX_CHANNELS} open"),
                    );
                    let _ = out.send(NodeFrame::Closed { id, error }).await;
                    continue;
                }
                let (tx, rx) = mpsc::channel(16);
                open.insert(id, tx);
                let ch = Channel {
                    client: Client::new(&client.socket),
                    vm: vm.into(),
                    id,
                    out: out.clone(),
                };
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    ch.run(spec, rx).await;
                    let _ = closed_tx.send(id);
                });
            }
            Some(ClientFrame::Host { id, frame }) => {
                if let Some(tx) = open.get(&id) {
                    // A command that does not read its input holds up the frames behind
                    // its own, never the step's cancel.
                    tokio::select! {
                        _ = tx.send(frame) => {}
                        Some(()) = term.recv() => return Ended::Cancelled,
                    }
                }
            }
            Some(ClientFrame::Hangup { id }) => drop(open.remove(&id)),
            Some(ClientFrame::Start(_)) => {}
        }
    }
}

/// One exec in the VM, relayed.
struct Channel {
    client: Client,
    vm: String,
    id: u32,
    out: mpsc::Sender<NodeFrame>,
}

impl Channel {
    async fn run(self, spec: ExecSpec, mut host: mpsc::Receiver<HostFrame>) {
        let id = self.id;
        let req = ExecRequest { vm: self.vm, spec };
        let io = match self.client.exec(&req).await {
            Ok(io) => io,
            Err(e) => {
                let error = WireError::from_diagnostic(&e);
                let _ = self.out.send(NodeFrame::Closed { id, error }).await;
                return;
            }
        };
        let (mut frames, mut events) = exec_stream::open(io);
        // Each way on its own, so a process that fills its stdout while its stdin waits
        // never stalls the other way. The submit side hanging up ends `to_guest`, and
        // dropping the stream then makes the agent kill the process.
        let to_guest = async {
            while let Some(frame) = host.recv().await {
                if frames.send(&frame).await.is_err() {
                    break;
                }
            }
        };
        let from_guest = async {
            loop {
                let frame = match events.next().await {
                    Ok(Event::Stdout(d)) => GuestFrame::Stdout(d),
                    Ok(Event::Stderr(d)) => GuestFrame::Stderr(d),
                    Ok(Event::Exit(status)) => GuestFrame::Exit(status),
                    Ok(Event::Failed(e)) => GuestFrame::Error(e),
                    Err(e) => {
                        let error = WireError::from_diagnostic(&e);
                        let _ = self.out.send(NodeFrame::Closed { id, error }).await;
                        return;
                    }
                };
                let ends = matches!(frame, GuestFrame::Exit(_) | GuestFrame::Error(_));
                if self.out.send(NodeFrame::Guest { id, frame }).await.is_err() || ends {
                    return;
                }
            }
        };
        tokio::select! {
            () = to_guest => {}
            () = from_guest => {}
        }
    }
}

async fn write_frames(mut rx: mpsc::Receiver<NodeFrame>) {
    let mut sink = FramedWrite::new(tokio::io::stdout(), super::codec());
    while let Some(frame) = rx.recv().await {
        if sink.send(Bytes::from(agent::encode(&frame))).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_command_that_does_not_read_its_input_never_holds_up_a_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bangerd.sock");
        // A daemon that takes the exec and never answers: the channel reads no input.
        let daemon = tokio::net::UnixListener::bind(&socket).unwrap();
        let client = Client::new(&socket);
        let (to_node, from_submit) = tokio::io::duplex(4 << 20);
        let mut sink = FramedWrite::new(to_node, super::super::codec());
        let mut frames = vec![ClientFrame::Exec {
            id: 1,
            spec: banger_wire::agent::ExecSpec::default(),
        }];
        frames.extend((0..64).map(|_| ClientFrame::Host {
            id: 1,
            frame: HostFrame::Stdin(vec![b'x'; 1024]),
        }));
        for frame in &frames {
            sink.send(Bytes::from(agent::encode(frame))).await.unwrap();
        }
        let mut input = FramedRead::new(from_submit, super::super::codec());
        let (out, _node_frames) = mpsc::channel(32);
        let (term_tx, mut term) = mpsc::channel(1);

        let relayed = relay(&mut input, &client, "vm", &out, &mut term);
        let cancel = async {
            let _exec = daemon.accept().await.unwrap();
            // Let the relay run into the full channel before the cancel comes.
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            term_tx.send(()).await.unwrap();
            _exec
        };
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(relayed, cancel).0
        })
        .await;

        assert!(
            matches!(waited, Ok(Ended::Cancelled)),
            "the relay did not see the cancel"
        );
    }
}
