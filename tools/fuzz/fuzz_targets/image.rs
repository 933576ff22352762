//! PNG/JPEG images and labels as uploads reach them: any bytes must give an image or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spe::engine::image_io;

fuzz_target!(|data: &[u8]| {
    // A small pixel budget keeps each run fast; the budget check itself is part of what is fuzzed.
    let _ = image_io::decode_gray(data, "fuzz", 1 << 22);
    let _ = image_io::decode_label(data, "fuzz", 1 << 22);
});
