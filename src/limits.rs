//! Connection limits for both transports: a listener that holds a permit per open connection,
//! so a flood of connections waits in the kernel's backlog instead of exhausting memory or file
//! descriptors. It also sets TCP_NODELAY (small request/response exchanges must not wait for
//! Nagle's algorithm), and can hide the socket's vectored writes from HTTP/2 (see
//! [`LimitedListener::unvectored`]).
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection that gives its permit back when closed.
pub struct Counted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    _tally: Option<Tally>,
    /// Whether the connection tells its writer that vectored writes are efficient.
    vectored: bool,
}

/// One open connection in a count of them (a server thread's load), for as long as it is held.
pub struct Tally(Arc<AtomicUsize>);

impl Tally {
    pub fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counted<TcpStream> {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Detaches the connection from this runtime, to hand it to another.
    pub fn into_std(self) -> io::Result<Counted<std::net::TcpStream>> {
        Ok(Counted {
            inner: self.inner.into_std()?,
            _permit: self._permit,
            _tally: self._tally,
            vectored: self.vectored,
        })
    }
}

impl Counted<std::net::TcpStream> {
    /// Counts the connection in `tally` while it is open.
    pub fn tallied(self, tally: Tally) -> Self {
        Self { _tally: Some(tally), ..self }
    }

    /// Attaches the connection to the runtime this is called on (it stays non-blocking).
    pub fn into_tokio(self) -> io::Result<Counted<TcpStream>> {
        let inner = TcpStream::from_std(self.inner)?;
        Ok(Counted { inner, _permit: self._permit, _tally: self._tally, vectored: self.vectored })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.vectored && self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Counted<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A TCP listener that accepts at most `max` open connections at a time.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    vectored: bool,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, max: usize) -> Self {
        Self { inner, permits: Arc::new(Semaphore::new(max.max(1))), vectored: true }
    }

    /// Its connections say they do not write vectored, for HTTP/2 (gRPC). With vectored writes,
    /// h2 hands a DATA payload over 256 bytes to the socket as a separate buffer, and can queue
    /// no further frame behind it until that write is done: a unary response with a token in it
    /// (about 600 bytes) then goes out in two writes, headers and message, then the trailers,
    /// and each loopback write wakes the peer. Without them h2 copies payloads up to 1 KiB into
    /// its buffer, and the whole response is one write (measured: 2.1 against 1.0 writes per
    /// IssueToken call; Introspect's small answers were one write already).
    pub fn unvectored(self) -> Self {
        Self { vectored: false, ..self }
    }

    pub async fn accept_counted(&mut self) -> (Counted<TcpStream>, SocketAddr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = loop {
            if let Ok(p) = Arc::clone(&self.permits).acquire_owned().await {
                break p;
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (Counted { inner: stream, _permit: permit, _tally: None, vectored: self.vectored }, addr);
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The accepted connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Counted<TcpStream>>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let (io, _) = l.accept_counted().await;
            Some((Ok(io), l))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a connection tells its writer about vectored writes survives the hand-over to a
    /// server thread, so gRPC's responses stay one write on the threads that serve them.
    #[tokio::test]
    async fn vectored_setting_survives_the_hand_over() {
        for unvectored in [false, true] {
            let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = inner.local_addr().unwrap();
            let mut listener = LimitedListener::new(inner, 4);
            if unvectored {
                listener = listener.unvectored();
            }
            let client = TcpStream::connect(addr).await.unwrap();
            let (conn, _) = listener.accept_counted().await;
            assert_eq!(conn.is_write_vectored(), !unvectored);
            let handed = conn.into_std().unwrap().into_tokio().unwrap();
            assert_eq!(handed.is_write_vectored(), !unvectored);
            drop(client);
        }
    }
}
