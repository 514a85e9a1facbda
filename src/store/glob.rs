//! Redis's glob patterns (`KEYS`, `SCAN MATCH`): `*`, `?`, `[abc]`, `[^a-z]`,
//! and `\` escapes, with Redis's quirks (reversed ranges, an unterminated
//! class ends at the end of the pattern).
//!
//! Unlike Redis's recursive matcher this one backtracks only to the last `*`,
//! so a hostile pattern like `*a*a*a*a*b` costs O(pattern × key), never
//! exponential time.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    AnyByte,
    Byte(u8),
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassItem {
    Byte(u8),
    Range(u8, u8),
}

/// A compiled pattern; compile once per command, match many keys.
#[derive(Debug, Clone)]
pub struct Glob {
    tokens: Vec<Token>,
    match_all: bool,
}

impl Glob {
    pub fn new(pattern: &[u8]) -> Self {
        let tokens = tokenize(pattern);
        let match_all = !tokens.is_empty() && tokens.iter().all(|t| *t == Token::Star);
        Self { tokens, match_all }
    }

    pub fn matches(&self, text: &[u8]) -> bool {
        if self.match_all {
            return true;
        }
        let tokens = &self.tokens;
        let (mut t, mut s) = (0usize, 0usize);
        // Token index after the last star seen, and where in `text` it resumes.
        let mut backtrack: Option<(usize, usize)> = None;
        while s < text.len() {
            match tokens.get(t) {
                Some(Token::Star) => {
                    t += 1;
                    backtrack = Some((t, s));
                    continue;
                }
                Some(token) if single_matches(token, text[s]) => {
                    t += 1;
                    s += 1;
                    continue;
                }
                _ => {}
            }
            match backtrack {
                Some((star_t, star_s)) => {
                    t = star_t;
                    s = star_s + 1;
                    backtrack = Some((star_t, star_s + 1));
                }
                None => return false,
            }
        }
        tokens[t..].iter().all(|tok| *tok == Token::Star)
    }
}

fn single_matches(token: &Token, byte: u8) -> bool {
    match token {
        Token::Star => false,
        Token::AnyByte => true,
        Token::Byte(b) => *b == byte,
        Token::Class { negated, items } => {
            let hit = items.iter().any(|item| match *item {
                ClassItem::Byte(b) => b == byte,
                ClassItem::Range(lo, hi) => lo <= byte && byte <= hi,
            });
            hit != *negated
        }
    }
}

fn tokenize(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => {
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
                i += 1;
            }
            b'?' => {
                tokens.push(Token::AnyByte);
                i += 1;
            }
            b'\\' if i + 1 < pattern.len() => {
                tokens.push(Token::Byte(pattern[i + 1]));
                i += 2;
            }
            b'[' => {
                i += 1;
                let negated = pattern.get(i) == Some(&b'^');
                if negated {
                    i += 1;
                }
                let mut items = Vec::new();
                while i < pattern.len() && pattern[i] != b']' {
                    if pattern[i] == b'\\' && i + 1 < pattern.len() {
                        items.push(ClassItem::Byte(pattern[i + 1]));
                        i += 2;
                    } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                        let (a, b) = (pattern[i], pattern[i + 2]);
                        items.push(ClassItem::Range(a.min(b), a.max(b)));
                        i += 3;
                    } else {
                        items.push(ClassItem::Byte(pattern[i]));
                        i += 1;
                    }
                }
                i += 1; // the closing ']' (or past the end)
                tokens.push(Token::Class { negated, items });
            }
            b => {
                tokens.push(Token::Byte(b));
                i += 1;
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p.as_bytes()).matches(s.as_bytes())
    }

    #[test]
    fn redis_documented_examples() {
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && m("h?llo", "hxllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hello") && m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && m("h[^e]llo", "hbllo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hallo") && m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
    }

    #[test]
    fn escapes_ranges_and_stars() {
        assert!(m("h\\*llo", "h*llo") && !m("h\\*llo", "hello"));
        assert!(m("[z-a]", "m"), "reversed ranges are swapped as Redis does");
        assert!(m("*", "") && m("**", "anything") && m("a*", "a"));
        assert!(!m("a", "") && !m("", "a") && m("", ""));
        assert!(m("*a*b", "xxaxxb") && !m("*a*b", "xxbxxa"));
        assert!(
            m("[abc", "b"),
            "an unterminated class ends at the pattern's end"
        );
        assert!(m("a[\\]]b", "a]b"));
    }

    #[test]
    fn hostile_patterns_do_not_backtrack_exponentially() {
        let key = "a".repeat(10_000);
        assert!(m(&"*a".repeat(50), &key));
        assert!(!m("*a*a*a*a*a*a*a*a*a*b", &key));
    }
}
