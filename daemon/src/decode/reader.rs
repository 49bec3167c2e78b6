//! Container probing and packet decoding with symphonia, straight into planar f32.
//!
//! The reader never materialises a full-length interleaved buffer: each decoded packet is
//! converted (and, for mono, averaged across channels) into small reusable planes and handed
//! to a sink, which is usually the resampler. Offsets seek; lossy codecs pre-roll so that a
//! slice equals the same range of a full decode.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use symphonia::core::audio::conv::FromSample;
use symphonia::core::audio::sample::Sample;
use symphonia::core::audio::{Audio, AudioBuffer, GenericAudioBufferRef};
use symphonia::core::codecs::audio::well_known::{CODEC_ID_MP3, CODEC_ID_OPUS};
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::{Error as SymError, SeekErrorKind};
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;
use symphonia::core::units::{Duration, TimeBase, Timestamp};

use crate::decode::audio::{AudioInfo, Backend, ChannelMode};
use crate::decode::pcm::{self, PcmLayout};
use crate::decode::{limits, samples, stated_length};
use crate::error::{DecodeError, Result};

/// What a decode of a frame range produced.
#[derive(Clone, Debug, Default)]
pub struct DecodeStats {
    /// Frames handed to the sink.
    pub frames: u64,
    /// What damage lenient decoding met, and where (the error strict decoding gives).
    pub damage: Option<String>,
}

/// Codecs with this much or less pre-roll are sample-accurate after a seek.
fn preroll_frames(codec: &str, sample_rate: u32) -> u64 {
    match codec {
        // symphonia names PCM and ADPCM variants "pcm_s16le", "adpcm_ms" and so on.
        c if c.starts_with("pcm") || c.starts_with("adpcm") => 0,
        "flac" | "alac" => 0,
        // Lossy codecs overlap frames (MDCT) and MP3 reaches back through its bit reservoir;
        // 250 ms covers the longest Vorbis block (8192) and several MP3/AAC/Opus frames.
        _ => u64::from(sample_rate) / 4,
    }
}

fn codec_registry() -> &'static CodecRegistry {
    static REGISTRY: OnceLock<CodecRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    })
}

/// An opened audio file: the demuxer, the decoder of its first audio track and its facts.
pub struct SourceReader {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    params: AudioCodecParameters,
    track_id: u32,
    time_base: Option<TimeBase>,
    info: AudioInfo,
    codec: &'static str,
    /// Leading frames the container marks as not playable (AAC priming in an MP4 edit list).
    lead_in: u64,
    /// Set for plain interleaved PCM, converted without symphonia's decoder.
    pcm: Option<PcmLayout>,
    /// Playable length stated by an edit list; decoding stops there (encoder padding).
    edit_frames: Option<u64>,
    /// The declared length is exact, so ending short of it means truncation.
    exact_length: bool,
    /// The declared length is stated by the file, not estimated from a bitrate (MP3
    /// without a Xing/LAME tag, raw ADTS AAC), and the file seeks, so offsets and parallel
    /// cuts may rely on it.
    length_reliable: bool,
}

impl SourceReader {
    /// Probe the file by content (the extension is only a hint) and prepare its decoder.
    pub fn open(path: &Path) -> Result<Self> {
        let format = probe_format(path)?;
        let track = audio_track(format.as_ref(), path)?;
        let container = format.format_info().short_name;
        let (codec, decoder) = start_decoder(path, &track.params)?;

        let sample_rate = track.params.sample_rate.unwrap_or(0);
        let channels = track
            .params
            .channels
            .as_ref()
            .map(|c| c.count())
            .unwrap_or(0);
        let info = AudioInfo {
            path: path.into(),
            codec: codec.to_string(),
            container: container.to_string(),
            sample_rate,
            channels: channels as u16,
            frames: track.declared_frames,
            duration: track
                .declared_frames
                .filter(|_| sample_rate > 0)
                .map(|f| f as f64 / f64::from(sample_rate)),
            backend: Backend::Symphonia,
        };
        let mut reader = SourceReader {
            path: path.into(),
            format,
            decoder,
            params: track.params,
            track_id: track.track_id,
            time_base: track.time_base,
            info,
            codec,
            // Ogg Opus pre-skip is a lead-in like an MP4 edit's (see `audio_track`).
            lead_in: track.opus_pre_skip,
            pcm: None,
            edit_frames: None,
            exact_length: codec.starts_with("pcm")
                || matches!(codec, "flac" | "alac")
                || matches!(container, "isomp4" | "caf")
                || (codec == "mp3" && track.has_gapless_tag),
            length_reliable: (track.has_gapless_tag
                || !matches!(container, "mp1" | "mp2" | "mp3" | "aac"))
                && !crate::decode::containers::is_unseekable(container),
        };
        if reader.info.channels > 0 {
            reader.pcm = PcmLayout::of(&reader.params);
        }
        if reader.info.container == "isomp4" && codec != "alac" {
            reader.apply_edit_list();
        }
        if reader.info.sample_rate == 0 || reader.info.channels == 0 {
            reader.fill_spec_from_first_packet()?;
        }
        reader.check_limits()?;
        Ok(reader)
    }

