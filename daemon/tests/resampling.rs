//! The streaming resampler: a 1 kHz tone keeps its frequency, amplitude and timing through
//! every preset and rate pair, output length is `ceil(n_in * out / in)`, content above the
//! new Nyquist frequency is attenuated by at least the preset's stated figure, and the
//! result does not depend on how the input is chunked.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use audiodecode::resample::StreamResampler;
use audiodecode::Quality;
use common::*;

const QUALITIES: [Quality; 3] = [Quality::Fast, Quality::Hq, Quality::Vhq];

/// Irregular push sizes, cycled.
const CHUNKS: [usize; 8] = [1, 7, 1000, 4096, 5000, 3, 333, 2];

/// Frames skipped at each end of an output before measuring (filter start-up and tail).
const EDGE: usize = 1000;

/// Resample planar `input`, in one push or in irregular chunks.
fn resample(
    input: &[Vec<f32>],
    in_rate: u32,
    out_rate: u32,
    quality: Quality,
    chunked: bool,
) -> Vec<Vec<f32>> {
    let channels = input.len();
    let mut r = StreamResampler::new(in_rate, out_rate, channels, quality)
        .unwrap_or_else(|e| panic!("{in_rate} -> {out_rate} {quality:?}: {e}"));
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); channels];
    let mut emit = |chunk: &[&[f32]]| {
        assert_eq!(chunk.len(), channels, "emitted channel count");
        for (o, c) in out.iter_mut().zip(chunk) {
            assert_eq!(c.len(), chunk[0].len(), "emitted planes differ in length");
            o.extend_from_slice(c);
        }
    };
    let n = input[0].len();
    if chunked {
        let mut at = 0;
        for size in CHUNKS.iter().cycle() {
            if at >= n {
                break;
            }
            let end = (at + size).min(n);
            let planes: Vec<&[f32]> = input.iter().map(|p| &p[at..end]).collect();
            r.push(&planes, &mut emit);
            at = end;
        }
    } else {
        let planes: Vec<&[f32]> = input.iter().map(Vec::as_slice).collect();
        r.push(&planes, &mut emit);
    }
    let total = r.finish(&mut emit);
    assert_eq!(
        total as usize,
        out[0].len(),
        "finish() returns the frames emitted"
    );
    out
}

fn expected_len(n_in: usize, in_rate: u32, out_rate: u32) -> usize {
    (n_in as u64 * u64::from(out_rate)).div_ceil(u64::from(in_rate)) as usize
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The steady-state part of `x`: `EDGE` frames off each end, cut to a whole number of
/// periods of `freq` so that RMS and Goertzel estimates are exact for a pure tone.
fn steady(x: &[f32], rate: u32, freq: u32) -> &[f32] {
    let period = (rate / gcd(rate as usize, freq as usize) as u32) as usize;
    let usable = x.len() - 2 * EDGE;
    &x[EDGE..EDGE + usable / period * period]
}

/// Zero-crossing frequency estimate of a clean tone.
fn zero_crossing_frequency(x: &[f32], rate: u32) -> f64 {
    let crossings: Vec<f64> = x
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + f64::from(w[0] / (w[0] - w[1])))
        .collect();
    let (first, last) = (crossings[0], crossings[crossings.len() - 1]);
    (crossings.len() - 1) as f64 * f64::from(rate) / (last - first)
}

const RATE_PAIRS: [(u32, u32); 4] = [
    (44_100, 16_000),
    (48_000, 16_000),
    (22_050, 16_000),
    (16_000, 44_100),
];

