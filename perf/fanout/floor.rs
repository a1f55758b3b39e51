//! The floor: the least a server must do to fan a write out to W HTTP/1.1 watchers. It runs as
//! its own process (the bench re-executes itself with [`FLAG`]) so that its CPU time can be read
//! from /proc apart from the load generator's.
//!
//! It answers every GET with `200` and a chunked body and keeps the socket. The writer tells it
//! about each write on a control connection (a line with the sequence number), which it
//! acknowledges at once; it then encodes the event line once (the same JSON watch event line a
//! server would send, framed as one chunk) and queues the same bytes to every socket. A task per
//! socket drains that socket's queue: coalesced, whatever is queued goes out in one `writev`;
//! uncoalesced, one write per event. No cache, no filtering, no history.

use std::io::IoSlice;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The argument that makes the bench binary the floor server (followed by `coalesced` or
/// `uncoalesced`).
pub const FLAG: &str = "--fanout-floor";

/// The first line the floor prints: `floor listening on http://ADDR control ADDR`.
pub const STARTUP: &str = "floor listening on http://";

/// The floor's `resourceVersion` of write `seq`.
fn resource_version(seq: u32) -> u64 {
    1_000 + u64::from(seq)
}

type Sockets = Arc<Mutex<Vec<mpsc::UnboundedSender<Bytes>>>>;

pub fn main(args: &[String]) -> ExitCode {
    let coalesce = match args.first().map(String::as_str) {
        Some("coalesced") => true,
        Some("uncoalesced") => false,
        other => {
            eprintln!("{FLAG}: expected coalesced or uncoalesced, got {other:?}");
            return ExitCode::from(2);
        }
    };
    // The bench holds our stdin: when it goes away, so do we.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime starts");
    runtime.block_on(serve(coalesce));
    ExitCode::SUCCESS
}

async fn serve(coalesce: bool) {
    let watches = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let control = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!(
        "{STARTUP}{} control {}",
        watches.local_addr().expect("address"),
        control.local_addr().expect("address")
    );
    let sockets: Sockets = Arc::default();
    let watch_sockets = Arc::clone(&sockets);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = watches.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, Arc::clone(&watch_sockets), coalesce));
        }
    });
    loop {
        let Ok((stream, _)) = control.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(writes(stream, Arc::clone(&sockets)));
    }
}

/// One watcher: the request, the response head, then whatever its queue brings.
async fn connection(mut stream: TcpStream, sockets: Sockets, coalesce: bool) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..read]);
        if memchr::memmem::find(&head, b"\r\n\r\n").is_some() {
            break;
        }
        if head.len() > 64 << 10 {
            return Ok(());
        }
    }
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await?;
    let (sender, mut queue) = mpsc::unbounded_channel();
    sockets.lock().unwrap().push(sender);
    if coalesce {
        // At most IOV_MAX slices per writev.
        let mut batch = Vec::new();
        while queue.recv_many(&mut batch, 1024).await > 0 {
            write_all_vectored(&mut stream, &batch).await?;
            batch.clear();
        }
    } else {
        while let Some(chunk) = queue.recv().await {
            stream.write_all(&chunk).await?;
        }
    }
    Ok(())
}

async fn write_all_vectored(stream: &mut TcpStream, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let written = stream.write_vectored(slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// The writer's control connection: a line per write; each is acknowledged at once, then its
/// event is encoded once and queued to every socket.
async fn writes(stream: TcpStream, sockets: Sockets) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let Ok(seq) = line.trim().parse::<u32>() else {
            write.write_all(b"bad\n").await?;
            continue;
        };
        write.write_all(format!("{seq}\n").as_bytes()).await?;
        let line = crate::object::event_line(seq, resource_version(seq));
        let mut chunk = Vec::with_capacity(line.len() + 12);
        chunk.extend_from_slice(format!("{:x}\r\n", line.len()).as_bytes());
        chunk.extend_from_slice(&line);
        chunk.extend_from_slice(b"\r\n");
        let chunk = Bytes::from(chunk);
        sockets.lock().unwrap().retain(|socket| socket.send(chunk.clone()).is_ok());
    }
    Ok(())
}
