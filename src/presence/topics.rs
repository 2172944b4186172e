//! The presence state machine: every tracked topic's members, watchers and pending
//! changes, and the schedule of when each topic's next frame is due. Pure: every change
//! takes `now`; [`Topics::due`] says what to send at `now` and to whom (see the engine's
//! header for the rules).

use super::{Identity, Watcher};
use crate::config::presence::Presence as Settings;
use crate::wire::{PresenceCount, PresenceMember, PresenceSnapshot, PresenceUpdate};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;

/// What one instance contributes to one topic: its members with their stream counts, and
/// its anonymous streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// The topic scoped by tenant (the engine's key).
    pub key: String,
    /// The topic as its streams named it.
    pub topic: String,
    pub members: Vec<(Identity, u32)>,
    pub anonymous: u32,
}

#[derive(Default)]
struct Member {
    fields: serde_json::Map<String, serde_json::Value>,
    local: u32,
    remote: HashMap<Arc<str>, u32>,
    /// The connection count watchers were last told; none: never announced.
    announced: Option<u32>,
    /// Since when it has had no stream (its leave grace runs from then).
    gone_since: Option<Instant>,
}

impl Member {
    fn total(&self) -> u32 {
        self.local + self.remote.values().sum::<u32>()
    }
}

struct Topic {
    name: String,
    /// By id, sorted: a snapshot lists its first `max_listed` without sorting them all.
    members: BTreeMap<String, Member>,
    anon_local: u32,
    anon_remote: HashMap<Arc<str>, u32>,
    announced_anon: u32,
    watchers: HashMap<u64, Watcher>,
    /// Members whose state changed since the last frame (or still in their grace).
    changed: HashSet<String>,
    /// A stream joined since the last frame: its snapshot may show counts the others were
    /// not told yet, so the next frame states every changed member's count.
    shown: bool,
    due: Option<Instant>,
}

impl Topic {
    fn new(name: &str) -> Topic {
        Topic {
            name: name.to_owned(),
            members: BTreeMap::new(),
            anon_local: 0,
            anon_remote: HashMap::new(),
            announced_anon: 0,
            watchers: HashMap::new(),
            changed: HashSet::new(),
            shown: false,
            due: None,
        }
    }

    fn anonymous(&self) -> u32 {
        self.anon_local + self.anon_remote.values().sum::<u32>()
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.anonymous() == 0 && self.watchers.is_empty()
    }

    /// The first `max` of `ids` (sorted), as listed members.
    fn listed(&self, mut ids: Vec<String>, max: usize) -> Vec<PresenceMember> {
        ids.sort();
        ids.into_iter()
            .take(max)
            .filter_map(|id| {
                let m = self.members.get(&id)?;
                Some(member(id, m))
            })
            .collect()
    }

    fn snapshot(&self, max: usize) -> PresenceSnapshot {
        PresenceSnapshot {
            count: self.members.len(),
            anonymous: self.anonymous(),
            partial: self.members.len() > max,
            members: self
                .members
                .iter()
                .take(max)
                .map(|(id, m)| member(id.clone(), m))
                .collect(),
        }
    }
}

fn member(id: String, m: &Member) -> PresenceMember {
    PresenceMember {
        fields: m.fields.clone(),
        connections: m.total(),
        id,
    }
}

/// A join's result: the member id it joined as (none: anonymous) and its watcher's id.
pub struct Joined {
    pub member: Option<String>,
    pub watcher: u64,
}

/// What changed members came to at a flush.
#[derive(Default)]
struct Outcome {
    joined: Vec<String>,
    left: Vec<String>,
    updated: Vec<PresenceCount>,
    /// Still in their grace, with the earliest end of one.
    waiting: HashSet<String>,
    next: Option<Instant>,
}

/// Every tracked topic (see the module header).
#[derive(Default)]
pub struct Topics {
    map: HashMap<String, Topic>,
    /// (due, key) for every topic with a frame pending.
    schedule: BTreeSet<(Instant, String)>,
    next_watcher: u64,
}

