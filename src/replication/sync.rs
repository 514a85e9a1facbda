//! Anti-entropy's data side: what to compare and what to send, computed from
//! the digest tree and the store, and how entries from a peer are applied.
//! The sessions (`super::session`) decide when; nothing here keeps state
//! between calls, does I/O or reads a clock (the time is a parameter).

use std::collections::HashMap;

use super::wire::{KeyVersion, UpdatesRef, Want, WireEntry, WireEntryRef};
use crate::clock::Version;
use crate::store::digest::{FANOUT, LEAVES};
use crate::store::value::Typed;
use crate::store::value::buckets::{self, Buckets};
use crate::store::{Entry, Store};

pub const GROUPS: usize = LEAVES / FANOUT;

pub fn inner_hashes(store: &Store) -> Vec<u64> {
    (0..GROUPS).map(|g| store.digest_tree().inner(g)).collect()
}

pub fn leaf_hashes(store: &Store, group: usize) -> Vec<u64> {
    (group * FANOUT..(group + 1) * FANOUT)
        .map(|leaf| store.digest_tree().leaf(leaf))
        .collect()
}

/// Inner nodes whose hashes differ.
pub fn differing_groups(store: &Store, theirs: &[u64]) -> Vec<u16> {
    inner_hashes(store)
        .iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (mine, theirs))| mine != theirs)
        .map(|(g, _)| g as u16)
        .collect()
}

/// Responder: from the initiator's leaf hashes, the leaves that differ,
/// split into those the initiator holds nothing in (send whole entries) and
/// the rest (send a summary).
pub fn differing_leaves(store: &Store, groups: &[(u16, Vec<u64>)]) -> (Vec<u16>, Vec<u16>) {
    let (mut empty_there, mut summarize) = (Vec::new(), Vec::new());
    for (group, theirs) in groups {
        let group = usize::from(*group);
        if group >= GROUPS || theirs.len() != FANOUT {
            continue;
        }
        for (i, their_hash) in theirs.iter().enumerate() {
            let leaf = group * FANOUT + i;
            if store.digest_tree().leaf(leaf) != *their_hash {
                if *their_hash == 0 {
                    empty_there.push(leaf as u16);
                } else {
                    summarize.push(leaf as u16);
                }
            }
        }
    }
    (empty_there, summarize)
}

/// Fragments of a typed value per wire entry: bounds a large key's
/// repair frames (a 1,000,000-field hash goes in pieces, each a valid
/// state on its own).
pub const TYPED_CHUNK: usize = 512;

/// What the other side holds of a key (from its summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub version: Version,
    pub live: bool,
    /// A typed value's content digest, 0 for a plain entry.
    pub content: u64,
    /// A large typed value's element bucket digests (see
    /// [`KeyVersion::buckets`]).
    pub buckets: Vec<u64>,
}

/// An entry as wire entries: one for a plain entry, one per chunk of a
/// typed value (element tombstones older than `recent_since_ms` left
/// out, as key tombstones are by [`worth_sending`]).
pub fn to_wire(e: &Entry, recent_since_ms: u64) -> Vec<WireEntry> {
    to_wire_of(e, recent_since_ms, None)
}

/// [`to_wire`] restricted to some element buckets of a typed value.
fn to_wire_of(e: &Entry, recent_since_ms: u64, only: Option<&Buckets>) -> Vec<WireEntry> {
    if let Some(typed) = e.typed() {
        return typed
            .fragments_of(TYPED_CHUNK, recent_since_ms, only)
            .into_iter()
            .map(|f| WireEntry {
                key: e.key().to_vec(),
                value: None,
                expires_at: 0,
                version: f.newest(),
                typed: Some(serde_bytes::ByteBuf::from(f.encode().into_vec())),
            })
            .collect();
    }
    vec![WireEntry {
        key: e.key().to_vec(),
        value: e
            .is_live()
            .then(|| serde_bytes::ByteBuf::from(e.value().to_vec())),
        expires_at: if e.is_live() { e.expires_at } else { 0 },
        version: e.version,
        typed: None,
    }]
}

