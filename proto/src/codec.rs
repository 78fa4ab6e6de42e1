//! The gRPC codec of the generated stubs: protobuf through prost, like
//! `tonic_prost::ProstCodec`, with two changes on the hot path.
//!
//! - **Decoding** takes the whole message out of tonic's receive buffer as one
//!   [`Bytes`] (a reference count, not a copy) and lets prost read from that.
//!   Through tonic's `DecodeBuf`, prost paid a bounds-checked `BytesMut`
//!   advance for every varint and a `split_to` for every byte field; from a
//!   `Bytes` a varint is a pointer bump and a byte field a slice of the same
//!   buffer.
//! - **Encoding** writes the message into a `Vec` sized by `encoded_len` and
//!   copies that into tonic's buffer once. prost writes varints a byte at a
//!   time: into a `Vec` each byte is a `push`, into tonic's `EncodeBuf` it was
//!   a one-byte `put_slice` with its capacity checks.
//!
//! - **Large messages** (64 KiB and more: big values) are encoded straight
//!   into tonic's buffer, so each value is copied once, and no message over
//!   [`MAX_ENCODED_BYTES`] is ever allocated.
//!
//! The bytes on the wire are the same as with `tonic_prost::ProstCodec`. On a
//! node behind the proxy under `redis-benchmark -P 16 -t set`, this took the
//! node's user-space instructions per SET from about 3,600 to about 3,150
//! (`NODE=1 scripts/proxy-instructions.sh`).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The largest message any distcache process encodes, whatever its
/// configured limit (a node's `--max-message-bytes` may not exceed it).
/// Answers are budgeted below the configured limit while they are built (see
/// [`crate::budget`]); this ceiling is the last guard against allocating an
/// answer no limit was applied to.
pub const MAX_ENCODED_BYTES: usize = 256 << 20;

/// Messages of at least this size are encoded straight into tonic's buffer.
const DIRECT_ENCODE_BYTES: usize = 64 << 10;

/// Protobuf codec of `distcache.v1`'s stubs (see the module docs).
#[derive(Debug)]
pub struct ProtoCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProtoEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProtoEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// Encodes `T` (see the module docs).
#[derive(Debug)]
pub struct ProtoEncoder<T>(PhantomData<fn(T)>);

impl<T: Message> Encoder for ProtoEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let len = item.encoded_len();
        // Checked before anything is allocated: tonic checks its encoding
        // limit only after the message is in its buffer, and a message of
        // tens of gigabytes aborts the process on allocation instead.
        if len > MAX_ENCODED_BYTES {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes exceeds the {MAX_ENCODED_BYTES}-byte ceiling"
            )));
        }
        if len >= DIRECT_ENCODE_BYTES {
            // Large messages (big values) straight into tonic's buffer: one
            // copy of every value instead of two.
            buf.reserve(len);
            item.encode_raw(buf);
            return Ok(());
        }
        let mut out = Vec::with_capacity(len);
        item.encode_raw(&mut out);
        buf.put_slice(&out);
        Ok(())
    }
}

/// Decodes `U` (see the module docs).
#[derive(Debug)]
pub struct ProtoDecoder<U>(PhantomData<fn() -> U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_message(buf.copy_to_bytes(buf.remaining())).map(Some)
    }
}

/// Decodes one whole message, as [`ProtoDecoder`] does with what tonic
/// received (also the entry point of the `proto_decode` fuzz target).
pub fn decode_message<U: Message + Default>(message: Bytes) -> Result<U, Status> {
    // As tonic_prost does: a message that does not parse is INTERNAL
    // (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md).
    U::decode(message).map_err(|e| Status::internal(e.to_string()))
}
