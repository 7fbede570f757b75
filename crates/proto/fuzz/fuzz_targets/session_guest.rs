//! The guest's session (the harness) fed arbitrary bytes by a host.
#![no_main]

use aegis_proto::{HostMessage, Side};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    aegis_proto_fuzz::session::<HostMessage>(Side::Guest, input);
});