    /// See Note [Resource limits]: nothing sized by the header is allocated before this.
    fn check_limits(&mut self) -> Result<()> {
        limits::check_file_rate(&self.path, self.info.sample_rate)?;
        limits::check_file_channels(&self.path, usize::from(self.info.channels))?;
        self.info.frames = limits::plausible_frames(self.info.frames, self.info.sample_rate);
        if self.info.frames.is_none() {
            self.info.duration = None;
            self.exact_length = false;
        }
        Ok(())
    }

    fn apply_edit_list(&mut self) {
        let Some(edit) = crate::decode::mp4_edit::audio_edit(&self.path) else {
            return;
        };
        let to_frames = |ts: u64| self.ts_to_frames(Timestamp::new(ts as i64)).max(0) as u64;
        let (lead_in, edit_frames) = (to_frames(edit.skip), edit.frames.map(to_frames));
        self.lead_in = lead_in;
        self.edit_frames = edit_frames;
        let frames = self
            .edit_frames
            .or_else(|| self.info.frames.map(|f| f.saturating_sub(self.lead_in)));
        self.info.frames = frames;
        if self.info.sample_rate > 0 {
            self.info.duration = frames.map(|f| f as f64 / f64::from(self.info.sample_rate));
        }
    }

    pub fn info(&self) -> &AudioInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sample_rate(&self) -> u32 {
        self.info.sample_rate
    }

    pub fn channels(&self) -> usize {
        usize::from(self.info.channels)
    }

    /// The speakers of the channels, when the container names them.
    pub(crate) fn speakers(&self) -> Option<Vec<crate::decode::downmix::Speaker>> {
        crate::decode::downmix::speakers_of(self.params.channels.as_ref()?)
    }

    /// See [`SourceReader::length_reliable`].
    pub fn length_is_reliable(&self) -> bool {
        self.length_reliable && self.info.frames.is_some()
    }

