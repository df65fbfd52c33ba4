//! The set of event identities (`source`, `id`) already applied: de-duplication.
//!
//! It grows by one entry per event for the life of the world, so its cost per entry
//! matters more than anything else the engine keeps: a set of `(Arc<str>, Arc<str>)`
//! pairs pays two allocations and ~100 bytes per event, and rehashes by chasing
//! pointers. Here every identity's bytes are appended to one arena and the table holds
//! a 24-byte slot (hash, offset, lengths), so an insert allocates nothing but the
//! occasional doubling, a rehash never touches the strings, and membership stays exact
//! (the bytes are compared on every hash match).

use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::core::Hashing;

/// One identity's place in the arena.
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    start: usize,
    source_len: u32,
    id_len: u32,
}

impl Slot {
    fn parts(self, arena: &str) -> Seen<'_> {
        let id_start = self.start + self.source_len as usize;
        Seen {
            source: &arena[self.start..id_start],
            id: &arena[id_start..id_start + self.id_len as usize],
        }
    }

    /// Whether this slot holds (`source`, `id`), whose hash is `hash`.
    fn holds(self, arena: &str, hash: u64, source: &str, id: &str) -> bool {
        self.hash == hash && {
            let seen = self.parts(arena);
            seen.source == source && seen.id == id
        }
    }
}

/// An exact set of event identities.
#[derive(Clone, Default)]
pub struct SeenSet {
    /// `source` then `id` of every identity, back to back.
    arena: String,
    table: HashTable<Slot>,
    hashing: Hashing,
}

/// An identity in the set, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seen<'a> {
    pub source: &'a str,
    pub id: &'a str,
}

impl SeenSet {
    pub fn new() -> Self {
        SeenSet::default()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn hash(&self, source: &str, id: &str) -> u64 {
        // A tuple of `str`s hashes each with its length terminator, so ("ab", "c")
        // and ("a", "bc") differ.
        self.hashing.hash_one((source, id))
    }

    fn parts(&self, slot: &Slot) -> Seen<'_> {
        slot.parts(&self.arena)
    }

    /// Adds an identity; `false` when it was already there.
    pub fn insert(&mut self, source: &str, id: &str) -> bool {
        let (Ok(source_len), Ok(id_len)) = (u32::try_from(source.len()), u32::try_from(id.len()))
        else {
            // Events are capped far below 4 GiB (`MAX_EVENT_BYTES`); an identity this
            // long cannot have been decoded, so it cannot have been seen.
            return true;
        };
        let hash = self.hash(source, id);
        let SeenSet { arena, table, .. } = self;
        let entry = table.entry(
            hash,
            |slot| slot.holds(arena, hash, source, id),
            |slot| slot.hash,
        );
        match entry {
            Entry::Occupied(_) => false,
            Entry::Vacant(vacant) => {
                let start = arena.len();
                arena.push_str(source);
                arena.push_str(id);
                vacant.insert(Slot {
                    hash,
                    start,
                    source_len,
                    id_len,
                });
                true
            }
        }
    }

    pub fn contains(&self, source: &str, id: &str) -> bool {
        let hash = self.hash(source, id);
        self.table
            .find(hash, |slot| slot.holds(&self.arena, hash, source, id))
            .is_some()
    }

    /// Every identity, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Seen<'_>> + '_ {
        self.table.iter().map(|slot| self.parts(slot))
    }
}

impl fmt::Debug for SeenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeenSet")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Set equality: the same identities, whatever the order they were added in.
impl PartialEq for SeenSet {
    fn eq(&self, other: &SeenSet) -> bool {
        self.len() == other.len() && self.iter().all(|s| other.contains(s.source, s.id))
    }
}

impl Eq for SeenSet {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_exact() {
        let mut set = SeenSet::new();
        assert!(set.insert("jira", "1"));
        assert!(!set.insert("jira", "1"));
        // The same bytes split differently are a different identity.
        assert!(set.insert("jira1", ""));
        assert!(set.insert("jir", "a1"));
        assert!(set.insert("servicenow", "1"));
        assert!(set.contains("jira", "1"));
        assert!(!set.contains("jira", "2"));
        assert_eq!(set.len(), 4);
        let mut all: Vec<_> = set.iter().map(|s| (s.source, s.id)).collect();
        all.sort();
        assert_eq!(
            all,
            [
                ("jir", "a1"),
                ("jira", "1"),
                ("jira1", ""),
                ("servicenow", "1")
            ]
        );
    }

    #[test]
    fn survives_growth_and_non_ascii() {
        let mut set = SeenSet::new();
        for i in 0..20_000 {
            assert!(set.insert("sørvice/ñ", &format!("évt-{i}")));
        }
        for i in 0..20_000 {
            assert!(!set.insert("sørvice/ñ", &format!("évt-{i}")));
            assert!(set.contains("sørvice/ñ", &format!("évt-{i}")));
        }
        assert!(!set.contains("sørvice/ñ", "évt-20000"));
        assert_eq!(set.len(), 20_000);
    }
}
