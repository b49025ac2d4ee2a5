//! gh-ost's interactive line protocol on a unix socket and on TCP: the client sends one line,
//! gets the reply and a newline, and the connection closes. So `echo throttle | socat -
//! /tmp/gh-ost.db.tbl.sock` and `echo status | nc 127.0.0.1 PORT` work as with gh-ost.
//!
//! The serve functions run until their task is aborted; the unix socket file is removed then
//! (the [`SocketFileGuard`] lives inside the serving future).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tracing::{debug, info, warn};

use super::{ControlPlane, commands};
use crate::engine::hooks::{HookPoint, env_command};

/// Longest command line accepted; anything longer is cut (a throttle query fits easily).
const MAX_LINE: u64 = 64 * 1024;
/// A client that connects and says nothing must not hold a task forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct SocketFileGuard {
    path: PathBuf,
}

impl SocketFileGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFileGuard {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => info!(socket = %self.path.display(), "removed the socket file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(socket = %self.path.display(), error = %e, "cannot remove the socket file")
            }
        }
    }
}

/// Binds the unix socket. A socket file whose owner is gone (nothing accepts on it: a killed
/// run) is replaced; one that a live process serves is refused. Must run inside a tokio
/// runtime.
pub fn bind_unix(path: &Path) -> io::Result<(UnixListener, SocketFileGuard)> {
    if is_stale_socket(path) {
        info!(socket = %path.display(), "replacing a stale socket file: the process that served it is gone");
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        let message = if e.kind() == io::ErrorKind::AddrInUse {
            format!(
                "cannot listen on {}: another process serves it; is another migration of this table running? If not, remove the file or pass --initially-drop-socket-file",
                path.display()
            )
        } else {
            format!("cannot listen on {}: {e}", path.display())
        };
        io::Error::new(e.kind(), message)
    })?;
    info!(socket = %path.display(), "serving interactive commands on the unix socket");
    Ok((
        listener,
        SocketFileGuard {
            path: path.to_path_buf(),
        },
    ))
}

/// True when `path` is a socket that nobody accepts on: connecting is refused.
fn is_stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_socket() {
        return false;
    }
    matches!(
        std::os::unix::net::UnixStream::connect(path),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

/// Binds `path` and serves commands until the task is aborted; the file is removed then.
pub async fn serve_unix(path: PathBuf, plane: ControlPlane) -> io::Result<()> {
    let (listener, guard) = bind_unix(&path)?;
    serve_unix_listener(listener, guard, plane).await
}

/// Serves commands on an already bound unix socket. The guard is held by this future, so the
/// file goes when the future is dropped (task aborted, runtime shut down).
pub async fn serve_unix_listener(
    listener: UnixListener,
    _guard: SocketFileGuard,
    plane: ControlPlane,
) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => spawn_connection(stream, plane.clone()),
            Err(e) => {
                warn!(error = %e, "accept on the unix socket failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Binds `addr` (pass 127.0.0.1 unless remote control is wanted: there is no authentication)
/// and serves commands until the task is aborted.
pub async fn serve_tcp(addr: SocketAddr, plane: ControlPlane) -> io::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    serve_tcp_listener(listener, plane).await
}

/// Serves commands on an already bound TCP listener.
pub async fn serve_tcp_listener(listener: TcpListener, plane: ControlPlane) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, "serving interactive commands on TCP");
    }
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                debug!(peer = %peer, "interactive connection");
                spawn_connection(stream, plane.clone());
            }
            Err(e) => {
                warn!(error = %e, "accept on the TCP port failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn spawn_connection<S>(stream: S, plane: ControlPlane)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = serve_connection(stream, &plane).await {
            debug!(error = %e, "interactive connection ended with an error");
        }
    });
}

/// One connection: read a line, write the reply and a newline, close.
async fn serve_connection<S>(stream: S, plane: &ControlPlane) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream.take(MAX_LINE));
    let mut line = Vec::new();
    tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no command line received"))??;
    if line.is_empty() {
        // Connected and closed without a command, as gh-ost: no reply.
        return Ok(());
    }
    let line = String::from_utf8_lossy(&line);
    let command = line.trim();
    let vetoed = match &plane.hooks {
        Some(hooks) => {
            let progress = plane.progress_snapshot();
            hooks
                .fire(
                    HookPoint::InteractiveCommand,
                    &progress,
                    &[env_command(command)],
                )
                .await
                .err()
        }
        None => None,
    };
    let reply = match vetoed {
        Some(e) => format!("command rejected by hook: {e}"),
        None => match commands::handle(plane, &line) {
            Ok(reply) => reply,
            Err(e) => e.to_string(),
        },
    };
    let mut stream = reader.into_inner().into_inner();
    stream.write_all(reply.as_bytes()).await?;
    if !reply.ends_with('\n') {
        stream.write_all(b"\n").await?;
    }
    stream.shutdown().await
}