    /// Some containers (raw ADTS, a few MKV muxers) only reveal rate and layout in the
    /// first decoded packet; decode it, then rewind.
    fn fill_spec_from_first_packet(&mut self) -> Result<()> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return Err(DecodeError::Empty {
                        path: self.path.clone(),
                    })
                }
                Err(e) => return Err(self.corrupt(0.0, e)),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    let spec = buf.spec();
                    self.info.sample_rate = spec.rate();
                    self.info.channels = spec.channels().count() as u16;
                    break;
                }
                Err(SymError::DecodeError(_)) => continue,
                Err(e) => return Err(self.corrupt(0.0, e)),
            }
        }
        if self.info.sample_rate == 0 || self.info.channels == 0 {
            return Err(DecodeError::Unsupported {
                path: self.path.clone(),
                reason: "stream declares no sample rate or channels".into(),
            });
        }
        if let (Some(frames), None) = (self.info.frames, self.info.duration) {
            self.info.duration = Some(frames as f64 / f64::from(self.info.sample_rate));
        }
        self.seek_to_frame(0)?;
        Ok(())
    }

    fn corrupt(&self, at_seconds: f64, err: SymError) -> DecodeError {
        DecodeError::Corrupt {
            path: self.path.clone(),
            at_seconds,
            reason: err.to_string(),
        }
    }

    fn frames_to_ts(&self, frames: u64) -> Timestamp {
        let sr = u128::from(self.info.sample_rate);
        let ts = match self.time_base {
            Some(tb) => {
                u128::from(frames) * u128::from(tb.denom.get()) / (u128::from(tb.numer.get()) * sr)
            }
            None => u128::from(frames),
        };
        Timestamp::new(i64::try_from(ts).unwrap_or(i64::MAX))
    }

    fn ts_to_frames(&self, ts: Timestamp) -> i64 {
        let sr = i128::from(self.info.sample_rate);
        let ts = i128::from(ts.get());
        let frames = match self.time_base {
            Some(tb) => ts * i128::from(tb.numer.get()) * sr / i128::from(tb.denom.get()),
            None => ts,
        };
        i64::try_from(frames).unwrap_or(i64::MAX)
    }

    /// Whether packet durations and trims are counted in frames (timebase 1/rate).
    fn timebase_is_frames(&self) -> bool {
        self.time_base
            .is_none_or(|tb| tb.numer.get() == 1 && tb.denom.get() == self.info.sample_rate)
    }

    /// Position the demuxer at or before `frame`, counted on the container's timeline (that
    /// is, including an edit list's lead-in). Returns false when the stream cannot seek, in
    /// which case the caller decodes from the start and discards.
    fn seek_to_frame(&mut self, frame: u64) -> Result<bool> {
        let to = SeekTo::Timestamp {
            ts: self.frames_to_ts(frame),
            track_id: self.track_id,
        };
        match self.format.seek(SeekMode::Accurate, to) {
            Ok(_) => {
                self.decoder.reset();
                Ok(true)
            }
            Err(SymError::SeekError(SeekErrorKind::OutOfRange)) => {
                Err(DecodeError::OffsetPastEnd {
                    path: self.path.clone(),
                    offset: frame as f64 / f64::from(self.info.sample_rate),
                    duration: self.info.duration.unwrap_or(f64::NAN),
                })
            }
            Err(SymError::SeekError(_)) | Err(SymError::Unsupported(_)) => Ok(false),
            Err(e) => Err(self.corrupt(frame as f64 / f64::from(self.info.sample_rate), e)),
        }
    }

    /// Decode frames `[start, end)` (end `None` = to the end of the stream) and hand them to
    /// `sink` as planes: one plane for [`ChannelMode::Mono`], one per channel otherwise.
    ///
    /// Strict mode (`lenient = false`) turns damaged or truncated data into an error; lenient
    /// mode stops at the damage and keeps what decoded before it.
    pub fn decode_range(
        &mut self,
        start: u64,
        end: Option<u64>,
        mode: ChannelMode,
        lenient: bool,
        sink: &mut dyn FnMut(&[&[f32]]),
    ) -> Result<DecodeStats> {
        let sample_rate = self.info.sample_rate;
        let end = self.capped_end(start, end)?;
        if end.is_some_and(|e| e <= start) {
            return Ok(DecodeStats::default());
        }

        let cursor: i64 = -(self.lead_in as i64);
        let from_beginning = self.seek_before(start)?;
        let out_channels = match mode {
            ChannelMode::Mono | ChannelMode::Itu => 1,
            ChannelMode::Keep => self.channels(),
        };
        let trims_in_frames = self.timebase_is_frames();
        let mut walk = RangeWalk {
            start,
            end,
            mode,
            lenient,
            sample_rate,
            cursor,
            cursor_known: from_beginning,
            from_beginning,
            planes: vec![Vec::new(); out_channels],
            stats: DecodeStats::default(),
            trims_in_frames,
            file_channels: self.channels(),
            check_gaps: trims_in_frames && self.codec != "mp3",
            next_pts: None,
        };
        while let Some(packet) = self.next_track_packet(&mut walk)? {
            let step = match self.pcm {
                Some(layout) => self.feed_pcm_packet(layout, &packet, &mut walk, sink),
                None => self.feed_codec_packet(&packet, &mut walk, sink)?,
            };
            match step {
                Step::Next => {}
                Step::Done => return Ok(walk.stats),
                Step::Stop => break,
            }
        }
        self.finish_range(walk)
    }

    /// Checks `start` against the declared length and caps `end` at the playable length an
    /// edit list states.
    fn capped_end(&self, start: u64, end: Option<u64>) -> Result<Option<u64>> {
        let reliable = self.info.frames.filter(|_| self.length_reliable);
        if let (Some(declared), true) = (reliable, start > 0) {
            if start >= declared {
                return Err(self.offset_past_end(start));
            }
        }
        Ok(match (end, self.edit_frames) {
            (Some(e), Some(v)) => Some(e.min(v)),
            (e, v) => e.or(v),
        })
    }

    /// Seek early enough that lossy decoders have converged by `start`, or reopen the file
    /// when the stream cannot seek. Returns whether decoding starts from the first packet,
    /// so that the running count of output frames is the position; after a seek the first
    /// packet's timestamp gives it.
    fn seek_before(&mut self, start: u64) -> Result<bool> {
        // The pre-roll counts on the container's timeline, so that it reaches back into an
        // edit list's lead-in (the AAC priming frame) instead of starting after it.
        let seek_target = (start + self.lead_in)
            .saturating_sub(preroll_frames(self.codec, self.info.sample_rate));
        if start == 0 {
            return Ok(true);
        }
        let seeked = if self.seeks_accurately() {
            match self.seek_to_frame(seek_target) {
                Err(DecodeError::OffsetPastEnd { .. }) => return Err(self.offset_past_end(start)),
                other => other?,
            }
        } else {
            false
        };
        if !seeked {
            self.reopen()?;
        }
        Ok(!seeked)
    }

    /// The next packet of the decoded track; `None` at the end of the stream or where
    /// lenient decoding stops at damage.
    fn next_track_packet(&mut self, walk: &mut RangeWalk) -> Result<Option<Packet>> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                Err(SymError::ResetRequired) => {
                    // A chained stream (concatenated Ogg: radio dumps, joined chapters):
                    // follow the next link's track, which must keep the rate and layout.
                    if let Err(change) = self.follow_next_link(walk.seconds_at_cursor()) {
                        walk.stop_at_damage(|| change)?;
                        return Ok(None);
                    }
                    continue;
                }
                Err(SymError::IoError(e))
                    if e.kind() == ErrorKind::UnexpectedEof
                        && self.info.container == "matroska"
                        && crate::decode::ebml::ends_cleanly(&self.path) =>
                {
                    // Note [Live WebM ends]: the end of a file of unknown size.
                    return Ok(None);
                }
                Err(err) => {
                    let (at, decoded) = (walk.seconds_at_cursor(), walk.cursor.max(0) as u64);
                    walk.stop_at_damage(|| match err {
                        SymError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
                            self.truncated(decoded)
                        }
                        other => self.corrupt(at, other),
                    })?;
                    return Ok(None);
                }
            };
            if packet.track_id == self.track_id {
                return Ok(Some(self.untrimmed_past_estimate(packet)));
            }
        }
    }

    /// symphonia trims packets past the track's length, also when that length is only
    /// estimated from the first frame's bitrate (VBR MP3 without a Xing/VBRI tag, raw
    /// ADTS): a loud start then made the rest of the file vanish without a word (60 % of a
    /// test file; 0.19 s of a real one). Past an estimate nothing is encoder padding.
    fn untrimmed_past_estimate(&self, mut packet: Packet) -> Packet {
        if !self.length_reliable && packet.trim_end.get() > 0 {
            packet.dur = Duration::new(packet.dur.get() + packet.trim_end.get());
            packet.trim_end = Duration::new(0);
        }
        packet
    }

    /// Plain interleaved PCM: convert the packet's bytes directly, without a decoder.
    fn feed_pcm_packet(
        &self,
        layout: PcmLayout,
        packet: &Packet,
        walk: &mut RangeWalk,
        sink: &mut dyn FnMut(&[&[f32]]),
    ) -> Step {
        let n = packet.data.len() / (layout.bytes() * walk.file_channels);
        if !walk.cursor_known {
            walk.cursor = self.ts_to_frames(packet.pts);
            walk.cursor_known = true;
        }
        let block_start = walk.cursor;
        walk.cursor += n as i64;
        if let Some((from, len)) = overlap(block_start, walk.cursor, walk.start, walk.end) {
            pcm::convert(
                layout,
                &packet.data,
                walk.file_channels,
                from,
                len,
                walk.mode,
                &mut walk.planes,
            );
            if layout.is_float() {
                walk.planes
                    .iter_mut()
                    .for_each(|p| samples::bound_samples(p));
            }
            walk.emit(len, sink);
        }
        walk.step_after_block()
    }

    /// Decode one packet with the codec, trim encoder delay and padding, and hand on the
    /// part inside the range.
    fn feed_codec_packet(
        &mut self,
        packet: &Packet,
        walk: &mut RangeWalk,
        sink: &mut dyn FnMut(&[&[f32]]),
    ) -> Result<Step> {
        let (trim_start, trim_end) = (packet.trim_start.get(), packet.trim_end.get());
        let expected_full = packet
            .dur
            .get()
            .saturating_add(trim_start)
            .saturating_add(trim_end);
        let pts_frames = self.ts_to_frames(packet.pts);
        if let Some(missing) = walk.frames_skipped_before(packet.pts.get(), expected_full) {
            let at_seconds = walk.seconds_at_cursor();
            walk.stop_at_damage(|| DecodeError::Corrupt {
                path: self.path.clone(),
                at_seconds,
                reason: format!("{missing} frames missing (the demuxer skipped damaged data)"),
            })?;
            return Ok(Step::Stop);
        }
        let buf = match self.decoder.decode(packet) {
            Ok(buf) => buf,
            Err(err) => {
                let at_seconds = walk.seconds_at_cursor();
                walk.stop_at_damage(|| DecodeError::Corrupt {
                    path: self.path.clone(),
                    at_seconds,
                    reason: err.to_string(),
                })?;
                return Ok(Step::Stop);
            }
        };
        let trimmed = walk.trims_in_frames && (trim_start > 0 || trim_end > 0);
        let (skip, n) = playable_part(buf.frames(), expected_full, trimmed, trim_start, trim_end);
        let packet_start =
            pts_frames + if trimmed { trim_start as i64 } else { 0 } - self.lead_in as i64;
        if !walk.cursor_known {
            // After a seek (or a priming packet) the position comes from the timestamp,
            // which counts the frames a trim removes.
            walk.cursor = packet_start;
            walk.cursor_known = true;
        }
        if n == 0 {
            // A priming packet (e.g. Vorbis after a reset) yields nothing; its timestamp
            // does not describe the next output, so after a seek resync on the next
            // packet. From the start of the file (also after a reopen, for a slice of a
            // stream that cannot seek) the running count is already right.
            walk.cursor_known = walk.from_beginning;
            return Ok(Step::Next);
        }
        walk.emit_decoded(&buf, skip, n, &self.path, sink)?;
        Ok(walk.step_after_block())
    }

    /// The stream ended. A container that declared its length exactly tells truncation
    /// apart from a normal end.
    fn finish_range(&self, mut walk: RangeWalk) -> Result<DecodeStats> {
        let (start, cursor) = (walk.start, walk.cursor);
        if walk.stats.frames == 0 && start > 0 && cursor <= start as i64 {
            return Err(self.offset_past_end(start));
        }
        if walk.stats.damage.is_none() && self.exact_length {
            if let Some(declared) = self.info.frames {
                let wanted_end = walk.end.map_or(declared, |e| e.min(declared));
                if (cursor.max(0) as u64) < wanted_end {
                    if walk.lenient {
                        walk.stats.damage = Some(self.truncated(cursor.max(0) as u64).to_string());
                    } else {
                        return Err(self.truncated(cursor.max(0) as u64));
                    }
                }
            }
        }
        Ok(walk.stats)
    }

    /// Whether a seek lands where the packet timestamps say. symphonia's Matroska reader
    /// does not: after a seek its packets come out shifted (by up to several thousand
    /// frames for FLAC, 5 ms for Opus), or the seek fails as out of range, so Matroska/WebM
    /// slices decode from the start and discard.
    fn seeks_accurately(&self) -> bool {
        self.info.container != "matroska"
    }

    fn offset_past_end(&self, start: u64) -> DecodeError {
        DecodeError::OffsetPastEnd {
            path: self.path.clone(),
            offset: start as f64 / f64::from(self.info.sample_rate),
            duration: self.info.duration.unwrap_or(f64::NAN),
        }
    }

    fn truncated(&self, decoded_frames: u64) -> DecodeError {
        let sr = f64::from(self.info.sample_rate);
        DecodeError::Truncated {
            path: self.path.clone(),
            decoded_seconds: decoded_frames as f64 / sr,
            declared_seconds: self.info.duration,
        }
    }

    /// After a reset (a new link of a chained Ogg), decode the new link's audio track with
    /// a fresh decoder. Its track has a new id (the link's serial): the old id once made
    /// every later link vanish without a word. A link with another rate or channel count is
    /// damage here (a lenient decode keeps what came before it, or FFmpeg's reading, which
    /// converts the later links, when that is longer).
    fn follow_next_link(&mut self, at_seconds: f64) -> Result<()> {
        let track = self
            .format
            .tracks()
            .iter()
            .find(|t| t.id == self.track_id)
            .or_else(|| self.format.first_track(TrackType::Audio));
        let (id, params) = match track.map(|t| (t.id, t.codec_params.as_ref())) {
            Some((id, Some(CodecParameters::Audio(p)))) => (id, p.clone()),
            _ => (self.track_id, self.params.clone()),
        };
        let channels = params.channels.as_ref().map(|c| c.count());
        let changed = |what: String| DecodeError::Corrupt {
            path: self.path.clone(),
            at_seconds,
            reason: format!("a chained stream changes {what} in a later link"),
        };
        if params
            .sample_rate
            .is_some_and(|r| r != self.info.sample_rate)
        {
            return Err(changed("its sample rate".into()));
        }
        if channels.is_some_and(|c| c != usize::from(self.info.channels)) {
            return Err(changed("its channel count".into()));
        }
        self.decoder = codec_registry()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| self.corrupt(at_seconds, e))?;
        self.track_id = id;
        self.params = params;
        Ok(())
    }

    /// Fallback for unseekable streams: start over from the beginning.
    fn reopen(&mut self) -> Result<()> {
        let fresh = SourceReader::open(&self.path)?;
        *self = fresh;
        Ok(())
    }
}

