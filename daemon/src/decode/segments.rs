//! One item to samples: open, seek, decode, downmix and resample in a single streaming pass.
//!
//! Long files are split into segments decoded on several threads. Each interior boundary is
//! decoded with a margin on both sides and segment starts are aligned to the resampler's
//! block period, so the stitched result equals a serial decode.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::decode::audio::{ChannelMode, DecodedAudio, LoadRequest};
use crate::decode::resample::{Quality, ResampleSetupError, StreamResampler};
use crate::decode::{limits, Source};
use crate::error::{panic_message, DecodeError, Result};

/// Decode `path` as asked, using up to `threads` threads for one long file. Decoder panics
/// are caught and reported as [`DecodeError::Panic`] for this file.
/// A URL is fetched first (see Note [Remote objects]).
pub fn load(path: &Path, req: &LoadRequest, threads: usize) -> Result<DecodedAudio> {
    crate::decode::remote::with_local_part(path, req, |local| {
        let mut audio = guard(local, || load_inner(local, req, threads.max(1)))?;
        if local != path {
            // The damage names the local copy it was met in; the user gave the URL.
            audio.damage = audio
                .damage
                .map(|damage| damage.replace(&*local.to_string_lossy(), &path.to_string_lossy()));
        }
        Ok(audio)
    })
}

/// The input frames a [`load`] of `req` reads from a file at `in_rate` — the requested
/// part plus the resampler's context — for fetching only that part of a remote file
/// (Note [Ranged reads of remote files]); `None` for a request `load` refuses. The end is
/// `None` when the request runs to the end of the file.
pub(crate) fn input_span(in_rate: u32, req: &LoadRequest) -> Option<(u64, Option<u64>)> {
    let valid_duration = req.duration.is_none_or(|d| d.is_finite() && d >= 0.0);
    if !(req.offset.is_finite() && req.offset >= 0.0 && valid_duration) || in_rate == 0 {
        return None;
    }
    let out_rate = req.sample_rate.unwrap_or(in_rate);
    let geometry = Geometry::new(in_rate, out_rate, req.quality).ok()?;
    let out_start = (req.offset * f64::from(out_rate)).round() as u64;
    let out_end = req
        .duration
        .map(|d| out_start + (d * f64::from(out_rate)).round() as u64);
    let whole = geometry.segment(out_start, out_end);
    Some((whole.decode_from, whole.decode_to))
}

fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(DecodeError::Panic {
            path: path.into(),
            message: panic_message(payload.as_ref()),
        })
    })
}