impl Topics {
    /// (topics tracked, members tracked over all of them).
    pub fn sizes(&self) -> (usize, usize) {
        let members = self.map.values().map(|t| t.members.len()).sum();
        (self.map.len(), members)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.schedule.first().map(|(at, _)| *at)
    }

    /// Makes the topic's frame due by `at` (an earlier due stays).
    fn schedule(&mut self, key: &str, at: Instant) {
        let Some(t) = self.map.get_mut(key) else {
            return;
        };
        if let Some(d) = t.due {
            if d <= at {
                return;
            }
            self.schedule.remove(&(d, key.to_owned()));
        }
        t.due = Some(at);
        self.schedule.insert((at, key.to_owned()));
    }

    pub fn join(
        &mut self,
        settings: &Settings,
        (key, name): (&str, &str),
        who: Option<&Identity>,
        watcher: Watcher,
        now: Instant,
    ) -> Option<Joined> {
        if !self.map.contains_key(key) && self.map.len() >= settings.max_topics {
            return None;
        }
        self.next_watcher += 1;
        let id = self.next_watcher;
        let t = self
            .map
            .entry(key.to_owned())
            .or_insert_with(|| Topic::new(name));
        t.watchers.insert(id, watcher);
        t.shown = true;
        let room = |t: &Topic, m: &str| {
            t.members.contains_key(m) || t.members.len() < settings.max_members_per_topic
        };
        let member = who.filter(|w| room(t, &w.id)).map(|w| {
            let m = t.members.entry(w.id.clone()).or_default();
            m.fields = w.fields.clone();
            m.local += 1;
            m.gone_since = None;
            t.changed.insert(w.id.clone());
            w.id.clone()
        });
        if member.is_none() {
            t.anon_local += 1;
        }
        self.schedule(key, now + settings.debounce);
        Some(Joined {
            member,
            watcher: id,
        })
    }

    /// A stream left: its change leaves with the topic's next frame (debounced as joins).
    pub fn leave(
        &mut self,
        debounce: std::time::Duration,
        key: &str,
        (member, watcher): (Option<&str>, u64),
        now: Instant,
    ) {
        let Some(t) = self.map.get_mut(key) else {
            return;
        };
        t.watchers.remove(&watcher);
        match member.and_then(|id| t.members.get_mut(id).map(|m| (id, m))) {
            Some((id, m)) => {
                m.local = m.local.saturating_sub(1);
                if m.total() == 0 {
                    m.gone_since = Some(now);
                }
                t.changed.insert(id.to_owned());
            }
            None => t.anon_local = t.anon_local.saturating_sub(1),
        }
        self.schedule(key, now + debounce);
    }

    pub fn snapshot(&self, key: &str, max_listed: usize) -> PresenceSnapshot {
        self.map
            .get(key)
            .map(|t| t.snapshot(max_listed))
            .unwrap_or_default()
    }

    /// The frames due at `now`, each with the watchers to send it to.
    pub fn due(
        &mut self,
        settings: &Settings,
        now: Instant,
    ) -> Vec<(PresenceUpdate, Vec<Watcher>)> {
        let mut out = Vec::new();
        while let Some((at, key)) = self.schedule.first().cloned() {
            if at > now {
                break;
            }
            self.schedule.remove(&(at, key.clone()));
            let Some(t) = self.map.get_mut(&key) else {
                continue;
            };
            t.due = None;
            let outcome = settle(t, settings, now);
            let next = outcome.next;
            if let Some(update) = delta(t, outcome, settings.max_listed) {
                out.push((update, t.watchers.values().cloned().collect()));
            }
            if let Some(at) = next {
                self.schedule(&key, at);
            } else if self.map.get(&key).is_some_and(Topic::is_empty) {
                self.map.remove(&key);
            }
        }
        out
    }

