//! What `ffprobe` says about a file's first audio stream.

use serde::Deserialize;

#[derive(Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_name: Option<String>,
    sample_rate: Option<String>,
    channels: Option<u32>,
    channel_layout: Option<String>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    format_name: Option<String>,
    duration: Option<String>,
}

/// The facts of the first audio stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StreamFacts {
    pub codec: String,
    pub container: String,
    pub sample_rate: u32,
    pub channels: u32,
    /// FFmpeg's layout name (`stereo`, `5.1(side)`), when it knows one.
    pub channel_layout: Option<String>,
    /// Seconds, as the container or FFmpeg's estimate states it.
    pub duration: Option<f64>,
}

/// Why the probe's output describes no usable stream.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("unreadable ffprobe output: {0}")]
    Malformed(String),
    #[error("no audio stream")]
    NoAudio,
    #[error("the audio stream declares no sample rate or channels")]
    NoSpec,
    #[error("FFmpeg has no decoder for the audio stream's codec")]
    NoDecoder,
}

/// Parses `ffprobe -of json -show_entries stream=…:format=…` output.
pub(crate) fn parse(json: &[u8]) -> Result<StreamFacts, ProbeError> {
    let out: ProbeOutput =
        serde_json::from_slice(json).map_err(|e| ProbeError::Malformed(e.to_string()))?;
    let stream = out.streams.into_iter().next().ok_or(ProbeError::NoAudio)?;
    // A container FFmpeg parses around a codec it cannot decode (a SPHERE coding it does
    // not know) probes as codec "none"; decoding it could only fail.
    if stream.codec_name.as_deref().is_none_or(|c| c == "none") {
        return Err(ProbeError::NoDecoder);
    }
    let sample_rate = stream
        .sample_rate
        .as_deref()
        .and_then(|r| r.parse::<u32>().ok())
        .filter(|&r| r > 0)
        .ok_or(ProbeError::NoSpec)?;
    let channels = stream
        .channels
        .filter(|&c| c > 0)
        .ok_or(ProbeError::NoSpec)?;
    let seconds = |d: Option<&str>| {
        d.and_then(|d| d.parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d > 0.0)
    };
    let format = out.format;
    let duration = seconds(stream.duration.as_deref())
        .or_else(|| seconds(format.as_ref().and_then(|f| f.duration.as_deref())));
    Ok(StreamFacts {
        codec: stream.codec_name.unwrap_or_else(|| "unknown".into()),
        container: format
            .and_then(|f| f.format_name)
            .unwrap_or_else(|| "unknown".into()),
        sample_rate,
        channels,
        channel_layout: stream.channel_layout,
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_facts_and_duration_fallback() {
        let json = br#"{"programs":[],"streams":[{"codec_name":"wmav2","sample_rate":"22050",
            "channels":2}],"format":{"format_name":"asf","duration":"3.250000"}}"#;
        let facts = parse(json).unwrap();
        assert_eq!(facts.codec, "wmav2");
        assert_eq!(facts.container, "asf");
        assert_eq!((facts.sample_rate, facts.channels), (22050, 2));
        assert_eq!(facts.duration, Some(3.25));
    }

    #[test]
    fn missing_stream_or_spec_is_an_error() {
        assert_eq!(parse(br#"{"streams":[]}"#), Err(ProbeError::NoAudio));
        let no_rate = br#"{"streams":[{"codec_name":"x","sample_rate":"0","channels":1}]}"#;
        assert_eq!(parse(no_rate), Err(ProbeError::NoSpec));
        assert!(matches!(parse(b"not json"), Err(ProbeError::Malformed(_))));
        let no_codec = br#"{"streams":[{"sample_rate":"8000","channels":1}]}"#;
        assert_eq!(parse(no_codec), Err(ProbeError::NoDecoder));
    }
}