/// What the packet loop of [`SourceReader::decode_range`] does after one packet.
enum Step {
    /// Go on with the next packet.
    Next,
    /// The range is complete.
    Done,
    /// Lenient decoding stopped at damage; check the end as for the end of the stream.
    Stop,
}

/// The state of one [`SourceReader::decode_range`] call while it walks the packets.
struct RangeWalk {
    start: u64,
    /// End of the range, already capped by an edit list.
    end: Option<u64>,
    mode: ChannelMode,
    lenient: bool,
    sample_rate: u32,
    /// Output position of the next decoded frame (negative inside an edit list's lead-in).
    cursor: i64,
    /// False after a seek until a packet's timestamp gives the position.
    cursor_known: bool,
    /// Decoding from the first packet: the running count of output frames is the position.
    from_beginning: bool,
    /// Reusable output planes, refilled for each block.
    planes: Vec<Vec<f32>>,
    stats: DecodeStats,
    /// Packet durations and trims are counted in frames.
    trims_in_frames: bool,
    file_channels: usize,
    /// Whether packet timestamps are checked for skipped data.
    check_gaps: bool,
    /// Where the next packet should start, once known.
    next_pts: Option<i64>,
}

impl RangeWalk {
    /// The cursor in seconds, for error reports.
    fn seconds_at_cursor(&self) -> f64 {
        self.cursor.max(0) as f64 / f64::from(self.sample_rate)
    }

