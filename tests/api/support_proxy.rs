//! A loopback TCP proxy that can be cut: every proxied connection is closed at once and new
//! connections are accepted and closed straight away (as a network cut looks to a client that
//! reconnects), until it is restored.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    accept: tokio::task::JoinHandle<()>,
}

struct Inner {
    target: SocketAddr,
    cut: AtomicBool,
    conns: Mutex<Vec<AbortHandle>>,
    /// Connections proxied, and refused while cut.
    proxied: AtomicU64,
    refused: AtomicU64,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let inner = Arc::new(Inner {
            target,
            cut: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            proxied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let state = Arc::clone(&inner);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                if state.cut.load(Ordering::SeqCst) {
                    state.refused.fetch_add(1, Ordering::Relaxed);
                    drop(down);
                    continue;
                }
                state.proxied.fetch_add(1, Ordering::Relaxed);
                let target = state.target;
                let task = tokio::spawn(async move {
                    let mut down = down;
                    let Ok(mut up) = TcpStream::connect(target).await else { return };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                let mut conns = state.conns.lock().unwrap();
                conns.retain(|h| !h.is_finished());
                conns.push(task.abort_handle());
                // A cut that raced with this accept must still close this connection.
                if state.cut.load(Ordering::SeqCst) {
                    task.abort();
                }
            }
        });
        Self { addr, inner, accept }
    }

    /// `url` (a postgres:// URL) with its host:port replaced by this proxy's.
    pub fn rewrite_url(&self, url: &str) -> String {
        let target = self.inner.target.to_string();
        assert!(url.contains(&target), "{url} does not name {target}");
        url.replacen(&target, &self.addr.to_string(), 1)
    }

    /// Closes every proxied connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.inner.cut.store(true, Ordering::SeqCst);
        for h in self.inner.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.inner.cut.store(false, Ordering::SeqCst);
    }

    /// (connections proxied, connections refused while cut)
    pub fn counts(&self) -> (u64, u64) {
        (self.inner.proxied.load(Ordering::Relaxed), self.inner.refused.load(Ordering::Relaxed))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.inner.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
