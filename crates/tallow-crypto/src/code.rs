//! Code phrases: `NNNN-word-word-word`.
//!
//! The digits (the *nameplate*) pick the relay room and are not secret: only a
//! hash of them is sent to the relay, so the relay can pair two peers but the
//! words never leave either machine. The whole phrase is the PAKE password.
//!
//! A user may choose their own phrase with `--code`; any `digits-word…` phrase
//! is accepted, and [`CodePhrase::strength_bits`] estimates how guessable it is
//! so the CLI can warn about weak ones.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::wordlist::{self, wordlist};

/// Words in a generated code phrase.
pub const DEFAULT_WORDS: usize = 3;
/// Digits in a generated nameplate.
pub const NAMEPLATE_DIGITS: usize = 4;
/// Longest nameplate accepted from a user.
pub const MAX_NAMEPLATE_DIGITS: usize = 10;
/// Most words accepted in a user's phrase.
pub const MAX_WORDS: usize = 16;
/// Longest single word accepted in a user's phrase.
pub const MAX_WORD_LEN: usize = 32;

/// Entropy of one wordlist word: log2(7776).
const WORDLIST_WORD_BITS: f64 = 12.924_812_503_605_78;
/// Conservative guess for a word not on the list: 2 bits per letter
/// (English text carries roughly 1-2.5 bits per letter).
const OTHER_WORD_BITS_PER_CHAR: f64 = 2.0;

/// Why a code phrase was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    /// No digits before the first separator.
    #[error("the code must start with digits, like 1234-word-word-word")]
    MissingNameplate,
    /// The nameplate has too many digits.
    #[error("the code's number has more than {MAX_NAMEPLATE_DIGITS} digits")]
    NameplateTooLong,
    /// No words after the nameplate.
    #[error("the code has no words after the number (expected 1234-word-word-word)")]
    MissingWords,
    /// Too many words.
    #[error("the code has more than {MAX_WORDS} words")]
    TooManyWords,
    /// A word with characters other than ASCII letters and digits, or too long.
    #[error(
        "the code contains {0:?}, which is not a word of ASCII letters (at most {MAX_WORD_LEN})"
    )]
    InvalidWord(String),
}

/// Identifies a relay room: a keyed BLAKE3 hash of the nameplate only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomId(pub [u8; 32]);

impl std::fmt::Debug for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomId({})", self.short())
    }
}

impl RoomId {
    /// The room id of a nameplate.
    pub fn for_nameplate(nameplate: &str) -> Self {
        RoomId(blake3::derive_key(
            "tallow 2026-11 relay room id v1",
            nameplate.as_bytes(),
        ))
    }

    /// The local-network room of a number handed out by the relay at
    /// `relay` (as the sender's `--relay` names it). Relays hand out short
    /// numbers, so two senders on one network using different relays may
    /// both have number 1: their announcements must not be mistaken for each
    /// other's. Still the nameplate only, never the words.
    pub fn for_nameplate_on(nameplate: &str, relay: &str) -> Self {
        let mut h =
            blake3::Hasher::new_derive_key("tallow 2026-12 local room of a relay's number v1");
        h.update(relay.as_bytes());
        h.update(&[0]);
        h.update(nameplate.as_bytes());
        RoomId(*h.finalize().as_bytes())
    }

    /// First 4 bytes in hex, for logs (never the full id).
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A normalized code phrase. The secret part is zeroized on drop.
pub struct CodePhrase {
    /// `nameplate-word-…`, lowercase, single dashes.
    normalized: Zeroizing<String>,
    nameplate_len: usize,
}

impl CodePhrase {
    /// A fresh random phrase: 4 digits and `words` words from the list.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng), words: usize) -> Self {
        let list = wordlist();
        let mut s = Zeroizing::new(String::with_capacity(64));
        for _ in 0..NAMEPLATE_DIGITS {
            s.push(char::from(b'0' + uniform(rng, 10) as u8));
        }
        for _ in 0..words {
            s.push('-');
            s.push_str(list[uniform(rng, list.len() as u32) as usize]);
        }
        CodePhrase {
            normalized: s,
            nameplate_len: NAMEPLATE_DIGITS,
        }
    }

