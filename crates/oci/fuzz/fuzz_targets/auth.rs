//! Credentials files and `WWW-Authenticate` challenges.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aegis_oci::fuzzing::auth(data));
