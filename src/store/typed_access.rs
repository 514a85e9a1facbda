//! Key access for typed values: the type a key has, the string a counter
//! reads as, typed writes that publish their delta, and peers' fragments.
//! Plain string keys never come here unless a typed write reaches them.

use std::borrow::Cow;

use super::changelog::Cause;
use super::entry::{Entry, NO_EXPIRY, SlotState};
use super::evict::lru_clock;
use super::value::{Fragment, FragmentError, Kind, StringRegister, Typed};
use super::{Expiry, KeyAccess};
use crate::clock::Version;

/// The key holds another type than the command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

impl KeyAccess<'_> {
    /// The key's entry, live or tombstone (the replication layer sends
    /// it as it is).
    pub fn entry(&self) -> Option<&Entry> {
        self.slot.map(|i| self.shard.slab.get(i))
    }

    /// Counts a peer's typed value that was refused (INFO).
    pub fn refused_fragment(&self) {
        self.store
            .stats
            .refused_fragments
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The key's type as TYPE names it; None when it does not exist.
    pub fn kind(&self) -> Option<Kind> {
        self.entry().and_then(Entry::kind)
    }

    /// The live typed value, if the key holds one.
    pub fn typed(&self) -> Option<&Typed> {
        self.entry().filter(|e| e.is_live()).and_then(Entry::typed)
    }

    /// The key's value as string commands see it: the bytes of a plain
    /// string, or what a counter reads as. WRONGTYPE for other types.
    pub fn string(&self) -> Result<Option<Cow<'_, [u8]>>, WrongType> {
        let Some(e) = self.entry().filter(|e| e.is_live()) else {
            return Ok(None);
        };
        let Some(t) = e.typed() else {
            return Ok(Some(Cow::Borrowed(e.value())));
        };
        match e.kind() {
            Some(Kind::String) => Ok(t.string.as_ref().and_then(|r| r.value()).map(Cow::Owned)),
            Some(_) => Err(WrongType),
            None => Ok(None),
        }
    }

    /// Fails with [`WrongType`] unless the key is missing or of `kind`.
    pub fn expect(&self, kind: Kind) -> Result<(), WrongType> {
        match self.kind() {
            Some(k) if k != kind => Err(WrongType),
            _ => Ok(()),
        }
    }

    /// A typed write: `f` changes the key's value (created empty when
    /// missing, converted when a plain string) with this write's version
    /// and returns what it changed as a fragment, which is published as
    /// the write's delta; None when nothing changed (nothing published).
    pub fn write_typed<R>(
        &mut self,
        f: impl FnOnce(&mut Typed, Version, u64) -> (R, Option<Fragment>),
    ) -> R {
        let version = self.store.clock.hlc().tick_at(self.now_ms);
        self.write_typed_at(version, f)
    }

    /// [`KeyAccess::write_typed`] with a version the caller took.
    pub fn write_typed_at<R>(
        &mut self,
        version: Version,
        f: impl FnOnce(&mut Typed, Version, u64) -> (R, Option<Fragment>),
    ) -> R {
        let was_live = self.kind().is_some();
        let slot = self.ensure_slot();
        let now_ms = self.now_ms;
        let (out, fragment) = self
            .shard
            .update_typed(slot, self.hashes.digest, now_ms, |value| {
                let (out, mut fragment) = f(value, version, now_ms);
                if was_live && value.expires_at != NO_EXPIRY && value.kind().is_none() {
                    // The write emptied the key (HDEL, SREM, SPOP…): it is
                    // gone as after a DEL, so a later write must not find
                    // its old TTL (the expiry register outlives elements).
                    value.expires_at = NO_EXPIRY;
                    value.expiry_version = version;
                    if let Some(f) = &mut fragment {
                        f.expires_at = NO_EXPIRY;
                        f.expiry_version = version;
                    }
                }
                (out, fragment)
            });
        if let Some(mut fragment) = fragment {
            fragment.dedup();
            self.shard
                .publish_fragment(&self.store.log, Cause::Local, slot, &fragment);
        }
        self.drop_placeholder();
        out
    }

    /// Removes the tombstone [`KeyAccess::ensure_slot`] placed when the
    /// write left nothing in it: it is no state a peer could hold.
    fn drop_placeholder(&mut self) {
        let Some(slot) = self.slot else { return };
        let e = self.shard.slab.get(slot);
        if e.state() == SlotState::Tombstone
            && e.typed().is_none()
            && e.version <= self.store.truncated()
        {
            self.shard.purge(slot, self.hashes.index);
            self.slot = None;
        }
    }

    /// The key's slot, placing a plain tombstone (older than anything) for
    /// a key the shard does not hold, for a typed write to fill.
    fn ensure_slot(&mut self) -> u32 {
        if let Some(slot) = self.slot {
            return slot;
        }
        let truncated = self.store.truncated();
        let mut entry = Entry::tombstone(self.key, truncated, self.now_ms);
        entry.touch(lru_clock(self.now_ms));
        let slot = self.shard.insert(self.store, self.hashes, entry);
        self.slot = Some(slot);
        slot
    }

    /// Applies a peer's typed fragment (encoded): refused, changing
    /// nothing, if it does not decode or is malformed. Returns whether
    /// the key changed.
    pub fn apply_fragment(&mut self, bytes: &[u8]) -> Result<bool, FragmentError> {
        let fragment = Fragment::decode(bytes)?;
        Ok(self.merge_fragment(&fragment, Cause::Replicated))
    }

    /// Joins a fragment into the key under the FLUSHALL marker.
    pub(super) fn merge_fragment(&mut self, fragment: &Fragment, cause: Cause) -> bool {
        self.store.clock.hlc().observe(fragment.newest());
        let truncated = self.store.truncated();
        let slot = self.ensure_slot();
        let now_ms = self.now_ms;
        let ((), changed) =
            self.shard
                .update_typed_reporting(slot, self.hashes.digest, now_ms, |value| {
                    if truncated > value.clear {
                        value.merge(
                            &Fragment {
                                clear: truncated,
                                ..Default::default()
                            },
                            now_ms,
                        );
                    }
                    value.merge(fragment, now_ms);
                });
        if changed {
            self.shard
                .publish_fragment(&self.store.log, cause, slot, fragment);
        }
        self.drop_placeholder();
        changed
    }

    /// A plain write (SET, DEL, EXPIRE) reaching a typed value: it
    /// replaces the value (clear marker plus new string), resetting the
    /// counters it observed; an EXPIRE changes only the expiry register.
    pub(super) fn write_over_typed(&mut self, write: PlainWrite<'_>, version: Version) {
        self.write_typed_at(version, |value, version, now_ms| {
            let fragment = match write {
                PlainWrite::Set(bytes, expiry) => {
                    let old_expiry = value.expires_at;
                    let mut f = value.clear_local(version, now_ms);
                    let mut register = value
                        .string
                        .take()
                        .unwrap_or_else(|| Box::new(StringRegister::new(version, None)));
                    register.overwrite(version, Some(bytes));
                    f.string = Some(register.to_form());
                    value.string = Some(register);
                    value.expiry_version = version;
                    value.expires_at = match expiry {
                        Expiry::Keep => old_expiry,
                        Expiry::Persist => NO_EXPIRY,
                        Expiry::At(t) => t,
                    };
                    f.expires_at = value.expires_at;
                    f.expiry_version = version;
                    f
                }
                PlainWrite::Delete => value.clear_local(version, now_ms),
                PlainWrite::Expire(at) => {
                    value.expires_at = at;
                    value.expiry_version = version;
                    Fragment {
                        clear: value.clear,
                        expires_at: at,
                        expiry_version: version,
                        ..Default::default()
                    }
                }
            };
            ((), Some(fragment))
        });
    }
}

