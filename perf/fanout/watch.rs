//! The watchers: raw HTTP/1.1 (one TCP connection each; newline-delimited JSON or Kubernetes
//! protobuf frames), HTTP/2 streams (hyper's client, a few connections), and etcd watches
//! (etcd-client, 100 per connection). Each records, compactly, which write it received and when;
//! none fully parses every event: the load generator shares the machine with the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// At most this many watchers connect at once (the listen backlog stays short).
const CONNECTING: usize = 128;

/// What all the watchers (and the writer) of one run share.
pub struct Shared {
    /// The clock every timestamp of the run is taken from.
    pub start: Instant,
    /// The sequence number of the last write.
    pub last: u32,
    /// Watchers that have a stream (200 headers, or etcd's `created`).
    pub established: AtomicUsize,
    /// Watchers that received the warm-up write (sequence 0).
    pub warm: AtomicUsize,
    /// Watchers that received the last write or failed: they will receive no more.
    pub finished: AtomicUsize,
    /// Watchers that failed (error status, ERROR event, stream closed or broken).
    pub failed: AtomicUsize,
    /// Receipts of timed writes so far, every watcher together.
    pub delivered: AtomicU64,
    /// Bytes of event lines (etcd: of values) received for timed writes.
    pub bytes: AtomicU64,
    /// Timed writes acknowledged so far.
    pub acked: AtomicU32,
    /// Set when the run is over: streams that end afterwards are not failures.
    pub stopping: AtomicBool,
    connecting: Semaphore,
}

impl Shared {
    pub fn new(last: u32) -> Shared {
        Shared {
            start: Instant::now(),
            last,
            established: AtomicUsize::new(0),
            warm: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            acked: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            connecting: Semaphore::new(CONNECTING),
        }
    }

    /// Microseconds since the start of the run.
    pub fn now_us(&self) -> u32 {
        self.start.elapsed().as_micros() as u32
    }
}

/// What a watcher asks for and parses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wire {
    /// Newline-delimited JSON events (`Accept: application/json`).
    #[default]
    Json,
    /// Kubernetes protobuf frames (`Accept: application/vnd.kubernetes.protobuf;stream=watch`).
    Protobuf,
}

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::Json => "JSON",
            Wire::Protobuf => "protobuf",
        }
    }
}

/// The wires of a peer's HTTP/1.1 watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Json,
    Protobuf,
    /// Every other watcher (by index) JSON, the rest protobuf.
    Half,
}

impl Mix {
    pub fn wire(self, index: usize) -> Wire {
        match self {
            Mix::Json => Wire::Json,
            Mix::Protobuf => Wire::Protobuf,
            Mix::Half if index % 2 == 0 => Wire::Json,
            Mix::Half => Wire::Protobuf,
        }
    }
}

/// What one watcher received.
#[derive(Default)]
pub struct Receipts {
    /// (sequence number, receive time in µs since the start), in the order received.
    pub events: Vec<(u32, u32)>,
    /// Bytes of the timed events received (event line with its newline, or frame with its
    /// length; etcd: value).
    pub bytes: u64,
    /// What the watcher asked for.
    pub wire: Wire,
    /// Why the watcher stopped early, if it did.
    pub failure: Option<String>,
    warm: bool,
    finished: bool,
}

/// One watcher's receipts; locked once per read, by the watcher only (and at the end, to collect).
pub type Slot = Arc<Mutex<Receipts>>;

pub fn slots(watchers: usize, writes: u32) -> Vec<Slot> {
    (0..watchers)
        .map(|_| {
            Arc::new(Mutex::new(Receipts {
                events: Vec::with_capacity(writes as usize + 1),
                ..Receipts::default()
            }))
        })
        .collect()
}

/// The cheap scan of one event: its sequence number, found with a precompiled substring search.
pub struct Scanner {
    seq: memmem::Finder<'static>,
    kind: memmem::Finder<'static>,
    /// The protobuf map entry of `data.seq`: key (field 1, 3 bytes, "seq"), then the value's tag
    /// (field 2, length-delimited).
    proto_seq: memmem::Finder<'static>,
}

/// Reads a protobuf varint.
fn varint(reader: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (index, &byte) in reader.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *reader = &reader[index + 1..];
            return Some(value);
        }
    }
    None
}

