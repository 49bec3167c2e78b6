//! Wire types to the decoder's own.

use crate::decode::resample::Quality;
use crate::decode::{ChannelMode, LoadRequest};

pub fn quality_of(q: audiodecode_protocol::Quality) -> Quality {
    match q {
        audiodecode_protocol::Quality::Fast => Quality::Fast,
        audiodecode_protocol::Quality::Hq => Quality::Hq,
        audiodecode_protocol::Quality::Vhq => Quality::Vhq,
    }
}

/// The channel mode a request's `mono` and `downmix` ask for.
pub fn channel_mode(mono: bool, downmix: audiodecode_protocol::Downmix) -> ChannelMode {
    match (mono, downmix) {
        (false, _) => ChannelMode::Keep,
        (true, audiodecode_protocol::Downmix::Mean) => ChannelMode::Mono,
        (true, audiodecode_protocol::Downmix::Itu) => ChannelMode::Itu,
    }
}

/// What a `Load` request asks of the decoder (strict: a damaged file is an error).
pub fn load_request(spec: &audiodecode_protocol::LoadSpec) -> LoadRequest {
    LoadRequest {
        sample_rate: spec.sample_rate,
        channels: channel_mode(spec.mono, spec.downmix),
        offset: spec.offset,
        duration: spec.duration,
        quality: quality_of(spec.quality),
        lenient: !spec.strict,
    }
}
