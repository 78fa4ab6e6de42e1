//! The one rule for splitting a typed command line into words, shared by the
//! `distcache` command-line client's REPL and the proxy's RESP inline
//! commands (`SET k "a b"` typed into telnet), so a line means the same in
//! both.
//!
//! It is redis-cli's rule (Redis's `sdssplitargs`, which the Redis server
//! also applies to inline commands):
//!
//! - words are separated by ASCII whitespace;
//! - a word that starts with `"` runs to the closing `"`, with the escapes
//!   `\n`, `\r`, `\t`, `\b`, `\a`, `\xHH` (one byte in hex), and `\` before
//!   any other character standing for that character (`\"`, `\\`);
//! - a word that starts with `'` runs to the closing `'`, everything inside
//!   literal except `\'`;
//! - a closing quote must be followed by whitespace or the end of the line,
//!   and a quote left open is an error.
//!
//! One difference: a quote *inside* an unquoted word is an ordinary
//! character, so `set k {"a":1}` stores the JSON as typed (redis-cli opens
//! a quoted section there and refuses the line).
//!
//! Pure and byte-oriented: no I/O, no allocation beyond the words.

/// Why a line cannot be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A quoted word has no closing quote.
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
    /// A closing quote is followed by something other than whitespace.
    #[error("closing quote must be followed by a space")]
    TextAfterQuote,
}

/// Splits `line` into words by redis-cli's rule (see the module docs).
///
/// ```
/// use distcache::cli_words::{split, SplitError};
///
/// let words = split(br#"set "a b" 'it\'s' "x\ny" {"k":1}"#).unwrap();
/// assert_eq!(words, [&b"set"[..], b"a b", b"it's", b"x\ny", br#"{"k":1}"#]);
/// assert_eq!(split(b"get \"open"), Err(SplitError::UnbalancedQuotes));
/// ```
pub fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let Some(&first) = line.get(i) else {
            return Ok(words);
        };
        let mut word = Vec::new();
        match first {
            b'"' => i = double_quoted(line, i + 1, &mut word)?,
            b'\'' => i = single_quoted(line, i + 1, &mut word)?,
            _ => {
                while let Some(&c) = line.get(i).filter(|c| !c.is_ascii_whitespace()) {
                    word.push(c);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
}

/// Reads a `"…"` word whose content starts at `i`; returns the index past
/// the closing quote.
fn double_quoted(line: &[u8], mut i: usize, word: &mut Vec<u8>) -> Result<usize, SplitError> {
    loop {
        match *line.get(i).ok_or(SplitError::UnbalancedQuotes)? {
            b'"' => return after_quote(line, i + 1),
            b'\\' => {
                let escaped = *line.get(i + 1).ok_or(SplitError::UnbalancedQuotes)?;
                if escaped == b'x'
                    && let Some(byte) = hex_byte(line.get(i + 2..i + 4))
                {
                    word.push(byte);
                    i += 4;
                    continue;
                }
                word.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                i += 2;
            }
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// Reads a `'…'` word whose content starts at `i`; returns the index past
/// the closing quote.
fn single_quoted(line: &[u8], mut i: usize, word: &mut Vec<u8>) -> Result<usize, SplitError> {
    loop {
        match *line.get(i).ok_or(SplitError::UnbalancedQuotes)? {
            b'\\' if line.get(i + 1) == Some(&b'\'') => {
                word.push(b'\'');
                i += 2;
            }
            b'\'' => return after_quote(line, i + 1),
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// `i`, just past a closing quote, if whitespace or the end follows.
fn after_quote(line: &[u8], i: usize) -> Result<usize, SplitError> {
    match line.get(i) {
        Some(c) if !c.is_ascii_whitespace() => Err(SplitError::TextAfterQuote),
        _ => Ok(i),
    }
}

/// The byte two hex digits spell, if they are two hex digits.
fn hex_byte(digits: Option<&[u8]>) -> Option<u8> {
    let &[hi, lo] = digits? else {
        return None;
    };
    let digit = |c: u8| char::from(c).to_digit(16);
    u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(line: &str) -> Result<Vec<String>, SplitError> {
        split(line.as_bytes()).map(|w| {
            w.into_iter()
                .map(|w| String::from_utf8(w).expect("utf-8"))
                .collect()
        })
    }

    #[test]
    fn plain_words_are_split_on_any_whitespace() {
        assert_eq!(words("  get\tk \r\n").unwrap(), ["get", "k"]);
        assert_eq!(words("").unwrap(), Vec::<String>::new());
        assert_eq!(words(" \t ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn double_quotes_group_words_and_take_redis_cli_escapes() {
        assert_eq!(words(r#"set k "a b""#).unwrap(), ["set", "k", "a b"]);
        assert_eq!(words(r#""""#).unwrap(), [""]);
        assert_eq!(
            words(r#""l1\nl2\r\t" "\"q\" \\ \z""#).unwrap(),
            ["l1\nl2\r\t", "\"q\" \\ z"]
        );
        assert_eq!(split(br#""\x41\xff\x0""#).unwrap(), [b"A\xffx0".to_vec()]);
        assert_eq!(split(br#""\b\a""#).unwrap(), [vec![0x08, 0x07]]);
    }

    #[test]
    fn single_quotes_are_literal_but_for_an_escaped_quote() {
        assert_eq!(words(r"'x'").unwrap(), ["x"]);
        assert_eq!(words(r"'a \n b' 'it\'s'").unwrap(), [r"a \n b", "it's"]);
    }

    #[test]
    fn a_quote_inside_a_plain_word_is_kept() {
        assert_eq!(
            words(r#"set user:1 {"name":"Alice"} it's"#).unwrap(),
            ["set", "user:1", r#"{"name":"Alice"}"#, "it's"]
        );
    }

    #[test]
    fn unbalanced_quotes_and_text_after_a_closing_quote_are_errors() {
        for line in [r#"get "open"#, "get 'open", r#"get "end\"#, r#""a\""#] {
            assert_eq!(words(line), Err(SplitError::UnbalancedQuotes), "{line}");
        }
        for line in [r#""a"b"#, "'a'b", r#"set "k"" v"#] {
            assert_eq!(words(line), Err(SplitError::TextAfterQuote), "{line}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = split(&line);
        }

        #[test]
        fn double_quoting_any_bytes_round_trips(
            ws in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..5)
        ) {
            let line: Vec<u8> = ws
                .iter()
                .flat_map(|w| {
                    let mut q = vec![b' ', b'"'];
                    for b in w {
                        q.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                    }
                    q.push(b'"');
                    q
                })
                .collect();
            prop_assert_eq!(split(&line).unwrap(), ws);
        }
    }
}
