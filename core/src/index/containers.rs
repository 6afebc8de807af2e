//! The generic containers the indexes are built of: interned names ([`Symbols`]), posting
//! lists by name ([`Postings`]), and a hash map split in shards and a vector kept in chunks,
//! so that neither grows all at once under the index lock ([`Sharded`], [`Chunked`]). They
//! know nothing of events.

use std::collections::HashMap;

use crate::event::EventId;

/// Interned names of one kind, each stored once and numbered from 0 in order of first use.
#[derive(Debug, Default)]
pub(super) struct Symbols {
    by_name: Sharded<String, u32>,
    names: Vec<String>,
    /// The symbol found or made last by [`Symbols::find`] or [`Symbols::intern`]. The events of
    /// an append usually share their names, and comparing with the last name costs less than a
    /// lookup (two hashes and a probe).
    last: Option<u32>,
}

impl Symbols {
    pub(super) fn intern(&mut self, name: &str) -> u32 {
        if let Some(sym) = self.find(name) {
            return sym;
        }
        let sym = u32::try_from(self.names.len()).expect("fewer than 2^32 distinct names");
        self.names.push(name.to_string());
        self.by_name.insert(name.to_string(), sym);
        self.last = Some(sym);
        sym
    }

    pub(super) fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// [`Symbols::get`] for inserts, which remembers what it found.
    pub(super) fn find(&mut self, name: &str) -> Option<u32> {
        if let Some(sym) = self.last
            && self.names[sym as usize] == name
        {
            return Some(sym);
        }
        let sym = self.get(name)?;
        self.last = Some(sym);
        Some(sym)
    }

    pub(super) fn name(&self, sym: u32) -> &str {
        &self.names[sym as usize]
    }

    /// Each name is held twice, in `names` and as a key of `by_name`.
    pub(super) fn heap_bytes(&self) -> usize {
        let names: usize = self.names.iter().map(|name| 2 * name.capacity()).sum();
        names
            + self.names.capacity() * std::mem::size_of::<String>()
            + self.by_name.heap_bytes(|_, _| 0)
    }
}

/// One kind of name (scopes, types or tags): the names, and for each the positions of the
/// events that carry it, ascending. Each kind numbers its own names from 0, so a name's list is
/// found by indexing a vector rather than by a second hash lookup.
#[derive(Debug, Default)]
pub(super) struct Postings {
    pub(super) symbols: Symbols,
    /// Positions by symbol.
    lists: Vec<Chunked<u64>>,
}

impl Postings {
    /// The symbol of `name`, interned with an empty list if it is new.
    pub(super) fn intern(&mut self, name: &str) -> u32 {
        let sym = self.symbols.intern(name);
        if sym as usize == self.lists.len() {
            self.lists.push(Chunked::default());
        }
        sym
    }

    /// Adds `position` to the list of an interned name.
    pub(super) fn push(&mut self, sym: u32, position: u64) {
        self.lists[sym as usize].push(position);
    }

    /// The positions of the events that carry `name`, if any does.
    pub(super) fn list(&self, name: &str) -> Option<&Chunked<u64>> {
        let sym = self.symbols.get(name)?;
        Some(&self.lists[sym as usize])
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.symbols.heap_bytes()
            + self
                .lists
                .iter()
                .map(|list| list.capacity() * 8 + std::mem::size_of::<Chunked<u64>>())
                .sum::<usize>()
    }
}

/// A hash map split into [`SHARDS`] maps by a cheap function of the key ([`ShardKey`]).
///
/// A hash map grows by moving every entry to a table twice the size in one step, and the
/// writer grows the index's maps holding the index lock. A map that gains an entry per event
/// (the ids since open) took 37 ms to grow at 917,504 entries and 75 ms at 1,835,008 on the
/// project's machine, every append and read waiting. Split, each step moves a 256th of them.
/// Used for the index maps that grow with the log: ids (those that do not ascend, see
/// [`Ids`]), causation, correlation, entities.
///
/// The shard maps keep std's SipHash: their keys are chosen by clients and live as long as the
/// store, and a faster hash without HashDoS resistance would let a client slow every append
/// down. The writer's hot path avoids most lookups instead (see [`Symbols::find`]).
#[derive(Debug)]
pub(super) struct Sharded<K, V> {
    /// [`SHARDS`] maps, or none until the first insert.
    shards: Vec<HashMap<K, V>>,
}

/// Maps a [`Sharded`] is split into.
pub(super) const SHARDS: usize = 256;

