//! Index / manifest list / image manifest documents as a registry could send them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aegis_oci::fuzzing::manifest(data));
