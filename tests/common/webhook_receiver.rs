//! A minimal HTTP server that records the requests it gets: the receiver of ghost's webhooks in
//! the hook tests and the journeys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Answers 500 to the first `fail_first` requests and 200 afterwards; or, with `hang`, accepts
/// connections and never answers.
pub struct Server {
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Server {
    pub async fn start(fail_first: usize, hang: bool) -> Server {
        Self::start_on("127.0.0.1", fail_first, hang).await
    }

    /// Listening on `ip` (a free port).
    pub async fn start_on(ip: &str, fail_first: usize, hang: bool) -> Server {
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let failures_left = Arc::new(AtomicUsize::new(fail_first));
        let (reqs, conns) = (requests.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(sock, hang, failures_left.clone(), reqs.clone()));
            }
        });
        Server {
            base: format!("http://{addr}"),
            requests,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests lock").clone()
    }
}

async fn serve(
    mut sock: TcpStream,
    hang: bool,
    failures_left: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
) {
    let mut chunk = [0u8; 4096];
    if hang {
        while let Ok(n) = sock.read(&mut chunk).await {
            if n == 0 {
                return;
            }
        }
        return;
    }
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    requests.lock().expect("requests lock").push(Recorded {
        method,
        path,
        headers,
        body,
    });
    let fail = failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if fail {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// The `X-Ghost-Signature` value a body signed with `key` carries.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length is valid for HMAC");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
