//! The host's session fed arbitrary bytes by a guest.
#![no_main]

use aegis_proto::{GuestMessage, Side};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    aegis_proto_fuzz::session::<GuestMessage>(Side::Host, input);
});
