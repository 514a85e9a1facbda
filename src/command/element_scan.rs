//! HSCAN and SSCAN's shared part: their options and one step over a
//! hash's fields or a set's members.
//!
//! The cursor counts the positions still to visit, walked from the end
//! down: a table's removal moves its last element into the hole, from the
//! visited part into the unvisited one, and a packed value's removal
//! shifts only later (visited) elements down, so an element present
//! throughout is returned at least once either way. A packed value is
//! returned whole in one step, in its order, as Redis returns a listpack
//! or an intset whatever the cursor and COUNT.

use super::args::{Args, CmdError};
use crate::store::Glob;
use crate::store::value::{Elem, Elements};

/// MATCH and COUNT, from argument 3 on.
pub fn options(args: &Args<'_>) -> Result<(Option<Glob>, usize), CmdError> {
    let (mut pattern, mut count) = (None, 10usize);
    let mut i = 3;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(CmdError::SYNTAX);
        }
        if args.is(i, "COUNT") {
            let n = args.int(i + 1)?;
            if n < 1 {
                return Err(CmdError::SYNTAX);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if args.is(i, "MATCH") {
            let p = args.get(i + 1);
            pattern = (p != b"*").then(|| Glob::new(p));
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 2;
    }
    Ok((pattern, count))
}

/// One step from `cursor`: the next cursor and the elements matching
/// `pattern`.
pub fn step<'e>(
    elements: &'e Elements,
    cursor: u64,
    count: usize,
    pattern: Option<&Glob>,
) -> (usize, Vec<(&'e [u8], Elem<'e>)>) {
    let matching = |(name, _): &(&[u8], Elem<'_>)| pattern.is_none_or(|p| p.matches(name));
    if elements.is_packed() {
        return (0, elements.iter().filter(matching).collect());
    }
    let len = elements.len();
    let from = match cursor {
        0 => len,
        c => usize::try_from(c).unwrap_or(usize::MAX).min(len),
    };
    let next = from.saturating_sub(count);
    let found = (next..from)
        .rev()
        .filter_map(|i| elements.get_index(i))
        .filter(matching)
        .collect();
    (next, found)
}