/// The next field of a protobuf message, which must be length-delimited: (number, bytes).
fn len_field<'a>(reader: &mut &'a [u8]) -> Option<(u64, &'a [u8])> {
    let key = varint(reader)?;
    if key & 7 != 2 {
        return None;
    }
    let len = usize::try_from(varint(reader)?).ok()?;
    let value = reader.get(..len)?;
    *reader = &reader[len..];
    Some((key >> 3, value))
}

/// The `type` (field 1) and the object (field 1 of the `RawExtension` in field 2) of a
/// `metav1.WatchEvent`. Both fields are length-delimited; the message has no others.
fn event_parts(event: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut reader, mut kind, mut object) = (event, None, None);
    while !reader.is_empty() {
        match len_field(&mut reader)? {
            (1, value) => kind = Some(value),
            (2, mut raw) => {
                while !raw.is_empty() {
                    if let (1, value) = len_field(&mut raw)? {
                        object = Some(value);
                    }
                }
            }
            _ => {}
        }
    }
    Some((kind?, object?))
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            seq: memmem::Finder::new(b"\"seq\":\""),
            kind: memmem::Finder::new(b"\"type\":\""),
            proto_seq: memmem::Finder::new(b"\x0a\x03seq\x12"),
        }
    }

    /// The sequence number in a protobuf-encoded ConfigMap: the value of the `data` map entry
    /// `seq`, a string of digits.
    fn proto_seq(&self, object: &[u8]) -> Option<u32> {
        let mut rest = &object[self.proto_seq.find(object)? + 6..];
        let len = usize::try_from(varint(&mut rest)?).ok()?;
        let digits = rest.get(..len).filter(|digits| !digits.is_empty())?;
        let mut value: u32 = 0;
        for &byte in digits {
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value.checked_mul(10)?.checked_add(u32::from(byte - b'0'))?;
        }
        Some(value)
    }

    /// The sequence number in an object's JSON (`"seq":"123"`).
    fn seq(&self, object: &[u8]) -> Option<u32> {
        let at = self.seq.find(object)? + 7;
        let digits = &object[at..];
        let mut value: u32 = 0;
        let mut any = false;
        for &byte in digits {
            if !byte.is_ascii_digit() {
                break;
            }
            value = value.checked_mul(10)?.checked_add(u32::from(byte - b'0'))?;
            any = true;
        }
        any.then_some(value)
    }

    /// The `type` of a watch event line; looked for near the start first, as servers put it first.
    fn kind<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        let head = &line[..line.len().min(48)];
        let at = match self.kind.find(head) {
            Some(at) => at + 8,
            None => match self.kind.find(line) {
                Some(at) => at + 8,
                None => return b"",
            },
        };
        let rest = &line[at..];
        let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
        &rest[..end]
    }
}

