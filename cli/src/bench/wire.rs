//! Appends as the bench sends them: request bytes it encodes itself, and answers decoded down
//! to the fields it reads.
//!
//! The bench shares its machine with the server it measures, so every microsecond the load
//! generator spends is one the server does not get. Building 100 `NewEvent` structs, encoding
//! them and decoding 100 committed events with their hashes was more than half of the client's
//! CPU in a 100-event run. Here each request encodes what its events share once and copies it
//! per event, patching in the payload; answers are decoded into messages that name only the
//! fields the bench reads (prost skips the others without keeping them). The server sees
//! ordinary `AppendRequest`s: a test decodes these bytes with the generated types.
//!
//! A small request also goes out in DATA frames of at most [`PIECE_BYTES`]: h2 copies such a
//! frame into its write buffer, where the requests of many streams gather into one `writev`,
//! but writes a frame of 256 bytes or more (its `CHAIN_THRESHOLD`) from its own buffer and
//! must flush before the next. With a 256-byte payload every append was then its own
//! `writev`, 1.3 per request against 0.4 for `Head`, whose requests are tiny.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use causeway_client::client::{REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX};
use causeway_client::pb;
use http_body::{Frame, SizeHint};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::Service;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::http::{Request, Response};
use tonic::transport::Channel;
use tonic::transport::channel::ResponseFuture;
use tonic::{GrpcMethod, Status, Streaming};
use tonic_prost::ProstDecoder;

use crate::bench::{AppendVia, Compression};

/// The service's full name.
const SERVICE: &str = "causeway.v1.EventStoreService";
/// The Append method's path.
const APPEND_PATH: &str = "/causeway.v1.EventStoreService/Append";
/// The AppendStream method's path.
const APPEND_STREAM_PATH: &str = "/causeway.v1.EventStoreService/AppendStream";
/// `AppendStreamRequest.append`.
const APPEND_TAG: u32 = 1;
/// `AppendRequest.events`.
const EVENTS_TAG: u32 = 1;
/// `NewEvent.payload`.
const PAYLOAD_TAG: u32 = 6;
/// `NewEvent.metadata`, a map: each entry a message of key (1) and value (2).
const METADATA_TAG: u32 = 8;
/// The largest DATA frame a small request is cut into: one less than h2's `CHAIN_THRESHOLD`.
pub const PIECE_BYTES: usize = 255;
const _: () = assert!(
    PIECE_BYTES < 256,
    "h2 chains DATA frames of 256 bytes or more"
);
/// Requests up to this size are cut into pieces; larger ones (100 events of 256 bytes are
/// about 40 KiB) are few enough per second that their own `writev` costs less than the extra
/// frames would.
pub const PIECES_UP_TO_BYTES: usize = 1024;

/// What the bench reads of an `AppendResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct AppendAck {
    /// The receipt.
    #[prost(message, optional, tag = "1")]
    pub receipt: Option<ReceiptAck>,
}

/// What the bench reads of a `Receipt`.
#[derive(Clone, PartialEq, Message)]
pub struct ReceiptAck {
    /// The committed events, in order.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<CommittedAck>,
}

/// What the bench reads of a `Committed` event.
#[derive(Clone, PartialEq, Message)]
pub struct CommittedAck {
    /// The event's position in the log.
    #[prost(uint64, tag = "2")]
    pub position: u64,
    /// The event's version in its entity.
    #[prost(uint64, tag = "3")]
    pub version: u64,
}

/// What the bench reads of an `AppendStreamResponse`: its `answer` oneof, as two optional
/// fields (the same bytes on the wire).
#[derive(Clone, PartialEq, Message)]
pub struct StreamAck {
    /// The receipt of a committed append.
    #[prost(message, optional, tag = "1")]
    pub receipt: Option<ReceiptAck>,
    /// The status of a refused one.
    #[prost(message, optional, tag = "2")]
    pub error: Option<tonic_types::Status>,
}