    /// Damage ends a lenient decode, which keeps what came before it and is marked
    /// damaged; a strict decode fails with `error`.
    fn stop_at_damage(&mut self, error: impl FnOnce() -> DecodeError) -> Result<()> {
        if self.lenient {
            self.stats.damage = Some(error().to_string());
            Ok(())
        } else {
            Err(error())
        }
    }

    /// Frames missing before a packet at `pts`, whose full (untrimmed) length is
    /// `expected_full`; otherwise notes where the next packet should start.
    ///
    /// A packet that starts after the previous one ended means the demuxer skipped data
    /// (it resynchronised past damage, e.g. a FLAC frame with a bad CRC): what follows
    /// would be shifted in time, so decoding stops there as for any other damage. MP3
    /// timestamps are counted by the reader, so they never show a gap.
    fn frames_skipped_before(&mut self, pts: i64, expected_full: u64) -> Option<i64> {
        if let Some(expected) = self.next_pts.filter(|&e| pts > e) {
            return Some(pts - expected);
        }
        if self.check_gaps {
            self.next_pts = Some(pts.saturating_add(expected_full as i64));
        }
        None
    }

    /// Hands the filled planes (`len` frames) to the sink.
    fn emit(&mut self, len: usize, sink: &mut dyn FnMut(&[&[f32]])) {
        let refs: Vec<&[f32]> = self.planes.iter().map(|p| p.as_slice()).collect();
        sink(&refs);
        self.stats.frames += len as u64;
    }

