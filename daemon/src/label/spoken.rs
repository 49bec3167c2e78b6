//! How much a text says, in units comparable across writing systems: the measure behind
//! the pace checks that find pieces Whisper read only in part (Note [Fallback without a
//! storm]).
//!
//! Counting words by whitespace makes a Chinese or Japanese sentence one "word": every
//! piece of such speech looked sparse and was decoded again in parts, and the choice
//! between a piece's reading and its parts' was made on a meaningless count. Here a
//! whitespace-separated word counts once, and characters of scripts written without
//! spaces count by how much speech each carries.

/// Weights that make a character about the speech of its share of an English word (1.5
/// syllables): a Han character is one syllable (a Chinese morpheme, or part of a Japanese
/// word), kana one mora, a consonant letter of Thai, Lao, Khmer or Myanmar about one
/// syllable's onset. On the reference texts of real clips: English 2.4 words/s (median of
/// 215 clips), Chinese 2.8–3.1 units/s, Japanese 2.9–3.6. Only pieces of one file are
/// compared, so the weights need only keep a mixed-language file's pieces near each other.
const HAN: f64 = 1.0;
const KANA: f64 = 0.5;
const SOUTHEAST_ASIAN_CONSONANT: f64 = 0.5;

/// Words said in `text`, counting characters of scripts written without spaces by their
/// weights above and each other whitespace-separated word with a letter or digit once.
pub(super) fn word_units(text: &str) -> f64 {
    text.split_whitespace().map(units_of_word).sum()
}

fn units_of_word(word: &str) -> f64 {
    let mut units = 0.0;
    let mut spaced_letters = false;
    for c in word.chars() {
        match spaceless_weight(c) {
            Some(weight) => units += weight,
            None => spaced_letters |= c.is_alphanumeric(),
        }
    }
    if spaced_letters {
        units += 1.0;
    }
    units
}

/// The weight of a character of a script written without spaces (0 for its marks and
/// punctuation), `None` for characters of other scripts.
fn spaceless_weight(c: char) -> Option<f64> {
    match u32::from(c) {
        // 々 repeats the kanji before it.
        0x3005 | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F => {
            Some(HAN)
        }
        // ー lengthens a vowel by a mora.
        0x3041..=0x3096 | 0x30A1..=0x30FA | 0x30FC | 0x31F0..=0x31FF | 0xFF66..=0xFF9D => {
            Some(KANA)
        }
        0x0E01..=0x0E2E | 0x0E81..=0x0EAE | 0x1000..=0x1021 | 0x1780..=0x17A2 => {
            Some(SOUTHEAST_ASIAN_CONSONANT)
        }
        // Ideographic punctuation, kana signs, vowel signs and tone marks.
        0x3000..=0x30FF | 0xFF9E..=0xFF9F | 0x0E00..=0x0EFF | 0x1000..=0x109F | 0x1780..=0x17FF => {
            Some(0.0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn words_of_spaced_languages_count_once_each() {
        assert!(close(word_units("And so, my fellow Americans."), 5.0));
        assert!(close(word_units("Ein Tag im Leben, 1962 — gut!"), 6.0));
        assert!(close(word_units("그는 1위절이 피하면서"), 3.0));
        // Punctuation alone is no word.
        assert!(close(word_units("... — !"), 0.0));
    }

    #[test]
    fn chinese_counts_its_characters_and_not_its_punctuation() {
        // One whitespace "word" of nine characters said in about three seconds.
        assert!(close(word_units("大學生利用漏洞免費，"), 9.0));
        assert!(close(word_units("豪豬,咖啡,你好,谁叫?"), 8.0));
    }

    #[test]
    fn japanese_kana_count_half_and_kanji_whole() {
        // 客観的 (3 kanji) + の (kana) + 判断 (2 kanji).
        assert!(close(word_units("客観的の判断"), 5.5));
        assert!(close(word_units("もう少し"), 1.5 + 1.0));
        // ニュース: ニ, the small ュ (half a mora, counted as kana) and ース; the middle
        // dot is punctuation.
        assert!(close(word_units("ニュース・サイト"), 2.0 + 1.5));
        assert!(close(word_units("人々"), 2.0));
    }

    #[test]
    fn thai_counts_consonants_not_vowel_signs() {
        // สวัสดี (sa-wat-dii): four consonants, a vowel sign and a vowel.
        assert!(close(word_units("สวัสดี"), 2.0));
    }

    #[test]
    fn mixed_text_adds_both_measures() {
        // "iPhone" is one word; 発売 two kanji; した one kana pair.
        assert!(close(word_units("iPhoneを発売した"), 1.0 + 0.5 + 2.0 + 1.0));
    }
}