    /// The same words under another nameplate (the one a relay allocated):
    /// digits only, at most [`MAX_NAMEPLATE_DIGITS`].
    pub fn with_nameplate(&self, nameplate: &str) -> Result<Self, CodeError> {
        if nameplate.is_empty() || !nameplate.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::MissingNameplate);
        }
        if nameplate.len() > MAX_NAMEPLATE_DIGITS {
            return Err(CodeError::NameplateTooLong);
        }
        let words = &self.normalized[self.nameplate_len..];
        let mut s = Zeroizing::new(String::with_capacity(nameplate.len() + words.len()));
        s.push_str(nameplate);
        s.push_str(words);
        Ok(CodePhrase {
            normalized: s,
            nameplate_len: nameplate.len(),
        })
    }

    /// Parse what a user typed: digits then words, separated by dashes or
    /// spaces, any case.
    pub fn parse(input: &str) -> Result<Self, CodeError> {
        let mut tokens = input
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|t| !t.is_empty());
        let nameplate = tokens.next().ok_or(CodeError::MissingNameplate)?;
        if !nameplate.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::MissingNameplate);
        }
        if nameplate.len() > MAX_NAMEPLATE_DIGITS {
            return Err(CodeError::NameplateTooLong);
        }
        let mut s = Zeroizing::new(String::with_capacity(input.len()));
        s.push_str(nameplate);
        let mut count = 0;
        for token in tokens {
            if token.len() > MAX_WORD_LEN || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(CodeError::InvalidWord(token.chars().take(40).collect()));
            }
            count += 1;
            if count > MAX_WORDS {
                return Err(CodeError::TooManyWords);
            }
            s.push('-');
            s.push_str(&token.to_ascii_lowercase());
        }
        if count == 0 {
            return Err(CodeError::MissingWords);
        }
        Ok(CodePhrase {
            nameplate_len: nameplate.len(),
            normalized: s,
        })
    }

    /// The phrase as the user should type it.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The digits before the first dash: the only part the relay may learn about.
    pub fn nameplate(&self) -> &str {
        &self.normalized[..self.nameplate_len]
    }

    /// The relay room for this phrase (depends on the nameplate only).
    pub fn room_id(&self) -> RoomId {
        RoomId::for_nameplate(self.nameplate())
    }

    /// The PAKE password: the whole normalized phrase.
    pub fn password(&self) -> &[u8] {
        self.normalized.as_bytes()
    }

    fn words(&self) -> Vec<&str> {
        self.normalized[self.nameplate_len..]
            .split('-')
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// The words as the list has them (a hyphenated list word such as
    /// `t-shirt` is one), each with whether it is on the list.
    fn words_as_listed(&self) -> Vec<(String, bool)> {
        let words = self.words();
        let mut out = Vec::with_capacity(words.len());
        let mut i = 0;
        while i < words.len() {
            // The list has four hyphenated words ("t-shirt"): try the pair first.
            if i + 1 < words.len() {
                let pair = format!("{}-{}", words[i], words[i + 1]);
                if wordlist::contains(&pair) {
                    out.push((pair, true));
                    i += 2;
                    continue;
                }
            }
            out.push((words[i].to_owned(), wordlist::contains(words[i])));
            i += 1;
        }
        out
    }

    /// How many words follow the number.
    pub fn word_count(&self) -> usize {
        self.words_as_listed().len()
    }

    /// The words that are not on the list (a code the sender chose, or a
    /// typo).
    pub fn unlisted_words(&self) -> Vec<String> {
        self.words_as_listed()
            .into_iter()
            .filter(|(_, listed)| !listed)
            .map(|(w, _)| w)
            .collect()
    }

    /// Estimated entropy of the words in bits: 12.9 per wordlist word, 2 per
    /// letter of any other word. The nameplate is public and counts nothing.
    pub fn strength_bits(&self) -> f64 {
        self.words_as_listed()
            .iter()
            .map(|(word, listed)| match listed {
                true => WORDLIST_WORD_BITS,
                false => OTHER_WORD_BITS_PER_CHAR * word.len() as f64,
            })
            .sum()
    }

    /// Whether the phrase is easier to guess than a generated one.
    pub fn is_weaker_than_generated(&self) -> bool {
        self.strength_bits() < WORDLIST_WORD_BITS * DEFAULT_WORDS as f64 - 1e-9
    }
}

