//! A command's arguments, borrowed from the session's buffers, and the
//! errors handlers answer with (Redis's texts).

use std::borrow::Cow;

use crate::resp::parse_i64;

/// A command's arguments (`args.get(0)` is the command name), borrowed from
/// the connection's buffers.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    base: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    pub fn new(base: &'a [u8], ranges: &'a [(usize, usize)]) -> Self {
        Self { base, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i`; callers index within the arity checked by dispatch.
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (start, end) = self.ranges[i];
        &self.base[start..end]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        self.ranges.iter().map(|&(s, e)| &self.base[s..e])
    }

    /// Arguments from `i` on.
    pub fn from(&self, i: usize) -> Args<'a> {
        Args {
            base: self.base,
            ranges: &self.ranges[i.min(self.ranges.len())..],
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, CmdError> {
        parse_i64(self.get(i)).ok_or(CmdError::NOT_INTEGER)
    }

    /// Whether argument `i` equals `word`, ignoring ASCII case.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// An error reply, with its code (`ERR …`, `WRONGTYPE …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError(pub Cow<'static, str>);

impl CmdError {
    pub const SYNTAX: Self = Self::fixed("ERR syntax error");
    pub const NOT_INTEGER: Self = Self::fixed("ERR value is not an integer or out of range");
    pub const NOT_FLOAT: Self = Self::fixed("ERR value is not a valid float");
    pub const NO_SUCH_KEY: Self = Self::fixed("ERR no such key");
    pub const DB_RANGE: Self = Self::fixed("ERR DB index is out of range");
    pub const OVERFLOW: Self = Self::fixed("ERR increment or decrement would overflow");
    /// Redis 7's reply, word for word, to a write refused by `noeviction`
    /// (or when no key is left to evict).
    pub const OOM: Self = Self::fixed("OOM command not allowed when used memory > 'maxmemory'.");
    pub const WRONG_TYPE: Self =
        Self::fixed("WRONGTYPE Operation against a key holding the wrong kind of value");

    pub const fn fixed(msg: &'static str) -> Self {
        Self(Cow::Borrowed(msg))
    }

    pub fn new(msg: String) -> Self {
        Self(Cow::Owned(msg))
    }

    pub fn wrong_arity(name: &str) -> Self {
        Self::new(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }

    pub fn invalid_expire(name: &str) -> Self {
        Self::new(format!("ERR invalid expire time in '{name}' command"))
    }

    pub fn unknown_subcommand(sub: &[u8], parent: &str) -> Self {
        Self::new(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            truncate(sub, 128),
            parent.to_ascii_uppercase()
        ))
    }
}

pub type CmdResult = Result<(), CmdError>;

pub(super) fn truncate(bytes: &[u8], max: usize) -> Cow<'_, str> {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)])
}

/// Checks a subcommand's arity, Redis-style (`'client|setname'`).
pub fn sub_arity(args: &Args<'_>, parent: &str, sub: &str, arity: i32) -> CmdResult {
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || n < -arity {
        return Err(CmdError::wrong_arity(&format!("{parent}|{sub}")));
    }
    Ok(())
}

/// A HSCAN/SSCAN cursor as Redis's strtoul reads it: optional sign,
/// digits only, no leading space, no overflow (shared by both families).
pub(crate) fn parse_cursor(bytes: &[u8]) -> Option<u64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        // strtoul converts nothing and leaves its end at the start: only
        // the empty string ends there.
        return bytes.is_empty().then_some(0);
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative { v.wrapping_neg() } else { v })
}
