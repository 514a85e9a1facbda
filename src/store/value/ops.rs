//! Local element writes: what HSET, HDEL, HINCRBY, SADD, SREM, INCR… do
//! to a [`Typed`] value, each recording what it changed in the write's
//! delta [`Fragment`] (the only thing replicated). Every element a command
//! writes gets that command's version.

use std::borrow::Cow;

use rust_decimal::Decimal;

use super::register::{PartsSlot, Register, StringRegister};
use super::{Elements, Fragment, Typed};
use crate::clock::Version;

impl<P: PartsSlot> Register<P> {
    /// The value a reader sees, borrowed when it is the base as written.
    pub fn read(&self) -> Option<Cow<'_, [u8]>> {
        if self.counter.is_none() {
            return self.base.as_deref().map(Cow::Borrowed);
        }
        self.value().map(Cow::Owned)
    }
}

/// Which element part of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Hash,
    Set,
}

impl Typed {
    /// An empty delta: the clear marker and the expiry, which every
    /// fragment carries.
    pub fn delta(&self) -> Fragment {
        Fragment {
            clear: self.clear,
            expires_at: self.expires_at,
            expiry_version: self.expiry_version,
            ..Default::default()
        }
    }

    fn part_mut(&mut self, part: Part) -> (&mut Elements, u64) {
        match part {
            Part::Hash => (self.hash_mut(), Self::hash_salt()),
            Part::Set => (self.set_mut(), Self::set_salt()),
        }
    }

    /// Writes one element's base (a counter keeps its contributions and
    /// records what it reset); returns whether the element was absent.
    fn put_element(
        &mut self,
        part: Part,
        name: &[u8],
        value: Option<&[u8]>,
        version: Version,
        now_ms: u64,
        delta: &mut Fragment,
    ) -> bool {
        let (elements, salt) = self.part_mut(part);
        let mut was_absent = true;
        let mut written = None;
        elements.update(salt, name, now_ms, |old| {
            was_absent = old.is_none_or(|r| !r.is_visible());
            let r = match old {
                Some(old) => old.overwritten(version, value),
                None => Register::new(version, value),
            };
            written = Some(r.clone());
            Some(r)
        });
        if let Some(r) = written {
            let entry = (serde_bytes::ByteBuf::from(name.to_vec()), r);
            match part {
                Part::Hash => delta.hash.push(entry),
                Part::Set => delta.set.push(entry),
            }
        }
        self.drop_empty_parts();
        was_absent
    }

    fn drop_empty_parts(&mut self) {
        for part in [&mut self.hash, &mut self.set] {
            if part
                .as_ref()
                .is_some_and(|e| e.is_empty() && e.removed_len() == 0)
            {
                *part = None;
            }
        }
    }

    /// HSET of one field; returns whether the field is new.
    pub fn hash_set(
        &mut self,
        field: &[u8],
        value: &[u8],
        version: Version,
        now_ms: u64,
        delta: &mut Fragment,
    ) -> bool {
        self.put_element(Part::Hash, field, Some(value), version, now_ms, delta)
    }

    /// HDEL of one field; returns whether it existed (a missing field
    /// changes and replicates nothing: a remove removes only what it saw).
    pub fn hash_del(
        &mut self,
        field: &[u8],
        version: Version,
        now_ms: u64,
        delta: &mut Fragment,
    ) -> bool {
        if self.hash_field(field).is_none() {
            return false;
        }
        self.put_element(Part::Hash, field, None, version, now_ms, delta);
        true
    }

    /// A field's value, if it exists.
    pub fn hash_field(&self, field: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.hash.as_ref()?.get(field)?.read()
    }

