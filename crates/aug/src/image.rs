use crate::AugError;

/// A borrowed 8-bit image, rows of interleaved channels (HWC), as decoders and
/// dataset readers produce it. One channel (grey) is replicated to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageU8<'a> {
    pixels: &'a [u8],
    height: usize,
    width: usize,
    channels: usize,
}

impl<'a> ImageU8<'a> {
    /// Checks that `pixels` holds exactly `height * width * channels` bytes,
    /// that no side is zero, and that there are 1 or 3 channels.
    pub fn new(
        pixels: &'a [u8],
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Self, AugError> {
        if channels != 1 && channels != 3 {
            return Err(AugError::UnsupportedChannels(channels));
        }
        if height == 0 || width == 0 {
            return Err(AugError::EmptyImage {
                what: "input image",
                height,
                width,
            });
        }
        let expected = height
            .checked_mul(width)
            .and_then(|n| n.checked_mul(channels))
            .unwrap_or(usize::MAX);
        if pixels.len() != expected {
            return Err(AugError::BufferSize {
                height,
                width,
                channels,
                expected,
                actual: pixels.len(),
            });
        }
        Ok(Self {
            pixels,
            height,
            width,
            channels,
        })
    }

    pub fn pixels(&self) -> &'a [u8] {
        self.pixels
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn channels(&self) -> usize {
        self.channels
    }
}

/// An owned float image, channel planes (CHW), values nominally in `[0, 1]`:
/// what torchvision's tensor functionals take and return.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF32 {
    data: Vec<f32>,
    channels: usize,
    height: usize,
    width: usize,
}

impl ImageF32 {
    /// Checks that `data` holds `channels * height * width` floats and no side is zero.
    pub fn new(
        data: Vec<f32>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, AugError> {
        if height == 0 || width == 0 || channels == 0 {
            return Err(AugError::EmptyImage {
                what: "input image",
                height,
                width,
            });
        }
        let expected = channels
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width))
            .unwrap_or(usize::MAX);
        if data.len() != expected {
            return Err(AugError::BufferSize {
                height,
                width,
                channels,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            data,
            channels,
            height,
            width,
        })
    }

    /// `ToTensor`'s conversion: `k / 255` as a correctly rounded f32 division,
    /// HWC to CHW; a grey image stays 1-channel.
    pub fn from_u8(image: &ImageU8<'_>) -> Self {
        let (h, w, c) = (image.height, image.width, image.channels);
        let mut data = vec![0.0; c * h * w];
        for (p, px) in image.pixels.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                data[ch * h * w + p] = U8_TO_F32[v as usize];
            }
        }
        Self {
            data,
            channels: c,
            height: h,
            width: w,
        }
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    pub fn channels(&self) -> usize {
        self.channels
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn width(&self) -> usize {
        self.width
    }
    /// `[channels, height, width]`, the tensor shape.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    pub(crate) fn require_rgb(&self) -> Result<(), AugError> {
        if self.channels == 3 {
            Ok(())
        } else {
            Err(AugError::UnsupportedChannels(self.channels))
        }
    }
}

/// `k / 255` for every byte, rounded once (torchvision `ToTensor`; v2's
/// `to_dtype(scale=True)` multiplies by f32(1/255) instead and differs by one ulp
/// on about half the values).
pub(crate) static U8_TO_F32: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut k = 0;
    while k < 256 {
        t[k] = k as f32 / 255.0;
        k += 1;
    }
    t
};