/// Sends encoded append requests on one connection: each as a unary `Append`, or each as one
/// message of an `AppendStream` the appender keeps open.
#[derive(Debug)]
pub struct Appender {
    grpc: tonic::client::Grpc<SmallFrames>,
    via: AppendVia,
    /// The open stream, once the first append of `AppendVia::Stream` opened it.
    stream: Option<Box<Streamed>>,
    /// The stream every clone shares, for `AppendVia::Pipeline`.
    pipeline: Arc<tokio::sync::Mutex<Option<Pipeline>>>,
}

impl Pipeline {
    /// Whether the stream still takes appends.
    fn is_open(&self) -> bool {
        self.waiting.lock().expect("the pipeline's lock").is_some()
    }
}

/// Opens the shared stream, with the task that routes its answers.
async fn open_pipeline(grpc: &mut tonic::client::Grpc<SmallFrames>) -> Result<Pipeline, Status> {
    let (requests, taken) = mpsc::unbounded_channel();
    let path = PathAndQuery::from_static(APPEND_STREAM_PATH);
    let mut open = tonic::Request::new(UnboundedReceiverStream::new(taken));
    open.extensions_mut()
        .insert(GrpcMethod::new(SERVICE, "AppendStream"));
    let mut answers = grpc
        .streaming(open, path, WireCodec::<StreamAck>::new())
        .await?
        .into_inner();
    let waiting = Arc::new(std::sync::Mutex::new(Some(VecDeque::<Reply>::new())));
    let routed = waiting.clone();
    tokio::spawn(async move {
        loop {
            let answer = answers.message().await;
            let mut waiting = routed.lock().expect("the pipeline's lock");
            let Some(queue) = waiting.as_mut() else {
                return;
            };
            match answer {
                Ok(Some(ack)) => {
                    if let Some(reply) = queue.pop_front() {
                        let _ = reply.send(Ok(ack));
                    }
                }
                end => {
                    let status = match end {
                        Err(status) => status,
                        _ => Status::unavailable("the server ended the append stream"),
                    };
                    for reply in waiting.take().into_iter().flatten() {
                        let _ = reply.send(Err(status.clone()));
                    }
                    return;
                }
            }
        }
    });
    Ok(Pipeline { requests, waiting })
}

/// An encoded `AppendRequest` as an `AppendStreamRequest`: a length-delimited field `append`.
fn with_append_tag(request: &Bytes) -> Bytes {
    let mut message = BytesMut::with_capacity(request.len() + 6);
    put_len_prefix(&mut message, APPEND_TAG, request.len());
    message.put_slice(request);
    message.freeze()
}

/// The receipt of a stream's answer, or its refusal as the unary call's status.
fn receipt_of(ack: StreamAck) -> Result<ReceiptAck, Status> {
    match (ack.receipt, ack.error) {
        (Some(receipt), _) => Ok(receipt),
        (None, Some(error)) => Err(Status::with_details(
            tonic::Code::from(error.code),
            error.message.clone(),
            Bytes::from(error.encode_to_vec()),
        )),
        (None, None) => Err(Status::internal(
            "an append stream answer has neither receipt nor error",
        )),
    }
}

/// A clone sends on the same connection. It opens a stream of its own when it needs one, but
/// shares the appender's pipeline.
impl Clone for Appender {
    fn clone(&self) -> Appender {
        Appender {
            grpc: self.grpc.clone(),
            via: self.via,
            stream: None,
            pipeline: self.pipeline.clone(),
        }
    }
}

/// An `AppendStream` that several workers send on: each append's answer is routed back to its
/// sender in the order they were sent, which is the order the server answers in.
#[derive(Debug)]
struct Pipeline {
    requests: mpsc::UnboundedSender<Bytes>,
    /// Where each unanswered append's answer goes, oldest first; `None` once the stream failed.
    waiting: Arc<std::sync::Mutex<Option<VecDeque<Reply>>>>,
}

type Reply = oneshot::Sender<Result<StreamAck, Status>>;

/// An open `AppendStream`: where requests go, and where their answers come from, in order.
#[derive(Debug)]
struct Streamed {
    requests: mpsc::Sender<Bytes>,
    answers: Streaming<StreamAck>,
}