/// Which of the [`SHARDS`] maps holds a key: [`shard_of`] its bytes.
pub(super) trait ShardKey {
    fn shard(&self) -> usize;
}

/// FNV-1a of the bytes, folded to one byte. Cheap, and even across the shards for random ids
/// and for names that differ only in a few digits (the 100,000 names `order-0` to
/// `order-99999` put 339 to 440 in each shard, where a plain XOR of the bytes used only 32
/// shards). It is not keyed: names chosen to share a shard only bring back that one map's
/// growth.
fn shard_of(bytes: &[u8]) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 32;
    hash ^= hash >> 16;
    hash ^= hash >> 8;
    (hash & 0xff) as usize
}

impl ShardKey for EventId {
    fn shard(&self) -> usize {
        shard_of(self.0.as_bytes())
    }
}

impl ShardKey for str {
    fn shard(&self) -> usize {
        shard_of(self.as_bytes())
    }
}

impl ShardKey for String {
    fn shard(&self) -> usize {
        self.as_str().shard()
    }
}

impl ShardKey for (u32, u32) {
    fn shard(&self) -> usize {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&self.0.to_le_bytes());
        bytes[4..].copy_from_slice(&self.1.to_le_bytes());
        shard_of(&bytes)
    }
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Sharded<K, V> {
        Sharded { shards: Vec::new() }
    }
}

impl<K: std::hash::Hash + Eq + ShardKey, V> Sharded<K, V> {
    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ShardKey + ?Sized,
    {
        self.shards.get(key.shard())?.get(key)
    }

    pub(super) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ShardKey + ?Sized,
    {
        self.get(key).is_some()
    }