/// A typed entry's content digest (0 for a plain one), as summaries
/// carry it.
fn content_of(e: &Entry) -> u64 {
    e.typed().map_or(0, Typed::stored_digest)
}

/// Whether a tombstone is worth handing to a peer that holds nothing for
/// its key. A recent one is: that peer may still receive the deleted value
/// late (a push delayed behind this reconciliation) and must be able to
/// refuse it. An old one is not: every node has long reconciled since, and
/// handing it back to a node that already collected it would only undo the
/// collection, round after round.
pub fn worth_sending(e: &Entry, recent_since_ms: u64) -> bool {
    e.is_live() || e.typed().is_some() || e.version.millis() >= recent_since_ms
}

/// Every entry in `leaves` worth sending to a peer that holds nothing
/// there.
pub fn entries_in(store: &Store, leaves: &[u16], recent_since_ms: u64) -> Vec<WireEntry> {
    let mut out = Vec::new();
    store.for_each_entry_in_leaves(leaves, |e| {
        if worth_sending(e, recent_since_ms) {
            out.extend(to_wire(e, recent_since_ms));
        }
    });
    out
}

/// Key versions of every entry in `leaves`.
pub fn summary_of(store: &Store, leaves: &[u16]) -> Vec<KeyVersion> {
    let mut out = Vec::new();
    store.for_each_entry_in_leaves(leaves, |e| {
        let buckets = e.typed().map_or_else(Vec::new, |t| {
            match buckets::bucket_count(t.element_total(), TYPED_CHUNK) {
                0 => Vec::new(),
                count => t.bucket_digests(count),
            }
        });
        out.push(KeyVersion {
            key: e.key().to_vec(),
            version: e.version,
            live: e.is_live(),
            content: content_of(e),
            buckets,
        });
    });
    out
}

/// The buckets of our typed value `e` that differ from the peer's
/// `held`, when it sent bucket digests we can compare with.
fn differing_buckets(e: &Entry, held: &Held) -> Option<Buckets> {
    let t = e.typed()?;
    buckets::valid_count(held.buckets.len()).then(|| t.differing_buckets(&held.buckets))
}

impl Want {
    fn whole(key: &[u8]) -> Self {
        Want {
            key: serde_bytes::ByteBuf::from(key.to_vec()),
            buckets: 0,
            which: Vec::new(),
        }
    }

    fn of(key: &[u8], only: Option<&Buckets>) -> Self {
        let mut want = Want::whole(key);
        if let Some(b) = only {
            want.buckets = b.count as u32;
            want.which = b.indices().map(|i| i as u16).collect();
        }
        want
    }

    /// The buckets asked for, None for the whole entry (or a count no
    /// node sends).
    fn only(&self) -> Option<Buckets> {
        let count = self.buckets as usize;
        buckets::valid_count(count)
            .then(|| Buckets::new(count, self.which.iter().map(|&i| usize::from(i))))
    }
}