    /// Replaces what `instance` contributes to one topic.
    pub fn set_remote(
        &mut self,
        settings: &Settings,
        instance: &str,
        c: Contribution,
        now: Instant,
    ) {
        if !self.map.contains_key(&c.key) {
            if c.members.is_empty() && c.anonymous == 0 {
                return;
            }
            if self.map.len() >= settings.max_topics {
                return;
            }
        }
        let inst: Arc<str> = Arc::from(instance);
        let t = self
            .map
            .entry(c.key.clone())
            .or_insert_with(|| Topic::new(&c.topic));
        let given: HashMap<&str, u32> =
            c.members.iter().map(|(w, n)| (w.id.as_str(), *n)).collect();
        for (id, m) in t.members.iter_mut() {
            if !given.contains_key(id.as_str()) && m.remote.remove(instance).is_some() {
                if m.total() == 0 {
                    m.gone_since = Some(now);
                }
                t.changed.insert(id.clone());
            }
        }
        for (w, n) in &c.members {
            let room =
                t.members.contains_key(&w.id) || t.members.len() < settings.max_members_per_topic;
            if !room || *n == 0 {
                continue;
            }
            let m = t.members.entry(w.id.clone()).or_default();
            if m.remote.get(instance) != Some(n) {
                m.remote.insert(inst.clone(), *n);
                m.fields = w.fields.clone();
                m.gone_since = None;
                t.changed.insert(w.id.clone());
            }
        }
        if c.anonymous == 0 {
            t.anon_remote.remove(instance);
        } else {
            t.anon_remote.insert(inst, c.anonymous);
        }
        self.schedule(&c.key, now + settings.debounce);
    }

    /// Drops everything `instance` contributed.
    pub fn forget_instance(&mut self, instance: &str, now: Instant) {
        let keys: Vec<String> = self.map.keys().cloned().collect();
        for key in keys {
            let Some(t) = self.map.get_mut(&key) else {
                continue;
            };
            let mut touched = t.anon_remote.remove(instance).is_some();
            for (id, m) in t.members.iter_mut() {
                if m.remote.remove(instance).is_some() {
                    if m.total() == 0 {
                        m.gone_since = Some(now);
                    }
                    t.changed.insert(id.clone());
                    touched = true;
                }
            }
            if touched {
                self.schedule(&key, now);
            }
        }
    }

    /// This instance's contribution to every topic.
    pub fn local(&self) -> Vec<Contribution> {
        self.map
            .iter()
            .map(|(key, t)| Contribution {
                key: key.clone(),
                topic: t.name.clone(),
                members: t
                    .members
                    .iter()
                    .filter(|(_, m)| m.local > 0)
                    .map(|(id, m)| {
                        let who = Identity {
                            id: id.clone(),
                            fields: m.fields.clone(),
                        };
                        (who, m.local)
                    })
                    .collect(),
                anonymous: t.anon_local,
            })
            .collect()
    }
}

/// Settles the changed members of `t` at `now`: joined, left (grace over: removed),
/// updated, or still waiting in their grace.
fn settle(t: &mut Topic, settings: &Settings, now: Instant) -> Outcome {
    let mut o = Outcome::default();
    let shown = t.shown;
    for id in std::mem::take(&mut t.changed) {
        let Some(m) = t.members.get_mut(&id) else {
            continue;
        };
        let total = m.total();
        if total > 0 {
            m.gone_since = None;
            match m.announced {
                None => o.joined.push(id),
                Some(c) if c != total || shown => o.updated.push(PresenceCount {
                    id,
                    connections: total,
                }),
                Some(_) => {}
            }
            m.announced = Some(total);
            continue;
        }
        let ends = m.gone_since.unwrap_or(now) + settings.leave_grace;
        if now >= ends {
            if m.announced.is_some() {
                o.left.push(id.clone());
            }
            t.members.remove(&id);
        } else {
            if shown && m.announced.is_none() {
                // A new stream's snapshot listed it: its leave must be told too.
                m.announced = Some(0);
            }
            o.next = Some(o.next.map_or(ends, |n: Instant| n.min(ends)));
            o.waiting.insert(id);
        }
    }
    t.changed = std::mem::take(&mut o.waiting);
    o
}