impl CodePhrase {
    /// Words of the phrase that are not on the list but are one or two
    /// edits from a word that is, with that word: likely typos.
    pub fn suggestions(&self) -> Vec<(String, &'static str)> {
        self.words()
            .into_iter()
            .filter(|w| !wordlist::contains(w))
            .filter_map(|w| Some((w.to_owned(), nearest_word(w)?)))
            .collect()
    }
}

/// The list word `typed` most likely meant, if one stands out: a word left
/// unfinished (a prefix of exactly one list word), else the only word
/// within two edits (a swap of neighbouring letters is one edit), or among
/// several equally near, the only one of the same length that starts with
/// the same letter. A wrong suggestion spends the sender's one try when
/// accepted, so none is better than a guess.
fn nearest_word(typed: &str) -> Option<&'static str> {
    if let [only] = wordlist::starting_with(typed) {
        return Some(only);
    }
    let mut best = usize::MAX;
    let mut nearest: Vec<&'static str> = Vec::new();
    for candidate in wordlist() {
        let d = edit_distance(typed, candidate);
        if d < best {
            best = d;
            nearest.clear();
        }
        if d == best {
            nearest.push(candidate);
        }
    }
    if best > 2 || best >= typed.len() {
        return None;
    }
    match nearest[..] {
        [only] => Some(only),
        _ => {
            let first = typed.bytes().next();
            let mut alike = nearest
                .iter()
                .filter(|w| w.len() == typed.len() && w.bytes().next() == first);
            match (alike.next(), alike.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    }
}

/// Edit distance between two short ASCII words, counting a swap of two
/// neighbouring letters as one edit (optimal string alignment): the
/// commonest typo is a transposition.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // Rows i-2, i-1 and i of the table.
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 0..a.len() {
        let mut cur = vec![i + 1; b.len() + 1];
        for j in 0..b.len() {
            let mut d = (prev[j] + usize::from(a[i] != b[j]))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                d = d.min(before[j - 1] + 1);
            }
            cur[j + 1] = d;
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

impl std::fmt::Debug for CodePhrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodePhrase({}-…)", self.nameplate())
    }
}

