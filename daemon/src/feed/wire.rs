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

/// What a `Load` request asks of the decoder (strict: a damaged file is an error).
pub fn load_request(spec: &audiodecode_protocol::LoadSpec) -> LoadRequest {
    LoadRequest {
        sample_rate: spec.sample_rate,
        channels: ChannelMode::from_mono(spec.mono),
        offset: spec.offset,
        duration: spec.duration,
        quality: quality_of(spec.quality),
        lenient: !spec.strict,
    }
}
