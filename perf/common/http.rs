//! One HTTP/1.1 client connection (hyper), opened again if the server closed it. Response
//! bodies are read frame by frame and counted, and kept only when asked, so that a LIST of
//! 100 MB costs the load generator no copy.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

pub struct Http {
    address: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// A response: status, body length, and the body if it was kept (the first `keep` bytes).
pub struct Reply {
    pub status: u16,
    pub length: usize,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(400)]).into_owned()
    }
}

impl Http {
    pub async fn connect(address: SocketAddr) -> Result<Http, String> {
        Ok(Http { address, sender: Self::open(address).await? })
    }

    async fn open(
        address: SocketAddr,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let stream =
            TcpStream::connect(address).await.map_err(|error| format!("connect {address}: {error}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|error| format!("HTTP handshake: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request; keeps at most `keep` bytes of the body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Bytes,
        keep: usize,
    ) -> Result<Reply, String> {
        if self.sender.ready().await.is_err() {
            self.sender = Self::open(self.address).await?;
            self.sender.ready().await.map_err(|error| format!("connection: {error}"))?;
        }
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "watchcache")
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(body))
            .expect("valid request");
        let response =
            self.sender.send_request(request).await.map_err(|error| format!("{method} {path}: {error}"))?;
        let status = response.status().as_u16();
        let mut incoming = response.into_body();
        let mut reply = Reply { status, length: 0, body: Vec::new() };
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|error| format!("{method} {path}: reading the body: {error}"))?;
            if let Ok(data) = frame.into_data() {
                reply.length += data.len();
                if reply.body.len() < keep {
                    let take = data.len().min(keep - reply.body.len());
                    reply.body.extend_from_slice(&data[..take]);
                }
            }
        }
        Ok(reply)
    }

    pub async fn get(&mut self, path: &str, keep: usize) -> Result<Reply, String> {
        self.request("GET", path, "application/json", Bytes::new(), keep).await
    }
}

/// The `metadata.continue` of a list response, from its first bytes (the list's metadata comes
/// before its items), without parsing the items.
pub fn continue_token(head: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(head, b"\"continue\":\"")? + b"\"continue\":\"".len();
    let end = memchr::memchr(b'"', &head[at..])?;
    Some(String::from_utf8_lossy(&head[at..at + end]).into_owned()).filter(|token| !token.is_empty())
}
