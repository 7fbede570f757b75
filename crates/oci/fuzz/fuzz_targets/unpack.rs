//! Raw layer bytes (tar, or gzip/zstd-compressed tar) unpacked into a temporary root:
//! whatever the archive holds, nothing may appear outside the root.
#![no_main]

#[path = "../common/contained.rs"]
mod contained;

libfuzzer_sys::fuzz_target!(|data: &[u8]| contained::unpack_and_check(data, false));