fn load_inner(path: &Path, req: &LoadRequest, threads: usize) -> Result<DecodedAudio> {
    if !(req.offset.is_finite() && req.offset >= 0.0) {
        return Err(DecodeError::invalid(
            path,
            format!("offset {} s", req.offset),
        ));
    }
    if let Some(d) = req.duration {
        if !(d.is_finite() && d >= 0.0) {
            return Err(DecodeError::invalid(path, format!("duration {d} s")));
        }
    }
    if let Some(rate) = req.sample_rate {
        limits::check_output_rate(path, rate)?;
    }
    let mut reader = Source::open(path)?;
    let in_rate = reader.sample_rate();
    let out_rate = req.sample_rate.unwrap_or(in_rate);
    let declared = reader.reliable_frames();
    let declared_duration = reader.info().duration.unwrap_or(f64::NAN);
    let past_end = || DecodeError::OffsetPastEnd {
        path: path.into(),
        offset: req.offset,
        duration: declared_duration,
    };
    if req.offset > 0.0
        && declared.is_some_and(|d| (req.offset * f64::from(in_rate)).round() as u64 >= d)
    {
        return Err(past_end());
    }
    // The request as a range of output frames; slices are cut in the output domain so they
    // equal the same range of a full decode.
    let out_start = (req.offset * f64::from(out_rate)).round() as u64;
    let out_end = req
        .duration
        .map(|d| out_start + (d * f64::from(out_rate)).round() as u64);
    if out_end == Some(out_start) {
        return Ok(DecodedAudio {
            planes: vec![Vec::new(); output_channels(&reader, req)],
            sample_rate: out_rate,
            damage: None,
        });
    }
    let geometry = Geometry::new(in_rate, out_rate, req.quality)
        .map_err(|e| DecodeError::invalid(path, e.to_string()))?;
    let pieces = split_output_range(&geometry, out_start, out_end, declared, threads);
    let whole = geometry.segment(out_start, out_end);
    let parallel = (pieces.len() > 1).then(|| {
        let segments: Vec<Segment> = pieces
            .iter()
            .map(|&(a, b)| geometry.segment(a, b))
            .collect();
        decode_segments(path, req, &geometry, &segments)
    });
    let mut audio = match parallel {
        Some(Ok(audio)) => audio,
        // The cuts come from the declared length; should it be wrong after all, the
        // serial decode below is the answer (a file that decodes serially never fails).
        Some(Err(e)) => {
            log::debug!("{e}; decoding serially");
            decode_segment(&mut reader, req, &geometry, &whole)?
        }
        None => decode_segment(&mut reader, req, &geometry, &whole)?,
    };
    audio.sample_rate = out_rate;
    if matches!(reader, Source::Native(_)) {
        audio = better_through_ffmpeg(path, req, &geometry, &whole, audio)?;
    }
    if audio.frames() == 0 && audio.is_damaged() {
        // Lenient decoding keeps what came before the damage; here nothing did.
        return Err(DecodeError::Corrupt {
            path: path.into(),
            at_seconds: req.offset,
            reason: "damaged before any audio could be decoded".into(),
        });
    }
    if audio.frames() == 0 {
        return Err(if req.offset > 0.0 {
            past_end()
        } else {
            DecodeError::Empty { path: path.into() }
        });
    }
    Ok(audio)
}

/// Where symphonia's reading of a whole file falls short, FFmpeg's may not:
/// - symphonia stops at damage, keeping what came before it; FFmpeg resynchronises past it.
///   A lenient decode takes FFmpeg's result (still marked damaged) when it recovers
///   substantially more: at a cut-off end both get the same, and mixing decoders for a
///   partial last frame would only change the rounding of everything before it.
/// - symphonia opened the file but found no samples in it (a fragmented MP4 cut off
///   mid-fragment, as an interrupted browser recording is; an MP3 tag whose delay is longer
///   than its stream): FFmpeg's reading is taken when it finds any, and its error, which
///   says what is wrong, when a strict decode fails there.
fn better_through_ffmpeg(
    path: &Path,
    req: &LoadRequest,
    geometry: &Geometry,
    whole: &Segment,
    native: DecodedAudio,
) -> Result<DecodedAudio> {
    let damaged = native.is_damaged() && req.lenient;
    let empty = native.frames() == 0 && !native.is_damaged() && whole.keep_from == 0;
    if !(damaged || empty) {
        return Ok(native);
    }
    let Some(Ok(mut ffmpeg)) = Source::open_ffmpeg(path) else {
        return Ok(native);
    };
    // FFmpeg may read another rate from the file: the same output range, in its frames.
    let out_rate = geometry.out_rate as u32;
    let Ok(ff_geometry) = Geometry::new(ffmpeg.sample_rate(), out_rate, req.quality) else {
        return Ok(native);
    };
    let ff_whole = ff_geometry.segment(whole.keep_from, whole.keep_to);
    Ok(
        match decode_segment(&mut ffmpeg, req, &ff_geometry, &ff_whole) {
            Ok(mut other) if other.frames() > native.frames() + substantial(&native) => {
                // Still damaged, whatever FFmpeg says: symphonia found the damage.
                other.damage = native.damage;
                other
            }
            Ok(other) if empty && other.frames() > 0 => other,
            Err(e) if empty && !req.lenient => return Err(e),
            _ => native,
        },
    )
}

/// More audio than this (half a second, or 1 % of what decoded) is worth switching
/// decoders for.
fn substantial(audio: &DecodedAudio) -> usize {
    (audio.sample_rate as usize / 2).max(audio.frames() / 100)
}

fn output_channels(reader: &Source, req: &LoadRequest) -> usize {
    match req.channels {
        ChannelMode::Mono | ChannelMode::Itu => 1,
        ChannelMode::Keep => reader.channels(),
    }
}

