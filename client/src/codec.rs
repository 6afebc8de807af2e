//! The gRPC codec of the generated client: prost's, except that a message is decoded from one
//! byte slice.
//!
//! tonic hands a decoder the whole message in one contiguous buffer, behind a `Buf` that checks
//! and moves two cursors on every step. prost decodes through that `Buf` field by field, and a
//! page of a thousand events is some twenty thousand steps: in a read scan the cursor upkeep
//! alone was a tenth of the client's CPU. Decoding from the buffer's slice instead takes the
//! same path as `Message::decode(&bytes[..])`, with the same result and the same errors.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// prost's codec, decoding each message from a slice ([`SliceDecoder`]).
#[derive(Debug, Clone)]
pub struct SliceCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        SliceCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> ProstEncoder<T> {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> SliceDecoder<U> {
        SliceDecoder {
            _message: PhantomData,
        }
    }
}

/// Decodes a message from the contiguous bytes tonic buffered for it.
#[derive(Debug, Clone)]
pub struct SliceDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let chunk = buf.chunk();
        // tonic buffers a whole message before decoding it, so the chunk is all of it; were it
        // ever not, the `Buf` path still decodes it correctly.
        let decoded = if chunk.len() == len {
            let decoded = U::decode(chunk);
            buf.advance(len);
            decoded
        } else {
            U::decode(buf)
        };
        // As prost's codec answers a message that does not decode.
        decoded
            .map(Some)
            .map_err(|err| Status::internal(err.to_string()))
    }
}
