//! The body of the `proto_decode` fuzz target (`fuzz/`), here so that the
//! normal test suite can replay its corpus on stable Rust. Not an API.
//!
//! The first byte picks one message type of `distcache.v1` (every request,
//! the Pipeline and Batch messages, and the answers clients decode); the
//! rest is decoded through [`crate::codec::decode_message`], the function
//! the gRPC codec uses. The oracle: a message that decodes re-encodes to
//! bytes that decode to the same message, and those bytes are canonical
//! (encoding them again gives the same bytes, of `encoded_len` length).

use std::fmt::Debug;

use bytes::Bytes;
use prost::Message;

use crate::codec::decode_message;
use crate::v1 as pb;

/// Decodes `data[1..]` as the message type picked by `data[0]` and checks
/// the round trip; panics on a violation.
pub fn proto_decode(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let check = match which % 21 {
        0 => round_trip::<pb::GetRequest>,
        1 => round_trip::<pb::SetRequest>,
        2 => round_trip::<pb::DeleteRequest>,
        3 => round_trip::<pb::CompareAndSwapRequest>,
        4 => round_trip::<pb::IncrByRequest>,
        5 => round_trip::<pb::ExpireRequest>,
        6 => round_trip::<pb::BatchRequest>,
        7 => round_trip::<pb::PipelineRequest>,
        8 => round_trip::<pb::HealthCheckRequest>,
        9 => round_trip::<pb::GetMetricsRequest>,
        10 => round_trip::<pb::Operation>,
        11 => round_trip::<pb::GetResponse>,
        12 => round_trip::<pb::SetResponse>,
        13 => round_trip::<pb::DeleteResponse>,
        14 => round_trip::<pb::CompareAndSwapResponse>,
        15 => round_trip::<pb::IncrByResponse>,
        16 => round_trip::<pb::ExpireResponse>,
        17 => round_trip::<pb::BatchResponse>,
        18 => round_trip::<pb::PipelineResponse>,
        19 => round_trip::<pb::HealthCheckResponse>,
        _ => round_trip::<pb::GetMetricsResponse>,
    };
    check(body);
}

fn round_trip<M: Message + Default + PartialEq + Debug>(body: &[u8]) {
    let Ok(msg) = decode_message::<M>(Bytes::copy_from_slice(body)) else {
        return;
    };
    let encoded = msg.encode_to_vec();
    assert_eq!(encoded.len(), msg.encoded_len(), "encoded_len of {msg:?}");
    let again = match decode_message::<M>(Bytes::from(encoded.clone())) {
        Ok(m) => m,
        Err(e) => panic!("re-encoded {msg:?} does not decode: {e}"),
    };
    assert_eq!(again, msg, "decode(encode(m)) != m");
    assert_eq!(again.encode_to_vec(), encoded, "encoding is not canonical");
}