impl Appender {
    /// An appender on `channel` with the client library's message bounds and the chosen
    /// compression.
    pub fn new(channel: &Channel, compression: Compression, via: AppendVia) -> Appender {
        let grpc = tonic::client::Grpc::new(SmallFrames(channel.clone()))
            .max_decoding_message_size(RESPONSE_BYTES_MAX)
            .max_encoding_message_size(REQUEST_BYTES_MAX);
        let grpc = match compression.encoding() {
            Some(encoding) => grpc.send_compressed(encoding).accept_compressed(encoding),
            None => grpc,
        };
        Appender {
            grpc,
            via,
            stream: None,
            pipeline: Arc::default(),
        }
    }

    /// Sends one encoded `AppendRequest` and returns its receipt.
    pub async fn append(&mut self, request: Bytes) -> Result<ReceiptAck, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|err| Status::unavailable(format!("the connection is not ready: {err}")))?;
        match self.via {
            AppendVia::Unary => {}
            AppendVia::Stream => return self.append_streamed(request).await,
            AppendVia::Pipeline => return self.append_pipelined(request).await,
        }
        let path = PathAndQuery::from_static(APPEND_PATH);
        let mut request = tonic::Request::new(request);
        // As the generated client does, for interceptors and tracing that read it.
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "Append"));
        let response = self
            .grpc
            .unary(request, path, WireCodec::<AppendAck>::new())
            .await?;
        response
            .into_inner()
            .receipt
            .ok_or_else(|| Status::internal("the append response has no receipt"))
    }

    /// [`Appender::append`] on the stream the appender's clones share, opened on first use and
    /// again after it failed.
    async fn append_pipelined(&mut self, request: Bytes) -> Result<ReceiptAck, Status> {
        let answer = {
            let mut pipeline = self.pipeline.lock().await;
            let open = match pipeline.as_ref() {
                Some(open) if open.is_open() => open,
                _ => pipeline.insert(open_pipeline(&mut self.grpc).await?),
            };
            let (reply, answer) = oneshot::channel();
            let mut waiting = open.waiting.lock().expect("the pipeline's lock");
            let Some(waiting) = waiting.as_mut() else {
                return Err(Status::unavailable("the append stream failed"));
            };
            waiting.push_back(reply);
            open.requests
                .send(with_append_tag(&request))
                .map_err(|_| Status::unavailable("the append stream closed"))?;
            answer
        };
        let ack = answer
            .await
            .map_err(|_| Status::unavailable("the append stream closed"))??;
        receipt_of(ack)
    }

    /// [`Appender::append`] as the next message of the appender's stream, opened on first use
    /// and again after it failed. One request is outstanding at a time, so the next answer is
    /// this request's.
    async fn append_streamed(&mut self, request: Bytes) -> Result<ReceiptAck, Status> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let (requests, taken) = mpsc::channel(1);
                let path = PathAndQuery::from_static(APPEND_STREAM_PATH);
                let mut open = tonic::Request::new(ReceiverStream::new(taken));
                open.extensions_mut()
                    .insert(GrpcMethod::new(SERVICE, "AppendStream"));
                let answers = self
                    .grpc
                    .streaming(open, path, WireCodec::<StreamAck>::new())
                    .await?
                    .into_inner();
                self.stream.insert(Box::new(Streamed { requests, answers }))
            }
        };
        let answered = match stream.requests.send(with_append_tag(&request)).await {
            Ok(()) => stream.answers.message().await,
            Err(_) => Err(Status::unavailable("the append stream closed")),
        };
        let ack = match answered {
            Ok(Some(ack)) => ack,
            Ok(None) => Err(Status::unavailable("the server ended the append stream"))
                .inspect_err(|_| self.stream = None)?,
            Err(status) => {
                self.stream = None;
                return Err(status);
            }
        };
        receipt_of(ack)
    }
}

/// A channel whose small request bodies go out in pieces of at most [`PIECE_BYTES`].
#[derive(Clone, Debug)]
pub struct SmallFrames(Channel);

impl Service<Request<Body>> for SmallFrames {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        self.0
            .call(request.map(|body| Body::new(Pieces::new(body))))
    }
}

