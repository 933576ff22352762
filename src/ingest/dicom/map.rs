//! Stored sample values -> display values (the rule in the module documentation of `dicom`).

use ndarray::{Array2, Array3};

use super::super::Pixels;

/// Colour model of the decoded samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Color {
    /// Minimum value is white.
    Monochrome1,
    /// Minimum value is black.
    Monochrome2,
    /// Three samples per pixel, red green blue.
    Rgb,
}

/// Byte order of 16-bit samples in a frame buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    Little,
    Big,
}

impl Order {
    /// Byte order of 16-bit values in memory on this machine.
    pub fn native() -> Order {
        if cfg!(target_endian = "big") {
            Order::Big
        } else {
            Order::Little
        }
    }
}

/// Validated layout of one frame's samples.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub rows: usize,
    pub cols: usize,
    pub color: Color,
    /// 8 or 16.
    pub bits_allocated: u16,
    /// 1..=bits_allocated.
    pub bits_stored: u16,
    /// bits_stored - 1 ..= bits_allocated - 1.
    pub high_bit: u16,
    pub signed: bool,
    /// Colour planes stored one after the other (Planar Configuration 1).
    pub planar: bool,
}

impl Layout {
    pub fn samples_per_pixel(&self) -> usize {
        if self.color == Color::Rgb {
            3
        } else {
            1
        }
    }

    /// Bytes of one frame.
    pub fn frame_bytes(&self) -> usize {
        self.rows * self.cols * self.samples_per_pixel() * usize::from(self.bits_allocated / 8)
    }

    /// Stored value of a raw sample: the `bits_stored` bits ending at `high_bit`, sign-extended when
    /// the pixel representation is signed.
    fn stored(&self, raw: u16) -> i32 {
        let shift = self.high_bit + 1 - self.bits_stored;
        let mask = (1u32 << self.bits_stored) - 1;
        let v = (u32::from(raw) >> shift) & mask;
        if self.signed && (v >> (self.bits_stored - 1)) & 1 == 1 {
            v as i32 - (1i32 << self.bits_stored)
        } else {
            v as i32
        }
    }

    /// Stored values of a frame's samples, in buffer order (for RGB: interleaved or planar as stored).
    fn samples<'a>(&'a self, frame: &'a [u8], order: Order) -> impl Iterator<Item = i32> + 'a {
        let width = usize::from(self.bits_allocated / 8);
        frame.chunks_exact(width).map(move |c| {
            let raw = match (c, order) {
                ([b], _) => u16::from(*b),
                ([a, b], Order::Little) => u16::from_le_bytes([*a, *b]),
                ([a, b], Order::Big) => u16::from_be_bytes([*a, *b]),
                _ => 0,
            };
            self.stored(raw)
        })
    }
}

/// Modality LUT and VOI window of one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Transform {
    pub slope: f64,
    pub intercept: f64,
    /// (center, width) with width >= 1.
    pub window: Option<(f64, f64)>,
}

impl Transform {
    fn is_identity(&self) -> bool {
        self.slope == 1.0 && self.intercept == 0.0 && self.window.is_none()
    }
}

const MAX16: f64 = 65535.0;

/// Display values of one frame. `frame` holds at least `layout.frame_bytes()` bytes.
///
/// Samples are streamed from the frame buffer (no per-sample copy of a possibly large frame).
pub(super) fn to_pixels(frame: &[u8], order: Order, layout: &Layout, t: &Transform) -> Pixels {
    let frame = frame.get(..layout.frame_bytes()).unwrap_or(frame);
    let shape = (layout.rows, layout.cols);
    let samples = || layout.samples(frame, order);
    match layout.color {
        Color::Rgb => Pixels::Rgb8(rgb(samples(), layout)),
        mono => {
            let invert = mono == Color::Monochrome1;
            if layout.bits_allocated == 8 && !layout.signed && t.is_identity() {
                // Kept exact, so that an 8-bit source (e.g. a DICOM made from a PNG) round-trips.
                let v = samples().map(|v| {
                    let v = v.clamp(0, 255) as u8;
                    if invert {
                        255 - v
                    } else {
                        v
                    }
                });
                Pixels::Gray8(from_vec2(shape, v.collect()))
            } else {
                let mapping = Mapping::new(samples(), t);
                let v = samples().map(|s| {
                    let y = mapping.apply(s);
                    if invert {
                        u16::MAX - y
                    } else {
                        y
                    }
                });
                Pixels::Gray16(from_vec2(shape, v.collect()))
            }
        }
    }
}