/// Records the receipt of the object (or event) carrying sequence number `seq`.
fn receipt(receipts: &mut Receipts, shared: &Shared, seq: u32, now: u32, size: usize, counted: &mut Counted) {
    if seq == 0 {
        if !receipts.warm {
            receipts.warm = true;
            shared.warm.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    receipts.events.push((seq, now));
    receipts.bytes += size as u64;
    counted.events += 1;
    counted.bytes += size as u64;
    if seq == shared.last && !receipts.finished {
        receipts.finished = true;
        shared.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Receipts of one read, added to the shared counters once.
#[derive(Default)]
struct Counted {
    events: u64,
    bytes: u64,
}

impl Counted {
    fn add_to(&self, shared: &Shared) {
        if self.events > 0 {
            shared.delivered.fetch_add(self.events, Ordering::Relaxed);
            shared.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        }
    }
}

/// Marks the watcher failed (once), unless the run is already over.
fn fail(slot: &Slot, shared: &Shared, reason: String) {
    if shared.stopping.load(Ordering::Relaxed) {
        return;
    }
    let mut receipts = slot.lock().unwrap();
    if receipts.failure.is_some() {
        return;
    }
    receipts.failure = Some(reason);
    shared.failed.fetch_add(1, Ordering::Relaxed);
    if !receipts.finished {
        receipts.finished = true;
        shared.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Handles complete watch events (JSON lines or protobuf frames): skips BOOKMARKs, fails on
/// ERROR, records the rest.
struct LineSink<'a> {
    scanner: &'a Scanner,
    shared: &'a Shared,
    now: u32,
    counted: Counted,
    error: Option<String>,
}

impl LineSink<'_> {
    fn line(&mut self, receipts: &mut Receipts, line: &[u8]) {
        if line.is_empty() || self.error.is_some() {
            return;
        }
        match self.scanner.kind(line) {
            b"BOOKMARK" => {}
            b"ERROR" => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
                self.error = Some(format!("ERROR event: {shown}"));
            }
            _ => match self.scanner.seq(line) {
                Some(seq) => receipt(receipts, self.shared, seq, self.now, line.len() + 1, &mut self.counted),
                None => {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
                    self.error = Some(format!("event without a sequence number: {shown}"));
                }
            },
        }
    }

    /// One protobuf frame's `metav1.WatchEvent` (the frame without its length). Decoding the
    /// whole object (`decode_watch_event`: protobuf to a `serde_json::Value`) takes about 2 µs
    /// per frame, as much as the server spends per delivered event, and 1,000 watchers at 500
    /// writes/s would need over a core for it: like the JSON scan, this reads the event's type
    /// and object fields and finds `data.seq` in the object's bytes (0.02 µs). When `full` is set it also decodes
    /// the whole event and fails unless that agrees (type, kind, `data.seq`).
    fn frame(&mut self, receipts: &mut Receipts, event: &[u8], full: bool) {
        if self.error.is_some() {
            return;
        }
        let Some((kind, object)) = event_parts(event) else {
            self.error = Some(format!("a malformed watch event frame of {} bytes", event.len()));
            return;
        };
        let seq = match kind {
            b"BOOKMARK" => None,
            b"ERROR" => {
                let shown = match watchcache::protobuf::schema().decode_watch_event(event) {
                    Ok((_, object)) => object.to_string(),
                    Err(error) => format!("(undecodable: {error})"),
                };
                self.error = Some(format!("ERROR event: {}", shown.chars().take(300).collect::<String>()));
                return;
            }
            _ => match self.scanner.proto_seq(object) {
                Some(seq) => Some(seq),
                None => {
                    self.error = Some(format!(
                        "{} event without a sequence number ({} bytes)",
                        String::from_utf8_lossy(kind),
                        event.len()
                    ));
                    return;
                }
            },
        };
        if full {
            if let Err(error) = check_frame(event, kind, seq) {
                self.error = Some(error);
                return;
            }
        }
        if let Some(seq) = seq {
            receipt(receipts, self.shared, seq, self.now, event.len() + 4, &mut self.counted);
        }
    }
}

/// Decodes a whole watch event with watchcache's own decoder and checks it against the cheap
/// scan's type and sequence number.
fn check_frame(event: &[u8], kind: &[u8], seq: Option<u32>) -> Result<(), String> {
    let (decoded_kind, object) = watchcache::protobuf::schema()
        .decode_watch_event(event)
        .map_err(|error| format!("a watch event frame does not decode: {error}"))?;
    if decoded_kind.as_bytes() != kind {
        return Err(format!("frame scanned as {}, decoded as {decoded_kind}", String::from_utf8_lossy(kind)));
    }
    let Some(seq) = seq else { return Ok(()) };
    let decoded_seq = object.pointer("/data/seq").and_then(serde_json::Value::as_str);
    if object["kind"] != "ConfigMap" || decoded_seq != Some(seq.to_string().as_str()) {
        let shown: String = object.to_string().chars().take(300).collect();
        return Err(format!("frame scanned as sequence number {seq}, decoded as {shown}"));
    }
    Ok(())
}

/// Splits a byte stream into lines; copies only a line that spans two reads.
#[derive(Default)]
struct Lines {
    carry: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, mut data: &[u8], receipts: &mut Receipts, sink: &mut LineSink<'_>) {
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(end) => {
                    self.carry.extend_from_slice(&data[..end]);
                    sink.line(receipts, &self.carry);
                    self.carry.clear();
                    data = &data[end + 1..];
                }
                None => {
                    self.carry.extend_from_slice(data);
                    return;
                }
            }
        }
        while let Some(end) = memchr::memchr(b'\n', data) {
            sink.line(receipts, &data[..end]);
            data = &data[end + 1..];
        }
        self.carry.extend_from_slice(data);
    }
}

/// The largest protobuf frame a watcher accepts.
const MAX_FRAME: usize = 16 << 20;

/// Splits a byte stream into length-prefixed protobuf frames; copies only a frame that spans
/// two reads. The first frame, and every frame when `every` is set, is decoded in full as well.
struct Frames {
    carry: Vec<u8>,
    every: bool,
    checked_first: bool,
}