    pub(super) fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        if self.shards.is_empty() {
            self.shards.resize_with(SHARDS, HashMap::new);
        }
        self.shards[key.shard()].entry(key)
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        self.entry(key).insert_entry(value);
    }

    /// Approximate heap bytes, `heap_of` giving what each entry holds beyond itself.
    pub(super) fn heap_bytes(&self, heap_of: impl Fn(&K, &V) -> usize) -> usize {
        self.shards.capacity() * std::mem::size_of::<HashMap<K, V>>()
            + self
                .shards
                .iter()
                .map(|shard| {
                    shard.capacity() * (std::mem::size_of::<(K, V)>() + 1)
                        + shard
                            .iter()
                            .map(|(key, value)| heap_of(key, value))
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}

/// Elements in a [`Chunked`] chunk: 2 MiB of the index's 32-byte event entries, 512 KiB of
/// positions.
pub(crate) const CHUNK_LEN: usize = 1 << 16;

/// A vector kept in chunks of [`CHUNK_LEN`] elements, for the index's vectors that gain an
/// element per event: its entries, its ids, its posting lists and its entities' positions.
///
/// A `Vec` grows by moving every element into an allocation twice the size, and on a VM that
/// hands freed memory back to its host each new page costs a fault. The index's per-event
/// vectors reach hundreds of megabytes at millions of events, and the writer grows them holding
/// the index lock: every append and read waited for the move. A chunk past the first is
/// allocated whole and never moved; the first grows in steps, up to one chunk, so a short list
/// costs what a `Vec` costs and no second allocation.
#[derive(Clone, Debug)]
pub(crate) struct Chunked<T> {
    /// The first chunk: the only one while it has room.
    first: Vec<T>,
    /// The chunks after the first, all full but the last, which is never empty.
    rest: Vec<Vec<T>>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Chunked<T> {
        Chunked {
            first: Vec::new(),
            rest: Vec::new(),
        }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn len(&self) -> usize {
        match self.rest.last() {
            Some(last) => self.rest.len() * CHUNK_LEN + last.len(),
            None => self.first.len(),
        }
    }

    pub(crate) fn push(&mut self, value: T) {
        let last = self.rest.last_mut().unwrap_or(&mut self.first);
        if last.len() < CHUNK_LEN {
            last.push(value);
        } else {
            let mut chunk = Vec::with_capacity(CHUNK_LEN);
            chunk.push(value);
            self.rest.push(chunk);
        }
    }

    pub(crate) fn get(&self, idx: usize) -> Option<&T> {
        match idx / CHUNK_LEN {
            0 => self.first.get(idx),
            chunk_idx => self.rest.get(chunk_idx - 1)?.get(idx % CHUNK_LEN),
        }
    }

    pub(crate) fn last(&self) -> Option<&T> {
        self.rest.last().unwrap_or(&self.first).last()
    }

    pub(crate) fn last_mut(&mut self) -> Option<&mut T> {
        self.rest.last_mut().unwrap_or(&mut self.first).last_mut()
    }

    /// As [`slice::partition_point`]: the index of the first element for which `pred` is
    /// false, `pred` being true for a prefix of the elements and false for the rest.
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        if self.first.last().is_none_or(|last| !pred(last)) {
            return self.first.partition_point(pred);
        }
        let chunk_idx = self
            .rest
            .partition_point(|chunk| chunk.last().is_some_and(&mut pred));
        match self.rest.get(chunk_idx) {
            Some(chunk) => (chunk_idx + 1) * CHUNK_LEN + chunk.partition_point(pred),
            None => self.len(),
        }
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.into_iter()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.first.capacity() + self.rest.iter().map(Vec::capacity).sum::<usize>()
    }
}

impl<T> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Chunked<T> {
        let mut chunked = Chunked::default();
        for value in values {
            chunked.push(value);
        }
        chunked
    }
}

impl<'a, T> IntoIterator for &'a Chunked<T> {
    type Item = &'a T;
    type IntoIter =
        std::iter::Chain<std::slice::Iter<'a, T>, std::iter::Flatten<std::slice::Iter<'a, Vec<T>>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.iter().chain(self.rest.iter().flatten())
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, idx: usize) -> &T {
        match idx / CHUNK_LEN {
            0 => &self.first[idx],
            chunk_idx => &self.rest[chunk_idx - 1][idx % CHUNK_LEN],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that differ in a few digits spread over every shard, so that no map of them
    /// grows in large steps.
    #[test]
    fn sequential_names_spread_over_every_shard() {
        let mut counts = [0u32; SHARDS];
        for n in 0..100_000 {
            counts[format!("order-{n}").as_str().shard()] += 1;
        }
        let mean = 100_000 / SHARDS as u32;
        assert!(
            counts
                .iter()
                .all(|&count| count > mean / 2 && count < mean * 2),
            "{counts:?}"
        );
        let mut ids = [0u32; SHARDS];
        for n in 0..100_000u128 {
            ids[EventId(uuid::Uuid::from_u128(n)).shard()] += 1;
        }
        assert!(ids.iter().all(|&count| count > mean / 2), "{ids:?}");
    }

    /// A chunked vector answers as a `Vec` of the same elements does, across chunk boundaries,
    /// and what it holds never moves once its first chunk is full.
    #[test]
    fn a_chunked_vector_answers_as_a_vec_and_never_moves_what_it_holds() {
        let mut chunked = Chunked::default();
        let mut plain = Vec::new();
        assert_eq!(chunked.partition_point(|_: &u64| true), 0);
        assert!(chunked.last().is_none() && chunked.get(0).is_none());
        let n_values = 3 * CHUNK_LEN + 5;
        let mut first_of_second_chunk = std::ptr::null();
        for n in 0..n_values as u64 {
            chunked.push(n * 3);
            plain.push(n * 3);
            if n as usize == CHUNK_LEN {
                first_of_second_chunk = &chunked[CHUNK_LEN] as *const u64;
            }
        }
        assert_eq!(chunked.len(), plain.len());
        assert!(std::ptr::eq(&chunked[CHUNK_LEN], first_of_second_chunk));
        assert!(chunked.iter().eq(plain.iter()));
        for idx in [
            0,
            1,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            2 * CHUNK_LEN + 1,
            n_values - 1,
        ] {
            assert_eq!(chunked[idx], plain[idx]);
            assert_eq!(chunked.get(idx), plain.get(idx));
        }
        assert_eq!(chunked.get(n_values), None);
        let short: Chunked<u64> = (0..10).collect();
        assert!(
            short.rest.is_empty(),
            "a short list is one allocation, as a Vec is"
        );
        assert_eq!(short.partition_point(|&value| value < 4), 4);
        for bound in [
            0,
            1,
            3,
            4,
            3 * CHUNK_LEN as u64,
            3 * CHUNK_LEN as u64 + 1,
            u64::MAX,
        ] {
            for below in [bound.saturating_sub(1), bound, bound.saturating_add(1)] {
                assert_eq!(
                    chunked.partition_point(|&value| value < below),
                    plain.partition_point(|&value| value < below),
                    "{below}"
                );
            }
        }
        *chunked.last_mut().expect("not empty") = 1;
        assert_eq!(chunked.last(), Some(&1));
        assert!(chunked.capacity() >= chunked.len());
    }
}