/// A plain write that reached a typed value.
pub(super) enum PlainWrite<'a> {
    Set(&'a [u8], Expiry),
    Delete,
    Expire(u64),
}

/// What a typed key shows a client, detached from its versions: what
/// RENAME and COPY write at the destination, with one new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub kind: Kind,
    /// The string (a counter's sum), or the fields' / members' values
    /// (empty for members).
    pub string: Option<Vec<u8>>,
    pub elements: Vec<(Vec<u8>, Vec<u8>)>,
    pub expires_at: u64,
}

impl KeyAccess<'_> {
    /// The visible content of the key if it holds a typed value.
    pub fn typed_content(&self) -> Option<Content> {
        let t = self.typed()?;
        let kind = t.kind()?;
        let part = match kind {
            Kind::String => None,
            Kind::Hash => t.hash.as_ref(),
            Kind::Set => t.set.as_ref(),
        };
        let elements = part
            .map(|e| {
                e.iter()
                    .map(|(name, r)| {
                        (
                            name.to_vec(),
                            r.read().map(Cow::into_owned).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Content {
            kind,
            string: (kind == Kind::String)
                .then(|| t.string_value().map(Cow::into_owned))
                .flatten(),
            elements,
            expires_at: t.expires_at,
        })
    }

    /// Replaces the key's value with `content` at `version` (the
    /// destination of RENAME or COPY), with the content's expiry.
    pub fn write_content(&mut self, content: &Content, version: Version) {
        if content.kind == Kind::String {
            let bytes = content.string.clone().unwrap_or_default();
            let expiry = if content.expires_at == NO_EXPIRY {
                Expiry::Persist
            } else {
                Expiry::At(content.expires_at)
            };
            return self.set_at(&bytes, expiry, version);
        }
        self.write_typed_at(version, |value, version, now_ms| {
            let mut delta = value.clear_local(version, now_ms);
            for (name, v) in &content.elements {
                match content.kind {
                    Kind::Hash => value.hash_set(name, v, version, now_ms, &mut delta),
                    _ => value.set_add(name, version, now_ms, &mut delta),
                };
            }
            value.expires_at = content.expires_at;
            value.expiry_version = version;
            delta.expires_at = content.expires_at;
            delta.expiry_version = version;
            ((), Some(delta))
        });
    }
}

impl KeyAccess<'_> {
    /// Milliseconds since the key was last used (OBJECT IDLETIME), from
    /// its coarse access clock.
    pub fn idle_ms(&self) -> u64 {
        let Some(e) = self.entry() else { return 0 };
        let now = super::evict::lru_clock(self.now_ms);
        let ticks = if now >= e.lru() {
            now - e.lru()
        } else {
            now + (super::entry::LRU_MAX - e.lru())
        };
        u64::from(ticks) * super::evict::LRU_RESOLUTION_MS
    }
}