impl Frames {
    fn new(every: bool) -> Frames {
        Frames { carry: Vec::new(), every, checked_first: false }
    }

    fn full(&mut self) -> bool {
        let first = !self.checked_first;
        self.checked_first = true;
        first || self.every
    }

    fn feed(&mut self, mut data: &[u8], receipts: &mut Receipts, sink: &mut LineSink<'_>) {
        if !self.carry.is_empty() {
            if self.carry.len() < 4 {
                let take = (4 - self.carry.len()).min(data.len());
                self.carry.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.carry.len() < 4 {
                    return;
                }
            }
            let Some(size) = Self::size(&self.carry, sink) else { return };
            let take = (4 + size - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < 4 + size {
                return;
            }
            let full = self.full();
            sink.frame(receipts, &self.carry[4..], full);
            self.carry.clear();
        }
        while data.len() >= 4 {
            let Some(size) = Self::size(data, sink) else { return };
            if data.len() < 4 + size {
                break;
            }
            let full = self.full();
            sink.frame(receipts, &data[4..4 + size], full);
            data = &data[4 + size..];
        }
        self.carry.extend_from_slice(data);
    }

    /// The length in a frame's first 4 bytes; an absurd one is an error.
    fn size(head: &[u8], sink: &mut LineSink<'_>) -> Option<usize> {
        let size = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        if size > MAX_FRAME {
            sink.error.get_or_insert_with(|| format!("a frame of {size} bytes: the stream is out of step"));
            return None;
        }
        Some(size)
    }
}

/// How a watcher splits its body into events.
enum Splitter {
    Lines(Lines),
    Frames(Frames),
}

impl Splitter {
    fn feed(&mut self, data: &[u8], receipts: &mut Receipts, sink: &mut LineSink<'_>) {
        match self {
            Splitter::Lines(lines) => lines.feed(data, receipts, sink),
            Splitter::Frames(frames) => frames.feed(data, receipts, sink),
        }
    }
}

/// Where a chunked body's decoder is.
#[derive(Clone, Copy)]
enum Chunk {
    /// In the size line: the size so far; whether an extension (`;...`) started.
    Size(usize, bool),
    /// Saw the size line's `\r`.
    SizeLf(usize),
    /// This many data bytes remain in the chunk.
    Data(usize),
    /// After the data: the `\r\n`.
    DataCr,
    DataLf,
    /// The last (zero-size) chunk came: the response ended.
    End,
}

/// Streaming decoder of `Transfer-Encoding: chunked`: hands out the data, never copies it.
struct Chunked {
    state: Chunk,
}

impl Chunked {
    fn new() -> Chunked {
        Chunked { state: Chunk::Size(0, false) }
    }

    /// Decodes `input`, passing every piece of chunk data to `data`. `Ok(true)`: the body ended.
    fn feed(&mut self, mut input: &[u8], mut data: impl FnMut(&[u8])) -> Result<bool, String> {
        while !input.is_empty() {
            match self.state {
                Chunk::Data(remaining) => {
                    let take = remaining.min(input.len());
                    data(&input[..take]);
                    input = &input[take..];
                    self.state =
                        if take == remaining { Chunk::DataCr } else { Chunk::Data(remaining - take) };
                    continue;
                }
                Chunk::End => return Ok(true),
                _ => {}
            }
            let byte = input[0];
            input = &input[1..];
            self.state = match (self.state, byte) {
                (Chunk::Size(size, false), b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = (byte as char).to_digit(16).unwrap() as usize;
                    Chunk::Size(size.checked_mul(16).ok_or("chunk size overflows")? + digit, false)
                }
                (Chunk::Size(size, _), b';') => Chunk::Size(size, true),
                (Chunk::Size(size, true), byte) if byte != b'\r' => Chunk::Size(size, true),
                (Chunk::Size(size, _), b'\r') => Chunk::SizeLf(size),
                (Chunk::SizeLf(0), b'\n') => {
                    self.state = Chunk::End;
                    return Ok(true);
                }
                (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size(0, false),
                _ => return Err(format!("malformed chunked encoding at byte {byte:#04x}")),
            };
        }
        Ok(matches!(self.state, Chunk::End))
    }
}

async fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    let mut attempt = 0;
    loop {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                let _ = error;
            }
            Err(error) => return Err(format!("cannot connect to {address}: {error}")),
        }
    }
}

