//! Per-pair TCP proxies: node `i` reaches node `j`'s federation port only through the proxy
//! `(i, j)`, which the testnet can cut (partition) and restore (heal). Cutting closes the
//! pair's live connections too, so pooled connections cannot leak through a partition.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// One direction of one pair.
pub struct Proxy {
    pub listen: SocketAddr,
    pub target: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Ends the pipes still open.
        let _ = self.cut.send(true);
    }
}

impl Proxy {
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> Result<Proxy, Error> {
        let listener =
            TcpListener::bind(listen).await.map_err(|e| Error::new(format!("proxy cannot listen on {listen}: {e}")))?;
        let (tx, _) = watch::channel(false);
        let cut = Arc::new(tx);
        let c = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if *c.borrow() {
                    // Partitioned: the connection is closed at once.
                    drop(client);
                    continue;
                }
                let mut rx = c.subscribe();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else { return };
                    let mut client = client;
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Ok(Proxy { listen, target, cut, task })
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}