/// Initiator: given the responder's summary of `leaves`, the keys to ask
/// for (theirs is newer) and our entries to push (ours is newer). A
/// tombstone for a key the other side lacks goes only while it is recent
/// (see [`worth_sending`]). Typed values are not ordered by version: when
/// either side's is typed and their contents differ, each side sends its
/// value and both join them.
pub fn plan(
    store: &Store,
    leaves: &[u16],
    theirs: &HashMap<Vec<u8>, Held>,
    recent_since_ms: u64,
) -> (Vec<Want>, Vec<WireEntry>) {
    let mut ours_seen = std::collections::HashSet::new();
    let mut push = Vec::new();
    let mut want = Vec::new();
    store.for_each_entry_in_leaves(leaves, |e| {
        let content = content_of(e);
        ours_seen.insert(e.key().to_vec());
        match theirs.get(e.key()) {
            // Both send what differs: the buckets that differ of a large
            // typed value, else the whole value.
            Some(held) if (content != 0 || held.content != 0) && content == held.content => {}
            Some(held) if content != 0 || held.content != 0 => {
                let only = differing_buckets(e, held);
                push.extend(to_wire_of(e, recent_since_ms, only.as_ref()));
                want.push(Want::of(e.key(), only.as_ref()));
            }
            Some(held) if held.version < e.version => push.extend(to_wire(e, recent_since_ms)),
            Some(held) if e.version < held.version => want.push(Want::whole(e.key())),
            Some(_) => {}
            None if worth_sending(e, recent_since_ms) => push.extend(to_wire(e, recent_since_ms)),
            None => {}
        }
    });
    want.extend(
        theirs
            .iter()
            .filter(|(key, held)| {
                !ours_seen.contains(*key)
                    && (held.live || held.content != 0 || held.version.millis() >= recent_since_ms)
            })
            .map(|(key, _)| Want::whole(key)),
    );
    (want, push)
}

/// Our entries for `keys` (what a peer asked for).
pub fn entries_for(store: &Store, wants: &[Want], now_ms: u64) -> Vec<WireEntry> {
    let mut out = Vec::new();
    for want in wants {
        let only = want.only();
        store.with_key_untouched(&want.key, now_ms, |k| {
            if let Some(e) = k.entry() {
                out.extend(to_wire_of(e, 0, only.as_ref()));
            }
        });
    }
    out
}

/// Applies entries from a peer and returns, for those it refused because we
/// hold something newer, our entries: the peer needs them (this is how a
/// delete reaches a peer that sent us whole buckets we hold only
/// tombstones in). Typed values are joined, never refused: the initiator
/// asked for ours when it sent its own.
pub fn apply_and_rebut(
    store: &Store,
    entries: &[WireEntry],
    now_ms: u64,
) -> (usize, Vec<WireEntry>) {
    let mut applied = 0;
    let mut ours = Vec::new();
    for e in entries {
        store.with_key(&e.key, now_ms, |k| {
            if apply_one(k, e.borrowed()) {
                applied += 1;
            } else if e.typed.is_none()
                && let Some(mine) = k
                    .entry()
                    .filter(|m| m.version > e.version && m.typed().is_none())
            {
                ours.extend(to_wire(mine, 0));
            }
        });
    }
    store.after_peer_writes(applied, now_ms);
    (applied, ours)
}

/// Applies one peer entry under the merge rules: a typed fragment is
/// decoded and joined (refused and counted if it is not well formed), a
/// plain one by its version. Returns whether it took effect.
fn apply_one(k: &mut crate::store::KeyAccess<'_>, e: WireEntryRef<'_>) -> bool {
    match e.typed {
        Some(bytes) => match k.apply_fragment(bytes) {
            Ok(changed) => changed,
            Err(error) => {
                k.refused_fragment();
                tracing::debug!(%error, "refused a peer's typed value");
                false
            }
        },
        None => k.apply(e.value, e.expires_at, e.version),
    }
}

/// Applies a batch a peer pushed: its FLUSHALL markers, then its entries,
/// straight from the frame they arrived in; returns how many entries took
/// effect.
pub fn apply_updates(store: &Store, updates: UpdatesRef<'_>, now_ms: u64) -> usize {
    for &marker in &updates.truncates {
        store.truncate(marker);
    }
    apply(store, updates.entries, now_ms)
}

/// Applies entries from a peer under the conflict rule; returns how many
/// took effect.
pub fn apply<'a>(
    store: &Store,
    entries: impl IntoIterator<Item = WireEntryRef<'a>>,
    now_ms: u64,
) -> usize {
    let applied = entries
        .into_iter()
        .filter(|e| store.with_key(e.key, now_ms, |k| apply_one(k, *e)))
        .count();
    // Never refused for maxmemory: applied, then room is made (evict.rs).
    store.after_peer_writes(applied, now_ms);
    applied
}