/// The `Content-Type` of a protobuf watch response (lowercase).
const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Starts one raw HTTP/1.1 watcher per slot, each on its own connection, asking for JSON or
/// protobuf as `mix` says. The first protobuf watcher decodes every frame in full besides
/// scanning it (a check of the scan; one watcher's worth of decoding is cheap).
pub fn spawn_http1(
    runtime: &tokio::runtime::Runtime,
    address: SocketAddr,
    path: &str,
    mix: Mix,
    slots: &[Slot],
    shared: &Arc<Shared>,
) {
    let scanner = Arc::new(Scanner::new());
    let buffer = (256 << 20) / slots.len().max(1);
    let buffer = buffer.clamp(4 << 10, 64 << 10);
    let first_protobuf = (0..slots.len()).find(|&index| mix.wire(index) == Wire::Protobuf);
    for (index, slot) in slots.iter().enumerate() {
        let wire = mix.wire(index);
        slot.lock().unwrap().wire = wire;
        let accept = match wire {
            Wire::Json => "application/json",
            Wire::Protobuf => PROTOBUF_WATCH,
        };
        let splitter = match wire {
            Wire::Json => Splitter::Lines(Lines::default()),
            Wire::Protobuf => Splitter::Frames(Frames::new(Some(index) == first_protobuf)),
        };
        let (slot, shared, scanner) = (Arc::clone(slot), Arc::clone(shared), Arc::clone(&scanner));
        let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: {accept}\r\n\r\n");
        runtime.spawn(async move {
            if let Err(reason) =
                http1_watch(address, &request, buffer, splitter, &slot, &shared, &scanner).await
            {
                fail(&slot, &shared, reason);
            }
        });
    }
}

async fn http1_watch(
    address: SocketAddr,
    request: &str,
    buffer: usize,
    mut splitter: Splitter,
    slot: &Slot,
    shared: &Shared,
    scanner: &Scanner,
) -> Result<(), String> {
    let permit = shared.connecting.acquire().await.expect("never closed");
    let mut stream = connect(address).await?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("cannot send the request: {error}"))?;
    let mut buf = vec![0u8; buffer];
    let mut head = Vec::new();
    let body_start = loop {
        let read = stream.read(&mut buf).await.map_err(|error| format!("reading the headers: {error}"))?;
        if read == 0 {
            return Err("connection closed before the response headers".into());
        }
        head.extend_from_slice(&buf[..read]);
        if let Some(end) = memmem::find(&head, b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > 64 << 10 {
            return Err("response headers over 64 KiB".into());
        }
    };
    let headers = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    let status = headers.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        let body = String::from_utf8_lossy(&head[body_start..]);
        return Err(format!("HTTP {status}: {}", body.chars().take(300).collect::<String>()));
    }
    if !headers.contains("transfer-encoding: chunked") {
        return Err("the watch response is not chunked".into());
    }
    if let Splitter::Frames(_) = splitter {
        let content_type = headers.lines().find_map(|line| line.strip_prefix("content-type:"));
        if content_type.map(str::trim) != Some(PROTOBUF_WATCH) {
            return Err(format!("a protobuf watch answered with content-type {content_type:?}"));
        }
    }
    drop(permit);
    shared.established.fetch_add(1, Ordering::Relaxed);
    let mut chunked = Chunked::new();
    let mut pending = head.split_off(body_start);
    loop {
        let data: &[u8] = if pending.is_empty() {
            let read = stream.read(&mut buf).await.map_err(|error| format!("watch stream broke: {error}"))?;
            if read == 0 {
                return Err("the server closed the watch stream".into());
            }
            &buf[..read]
        } else {
            &pending
        };
        let mut sink =
            LineSink { scanner, shared, now: shared.now_us(), counted: Counted::default(), error: None };
        let ended = {
            let mut receipts = slot.lock().unwrap();
            chunked.feed(data, |piece| splitter.feed(piece, &mut receipts, &mut sink))?
        };
        pending.clear();
        sink.counted.add_to(shared);
        if let Some(error) = sink.error {
            return Err(error);
        }
        if ended {
            return Err("the server ended the watch response".into());
        }
    }
}