fn check_tone(in_rate: u32, out_rate: u32, quality: Quality) {
    let what = format!("{in_rate} -> {out_rate} {quality:?}");
    let n_in = 2 * in_rate as usize + 1234;
    let amplitude = [0.5, 0.25];
    // Two channels: a sine and a phase-shifted one, to catch channel mix-ups.
    let input: Vec<Vec<f32>> = vec![
        sine(1000.0, in_rate, n_in, amplitude[0]),
        (0..n_in)
            .map(|i| {
                let t = i as f64 / f64::from(in_rate);
                (amplitude[1] * (2.0 * std::f64::consts::PI * 1000.0 * t + 1.0).sin()) as f32
            })
            .collect(),
    ];
    let out = resample(&input, in_rate, out_rate, quality, false);
    assert_eq!(
        out[0].len(),
        expected_len(n_in, in_rate, out_rate),
        "{what}: length"
    );

    // Same output however the input is chunked.
    let chunked = resample(&input, in_rate, out_rate, quality, true);
    assert_planes_equal(&format!("{what}: chunked vs one push"), &chunked, &out);

    for (c, plane) in out.iter().enumerate() {
        let x = steady(plane, out_rate, 1000);
        // The strongest of a set of candidate frequencies is 1 kHz...
        let candidates = [
            250.0, 500.0, 900.0, 990.0, 999.0, 1000.0, 1001.0, 1010.0, 1100.0, 2000.0, 3000.0,
        ];
        let strongest = candidates
            .iter()
            .copied()
            .max_by(|&a, &b| {
                goertzel_amplitude(x, out_rate, a).total_cmp(&goertzel_amplitude(x, out_rate, b))
            })
            .unwrap();
        assert_eq!(strongest, 1000.0, "{what}: channel {c}: peak frequency");
        // ... and the zero crossings agree.
        let f = zero_crossing_frequency(x, out_rate);
        assert!(
            (f - 1000.0).abs() < 0.1,
            "{what}: channel {c}: {f} Hz by zero crossings"
        );

        // Amplitude within 1 %.
        let a = rms(x) * std::f64::consts::SQRT_2;
        let g = goertzel_amplitude(x, out_rate, 1000.0);
        eprintln!(
            "{what}: channel {c}: amplitude {a:.6} (Goertzel {g:.6}), want {}",
            amplitude[c]
        );
        for est in [a, g] {
            assert!(
                (est / amplitude[c] - 1.0).abs() <= 0.01,
                "{what}: channel {c}: amplitude {est}, want {} ± 1 %",
                amplitude[c]
            );
        }

        // No delay: the output lines up with the ideal tone at the output rate.
        let phase = if c == 0 { 0.0 } else { 1.0 };
        let ideal: Vec<f32> = (0..plane.len())
            .map(|i| {
                let t = i as f64 / f64::from(out_rate);
                (amplitude[c] * (2.0 * std::f64::consts::PI * 1000.0 * t + phase).sin()) as f32
            })
            .collect();
        let err = max_abs_diff(x, steady(&ideal, out_rate, 1000));
        eprintln!("{what}: channel {c}: max deviation from the ideal tone {err:e}");
        assert!(
            f64::from(err) <= 1e-3 * amplitude[c],
            "{what}: channel {c}: output deviates from the ideal tone by {err} \
             (delay not trimmed or phase error)"
        );
    }
}

#[test]
fn tone_fast() {
    for (i, o) in RATE_PAIRS {
        check_tone(i, o, Quality::Fast);
    }
}

#[test]
fn tone_hq() {
    for (i, o) in RATE_PAIRS {
        check_tone(i, o, Quality::Hq);
    }
}

#[test]
fn tone_vhq() {
    for (i, o) in RATE_PAIRS {
        check_tone(i, o, Quality::Vhq);
    }
}

/// Attenuation in dB (positive) of a full-scale tone at `freq`, above the output's Nyquist
/// frequency, measured as output RMS relative to input RMS away from the edges.
fn attenuation_db(in_rate: u32, out_rate: u32, freq: f64, quality: Quality) -> f64 {
    assert!(freq > f64::from(out_rate) / 2.0);
    let n_in = 2 * in_rate as usize;
    let input = vec![sine(freq, in_rate, n_in, 1.0)];
    let out = resample(&input, in_rate, out_rate, quality, true);
    assert_eq!(out[0].len(), expected_len(n_in, in_rate, out_rate));
    let rms_in = rms(&input[0][EDGE..n_in - EDGE]);
    let o = &out[0];
    let rms_out = rms(&o[EDGE..o.len() - EDGE]);
    -20.0 * (rms_out / rms_in).max(1e-30).log10()
}