    /// Hands on the part of a decoded block inside the range: `n` frames after the `skip`
    /// that a trim removes, placed at the cursor.
    fn emit_decoded(
        &mut self,
        buf: &GenericAudioBufferRef<'_>,
        skip: usize,
        n: usize,
        path: &Path,
        sink: &mut dyn FnMut(&[&[f32]]),
    ) -> Result<()> {
        let block_start = self.cursor;
        self.cursor += n as i64;
        if let Some((offset, len)) = overlap(block_start, self.cursor, self.start, self.end) {
            let from = skip + offset;
            if buf.spec().channels().count() != self.file_channels && self.mode == ChannelMode::Keep
            {
                return Err(DecodeError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "channel count changes mid-stream".into(),
                });
            }
            convert_into(buf, from, len, self.mode, &mut self.planes);
            self.planes
                .iter_mut()
                .for_each(|p| samples::bound_samples(p));
            self.emit(len, sink);
        }
        Ok(())
    }

    /// Done once the cursor has reached the end of the range.
    fn step_after_block(&self) -> Step {
        if self.end.is_some_and(|e| self.cursor >= e as i64) {
            Step::Done
        } else {
            Step::Next
        }
    }
}

/// The audio track's codec parameters and what the container states about its length.
struct TrackFacts {
    params: AudioCodecParameters,
    track_id: u32,
    time_base: Option<TimeBase>,
    /// Playable frames as the container declares them (Ogg Opus pre-skip removed).
    declared_frames: Option<u64>,
    /// A LAME/Xing tag (which carries the encoder delay and padding) states the exact
    /// frame count; without one, symphonia estimates the length from the bitrate.
    has_gapless_tag: bool,
    /// Ogg Opus pre-skip, in frames.
    opus_pre_skip: u64,
}