/// Starts the watchers as HTTP/2 streams, spread over `connections` connections (hyper's client,
/// prior knowledge).
pub fn spawn_http2(
    runtime: &tokio::runtime::Runtime,
    address: SocketAddr,
    path: &str,
    connections: usize,
    slots: &[Slot],
    shared: &Arc<Shared>,
) {
    let scanner = Arc::new(Scanner::new());
    let uri: http::Uri = format!("http://{address}{path}").parse().expect("valid URI");
    let groups: Vec<Vec<Slot>> = (0..connections)
        .map(|connection| slots.iter().skip(connection).step_by(connections).cloned().collect())
        .collect();
    for group in groups {
        let (shared, scanner, uri) = (Arc::clone(shared), Arc::clone(&scanner), uri.clone());
        runtime.spawn(async move {
            let sender = match http2_connect(address).await {
                Ok(sender) => sender,
                Err(reason) => {
                    for slot in &group {
                        fail(slot, &shared, reason.clone());
                    }
                    return;
                }
            };
            for slot in group {
                let (mut sender, shared, scanner, uri) =
                    (sender.clone(), Arc::clone(&shared), Arc::clone(&scanner), uri.clone());
                tokio::spawn(async move {
                    if let Err(reason) = http2_watch(&mut sender, uri, &slot, &shared, &scanner).await {
                        fail(&slot, &shared, reason);
                    }
                });
            }
        });
    }
}

type Http2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

