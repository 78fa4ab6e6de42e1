//! TLS that a reload can replace while the listener serves: a [`LiveTls`]
//! holds the rustls configuration in force (certificate, key, client CA),
//! and every new connection's handshake takes the one in force when it
//! starts; connections already open keep theirs.
//!
//! [`incoming`] is the gRPC listeners' accept stream: the bounded accept
//! loop, then, with TLS, each handshake in its own task within the
//! handshake timeout (a slow or failing client delays nobody else and is
//! dropped, logged at debug). tonic's own `ServerTlsConfig` cannot swap its
//! certificate, which is why the handshake is done here.
//!
//! Lock rule: the lock guards only the swap of an `Arc`; a handshake clones
//! it and runs outside the lock.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::config::TlsConfig;
use super::connections::{LimitedStream, bounded_incoming};
use super::tls::{TlsError, rustls_config};

/// The ALPN protocol gRPC listeners offer.
pub const ALPN_H2: &[u8] = b"h2";

/// A listener's TLS configuration, replaceable as a whole.
pub struct LiveTls {
    alpn: Vec<&'static [u8]>,
    handshake_timeout: Duration,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl LiveTls {
    /// Loads the files of `c`, offering `alpn`; `None` when TLS is off.
    pub fn load(c: &TlsConfig, alpn: &[&'static [u8]]) -> Result<Option<Arc<Self>>, TlsError> {
        Ok(rustls_config(c, alpn)?.map(|config| {
            Arc::new(Self {
                alpn: alpn.to_vec(),
                handshake_timeout: c.handshake_timeout.0,
                current: RwLock::new(Arc::new(config)),
            })
        }))
    }

    /// Reads the files of `c` again into a configuration for this listener,
    /// without putting it in force ([`LiveTls::install`] does). TLS turned
    /// off in `c` is an error: turning it off or on needs a restart.
    pub fn reread(&self, c: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
        match rustls_config(c, &self.alpn)? {
            Some(config) => Ok(Arc::new(config)),
            None => Err(TlsError::Pem {
                path: Default::default(),
                what: "TLS cannot be turned off by a reload".into(),
            }),
        }
    }

    /// Puts `config` in force for every handshake from now on.
    pub fn install(&self, config: Arc<ServerConfig>) {
        *self.current.write() = config;
    }

    /// An acceptor with the configuration in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Longest a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// A connection accepted by [`incoming`]: plain, or after its handshake.
#[derive(Debug)]
pub enum ServerIo {
    /// Without TLS.
    Plain(LimitedStream),
    /// After a TLS handshake.
    Tls(Box<TlsStream<LimitedStream>>),
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            ServerIo::Plain(s) => s.connect_info(),
            ServerIo::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ServerIo::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            ServerIo::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Plain(s) => s.is_write_vectored(),
            ServerIo::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, s => s.poll_shutdown(cx))
    }
}

/// What [`incoming`] returns.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<ServerIo>> + Send>>;

/// Accepts from `listener`, at most `max` connections open at once (see
/// [`bounded_incoming`]); with `tls`, hands out each connection once its
/// handshake, with the configuration in force when it began, succeeded.
/// The accept task ends when the returned stream is dropped.
pub fn incoming(listener: TcpListener, max: usize, tls: Option<Arc<LiveTls>>) -> Incoming {
    let accepted = bounded_incoming(listener, max);
    let Some(tls) = tls else {
        return Box::pin(accepted.map(|s| s.map(ServerIo::Plain)));
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut accepted = accepted;
        let mut handshakes = JoinSet::new();
        loop {
            tokio::select! {
                s = accepted.next() => match s {
                    Some(Ok(s)) => {
                        let (acceptor, deadline) = (tls.acceptor(), tls.handshake_timeout);
                        handshakes.spawn(tokio::time::timeout(deadline, acceptor.accept(s)));
                    }
                    Some(Err(e)) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                Some(done) = handshakes.join_next() => match done {
                    Ok(Ok(Ok(s))) => {
                        if tx.send(Ok(ServerIo::Tls(Box::new(s)))).await.is_err() {
                            return;
                        }
                    }
                    Ok(Ok(Err(e))) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Ok(Err(_)) => tracing::debug!("TLS handshake timed out"),
                    Err(e) => tracing::debug!(error = %e, "TLS handshake task failed"),
                },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
