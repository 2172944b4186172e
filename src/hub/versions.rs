//! Topic versions: the sequence number of the last stored event that touched each topic
//! (scoped by tenant), the basis of the concurrent-edit check and of `x-sse-version`.
//!
//! Exact for every topic still tracked: the hub records each event when the log has stored
//! it (its own appends, and a shared log's feed, so every instance learns the others'
//! events). Bounded: past `cap` topics the older half is forgotten and `floor` rises to the
//! newest forgotten version; an untracked topic then reads as `floor`, which can only report
//! a conflict that was not one, never hide one. A gap in the log (events missed, a new
//! epoch) makes every version unknown: the map is cleared and the floor set to the head.

use std::collections::HashMap;
use std::sync::Mutex;

/// Topics tracked before the older half is forgotten.
pub const DEFAULT_MAX_TOPICS: usize = 100_000;

pub struct Versions {
    inner: Mutex<Inner>,
    cap: usize,
}

#[derive(Default)]
struct Inner {
    by_topic: HashMap<String, u64>,
    floor: u64,
}

impl Versions {
    pub fn new(cap: usize) -> Versions {
        Versions {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(2),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// An event stored at `seq` touched these (scoped) topics.
    pub fn record<S: AsRef<str>>(&self, seq: u64, topics: impl Iterator<Item = S>) {
        self.with(|i| {
            for t in topics {
                // Known topics (the common case) are updated without allocating a key.
                match i.by_topic.get_mut(t.as_ref()) {
                    Some(v) => *v = (*v).max(seq),
                    None => {
                        i.by_topic.insert(t.as_ref().to_owned(), seq);
                    }
                }
            }
            if i.by_topic.len() > self.cap {
                forget_older_half(i);
            }
        });
    }

    /// The version of a set of (scoped) topics: the highest of theirs.
    pub fn of<S: AsRef<str>>(&self, topics: &[S]) -> u64 {
        self.with(|i| {
            topics
                .iter()
                .map(|t| i.by_topic.get(t.as_ref()).copied().unwrap_or(i.floor))
                .max()
                .unwrap_or(i.floor)
        })
    }

    /// Continuity was lost: nothing is known below `head` any more.
    pub fn forget_all(&self, head: u64) {
        self.with(|i| {
            i.by_topic.clear();
            i.floor = i.floor.max(head);
        });
    }

    /// Topics tracked now.
    pub fn len(&self) -> usize {
        self.with(|i| i.by_topic.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the older half of the versions; the floor becomes the newest one dropped.
fn forget_older_half(i: &mut Inner) {
    let mut seqs: Vec<u64> = i.by_topic.values().copied().collect();
    let mid = seqs.len() / 2;
    let (_, cut, _) = seqs.select_nth_unstable(mid);
    let cut = *cut;
    i.by_topic.retain(|_, v| *v > cut);
    i.floor = i.floor.max(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_the_last_event_of_its_topics() {
        let v = Versions::new(100);
        v.record(3, ["card:1", "board:1"].into_iter());
        v.record(5, ["card:2", "board:1"].into_iter());
        assert_eq!(v.of(&["card:1"]), 3);
        assert_eq!(v.of(&["card:1", "board:1"]), 5);
        assert_eq!(v.of(&["card:9"]), 0, "never touched");
    }

    #[test]
    fn forgetting_only_raises_versions_never_lowers_them() {
        let v = Versions::new(4);
        for seq in 1..=5u64 {
            v.record(seq, [format!("t{seq}").as_str()].into_iter());
        }
        assert!(v.len() <= 4);
        for seq in 1..=5u64 {
            assert!(
                v.of(&[format!("t{seq}")]) >= seq,
                "t{seq} never reads older"
            );
        }
        assert_eq!(v.of(&["t5"]), 5, "the newest is exact");
        v.forget_all(9);
        assert_eq!(v.of(&["t5", "never"]), 9);
    }
}