/// Uniform integer in `0..n` by rejection sampling (no modulo bias).
fn uniform(rng: &mut impl RngCore, n: u32) -> u32 {
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let v = rng.next_u32();
        if v < zone {
            return v % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn generated_phrase_has_four_digits_and_three_list_words() {
        for _ in 0..100 {
            let code = CodePhrase::generate(&mut OsRng, DEFAULT_WORDS);
            let parsed = CodePhrase::parse(code.as_str()).unwrap();
            assert_eq!(parsed.as_str(), code.as_str());
            assert_eq!(code.nameplate().len(), 4);
            assert!(code.nameplate().bytes().all(|b| b.is_ascii_digit()));
            assert!(!code.is_weaker_than_generated(), "{}", code.as_str());
            assert!(code.strength_bits() >= 38.7);
        }
    }

    #[test]
    fn parse_normalizes_case_and_separators() {
        let code = CodePhrase::parse("  0042 Alpha--BRAVO  charlie ").unwrap();
        assert_eq!(code.as_str(), "0042-alpha-bravo-charlie");
        assert_eq!(code.nameplate(), "0042");
    }

    #[test]
    fn parse_rejects_malformed_phrases() {
        assert_eq!(
            CodePhrase::parse("alpha-bravo").unwrap_err(),
            CodeError::MissingNameplate
        );
        assert_eq!(
            CodePhrase::parse("").unwrap_err(),
            CodeError::MissingNameplate
        );
        assert_eq!(
            CodePhrase::parse("1234").unwrap_err(),
            CodeError::MissingWords
        );
        assert_eq!(
            CodePhrase::parse("12345678901-a").unwrap_err(),
            CodeError::NameplateTooLong
        );
        assert!(matches!(
            CodePhrase::parse("12-héllo").unwrap_err(),
            CodeError::InvalidWord(_)
        ));
        let many = format!("1{}", "-a".repeat(MAX_WORDS + 1));
        assert_eq!(
            CodePhrase::parse(&many).unwrap_err(),
            CodeError::TooManyWords
        );
    }

    #[test]
    fn custom_phrases_get_a_strength_estimate() {
        assert!(CodePhrase::parse("7-cat")
            .unwrap()
            .is_weaker_than_generated());
        assert!(CodePhrase::parse("7-abacus-zoom")
            .unwrap()
            .is_weaker_than_generated());
        assert!(!CodePhrase::parse("7-abacus-zoom-yo-yo")
            .unwrap()
            .is_weaker_than_generated());
        // 24 letters of non-list words: 48 bits.
        assert!(!CodePhrase::parse("7-qwertyuiopasdfghjklzxcvb")
            .unwrap()
            .is_weaker_than_generated());
    }

    #[test]
    fn words_are_counted_and_unlisted_ones_named_as_the_list_has_them() {
        let code = CodePhrase::parse("7-abacus-t-shirt-qwerty").unwrap();
        assert_eq!(code.word_count(), 3, "t-shirt is one word");
        assert_eq!(code.unlisted_words(), ["qwerty"]);
        let code = CodePhrase::parse("7 Abacus zoom").unwrap();
        assert_eq!(code.word_count(), 2);
        assert!(code.unlisted_words().is_empty());
    }

    #[test]
    fn typos_get_the_nearest_list_word() {
        let code = CodePhrase::parse("12-abacsu-zoom-qqqqqqqqqq").unwrap();
        assert_eq!(code.suggestions(), [("abacsu".to_string(), "abacus")]);
        assert!(CodePhrase::parse("12-abacus-zoom")
            .unwrap()
            .suggestions()
            .is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        // Swapped letters are one edit, and meant what they look like
        // (plain Levenshtein suggested "coke", "copier" and "idly").
        assert_eq!(edit_distance("eovke", "evoke"), 1);
        for (typed, meant) in [("eovke", "evoke"), ("umpier", "umpire"), ("tidla", "tidal")] {
            let code = CodePhrase::parse(&format!("12-{typed}-zoom-yodel")).unwrap();
            assert_eq!(code.suggestions(), [(typed.to_string(), meant)]);
        }
        // An unfinished word with one completion is completed; with
        // several, and no one nearest, nothing is guessed.
        assert_eq!(nearest_word("idealn"), Some("idealness"));
        assert_eq!(nearest_word("unc"), None);
    }

    #[test]
    fn an_allocated_nameplate_replaces_the_digits_and_keeps_the_words() {
        let code = CodePhrase::parse("4242-abacus-zoom").unwrap();
        let moved = code.with_nameplate("7").unwrap();
        assert_eq!(moved.as_str(), "7-abacus-zoom");
        assert_eq!(moved.room_id(), RoomId::for_nameplate("7"));
        assert_eq!(
            moved.password(),
            b"7-abacus-zoom",
            "the PAKE password is the whole phrase"
        );
        for bad in ["", "7a", "-7", "12345678901"] {
            assert!(code.with_nameplate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_relays_number_has_a_local_room_of_its_own_per_relay() {
        let on_a = RoomId::for_nameplate_on("1", "a.example:9009");
        assert_ne!(on_a, RoomId::for_nameplate("1"));
        assert_ne!(on_a, RoomId::for_nameplate_on("1", "b.example:9009"));
        assert_ne!(on_a, RoomId::for_nameplate_on("12", "a.example:9009"));
        // The separator keeps "1" on "2x" apart from "12" on "x".
        assert_ne!(
            RoomId::for_nameplate_on("1", "2x"),
            RoomId::for_nameplate_on("12", "x")
        );
        assert_eq!(on_a, RoomId::for_nameplate_on("1", "a.example:9009"));
    }

    #[test]
    fn room_id_depends_on_the_nameplate_only() {
        let a = CodePhrase::parse("4242-alpha-bravo-charlie").unwrap();
        let b = CodePhrase::parse("4242-delta-echo-foxtrot").unwrap();
        let c = CodePhrase::parse("4243-alpha-bravo-charlie").unwrap();
        assert_eq!(a.room_id(), b.room_id());
        assert_ne!(a.room_id(), c.room_id());
        assert_eq!(a.room_id(), RoomId::for_nameplate("4242"));
    }
}
