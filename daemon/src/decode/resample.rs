//! Streaming sample-rate conversion with rubato.
//!
//! Decoded packets arrive in arbitrary sizes; [`StreamResampler`] buffers them into the
//! resampler's fixed input chunks, trims the filter delay at the start and flushes the tail,
//! so the output of a whole stream has exactly `ceil(n_in * out_rate / in_rate)` frames, the
//! length soxr and librosa produce.

use crate::decode::limits::MAX_RESAMPLER_BLOCK;
use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

/// Resampling quality presets. All three use rubato's synchronous FFT resampler (every
/// file-to-file conversion has a fixed ratio); a longer FFT block means a longer filter and a
/// sharper transition band. Measured on 44.1k/48k/22.05k -> 16k (see `tests/resampling.rs`):
/// the stop band from 1.05x the new Nyquist frequency is below -140 dB for `hq` and `vhq` and
/// below -84 dB for `fast`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Short blocks, Hann window: flat (0.1 dB) to 0.8x the new Nyquist frequency.
    Fast,
    /// Flat to 0.95x Nyquist.
    #[default]
    Hq,
    /// Longest blocks: flat to 0.975x Nyquist.
    Vhq,
}

impl Quality {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fast" => Some(Self::Fast),
            "hq" => Some(Self::Hq),
            "vhq" => Some(Self::Vhq),
            _ => None,
        }
    }

    /// Guaranteed attenuation of content at or above 1.05x the new Nyquist frequency, with a
    /// margin below what the tests measure.
    pub fn stated_attenuation_db(self) -> f64 {
        match self {
            Self::Fast => 80.0,
            Self::Hq | Self::Vhq => 120.0,
        }
    }

    /// Fraction of the new Nyquist frequency up to which the gain stays within 0.1 dB.
    pub fn passband_edge(self) -> f64 {
        match self {
            Self::Fast => 0.8,
            Self::Hq => 0.95,
            Self::Vhq => 0.975,
        }
    }

    /// Minimum FFT block length (in the smaller of the two reduced rates) and window.
    fn fft_shape(self) -> (usize, WindowFunction) {
        match self {
            Self::Fast => (64, WindowFunction::Hann2),
            Self::Hq => (512, WindowFunction::BlackmanHarris2),
            Self::Vhq => (2048, WindowFunction::BlackmanHarris2),
        }
    }
}

/// Frames fed to the resampler per call: large enough to amortise per-call overhead, small
/// enough to keep the working set in cache.
const CHUNK_FRAMES: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("resampler: {0}")]
pub struct ResampleSetupError(String);