/// The frame for a settled outcome, if it says anything.
fn delta(t: &mut Topic, mut o: Outcome, max: usize) -> Option<PresenceUpdate> {
    let anonymous = t.anonymous();
    let anon_changed = anonymous != t.announced_anon || std::mem::take(&mut t.shown);
    t.announced_anon = anonymous;
    if o.joined.is_empty() && o.left.is_empty() && o.updated.is_empty() && !anon_changed {
        return None;
    }
    let cut = o.joined.len() > max || o.left.len() > max || o.updated.len() > max;
    let joined = t.listed(o.joined, max);
    o.left.sort();
    o.left.truncate(max);
    o.updated.sort_by(|a, b| a.id.cmp(&b.id));
    o.updated.truncate(max);
    Some(PresenceUpdate::Delta {
        topic: t.name.clone(),
        joined,
        left: o.left,
        updated: o.updated,
        count: t.members.len(),
        anonymous,
        partial: cut || t.members.len() > max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    fn settings() -> Settings {
        Settings {
            max_listed: 2,
            debounce: Duration::from_millis(100),
            leave_grace: Duration::from_secs(5),
            ..Settings::default()
        }
    }

    fn who(id: &str) -> Identity {
        Identity {
            id: id.into(),
            fields: [(
                "name".to_string(),
                serde_json::Value::from(id.to_uppercase()),
            )]
            .into_iter()
            .collect(),
        }
    }

    /// A watcher that records the frames it is given (as JSON).
    fn watcher() -> (Watcher, Arc<Mutex<Vec<PresenceUpdate>>>) {
        let _ = AtomicUsize::new(0).load(Ordering::Relaxed);
        let seen = Arc::new(Mutex::new(Vec::new()));
        (Arc::new(|_: &bytes::Bytes| true), seen)
    }

    fn flush(t: &mut Topics, s: &Settings, now: Instant) -> Vec<PresenceUpdate> {
        t.due(s, now).into_iter().map(|(u, _)| u).collect()
    }

    /// A delta's (joined ids, left ids, updated (id, connections), count).
    type Names = (Vec<String>, Vec<String>, Vec<(String, u32)>, usize);

    fn names(update: &PresenceUpdate) -> Names {
        match update {
            PresenceUpdate::Delta {
                joined,
                left,
                updated,
                count,
                ..
            } => (
                joined.iter().map(|m| m.id.clone()).collect(),
                left.clone(),
                updated
                    .iter()
                    .map(|u| (u.id.clone(), u.connections))
                    .collect(),
                *count,
            ),
            PresenceUpdate::Snapshot { .. } => panic!("a delta was expected"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn joins_are_coalesced_and_a_member_counts_once_with_its_connections() {
        let s = settings();
        let mut t = Topics::default();
        let t0 = Instant::now();
        for id in ["alice", "bob", "alice"] {
            t.join(&s, ("b", "board:2"), Some(&who(id)), watcher().0, t0)
                .expect("joined");
        }
        t.join(&s, ("b", "board:2"), None, watcher().0, t0)
            .expect("anonymous");
        assert!(
            flush(&mut t, &s, t0).is_empty(),
            "nothing before the debounce"
        );
        let snap = t.snapshot("b", 10);
        assert_eq!((snap.count, snap.anonymous, snap.partial), (2, 1, false));
        let alice = &snap.members[0];
        assert_eq!((alice.id.as_str(), alice.connections), ("alice", 2));
        assert_eq!(
            alice.fields.get("name"),
            Some(&serde_json::Value::from("ALICE"))
        );
        let frames = flush(&mut t, &s, t0 + s.debounce);
        assert_eq!(frames.len(), 1, "one frame for the storm");
        assert_eq!(
            names(&frames[0]),
            (vec!["alice".into(), "bob".into()], vec![], vec![], 2)
        );
        assert_eq!(t.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leave_is_announced_after_the_grace_and_a_quick_return_is_silent() {
        let s = settings();
        let mut t = Topics::default();
        let t0 = Instant::now();
        let bob = t
            .join(&s, ("b", "board:2"), Some(&who("bob")), watcher().0, t0)
            .expect("joined");
        let alice = t
            .join(&s, ("b", "board:2"), Some(&who("alice")), watcher().0, t0)
            .expect("j");
        assert_eq!(flush(&mut t, &s, t0 + s.debounce).len(), 1);
        // alice reloads: leaves and comes back within the grace.
        let t1 = t0 + Duration::from_secs(1);
        t.leave(
            s.debounce,
            "b",
            (alice.member.as_deref(), alice.watcher),
            t1,
        );
        t.join(
            &s,
            ("b", "board:2"),
            Some(&who("alice")),
            watcher().0,
            t1 + Duration::from_millis(50),
        )
        .expect("back");
        // bob closes for good.
        t.leave(s.debounce, "b", (bob.member.as_deref(), bob.watcher), t1);
        let at = t1 + Duration::from_millis(200);
        for f in flush(&mut t, &s, at) {
            let (joined, left, _, _) = names(&f);
            assert!(
                joined.is_empty() && left.is_empty(),
                "no left/joined pair, no left yet"
            );
        }
        assert_eq!(
            t.snapshot("b", 10).count,
            2,
            "bob is still listed in his grace"
        );
        assert!(flush(&mut t, &s, t1 + s.leave_grace - Duration::from_millis(1)).is_empty());
        let next = t.next_deadline().expect("the grace's end is scheduled");
        assert_eq!(next, t1 + s.leave_grace);
        let frames = flush(&mut t, &s, next);
        assert_eq!(names(&frames[0]), (vec![], vec!["bob".into()], vec![], 1));
    }

    #[tokio::test(start_paused = true)]
    async fn connection_counts_update_and_lists_are_capped_at_max_listed() {
        let s = settings();
        let mut t = Topics::default();
        let t0 = Instant::now();
        for id in ["a", "b", "c"] {
            t.join(&s, ("k", "board:1"), Some(&who(id)), watcher().0, t0)
                .expect("joined");
        }
        let frames = flush(&mut t, &s, t0 + s.debounce);
        let PresenceUpdate::Delta {
            joined,
            count,
            partial,
            ..
        } = &frames[0]
        else {
            panic!("delta");
        };
        assert_eq!(
            (joined.len(), *count, *partial),
            (2, 3, true),
            "capped, partial"
        );
        let snap = t.snapshot("k", 2);
        assert_eq!((snap.members.len(), snap.count, snap.partial), (2, 3, true));
        let t1 = t0 + Duration::from_secs(1);
        t.join(&s, ("k", "board:1"), Some(&who("a")), watcher().0, t1)
            .expect("second tab");
        let frames = flush(&mut t, &s, t1 + s.debounce);
        assert_eq!(
            names(&frames[0]),
            (vec![], vec![], vec![("a".into(), 2)], 3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_hold_and_remote_members_leave_with_their_instance() {
        let s = Settings {
            max_members_per_topic: 1,
            max_topics: 1,
            ..settings()
        };
        let mut t = Topics::default();
        let t0 = Instant::now();
        let a = t
            .join(&s, ("k", "board:1"), Some(&who("a")), watcher().0, t0)
            .expect("joined");
        let b = t
            .join(&s, ("k", "board:1"), Some(&who("b")), watcher().0, t0)
            .expect("joined");
        assert_eq!(
            (a.member.as_deref(), b.member.as_deref()),
            (Some("a"), None),
            "full: anonymous"
        );
        assert!(
            t.join(&s, ("k2", "board:2"), None, watcher().0, t0)
                .is_none(),
            "max_topics"
        );
        let s = settings();
        let mut t = Topics::default();
        let remote = Contribution {
            key: "k".into(),
            topic: "board:1".into(),
            members: vec![(who("carol"), 1)],
            anonymous: 2,
        };
        t.set_remote(&s, "other", remote, t0);
        let frames = flush(&mut t, &s, t0 + s.debounce);
        assert_eq!(names(&frames[0]), (vec!["carol".into()], vec![], vec![], 1));
        assert!(
            t.local().iter().all(|c| c.members.is_empty()),
            "not ours to publish"
        );
        let t1 = t0 + Duration::from_secs(1);
        t.forget_instance("other", t1);
        assert!(flush(&mut t, &s, t1).iter().all(|u| names(u).1.is_empty()));
        let frames = flush(&mut t, &s, t1 + s.leave_grace);
        assert_eq!(names(&frames[0]), (vec![], vec!["carol".into()], vec![], 0));
        assert_eq!(t.sizes(), (0, 0), "an empty topic is forgotten");
    }
}