/// A body whose data chunks of up to [`PIECES_UP_TO_BYTES`] are cut into frames of at most
/// [`PIECE_BYTES`]; larger chunks and trailers pass as they are.
#[derive(Debug)]
pub struct Pieces<B> {
    inner: B,
    rest: Bytes,
}

impl<B> Pieces<B> {
    /// Cuts the data of `inner`.
    pub fn new(inner: B) -> Pieces<B> {
        Pieces {
            inner,
            rest: Bytes::new(),
        }
    }
}

impl<B> http_body::Body for Pieces<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.rest.is_empty() {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.len() <= PIECES_UP_TO_BYTES => self.rest = data,
                    Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let n_bytes = self.rest.len().min(PIECE_BYTES);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n_bytes)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// Builds an `AppendRequest` event by event, each made of bytes every event of the request
/// shares and a payload of its own.
#[derive(Debug)]
pub struct RequestBuilder {
    buf: BytesMut,
    shared: Vec<u8>,
}

impl RequestBuilder {
    /// A request whose events all carry the fields of `shared` (its payload is ignored), for
    /// about `n_events` events of `payload_bytes` each.
    pub fn new(mut shared: pb::NewEvent, n_events: usize, payload_bytes: usize) -> RequestBuilder {
        shared.payload.clear();
        let shared = shared.encode_to_vec();
        // Room for each event's field header, payload and a send time.
        let per_event = shared.len() + payload_bytes + 64;
        RequestBuilder {
            buf: BytesMut::with_capacity(n_events * per_event + 256),
            shared,
        }
    }

    /// Adds an event: the shared fields, the payload that `write_payload` writes (exactly
    /// `payload_len` bytes) and, when given, one more metadata entry.
    pub fn event(
        &mut self,
        payload_len: usize,
        write_payload: impl FnOnce(&mut BytesMut),
        extra_metadata: Option<(&str, &str)>,
    ) {
        let entry_len = extra_metadata
            .map(|(key, value)| len_field_len(1, key.len()) + len_field_len(2, value.len()));
        let event_len = self.shared.len()
            + len_field_len(PAYLOAD_TAG, payload_len)
            + entry_len.map_or(0, |entry_len| len_field_len(METADATA_TAG, entry_len));
        put_len_prefix(&mut self.buf, EVENTS_TAG, event_len);
        self.buf.put_slice(&self.shared);
        put_len_prefix(&mut self.buf, PAYLOAD_TAG, payload_len);
        let before = self.buf.len();
        write_payload(&mut self.buf);
        assert_eq!(
            self.buf.len() - before,
            payload_len,
            "the payload is as long as announced"
        );
        if let (Some((key, value)), Some(entry_len)) = (extra_metadata, entry_len) {
            put_len_prefix(&mut self.buf, METADATA_TAG, entry_len);
            put_len_prefix(&mut self.buf, 1, key.len());
            self.buf.put_slice(key.as_bytes());
            put_len_prefix(&mut self.buf, 2, value.len());
            self.buf.put_slice(value.as_bytes());
        }
    }

    /// The request: the events added, then every field of `rest` but its events (a protobuf
    /// message may carry its fields in any order, and repeated fields add up).
    pub fn finish(mut self, rest: &pb::AppendRequest) -> Bytes {
        debug_assert!(rest.events.is_empty(), "the events were added one by one");
        rest.encode(&mut self.buf)
            .expect("a BytesMut grows to fit the message");
        self.buf.freeze()
    }
}

/// The metadata of every bench event beyond its send time.
pub fn bench_metadata() -> HashMap<String, String> {
    HashMap::from([("channel".to_string(), "web".to_string())])
}

/// Bytes of a length-delimited field with `len` bytes of content.
fn len_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Writes the key and length of a length-delimited field; its `len` bytes come next.
fn put_len_prefix(buf: &mut BytesMut, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Sends [`Bytes`] as they are and decodes `T`s: [`AppendAck`]s of `Append`, [`StreamAck`]s of
/// `AppendStream`.
#[derive(Debug)]
struct WireCodec<T>(PhantomData<T>);

impl<T> WireCodec<T> {
    fn new() -> WireCodec<T> {
        WireCodec(PhantomData)
    }
}

impl<T: Message + Default + Send + 'static> Codec for WireCodec<T> {
    type Encode = Bytes;
    type Decode = T;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<T>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<T> {
        ProstDecoder::default()
    }
}