/// Tones above 16 kHz's Nyquist frequency (8 kHz): 1.05x Nyquist, where the presets' stated
/// stop band begins, and the 9 kHz and 12 kHz tones of the brief.
const ALIAS_CASES: [(u32, u32, f64); 8] = [
    (44_100, 16_000, 8_400.0),
    (44_100, 16_000, 9_000.0),
    (44_100, 16_000, 12_000.0),
    (48_000, 16_000, 8_400.0),
    (48_000, 16_000, 9_000.0),
    (48_000, 16_000, 12_000.0),
    (22_050, 16_000, 8_400.0),
    (22_050, 16_000, 9_000.0),
];

fn check_aliasing(quality: Quality) {
    let stated = quality.stated_attenuation_db();
    let mut failures = Vec::new();
    for (i, o, f) in ALIAS_CASES {
        let db = attenuation_db(i, o, f, quality);
        eprintln!("aliasing {quality:?}: {f} Hz tone, {i} -> {o}: attenuated {db:.1} dB (stated {stated} dB)");
        if db < stated {
            failures.push(format!("{f} Hz at {i} -> {o}: {db:.1} dB"));
        }
    }
    assert!(
        failures.is_empty(),
        "{quality:?} states {stated} dB of attenuation above the new Nyquist frequency but \
         measured: {}",
        failures.join(", ")
    );
}

#[test]
fn aliasing_fast() {
    check_aliasing(Quality::Fast);
}

#[test]
fn aliasing_hq() {
    check_aliasing(Quality::Hq);
}

#[test]
fn aliasing_vhq() {
    check_aliasing(Quality::Vhq);
}

/// Gain within 0.1 dB up to the preset's stated passband edge.
fn check_passband(quality: Quality) {
    for (i, o) in RATE_PAIRS {
        let nyquist = f64::from(i.min(o)) / 2.0;
        for fraction in [0.1, 0.5, quality.passband_edge()] {
            // Round to a frequency with a whole number of periods in the measured window.
            let f = (fraction * nyquist / 10.0).floor() * 10.0;
            let n = 2 * i as usize;
            let out = resample(&[sine(f, i, n, 0.5)], i, o, quality, true);
            let x = steady(&out[0], o, f as u32);
            let gain_db = 20.0 * (goertzel_amplitude(x, o, f) / 0.5).log10();
            eprintln!("passband {quality:?}: {f} Hz, {i} -> {o}: {gain_db:+.4} dB");
            assert!(
                gain_db.abs() <= 0.1,
                "{quality:?}: {f} Hz ({fraction} of Nyquist) at {i} -> {o}: gain {gain_db:+.3} dB"
            );
        }
    }
}

#[test]
fn passband_fast() {
    check_passband(Quality::Fast);
}

#[test]
fn passband_hq() {
    check_passband(Quality::Hq);
}

#[test]
fn passband_vhq() {
    check_passband(Quality::Vhq);
}

#[test]
fn lengths_for_awkward_input_sizes() {
    for quality in QUALITIES {
        for (i, o) in RATE_PAIRS {
            for n in [0usize, 1, 2, 3, 99, 1000, 4095, 4096, 4097, 44_101] {
                let input = vec![sine(440.0, i, n, 0.5)];
                let out = resample(&input, i, o, quality, true);
                assert_eq!(
                    out[0].len(),
                    expected_len(n, i, o),
                    "{i} -> {o} {quality:?}: {n} frames in"
                );
            }
        }
    }
}

#[test]
fn same_rate_passes_through() {
    let input = vec![
        sine(1000.0, 16_000, 10_000, 0.5),
        sine(300.0, 16_000, 10_000, 0.1),
    ];
    for quality in QUALITIES {
        let out = resample(&input, 16_000, 16_000, quality, true);
        assert_planes_equal("16000 -> 16000", &out, &input);
    }
}

#[test]
fn invalid_setups_are_errors() {
    assert!(StreamResampler::new(0, 16_000, 1, Quality::Hq).is_err());
    assert!(StreamResampler::new(16_000, 0, 1, Quality::Hq).is_err());
    assert!(StreamResampler::new(44_100, 16_000, 0, Quality::Hq).is_err());
}

#[test]
fn quality_names_round_trip() {
    for (name, q) in [
        ("fast", Quality::Fast),
        ("hq", Quality::Hq),
        ("vhq", Quality::Vhq),
    ] {
        assert_eq!(Quality::parse(name), Some(q));
    }
    assert_eq!(Quality::parse("best"), None);
    assert_eq!(Quality::default(), Quality::Hq);
}