    /// Adds `by` to a hash field's counter contribution from `node`.
    pub fn hash_incr(
        &mut self,
        field: &[u8],
        by: Decimal,
        node: u64,
        version: Version,
        now_ms: u64,
        delta: &mut Fragment,
    ) {
        let (elements, salt) = self.part_mut(Part::Hash);
        let mut written = None;
        elements.update(salt, field, now_ms, |old| {
            // A new field has no base (its value is the increments): a
            // base at this version would override an older HSET of it made
            // elsewhere that this node has not seen yet.
            let mut r = old
                .cloned()
                .unwrap_or_else(|| Register::new(Version::default(), None));
            r.increment(node, by, version);
            written = Some(r.contribution_of(node));
            Some(r)
        });
        if let Some(r) = written {
            delta
                .hash
                .push((serde_bytes::ByteBuf::from(field.to_vec()), r));
        }
    }

    /// SADD of one member; returns whether it was added.
    pub fn set_add(
        &mut self,
        member: &[u8],
        version: Version,
        now_ms: u64,
        delta: &mut Fragment,
    ) -> bool {
        if self.set_contains(member) {
            return false;
        }
        self.put_element(Part::Set, member, Some(b""), version, now_ms, delta)
    }

    /// SREM of one member; returns whether it was there.
    pub fn set_rem(
        &mut self,
        member: &[u8],
        version: Version,
        now_ms: u64,
        delta: &mut Fragment,
    ) -> bool {
        if !self.set_contains(member) {
            return false;
        }
        self.put_element(Part::Set, member, None, version, now_ms, delta);
        true
    }

    pub fn set_contains(&self, member: &[u8]) -> bool {
        self.set.as_ref().is_some_and(|s| s.get(member).is_some())
    }

    /// Adds `by` to the key's own counter (INCR family): the string
    /// register gains `node`'s contribution. A plain string base stays the
    /// base, so the value reads as base + increments.
    pub fn string_incr(&mut self, by: Decimal, node: u64, version: Version, delta: &mut Fragment) {
        let mut based = self.string.is_none();
        let r = self
            .string
            .get_or_insert_with(|| Box::new(StringRegister::new(version, Some(b"0"))));
        if r.base.is_none() && !r.is_visible() {
            // Incrementing a deleted counter starts from zero again: the
            // base "0" at this version keeps the key visible at 0, and
            // resets every contribution this node knows, as a SET 0 would
            // (none is visible here). Keeping the observations of the
            // base it replaces instead let an older reset's observations
            // outlive a newer SET this node had dropped with its DEL, and
            // an increment concurrent with that SET was lost (found by
            // the counter property test).
            r.overwrite(version, Some(b"0"));
            based = true;
        }
        r.increment(node, by, version);
        // A new base goes whole; otherwise the contribution alone.
        delta.string = Some(if based {
            r.to_form()
        } else {
            r.contribution_of(node)
        });
    }

    /// The key's own string value (a counter's sum), if it has one.
    pub fn string_value(&self) -> Option<Cow<'_, [u8]>> {
        self.string.as_ref()?.read()
    }
}

impl Typed {
    /// A digest of what a client sees (type, string or elements and their
    /// values, not versions), independent of element order: DEBUG DIGEST.
    pub fn visible_digest(&self) -> [u8; 20] {
        let mut acc = [0u8; 20];
        let mut add = |parts: &[&[u8]]| {
            let mut h = sha1_smol::Sha1::new();
            for p in parts {
                h.update(&(p.len() as u64).to_le_bytes());
                h.update(p);
            }
            for (a, b) in acc.iter_mut().zip(h.digest().bytes()) {
                *a ^= b;
            }
        };
        match self.kind() {
            Some(super::Kind::String) => {
                add(&[b"string", &self.string_value().unwrap_or_default()]);
            }
            Some(kind @ (super::Kind::Hash | super::Kind::Set)) => {
                let part = if kind == super::Kind::Hash {
                    &self.hash
                } else {
                    &self.set
                };
                add(&[kind.name().as_bytes()]);
                for (name, r) in part.iter().flat_map(|e| e.iter()) {
                    add(&[name, &r.read().unwrap_or_default()]);
                }
            }
            None => {}
        }
        acc
    }
}
