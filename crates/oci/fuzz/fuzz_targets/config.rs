//! Image configuration documents.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aegis_oci::fuzzing::config(data));