/// A rate converter fed with planar chunks of any length.
pub struct StreamResampler {
    inner: Option<Box<dyn Resampler<f32>>>,
    channels: usize,
    ratio: f64,
    /// Input not yet consumed, one vector per channel.
    pending: Vec<Vec<f32>>,
    out: Vec<Vec<f32>>,
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

impl StreamResampler {
    pub fn new(
        in_rate: u32,
        out_rate: u32,
        channels: usize,
        quality: Quality,
    ) -> Result<Self, ResampleSetupError> {
        if in_rate == 0 || out_rate == 0 || channels == 0 {
            return Err(ResampleSetupError(format!(
                "invalid rates {in_rate} -> {out_rate} or channel count {channels}"
            )));
        }
        let ratio = f64::from(out_rate) / f64::from(in_rate);
        let inner: Option<Box<dyn Resampler<f32>>> = if in_rate == out_rate {
            None
        } else {
            Some(build(in_rate, out_rate, channels, quality)?)
        };
        let (delay_left, out) = match &inner {
            Some(r) => (
                r.output_delay(),
                vec![vec![0.0; r.output_frames_max()]; channels],
            ),
            None => (0, Vec::new()),
        };
        Ok(Self {
            inner,
            channels,
            ratio,
            pending: vec![Vec::with_capacity(CHUNK_FRAMES * 2); channels],
            out,
            delay_left,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Input frames per resampler call: split points aligned to a multiple of this keep a
    /// segment in the same filter phase as a pass started at frame 0.
    pub fn block_frames(&self) -> usize {
        self.inner.as_ref().map_or(1, |r| r.input_frames_next())
    }

    /// Feed planar input; complete output chunks go to `emit`.
    pub fn push(&mut self, planes: &[&[f32]], emit: &mut dyn FnMut(&[&[f32]])) {
        let Some(_) = self.inner else {
            let n = planes.first().map_or(0, |p| p.len());
            self.frames_in += n as u64;
            self.frames_out += n as u64;
            emit(planes);
            return;
        };
        let n = planes.first().map_or(0, |p| p.len());
        self.frames_in += n as u64;
        for (dst, src) in self.pending.iter_mut().zip(planes) {
            dst.extend_from_slice(src);
        }
        let mut consumed = 0;
        loop {
            let need = self.inner.as_ref().map_or(0, |r| r.input_frames_next());
            if self.pending[0].len() - consumed < need {
                break;
            }
            consumed += self.process(consumed, None, emit);
        }
        if consumed > 0 {
            for p in &mut self.pending {
                p.drain(..consumed);
            }
        }
    }

    /// Flush what is buffered and the filter tail; returns the total frames emitted.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[&[f32]])) -> u64 {
        if self.inner.is_none() {
            return self.frames_out;
        }
        let expected = (self.frames_in as f64 * self.ratio).ceil() as u64;
        let left = self.pending[0].len();
        if left > 0 {
            self.process_limited(0, Some(left), expected, emit);
            for p in &mut self.pending {
                p.clear();
            }
        }
        // Pump silence until the delayed tail has come out, then cut at the exact length.
        while self.frames_out < expected {
            let before = self.frames_out;
            self.process_limited(0, Some(0), expected, emit);
            if self.frames_out == before && self.delay_left == 0 {
                break;
            }
        }
        self.frames_out
    }

    fn process(
        &mut self,
        offset: usize,
        partial: Option<usize>,
        emit: &mut dyn FnMut(&[&[f32]]),
    ) -> usize {
        self.process_limited(offset, partial, u64::MAX, emit)
    }

    /// Run one resampler call on `pending[offset..]`; emit at most up to `limit` total frames.
    fn process_limited(
        &mut self,
        offset: usize,
        partial: Option<usize>,
        limit: u64,
        emit: &mut dyn FnMut(&[&[f32]]),
    ) -> usize {
        let Some(r) = self.inner.as_mut() else {
            return 0;
        };
        let need = r.input_frames_next();
        // The adapter wants `need` frames to exist even for a partial (zero-padded) call.
        if self.pending[0].len() < offset + need {
            for p in &mut self.pending {
                p.resize(offset + need, 0.0);
            }
        }
        let frames_avail = self.pending[0].len();
        let out_frames = self.out[0].len();
        let (Ok(input), Ok(mut output)) = (
            SequentialSliceOfVecs::new(&self.pending, self.channels, frames_avail),
            SequentialSliceOfVecs::new_mut(&mut self.out, self.channels, out_frames),
        ) else {
            return need;
        };
        let indexing = Indexing {
            input_offset: offset,
            output_offset: 0,
            partial_len: partial,
            active_channels_mask: None,
        };
        let (n_in, n_out) = match r.process_into_buffer(&input, &mut output, Some(&indexing)) {
            Ok(v) => v,
            // Buffers are sized from the resampler's own limits, so this cannot fail; if it
            // ever did, dropping the chunk is safer than aborting a worker.
            Err(_) => return need,
        };
        let skip = self.delay_left.min(n_out);
        self.delay_left -= skip;
        let room = limit.saturating_sub(self.frames_out) as usize;
        let take = (n_out - skip).min(room);
        if take > 0 {
            let refs: Vec<&[f32]> = self.out.iter().map(|p| &p[skip..skip + take]).collect();
            emit(&refs);
            self.frames_out += take as u64;
        }
        n_in
    }
}

/// FFT block size (input frames) and blocks per call for the FFT resampler. A block must be
/// a multiple of `in_rate / gcd`; rubato's own choice can land on FFT lengths with large
/// prime factors (48k -> 16k gave 516 = 4*3*43), several times slower than a smooth length.
/// A power-of-two multiple of the reduced ratio keeps both FFT lengths smooth.
fn fft_block(in_rate: u32, out_rate: u32, min_len: usize) -> (usize, usize) {
    let g = gcd(in_rate as usize, out_rate as usize);
    let (step_in, step_out) = (in_rate as usize / g, out_rate as usize / g);
    // Both FFT lengths (k * step_in, k * step_out) must be even, so k must be: rubato centres
    // its filter on sample floor(len_in / 2) and reports floor(len_out / 2) as the output
    // delay, so an odd length leaves a half-sample timing error (`fast` at 44.1k -> 16k came
    // out 0.18 output samples early). The reduced rates are coprime, so one of them is odd.
    let mut k = 2;
    while k * step_in.min(step_out) < min_len {
        k *= 2;
    }
    let block_in = k * step_in;
    (block_in, (CHUNK_FRAMES / block_in).max(1))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn build(
    in_rate: u32,
    out_rate: u32,
    channels: usize,
    quality: Quality,
) -> Result<Box<dyn Resampler<f32>>, ResampleSetupError> {
    let (min_len, window) = quality.fft_shape();
    let (block_in, sub_chunks) = fft_block(in_rate, out_rate, min_len);
    // See Note [Resource limits]: coprime rates make the block as long as the rates.
    let block_out = (block_in as u64 * u64::from(out_rate) / u64::from(in_rate)) as usize;
    if block_in.max(block_out) > MAX_RESAMPLER_BLOCK {
        return Err(ResampleSetupError(format!(
            "{in_rate} Hz -> {out_rate} Hz needs a {}-frame FFT block (limit {MAX_RESAMPLER_BLOCK})",
            block_in.max(block_out)
        )));
    }
    Fft::<f32>::new_custom(
        in_rate as usize,
        out_rate as usize,
        block_in * sub_chunks,
        sub_chunks,
        channels,
        window,
        FixedSync::Input,
    )
    .map(|r| Box::new(r) as Box<dyn Resampler<f32>>)
    .map_err(|e| ResampleSetupError(e.to_string()))
}