/// One piece of a decode: input frames `[decode_from, decode_to)` go through a fresh
/// resampler, and output frames `[keep_from, keep_to)` (absolute output indices) are kept.
#[derive(Clone, Debug)]
struct Segment {
    decode_from: u64,
    decode_to: Option<u64>,
    keep_from: u64,
    keep_to: Option<u64>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// How input and output frame indices relate for one rate pair and resampler.
struct Geometry {
    in_rate: u64,
    out_rate: u64,
    quality: Quality,
    /// Segment starts are multiples of this (input frames), so that they map to whole output
    /// frames and meet the resampler in the same phase as a pass started at frame 0.
    align: u64,
    /// Context decoded on each side of a cut, covering the resampler's filter.
    margin: u64,
}

impl Geometry {
    fn new(in_rate: u32, out_rate: u32, quality: Quality) -> Result<Self, ResampleSetupError> {
        let (i, o) = (u64::from(in_rate), u64::from(out_rate));
        if i == o {
            return Ok(Self {
                in_rate: i,
                out_rate: o,
                quality,
                align: 1,
                margin: 0,
            });
        }
        let step = i / gcd(i, o);
        let block = StreamResampler::new(in_rate, out_rate, 1, quality)?.block_frames() as u64;
        let align = step / gcd(step, block) * block;
        let margin = align * (i / 4).div_ceil(align).max(1);
        Ok(Self {
            in_rate: i,
            out_rate: o,
            quality,
            align,
            margin,
        })
    }

    fn to_out(&self, input_frame: u64) -> u64 {
        input_frame * self.out_rate / self.in_rate
    }

    fn to_in(&self, output_frame: u64) -> u64 {
        output_frame * self.in_rate / self.out_rate
    }

