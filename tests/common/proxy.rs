//! A TCP proxy between ghost and a server, for the network faults: it forwards bytes both ways
//! until told to stall (stop forwarding, connections stay open and silent) or to reset (every
//! open connection is closed with a TCP RST). Listens on 127.0.0.1 only.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    /// Bumped by `reset`: every connection opened before closes with RST.
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Forwards 127.0.0.1:<free port> to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (stalled, generation, accepted, tasks) = (
                stalled.clone(),
                generation.clone(),
                accepted.clone(),
                tasks.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let reset = generation.subscribe();
                    let stalled = stalled.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(target).await {
                            pipe(client, server, stalled, reset).await;
                        }
                    });
                    tasks.lock().expect("proxy tasks").push(task);
                }
            })
        };
        Proxy {
            addr,
            stalled,
            generation,
            accepted,
            tasks,
            acceptor,
        }
    }

    /// Stops forwarding (both ways) until `resume`: the connections hang, as on a dead network.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Resets every open connection (the peers see ECONNRESET).
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for task in self.tasks.lock().expect("proxy tasks").drain(..) {
            task.abort();
        }
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    stalled: Arc<AtomicBool>,
    mut reset: watch::Receiver<u64>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = copy_until_stalled(&mut client_read, &mut server_write, stalled.clone());
    let down = copy_until_stalled(&mut server_read, &mut client_write, stalled);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = reset.changed() => {}
    }
    // Close with RST rather than FIN: what a dropped network path or a killed peer looks like.
    if let (Ok(client), Ok(server)) = (
        client_read.reunite(client_write),
        server_read.reunite(server_write),
    ) {
        for stream in [client, server] {
            // A zero linger makes close() send RST; the std socket closes without blocking.
            if let Ok(std) = stream.into_std() {
                let _ = socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO));
            }
        }
    }
}

async fn copy_until_stalled(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A stall that began during the read holds these bytes back too.
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
