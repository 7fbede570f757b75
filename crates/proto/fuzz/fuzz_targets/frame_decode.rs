//! The frame decoder on arbitrary bytes: never panics, never allocates beyond a frame's limit
//! (libFuzzer's -malloc_limit_mb catches that), and whatever it accepts re-encodes to a frame
//! that decodes to the same value.
#![no_main]

use aegis_proto::frame::Frame;
use aegis_proto::{GuestMessage, HostMessage};
use bytes::{Buf, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn roundtrip<C>(f: &Frame<C>)
where
    C: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    f.encode(&mut buf).expect("a decoded frame re-encodes");
    let mut b = buf.freeze();
    let len = b.get_u32_le() as usize;
    assert_eq!(len, b.len());
    let again = Frame::<C>::decode(b).expect("a re-encoded frame decodes");
    assert_eq!(&again, f);
}

fn stream_of<C>(input: &[u8])
where
    C: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(f) = Frame::<C>::decode(Bytes::copy_from_slice(input)) {
        roundtrip(&f);
    }
    aegis_proto_fuzz::runtime().block_on(async {
        let mut r = input;
        while let Ok(Some(f)) = Frame::<C>::read_from(&mut r).await {
            roundtrip(&f);
        }
    });
}

fuzz_target!(|input: &[u8]| {
    stream_of::<HostMessage>(input);
    stream_of::<GuestMessage>(input);
});