/// Open the file and let symphonia's probe pick the demuxer.
fn probe_format(path: &Path) -> Result<Box<dyn FormatReader>> {
    if let Some(reader) = crate::decode::containers::open(path)? {
        return Ok(reader);
    }
    let file = crate::sys::open_regular_file(path).map_err(|e| DecodeError::open(path, e))?;
    let meta = file.metadata().map_err(|e| DecodeError::open(path, e))?;
    if meta.len() == 0 {
        return Err(DecodeError::Empty { path: path.into() });
    }
    let mss = MediaSourceStream::new(
        Box::new(file),
        MediaSourceStreamOptions {
            buffer_len: 256 * 1024,
        },
    );
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| classify_open_error(path, e))
}

/// The default audio track (else the first one) and its facts.
fn audio_track(format: &dyn FormatReader, path: &Path) -> Result<TrackFacts> {
    let track = format
        .default_track(TrackType::Audio)
        .or_else(|| format.first_track(TrackType::Audio))
        .ok_or_else(|| DecodeError::Unsupported {
            path: path.into(),
            reason: "no audio track".into(),
        })?;
    let params = match &track.codec_params {
        Some(CodecParameters::Audio(p)) => p.clone(),
        _ => {
            return Err(DecodeError::Unsupported {
                path: path.into(),
                reason: "audio track has no codec parameters".into(),
            })
        }
    };
    let mut declared_frames = track.num_frames;
    let container = format.format_info().short_name;
    if container == "isomp4" && declared_frames == Some(0) {
        // A fragmented MP4 (DASH, browser recordings) declares no samples in its `moov`
        // and holds them all in fragments: its length is unknown, not zero (every offset
        // was once "past the end").
        declared_frames = None;
    }
    let mut params = params;
    let mut opus_pre_skip = 0;
    if container == "ogg" && params.codec == CODEC_ID_OPUS {
        // The Opus decoder drops the pre-skip from the first packet it decodes, at most
        // that packet: a pre-skip spanning several packets (up to 65,535 frames) was only
        // partly dropped, and after a seek the first packet lost real audio instead. The
        // reader drops it as a lead-in, on the packets' timestamps, so the decoder is told
        // of none.
        opus_pre_skip = u64::from(track.delay.unwrap_or(0));
        if let Some(head) = params.extra_data.as_mut() {
            if head.len() >= 12 && head.starts_with(b"OpusHead") {
                let mut patched = head.to_vec();
                patched[10..12].fill(0);
                *head = patched.into_boxed_slice();
            }
        }
        // The last granule position counts Opus pre-skip, which is not played.
        declared_frames =
            declared_frames.map(|f| f.saturating_sub(u64::from(track.delay.unwrap_or(0))));
    }
    let mut has_gapless_tag = track.delay.is_some() || track.padding.is_some();
    if params.codec == CODEC_ID_MP3 && stated_length::stale_xing_count(path) {
        // Note [Stated lengths that miss part of the file]: unknown, every frame is kept.
        log::debug!(
            "{}: its Xing tag counts less than the file holds",
            path.display()
        );
        declared_frames = None;
        has_gapless_tag = false;
    }
    if container == "ogg" && stated_length::chained_ogg(path) {
        // The same Note: the first link's length is not the file's.
        log::debug!("{}: a chained Ogg stream", path.display());
        declared_frames = None;
    }
    Ok(TrackFacts {
        track_id: track.id,
        time_base: track.time_base,
        declared_frames,
        has_gapless_tag,
        opus_pre_skip,
        params,
    })
}