async fn http2_connect(address: SocketAddr) -> Result<Http2Sender, String> {
    let stream = connect(address).await?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP/2 handshake: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn http2_watch(
    sender: &mut Http2Sender,
    uri: http::Uri,
    slot: &Slot,
    shared: &Shared,
    scanner: &Scanner,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    sender.ready().await.map_err(|error| format!("HTTP/2 connection: {error}"))?;
    let request = http::Request::get(uri)
        .header("accept", "application/json")
        .body(http_body_util::Empty::new())
        .expect("valid request");
    let response = sender.send_request(request).await.map_err(|error| format!("watch request: {error}"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    if status != 200 {
        let body = body.collect().await.map(|body| body.to_bytes()).unwrap_or_default();
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
    }
    shared.established.fetch_add(1, Ordering::Relaxed);
    let mut lines = Lines::default();
    loop {
        let frame = match body.frame().await {
            None => return Err("the server ended the watch stream".into()),
            Some(Err(error)) => return Err(format!("watch stream broke: {error}")),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        let mut sink =
            LineSink { scanner, shared, now: shared.now_us(), counted: Counted::default(), error: None };
        {
            let mut receipts = slot.lock().unwrap();
            lines.feed(&data, &mut receipts, &mut sink);
        }
        sink.counted.add_to(shared);
        if let Some(error) = sink.error {
            return Err(error);
        }
    }
}

/// Starts the watchers as etcd watches on the namespace's prefix from `start_revision`,
/// `per_connection` watches per client connection (one gRPC watch stream each).
pub fn spawn_etcd(
    runtime: &tokio::runtime::Runtime,
    endpoint: &str,
    start_revision: i64,
    per_connection: usize,
    slots: &[Slot],
    shared: &Arc<Shared>,
) {
    let scanner = Arc::new(Scanner::new());
    for group in slots.chunks(per_connection) {
        let group = group.to_vec();
        let (shared, scanner, endpoint) = (Arc::clone(shared), Arc::clone(&scanner), endpoint.to_owned());
        runtime.spawn(async move {
            let client = match etcd_client::Client::connect([endpoint.as_str()], None).await {
                Ok(client) => client,
                Err(error) => {
                    for slot in &group {
                        fail(slot, &shared, format!("cannot connect to {endpoint}: {error}"));
                    }
                    return;
                }
            };
            for slot in group {
                let (client, shared, scanner) = (client.clone(), Arc::clone(&shared), Arc::clone(&scanner));
                tokio::spawn(async move {
                    if let Err(reason) = etcd_watch(client, start_revision, &slot, &shared, &scanner).await {
                        fail(&slot, &shared, reason);
                    }
                });
            }
        });
    }
}

async fn etcd_watch(
    mut client: etcd_client::Client,
    start_revision: i64,
    slot: &Slot,
    shared: &Shared,
    scanner: &Scanner,
) -> Result<(), String> {
    let mut permit = Some(shared.connecting.acquire().await.expect("never closed"));
    let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(start_revision);
    let mut stream = client
        .watch(crate::object::ETCD_PREFIX, Some(options))
        .await
        .map_err(|error| format!("watch: {error}"))?;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err("etcd ended the watch stream".into()),
            Err(error) => return Err(format!("watch stream broke: {error}")),
        };
        if response.canceled() {
            return Err(format!(
                "watch canceled (compact revision {}): {}",
                response.compact_revision(),
                response.cancel_reason()
            ));
        }
        if permit.take().is_some() {
            shared.established.fetch_add(1, Ordering::Relaxed);
        }
        if response.events().is_empty() {
            continue;
        }
        let now = shared.now_us();
        let mut counted = Counted::default();
        {
            let mut receipts = slot.lock().unwrap();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() != etcd_client::EventType::Put {
                    continue;
                }
                match scanner.seq(kv.value()) {
                    Some(seq) => receipt(&mut receipts, shared, seq, now, kv.value().len(), &mut counted),
                    None => return Err("a value without a sequence number".into()),
                }
            }
        }
        counted.add_to(shared);
    }
}

/// Feeds a chunked body of known events, split in two at every byte and byte by byte, through
/// the decoder and the line scanner, then the same as protobuf frames through the frame splitter
/// and scanner, every frame also decoded in full (the quick mode runs it).
pub fn self_check() -> Result<(), String> {
    let lines: Vec<Vec<u8>> =
        (1..=3).map(|seq| crate::object::event_line(seq, 10 + u64::from(seq))).collect();
    let bookmark = b"{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"12\"}}}\n";
    check_body("JSON", &lines, bookmark, || Splitter::Lines(Lines::default()))?;

    let schema = watchcache::protobuf::schema();
    let encode = |json: &[u8]| -> Result<Vec<u8>, String> {
        let value: serde_json::Value = serde_json::from_slice(json).map_err(|error| error.to_string())?;
        schema.encode_object(&value).map_err(|error| format!("cannot encode {value}: {error}"))
    };
    let frames = (1..=3)
        .map(|seq| {
            Ok(schema
                .watch_frame("MODIFIED", &encode(&crate::object::configmap(seq, Some(10 + u64::from(seq))))?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let bookmark = schema.watch_frame(
        "BOOKMARK",
        &encode(br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"12"}}"#)?,
    );
    check_body("protobuf", &frames, &bookmark, || Splitter::Frames(Frames::new(true)))
}

/// Three events and a bookmark (after the second) in a chunked body, fed whole, byte by byte and
/// split in two at every byte: each must give sequence numbers 1, 2, 3 and the body's end.
fn check_body(
    what: &str,
    events: &[Vec<u8>],
    bookmark: &[u8],
    splitter: impl Fn() -> Splitter,
) -> Result<(), String> {
    fn chunk(body: &mut Vec<u8>, payload: &[u8], extension: &str) {
        body.extend_from_slice(format!("{:X}{extension}\r\n", payload.len()).as_bytes());
        body.extend_from_slice(payload);
        body.extend_from_slice(b"\r\n");
    }
    let mut body = Vec::new();
    chunk(&mut body, &[&events[0][..], &events[1][..100]].concat(), "");
    chunk(&mut body, &[&events[1][100..], bookmark].concat(), ";name=value");
    chunk(&mut body, &events[2], "");
    body.extend_from_slice(b"0\r\n\r\n");
    let decode = |parts: &mut dyn Iterator<Item = &[u8]>| -> Result<(Vec<u32>, bool), String> {
        let (shared, scanner) = (Shared::new(3), Scanner::new());
        let (mut receipts, mut chunked, mut splitter) = (Receipts::default(), Chunked::new(), splitter());
        let mut ended = false;
        for part in parts {
            let mut sink = LineSink {
                scanner: &scanner,
                shared: &shared,
                now: 0,
                counted: Counted::default(),
                error: None,
            };
            ended = chunked.feed(part, |piece| splitter.feed(piece, &mut receipts, &mut sink))?;
            if let Some(error) = sink.error {
                return Err(format!("{what}: {error}"));
            }
        }
        Ok((receipts.events.iter().map(|&(seq, _)| seq).collect(), ended))
    };
    let mut outcomes = vec![("byte by byte".to_owned(), decode(&mut body.chunks(1))?)];
    for split in 0..=body.len() {
        let (head, tail) = body.split_at(split);
        outcomes.push((format!("split at {split}"), decode(&mut [head, tail].into_iter())?));
    }
    for (how, (seqs, ended)) in outcomes {
        if seqs != [1, 2, 3] || !ended {
            return Err(format!("{what} chunked decoding, {how}: sequence numbers {seqs:?}, ended {ended}"));
        }
    }
    Ok(())
}
