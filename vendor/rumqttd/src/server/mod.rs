// use tokio::io::{AsyncRead, AsyncWrite};

mod broker;
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
mod tls;

pub use broker::{Broker, LinkType, Server};

/// GridEdge patch: what a verified client certificate says about its holder.
#[derive(Debug, Default, Clone)]
pub struct PeerCert {
    pub common_name: Option<String>,
    pub serial: Option<Vec<u8>>,
    pub not_after: Option<i64>,
}

// pub trait IO: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
// impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> IO for T {}