/// The codec's short name and a fresh decoder for it.
fn start_decoder(
    path: &Path,
    params: &AudioCodecParameters,
) -> Result<(&'static str, Box<dyn AudioDecoder>)> {
    let registered = codec_registry()
        .get_audio_decoder(params.codec)
        .ok_or_else(|| DecodeError::Unsupported {
            path: path.into(),
            reason: format!("no decoder for codec {}", params.codec),
        })?;
    let codec = registered.codec.info.short_name;
    let decoder = codec_registry()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| DecodeError::Unsupported {
            path: path.into(),
            reason: format!("cannot start {codec} decoder: {e}"),
        })?;
    Ok((codec, decoder))
}

/// Frames to skip at the front of a decoded block and frames to keep. Decoders that do
/// not trim encoder delay/padding themselves return the full block (`expected_full`
/// frames); trim it here so every codec is gapless.
fn playable_part(
    decoded: usize,
    expected_full: u64,
    trimmed: bool,
    trim_start: u64,
    trim_end: u64,
) -> (usize, usize) {
    if trimmed && decoded as u64 == expected_full {
        let cut = (trim_start + trim_end) as usize;
        (trim_start as usize, decoded.saturating_sub(cut))
    } else {
        (0, decoded)
    }
}

/// The part of block `[block_start, block_end)` inside `[start, end)`, as (offset into the
/// block, length).
fn overlap(
    block_start: i64,
    block_end: i64,
    start: u64,
    end: Option<u64>,
) -> Option<(usize, usize)> {
    let lo = (start as i64).max(block_start);
    let hi = end.map_or(block_end, |e| (e as i64).min(block_end));
    (hi > lo).then(|| ((lo - block_start) as usize, (hi - lo) as usize))
}

fn classify_open_error(path: &Path, err: SymError) -> DecodeError {
    match err {
        SymError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            DecodeError::Empty { path: path.into() }
        }
        SymError::IoError(e) => DecodeError::Io {
            path: path.into(),
            source: e,
        },
        SymError::Unsupported(what) => DecodeError::Unsupported {
            path: path.into(),
            reason: what.to_string(),
        },
        other => DecodeError::Corrupt {
            path: path.into(),
            at_seconds: 0.0,
            reason: other.to_string(),
        },
    }
}

/// Convert `len` frames starting at `from` into `planes` (cleared first): averaged into one
/// plane for mono, one plane per channel otherwise. Sample scaling follows symphonia's
/// conversions, which match soundfile/librosa (int16 / 32768 and so on).
fn convert_into(
    buf: &GenericAudioBufferRef<'_>,
    from: usize,
    len: usize,
    mode: ChannelMode,
    planes: &mut [Vec<f32>],
) {
    macro_rules! dispatch {
        ($($variant:ident),*) => {
            match buf {
                $(GenericAudioBufferRef::$variant(b) => convert_typed(b, from, len, mode, planes),)*
            }
        };
    }
    dispatch!(U8, U16, U24, U32, S8, S16, S24, S32, F32, F64)
}

fn convert_typed<S>(
    buf: &AudioBuffer<S>,
    from: usize,
    len: usize,
    mode: ChannelMode,
    planes: &mut [Vec<f32>],
) where
    S: Sample,
    f32: FromSample<S>,
{
    let channels = buf.num_planes();
    match mode {
        ChannelMode::Keep => {
            for (ch, out) in planes.iter_mut().enumerate() {
                out.clear();
                if let Some(src) = buf.plane(ch) {
                    out.extend(src[from..from + len].iter().map(|&s| f32::from_sample(s)));
                } else {
                    out.resize(len, 0.0);
                }
            }
        }
        // `Itu` is applied above the reader (segments.rs); here it is the mean.
        ChannelMode::Mono | ChannelMode::Itu => {
            let out = &mut planes[0];
            out.clear();
            out.resize(len, 0.0);
            for ch in 0..channels {
                if let Some(src) = buf.plane(ch) {
                    for (o, &s) in out.iter_mut().zip(&src[from..from + len]) {
                        *o += f32::from_sample(s);
                    }
                }
            }
            if channels > 1 {
                let scale = 1.0 / channels as f32;
                out.iter_mut().for_each(|o| *o *= scale);
            }
        }
    }
}
