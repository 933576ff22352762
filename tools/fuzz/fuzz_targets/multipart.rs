//! multipart/related bodies (STOW-RS) and their Content-Type: the first line of the input is the header,
//! the rest the body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spe::ingest::multipart::{related_boundary, related_parts};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(header) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = Bytes::copy_from_slice(data.get(split + 1..).unwrap_or_default());
    if let Ok((boundary, _)) = related_boundary(header) {
        let _ = futures::executor::block_on(related_parts(&boundary, body, 64));
    }
});