/// Copies already encoded messages into the frame.
#[derive(Clone, Copy, Debug, Default)]
struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_event() -> pb::NewEvent {
        pb::NewEvent {
            scope: "bench".to_string(),
            entity: "e-7".to_string(),
            r#type: "BenchEvent".to_string(),
            content_type: "application/json".to_string(),
            tags: vec!["customer:7".to_string()],
            metadata: bench_metadata(),
            ..pb::NewEvent::default()
        }
    }

    #[test]
    fn built_requests_decode_as_the_generated_types_would_encode_them() {
        let mut builder = RequestBuilder::new(shared_event(), 1, 8);
        builder.event(3, |buf| buf.put_slice(b"one"), None);
        builder.event(5, |buf| buf.put_slice(b"three"), Some(("sent", "12345")));
        let rest = pb::AppendRequest {
            gates: vec!["g".to_string()],
            expected: vec![pb::ExpectedVersion {
                scope: "bench".to_string(),
                entity: "e-7".to_string(),
                ..pb::ExpectedVersion::default()
            }],
            ..pb::AppendRequest::default()
        };
        let bytes = builder.finish(&rest);

        let decoded = pb::AppendRequest::decode(bytes).expect("valid protobuf");
        let mut second = pb::NewEvent {
            payload: b"three".to_vec(),
            ..shared_event()
        };
        second
            .metadata
            .insert("sent".to_string(), "12345".to_string());
        let expected = pb::AppendRequest {
            events: vec![
                pb::NewEvent {
                    payload: b"one".to_vec(),
                    ..shared_event()
                },
                second,
            ],
            ..rest
        };
        assert_eq!(decoded, expected);
    }

    #[test]
    fn acks_read_positions_and_versions_from_a_full_response() {
        let committed = |position, version| pb::Committed {
            id: "0190c0de-0000-7000-8000-000000000000".to_string(),
            position,
            version,
            hash: vec![7; 32],
            prev_hash: vec![8; 32],
            ..pb::Committed::default()
        };
        let response = pb::AppendResponse {
            receipt: Some(pb::Receipt {
                events: vec![committed(41, 3), committed(42, 4)],
                digest: vec![9; 32],
                signature: vec![1; 64],
                ..pb::Receipt::default()
            }),
        };
        let ack = AppendAck::decode(response.encode_to_vec().as_slice()).expect("valid protobuf");
        let events = ack.receipt.expect("a receipt").events;
        assert_eq!(
            events,
            vec![
                CommittedAck {
                    position: 41,
                    version: 3
                },
                CommittedAck {
                    position: 42,
                    version: 4
                },
            ]
        );
    }

    use http_body::Body as _;

    /// A body of the given frames, in order.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Every frame of `body`: the length of each data frame, or `None` for trailers.
    fn frame_lens(mut body: Pieces<Frames>) -> Vec<Option<usize>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut lens = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            let frame = frame.unwrap();
            lens.push(frame.data_ref().map(Bytes::len));
            let pending = body.rest.len() as u64;
            assert!(body.size_hint().lower() >= pending);
            assert_eq!(
                body.is_end_stream(),
                pending == 0 && body.inner.0.is_empty()
            );
        }
        assert!(body.is_end_stream());
        lens
    }

    #[test]
    fn small_chunks_go_out_in_pieces_under_the_chain_threshold_and_large_ones_whole() {
        let data = |n_bytes: usize| Frame::data(Bytes::from(vec![7u8; n_bytes]));
        let trailers = Frame::trailers(tonic::codegen::http::HeaderMap::new());
        let body = Frames(
            [
                data(600),
                data(PIECES_UP_TO_BYTES + 1),
                data(PIECE_BYTES),
                trailers,
            ]
            .into(),
        );
        assert_eq!(
            frame_lens(Pieces::new(body)),
            [
                Some(255),
                Some(255),
                Some(90),
                Some(PIECES_UP_TO_BYTES + 1),
                Some(255),
                None
            ]
        );
    }
}
