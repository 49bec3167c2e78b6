//! How much of a file decodes and what damage it holds: the per-file fact Note [Damage rule]
//! decides on, whichever part of the file a caller then decodes.

use std::path::Path;

use super::audio::{ChannelMode, LoadRequest};
use super::{load, probe_info};
use crate::error::Result;

/// A file longer than this is checked a window at a time, so the check holds at most this
/// much decoded audio (a whole hour at 48 kHz would be 700 MB).
const WINDOW_SECONDS: f64 = 120.0;

/// What a lenient decode of the whole file found.
#[derive(Clone, Debug, PartialEq)]
pub struct Integrity {
    /// Frames that decode, at the file's own rate.
    pub frames: u64,
    pub sample_rate: u32,
    /// The damage met (what and where, naming the file), as lenient decoding records it.
    pub damage: Option<String>,
}

impl Integrity {
    pub fn seconds(&self) -> f64 {
        self.frames as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Decodes `path` to its end, leniently (as the loader, `decode` and `label` do) and mono
/// (the damage rule does not depend on the channels). A file with no decodable audio is the
/// error a decode gives; damage after some audio is the result's `damage`.
pub fn check(path: &Path, threads: usize) -> Result<Integrity> {
    let whole = LoadRequest {
        channels: ChannelMode::Mono,
        lenient: true,
        ..LoadRequest::default()
    };
    // A URL goes by windows too: a remote file too large for the object cache is read in
    // parts (Note [Ranged reads of remote files]), never fetched whole to be refused.
    let remote = crate::store::url_of(path).is_some();
    let declared = match probe_info(path)?.duration {
        Some(d) if d > WINDOW_SECONDS * 1.5 || remote => d,
        _ => {
            let audio = load(path, &whole, threads)?;
            return Ok(Integrity {
                frames: audio.frames() as u64,
                sample_rate: audio.sample_rate,
                damage: audio.damage,
            });
        }
    };
    let mut found = Integrity {
        frames: 0,
        sample_rate: 0,
        damage: None,
    };
    let mut offset = 0.0;
    loop {
        let window = LoadRequest {
            offset,
            duration: Some(WINDOW_SECONDS),
            ..whole.clone()
        };
        let audio = match load(path, &window, threads) {
            Ok(audio) => audio,
            Err(e) if offset == 0.0 => return Err(e),
            // A window that starts at the stated end finds nothing: the end.
            Err(_) if offset >= declared - 0.5 => return Ok(found),
            // The audio ends well before the length the file states (a window that starts
            // past the last decodable frame fails): damage, named as the decode named it.
            Err(e) => {
                found.damage = Some(e.to_string());
                return Ok(found);
            }
        };
        found.sample_rate = audio.sample_rate;
        found.frames += audio.frames() as u64;
        if audio.damage.is_some() {
            found.damage = audio.damage;
            return Ok(found);
        }
        let full = WINDOW_SECONDS * f64::from(audio.sample_rate);
        offset += WINDOW_SECONDS;
        // A short window is the end of the audio.
        if (audio.frames() as f64) < full - 1.0 {
            return Ok(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::decode::DecodedAudio;

    const RATE: u32 = 8000;

    fn long_wav(dir: &Path, name: &str, seconds: usize, keep_seconds: Option<usize>) -> PathBuf {
        let frames = seconds * RATE as usize;
        let tone = (0..frames)
            .map(|i| 0.3 * (i as f32 * 0.05).sin())
            .collect::<Vec<f32>>();
        let audio = DecodedAudio {
            planes: vec![tone],
            sample_rate: RATE,
            damage: None,
        };
        let mut bytes = Vec::new();
        crate::cli::output::write_wav(&mut bytes, &audio).expect("wav");
        if let Some(keep) = keep_seconds {
            bytes.truncate(bytes.len() - (seconds - keep) * RATE as usize * 4);
        }
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn long_files_are_checked_a_window_at_a_time_to_their_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Intact, and ending exactly where a window does: no damage, every frame.
        for seconds in [400, 240] {
            let path = long_wav(dir.path(), &format!("{seconds}.wav"), seconds, None);
            let found = check(&path, 1).expect("check");
            assert_eq!(found.damage, None, "{seconds} s");
            assert_eq!(found.frames, (seconds * RATE as usize) as u64);
            assert_eq!(found.sample_rate, RATE);
        }
        // Cut inside the third window, and exactly at the end of the second.
        for keep in [250, 240] {
            let path = long_wav(dir.path(), &format!("cut{keep}.wav"), 400, Some(keep));
            let found = check(&path, 1).expect("check");
            let damage = found.damage.clone().expect("damaged");
            assert!(damage.contains("truncated"), "{damage}");
            assert!((found.seconds() - keep as f64).abs() < 0.1, "{found:?}");
        }
    }

    #[test]
    fn a_short_file_is_one_decode_and_an_empty_one_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = long_wav(dir.path(), "ten.wav", 10, Some(6));
        let found = check(&path, 1).expect("check");
        assert!(found.damage.is_some());
        assert!((found.seconds() - 6.0).abs() < 0.01, "{found:?}");
        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, b"").expect("write");
        assert!(check(&empty, 1).is_err());
    }
}
