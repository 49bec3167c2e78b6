//! The two mono conventions. See Note [Downmix].
//!
//! `Mono` is the plain mean of the channels: what librosa, soundfile and torchaudio users
//! get, and what the loader has always delivered. `Itu` weights speakers as ITU-R BS.775
//! does for a mono downmix (and FFmpeg's `-ac 1`): front left/right 1/√2, centre 1,
//! surrounds 1/2, LFE dropped, normalised so the weights sum to 1. For mono and stereo
//! files the two are the same; for 5.1 or 7.1 the mean lets the LFE and the surrounds
//! (often ambience) weigh as much as the dialogue-carrying centre.

use symphonia::core::audio::{Channels, Position};

/// Where a channel's speaker sits, as far as the downmix cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Speaker {
    Front,
    Centre,
    Lfe,
    Surround,
}

impl Speaker {
    fn weight(self) -> f32 {
        match self {
            Self::Front => std::f32::consts::FRAC_1_SQRT_2,
            Self::Centre => 1.0,
            Self::Lfe => 0.0,
            Self::Surround => 0.5,
        }
    }
}

/// Per-channel weights of the ITU downmix, summing to 1; `None` when the layout is
/// unknown (the caller then uses the mean) or has no speaker that carries sound.
pub(crate) fn itu_weights(speakers: &[Speaker]) -> Option<Vec<f32>> {
    let total: f32 = speakers.iter().map(|s| s.weight()).sum();
    (total > 0.0).then(|| speakers.iter().map(|s| s.weight() / total).collect())
}

/// The speakers of symphonia's channel description, in channel order (WAVE_FORMAT_EXTENSIBLE
/// order: the bits of the mask from the lowest).
pub(crate) fn speakers_of(channels: &Channels) -> Option<Vec<Speaker>> {
    let Channels::Positioned(mask) = channels else {
        return None;
    };
    let speaker = |bit: Position| {
        if bit == Position::FRONT_CENTER {
            Speaker::Centre
        } else if bit == Position::LFE1 || bit == Position::LFE2 {
            Speaker::Lfe
        } else if (Position::FRONT_LEFT
            | Position::FRONT_RIGHT
            | Position::FRONT_LEFT_CENTER
            | Position::FRONT_RIGHT_CENTER
            | Position::FRONT_LEFT_WIDE
            | Position::FRONT_RIGHT_WIDE)
            .contains(bit)
        {
            Speaker::Front
        } else {
            Speaker::Surround
        }
    };
    let speakers: Vec<Speaker> = (0..64)
        .map(|i| Position::from_bits_retain(1u64 << i))
        .filter(|bit| mask.contains(*bit))
        .map(speaker)
        .collect();
    (!speakers.is_empty()).then_some(speakers)
}

/// The speakers of an FFmpeg channel layout name (`ffprobe`'s `channel_layout`).
pub(crate) fn speakers_of_ffmpeg_layout(name: &str) -> Option<Vec<Speaker>> {
    use Speaker::{Centre as C, Front as F, Lfe as L, Surround as S};
    let speakers: &[Speaker] = match name {
        "mono" => &[C],
        "stereo" => &[F, F],
        "2.1" => &[F, F, L],
        "3.0" => &[F, F, C],
        "3.0(back)" => &[F, F, S],
        "4.0" => &[F, F, C, S],
        "quad" | "quad(side)" => &[F, F, S, S],
        "3.1" => &[F, F, C, L],
        "5.0" | "5.0(side)" => &[F, F, C, S, S],
        "4.1" => &[F, F, C, L, S],
        "5.1" | "5.1(side)" => &[F, F, C, L, S, S],
        "6.1" | "6.1(back)" => &[F, F, C, L, S, S, S],
        "7.0" => &[F, F, C, S, S, S, S],
        "7.1" => &[F, F, C, L, S, S, S, S],
        "7.1(wide)" | "7.1(wide-side)" => &[F, F, C, L, S, S, F, F],
        _ => return None,
    };
    Some(speakers.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_is_the_mean_and_five_one_follows_bs775() {
        let stereo = itu_weights(&speakers_of_ffmpeg_layout("stereo").unwrap()).unwrap();
        assert_eq!(stereo, vec![0.5, 0.5]);
        let w = itu_weights(&speakers_of_ffmpeg_layout("5.1").unwrap()).unwrap();
        let r = std::f32::consts::FRAC_1_SQRT_2;
        let total = 2.0 * r + 1.0 + 2.0 * 0.5;
        let want = [r / total, r / total, 1.0 / total, 0.0, 0.5 / total];
        for (got, want) in w.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn positions_follow_the_mask_order() {
        let mask = Position::FRONT_LEFT
            | Position::FRONT_RIGHT
            | Position::FRONT_CENTER
            | Position::LFE1
            | Position::SIDE_LEFT
            | Position::SIDE_RIGHT;
        let speakers = speakers_of(&Channels::Positioned(mask)).unwrap();
        use Speaker::*;
        assert_eq!(speakers, [Front, Front, Centre, Lfe, Surround, Surround]);
        assert_eq!(speakers_of(&Channels::Discrete(4)), None);
        assert_eq!(speakers_of_ffmpeg_layout("22.2"), None);
    }
}