/// Stored value -> 0..=65535: Modality LUT, then the linear VOI window when there is one, else the
/// frame's min-max.
enum Mapping {
    /// PS3.3 C.11.2.1.2.1; with w == 1 the two thresholds coincide and the ramp is never used.
    Window {
        slope: f64,
        intercept: f64,
        center: f64,
        width: f64,
    },
    Stretch {
        slope: f64,
        intercept: f64,
        lo: f64,
        range: f64,
    },
    /// A constant frame has no contrast to stretch.
    Zero,
}

impl Mapping {
    fn new(samples: impl Iterator<Item = i32>, t: &Transform) -> Mapping {
        let (slope, intercept) = (t.slope, t.intercept);
        if let Some((center, width)) = t.window {
            return Mapping::Window {
                slope,
                intercept,
                center,
                width,
            };
        }
        // The rescale is affine, so the rescaled extremes are the rescaled stored extremes.
        let (min, max) = samples.fold((i32::MAX, i32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let a = f64::from(min) * slope + intercept;
        let b = f64::from(max) * slope + intercept;
        let (lo, hi) = (a.min(b), a.max(b));
        let range = hi - lo;
        if range.is_finite() && range > 0.0 {
            Mapping::Stretch {
                slope,
                intercept,
                lo,
                range,
            }
        } else {
            Mapping::Zero
        }
    }

    fn apply(&self, stored: i32) -> u16 {
        let to_u16 = |y: f64| y.round().clamp(0.0, MAX16) as u16;
        match *self {
            Mapping::Window {
                slope,
                intercept,
                center: c,
                width: w,
            } => {
                let x = f64::from(stored) * slope + intercept;
                if x <= c - 0.5 - (w - 1.0) / 2.0 {
                    0
                } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                    u16::MAX
                } else {
                    to_u16(((x - (c - 0.5)) / (w - 1.0) + 0.5) * MAX16)
                }
            }
            Mapping::Stretch {
                slope,
                intercept,
                lo,
                range,
            } => to_u16((f64::from(stored) * slope + intercept - lo) / range * MAX16),
            Mapping::Zero => 0,
        }
    }
}

/// 8-bit RGB, interleaved; 16-bit samples scaled by 255 / (2^bits_stored - 1).
fn rgb(samples: impl Iterator<Item = i32>, layout: &Layout) -> Array3<u8> {
    let max = f64::from((1u32 << layout.bits_stored) - 1);
    let to8 = |v: i32| -> u8 {
        if layout.bits_allocated == 8 {
            v.clamp(0, 255) as u8
        } else {
            (f64::from(v.max(0)) * 255.0 / max)
                .round()
                .clamp(0.0, 255.0) as u8
        }
    };
    let v: Vec<u8> = samples.map(to8).collect();
    let shape = (layout.rows, layout.cols, 3);
    if !layout.planar {
        return Array3::from_shape_vec(shape, v).unwrap_or_else(|_| Array3::zeros(shape));
    }
    let n = layout.rows * layout.cols;
    Array3::from_shape_fn(shape, |(r, c, ch)| {
        v.get(ch * n + r * layout.cols + c).copied().unwrap_or(0)
    })
}

/// Builds a (rows, cols) array; `v` always has rows * cols values here, so the fallback (zeros) is
/// never taken, but it keeps the function total.
fn from_vec2<T: Clone + Default>(shape: (usize, usize), v: Vec<T>) -> Array2<T> {
    Array2::from_shape_vec(shape, v).unwrap_or_else(|_| Array2::default(shape))
}