    fn segment(&self, keep_from: u64, keep_to: Option<u64>) -> Segment {
        let first = self.to_in(keep_from);
        Segment {
            decode_from: (first / self.align * self.align).saturating_sub(self.margin),
            decode_to: keep_to.map(|k| self.to_in(k) + 1 + self.margin),
            keep_from,
            keep_to,
        }
    }
}

/// Below this much audio per thread, splitting a file costs more than it saves.
const MIN_SEGMENT_SECONDS: u64 = 20;

/// Split the output range `[start, end)` into up to `threads` pieces; one piece when the
/// length is unknown or short.
fn split_output_range(
    geometry: &Geometry,
    start: u64,
    end: Option<u64>,
    declared: Option<u64>,
    threads: usize,
) -> Vec<(u64, Option<u64>)> {
    let whole = vec![(start, end)];
    let Some(declared) = declared else {
        return whole;
    };
    let stop = end.map_or(geometry.to_out(declared), |e| {
        e.min(geometry.to_out(declared))
    });
    let span = stop.saturating_sub(start);
    let pieces = (span / (MIN_SEGMENT_SECONDS * geometry.out_rate)).min(threads as u64);
    if pieces < 2 {
        return whole;
    }
    let len = span.div_ceil(pieces);
    (0..pieces)
        .map(|k| {
            let a = start + k * len;
            // The last piece runs to the requested end (or the real end of the stream), not
            // to the declared length, which can be an estimate.
            let b = if k + 1 == pieces { end } else { Some(a + len) };
            (a, b)
        })
        .collect()
}

fn decode_segments(
    path: &Path,
    req: &LoadRequest,
    geometry: &Geometry,
    segments: &[Segment],
) -> Result<DecodedAudio> {
    let results: Vec<Result<DecodedAudio>> = std::thread::scope(|scope| {
        let handles: Vec<_> = segments
            .iter()
            .map(|seg| {
                scope.spawn(move || {
                    guard(path, || {
                        let mut reader = Source::open(path)?;
                        decode_segment(&mut reader, req, geometry, seg)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DecodeError::Panic {
                        path: path.into(),
                        message: "segment thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut out = DecodedAudio::default();
    for part in results {
        let part = part?;
        if out.planes.is_empty() {
            out.planes = part.planes;
        } else {
            for (dst, src) in out.planes.iter_mut().zip(&part.planes) {
                dst.extend_from_slice(src);
            }
        }
        if part.damage.is_some() {
            out.damage = part.damage;
            break;
        }
    }
    Ok(out)
}

/// `out` = Σ weights[c] · planes[c], frame by frame.
fn mix_into(out: &mut Vec<f32>, planes: &[&[f32]], weights: &[f32]) {
    out.clear();
    out.resize(planes.first().map_or(0, |p| p.len()), 0.0);
    for (plane, &w) in planes.iter().zip(weights) {
        for (o, &x) in out.iter_mut().zip(plane.iter()) {
            *o += w * x;
        }
    }
}

/// Decode one segment through a fresh resampler, keeping output frames in its keep range.
fn decode_segment(
    reader: &mut Source,
    req: &LoadRequest,
    geometry: &Geometry,
    seg: &Segment,
) -> Result<DecodedAudio> {
    let channels = output_channels(reader, req);
    let mut resampler = StreamResampler::new(
        reader.sample_rate(),
        geometry.out_rate as u32,
        channels,
        geometry.quality,
    )
    .map_err(|e| DecodeError::invalid(reader.path(), e.to_string()))?;
    let mut position = geometry.to_out(seg.decode_from);
    let capacity = seg
        .keep_to
        .or_else(|| reader.reliable_frames().map(|f| geometry.to_out(f)))
        .map_or(0, |stop| stop.saturating_sub(seg.keep_from))
        .min(1 << 28) as usize;
    let mut planes: Vec<Vec<f32>> = (0..channels)
        .map(|_| Vec::with_capacity(capacity))
        .collect();
    let mut keep = |chunk: &[&[f32]]| {
        let n = chunk.first().map_or(0, |c| c.len()) as u64;
        let lo = seg.keep_from.max(position);
        let hi = seg.keep_to.map_or(position + n, |k| k.min(position + n));
        if hi > lo {
            let (a, b) = ((lo - position) as usize, (hi - position) as usize);
            for (dst, src) in planes.iter_mut().zip(chunk) {
                dst.extend_from_slice(&src[a..b]);
            }
        }
        position += n;
    };
    let stats = if req.channels == ChannelMode::Itu && reader.channels() > 1 {
        // Every channel from the reader, weighted into one plane before resampling.
        let weights = reader.itu_weights();
        let mut mixed = Vec::new();
        reader.decode_range(
            seg.decode_from,
            seg.decode_to,
            ChannelMode::Keep,
            req.lenient,
            &mut |input| {
                mix_into(&mut mixed, input, &weights);
                resampler.push(&[&mixed], &mut keep);
            },
        )?
    } else {
        reader.decode_range(
            seg.decode_from,
            seg.decode_to,
            req.channels,
            req.lenient,
            &mut |input| resampler.push(input, &mut keep),
        )?
    };
    resampler.finish(&mut keep);
    Ok(DecodedAudio {
        planes,
        sample_rate: geometry.out_rate as u32,
        damage: stats.damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_span_covers_the_part_and_the_resamplers_context() {
        let part = |offset: f64, duration: Option<f64>, sample_rate: Option<u32>| LoadRequest {
            offset,
            duration,
            sample_rate,
            ..LoadRequest::default()
        };
        // No resampling: exactly the part.
        assert_eq!(
            input_span(16_000, &part(2.0, Some(0.5), None)),
            Some((32_000, Some(40_001)))
        );
        assert_eq!(
            input_span(16_000, &part(2.0, None, None)),
            Some((32_000, None))
        );
        // Resampling: the part and more on both sides, as the decode reads it.
        let (from, to) = input_span(44_100, &part(61.2, Some(4.0), Some(16_000))).unwrap();
        let to = to.unwrap();
        assert!(from < 2_698_920 && to > 2_875_320, "{from}..{to}"); // 61.2 s, 65.2 s
        assert!(to - from < 10 * 44_100, "{from}..{to}");
        // What `load` refuses has no span.
        assert_eq!(input_span(16_000, &part(f64::NAN, None, None)), None);
        assert_eq!(input_span(16_000, &part(1.0, Some(-1.0), None)), None);
        assert_eq!(input_span(0, &part(1.0, None, None)), None);
    }
}
