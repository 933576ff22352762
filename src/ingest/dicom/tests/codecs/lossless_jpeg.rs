//! A minimal lossless JPEG encoder (ITU T.81 Annex H, process 14) for one gray component, to produce
//! test data for the JPEG Lossless transfer syntaxes: no restart intervals, point transform 0, one
//! Huffman table giving every difference category 0..=16 a 5-bit code.

/// Encodes `samples` (row by row, each < 2^precision) with prediction `predictor` (1..=7).
pub fn encode(samples: &[u16], rows: usize, cols: usize, precision: u8, predictor: u8) -> Vec<u8> {
    assert_eq!(samples.len(), rows * cols);
    let mut out = vec![0xFF, 0xD8];
    // SOF3: length 11, precision, lines, samples per line, 1 component (id 1, 1x1, no table).
    out.extend([0xFF, 0xC3, 0, 11, precision]);
    out.extend((rows as u16).to_be_bytes());
    out.extend((cols as u16).to_be_bytes());
    out.extend([1, 1, 0x11, 0]);
    // DHT: table class 0, id 0; 17 codes of length 5 for the categories 0..=16, in order, so that the
    // canonical code of category k is k.
    let mut counts = [0u8; 16];
    counts[4] = 17;
    out.extend([0xFF, 0xC4, 0, 2 + 1 + 16 + 17, 0x00]);
    out.extend(counts);
    out.extend(0..=16u8);
    // SOS: 1 component (id 1, table 0), Ss = predictor, Se = 0, Ah/Al = 0.
    out.extend([0xFF, 0xDA, 0, 8, 1, 1, 0x00, predictor, 0, 0]);

    let at = |r: usize, c: usize| i32::from(samples[r * cols + c]);
    let mut bits = BitWriter::default();
    for r in 0..rows {
        for c in 0..cols {
            let prediction = match (r, c) {
                (0, 0) => 1 << (precision - 1),
                (0, _) => at(r, c - 1),
                (_, 0) => at(r - 1, c),
                _ => {
                    let (ra, rb, rc) = (at(r, c - 1), at(r - 1, c), at(r - 1, c - 1));
                    match predictor {
                        1 => ra,
                        2 => rb,
                        3 => rc,
                        4 => ra + rb - rc,
                        5 => ra + ((rb - rc) >> 1),
                        6 => rb + ((ra - rc) >> 1),
                        7 => (ra + rb) >> 1,
                        p => panic!("predictor {p}"),
                    }
                }
            };
            // Differences are taken modulo 2^16 (H.1.2.1).
            let mut d = (at(r, c) - prediction) & 0xFFFF;
            if d >= 0x8000 {
                d -= 0x10000;
            }
            let category = if d == -0x8000 {
                16
            } else {
                32 - d.unsigned_abs().leading_zeros()
            };
            bits.put(category, 5);
            if (1..16).contains(&category) {
                let extra = if d > 0 { d } else { d - 1 };
                bits.put((extra as u32) & ((1 << category) - 1), category);
            }
        }
    }
    out.extend(bits.finish());
    out.extend([0xFF, 0xD9]);
    out
}

/// MSB-first bit packing with JPEG byte stuffing (0x00 after every 0xFF).
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.byte();
            }
        }
    }

    fn byte(&mut self) {
        let b = self.acc as u8;
        self.out.push(b);
        if b == 0xFF {
            self.out.push(0);
        }
        self.acc = 0;
        self.n = 0;
    }

    /// Pads the last byte with 1 bits.
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1 << pad) - 1, pad);
        }
        self.out
    }
}
