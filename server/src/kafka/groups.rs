//! Kafka consumer groups: the classic rebalance protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) and committed offsets, which are stored durably in the data directory.
//!
//! Weir is the coordinator of every group. A rebalance starts when a member joins or leaves,
//! or misses its session timeout; it completes when every member has joined again (or the
//! rebalance timeout passed, and the missing ones are dropped). The leader's SyncGroup carries
//! the assignment, which the others wait for. Group membership lives in memory, as in Kafka,
//! where a coordinator failover also makes members rejoin; committed offsets survive restarts.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

/// Kafka error codes of the group APIs.
pub mod code {
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
}

/// Where a group is in its rebalance cycle (Kafka's names, as DescribeGroups reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka tools show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    /// The assignment protocols it supports, in its order of preference, with its metadata.
    pub protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    /// Whether it has joined the rebalance in progress.
    joined: bool,
    /// Its assignment in the current generation.
    pub assignment: Bytes,
}

/// One consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    rebalance_deadline: Instant,
}

impl Group {
    fn new(protocol_type: &str) -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: protocol_type.to_string(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: Instant::now(),
        }
    }

    /// Starts a rebalance: every member must join again.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            return;
        }
        if self.state != GroupState::PreparingRebalance {
            self.state = GroupState::PreparingRebalance;
            for m in self.members.values_mut() {
                m.joined = false;
            }
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or(Duration::from_secs(30));
            self.rebalance_deadline = now + timeout.min(Duration::from_secs(300));
        }
    }

    /// Completes the rebalance once everyone joined or time is up.
    fn try_complete(&mut self, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all = self.members.values().all(|m| m.joined);
        if !all && now < self.rebalance_deadline {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            return true;
        }
        self.generation += 1;
        // The first protocol of the leader's that every member supports.
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        self.protocol = self.members.get(&leader).and_then(|l| {
            l.protocols
                .iter()
                .map(|(name, _)| name)
                .find(|name| {
                    self.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
                })
                .cloned()
        });
        self.leader = Some(leader);
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            // Joining counts as being alive.
            m.last_seen = now;
        }
        self.state = GroupState::CompletingRebalance;
        true
    }

    /// Drops members whose session timed out; returns whether any did.
    fn expire(&mut self, now: Instant) -> bool {
        let before = self.members.len();
        let waiting_to_join = self.state == GroupState::PreparingRebalance;
        self.members.retain(|_, m| {
            // A member waiting in JoinGroup is alive.
            (waiting_to_join && m.joined) || now.duration_since(m.last_seen) < m.session_timeout
        });
        if self.members.len() == before {
            return false;
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        } else if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
        }
        true
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member and its metadata for the chosen protocol: for the leader only.
    pub members: Vec<(String, Bytes)>,
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct Join {
    pub group_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

/// Every group Weir coordinates, and their committed offsets.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    changed: Notify,
    offsets: OffsetStore,
    next_member: AtomicU64,
}

impl Coordinator {
    /// A coordinator whose committed offsets live in `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            groups: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            offsets: OffsetStore::open(dir)?,
            next_member: AtomicU64::new(1),
        })
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins (or rejoins) a group and waits for the rebalance to complete.
    pub async fn join(&self, join: Join) -> JoinOutcome {
        let failed = |error: i16, member_id: &str| JoinOutcome {
            error,
            generation: -1,
            protocol_type: join.protocol_type.clone(),
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        };
        let member_id = {
            let now = Instant::now();
            let mut groups = self.groups();
            let group = groups
                .entry(join.group_id.clone())
                .or_insert_with(|| Group::new(&join.protocol_type));
            if group.members.is_empty() {
                group.protocol_type = join.protocol_type.clone();
            } else if group.protocol_type != join.protocol_type
                || !join.protocols.iter().any(|(n, _)| {
                    group
                        .members
                        .values()
                        .all(|m| m.protocols.iter().any(|(p, _)| p == n))
                })
            {
                return failed(code::INCONSISTENT_GROUP_PROTOCOL, &join.member_id);
            }
            let member_id = if join.member_id.is_empty() {
                format!(
                    "{}-{}",
                    if join.client_id.is_empty() {
                        "member"
                    } else {
                        &join.client_id
                    },
                    self.next_member.fetch_add(1, Ordering::Relaxed)
                )
            } else if group.members.contains_key(&join.member_id) {
                join.member_id.clone()
            } else {
                return failed(code::UNKNOWN_MEMBER_ID, &join.member_id);
            };
            group.members.insert(
                member_id.clone(),
                Member {
                    client_id: join.client_id.clone(),
                    client_host: join.client_host.clone(),
                    session_timeout: join.session_timeout,
                    rebalance_timeout: join.rebalance_timeout,
                    protocols: join.protocols.clone(),
                    last_seen: now,
                    joined: false,
                    assignment: Bytes::new(),
                },
            );
            // Every join takes part in a rebalance, starting one if none is under way.
            group.prepare_rebalance(now);
            if let Some(m) = group.members.get_mut(&member_id) {
                m.joined = true;
            }
            group.try_complete(now);
            self.changed.notify_waiters();
            member_id
        };
        loop {
            let notified = self.changed.notified();
            {
                let now = Instant::now();
                let mut groups = self.groups();
                let Some(group) = groups.get_mut(&join.group_id) else {
                    return failed(code::UNKNOWN_MEMBER_ID, &member_id);
                };
                if group.try_complete(now) {
                    self.changed.notify_waiters();
                }
                if !group.members.contains_key(&member_id) {
                    return failed(code::UNKNOWN_MEMBER_ID, &member_id);
                }
                if group.state != GroupState::PreparingRebalance {
                    let leader = group.leader.clone().unwrap_or_default();
                    let protocol = group.protocol.clone();
                    let members = if leader == member_id {
                        group
                            .members
                            .iter()
                            .map(|(id, m)| {
                                let metadata = m
                                    .protocols
                                    .iter()
                                    .find(|(n, _)| Some(n) == protocol.as_ref())
                                    .map(|(_, md)| md.clone())
                                    .unwrap_or_default();
                                (id.clone(), metadata)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    return JoinOutcome {
                        error: 0,
                        generation: group.generation,
                        protocol_type: group.protocol_type.clone(),
                        protocol,
                        leader,
                        member_id,
                        members,
                    };
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// The leader hands out assignments; every member gets its own (waiting for the leader's).
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> (i16, Bytes) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let notified = self.changed.notified();
            {
                let mut groups = self.groups();
                let Some(group) = groups.get_mut(group_id) else {
                    return (code::UNKNOWN_MEMBER_ID, Bytes::new());
                };
                if !group.members.contains_key(member_id) {
                    return (code::UNKNOWN_MEMBER_ID, Bytes::new());
                }
                if generation != group.generation {
                    return (code::ILLEGAL_GENERATION, Bytes::new());
                }
                match group.state {
                    GroupState::PreparingRebalance | GroupState::Empty => {
                        return (code::REBALANCE_IN_PROGRESS, Bytes::new());
                    }
                    GroupState::CompletingRebalance
                        if group.leader.as_deref() == Some(member_id) =>
                    {
                        for (id, assignment) in &assignments {
                            if let Some(m) = group.members.get_mut(id) {
                                m.assignment = assignment.clone();
                            }
                        }
                        group.state = GroupState::Stable;
                        self.changed.notify_waiters();
                    }
                    GroupState::CompletingRebalance => {}
                    GroupState::Stable => {}
                }
                if group.state == GroupState::Stable {
                    let me = group.members.get_mut(member_id);
                    return match me {
                        Some(m) => {
                            m.last_seen = Instant::now();
                            (0, m.assignment.clone())
                        }
                        None => (code::UNKNOWN_MEMBER_ID, Bytes::new()),
                    };
                }
                if Instant::now() >= deadline {
                    return (code::REBALANCE_IN_PROGRESS, Bytes::new());
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// A member says it is alive; the answer tells it to rejoin when a rebalance started.
    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let now = Instant::now();
        let mut groups = self.groups();
        let Some(group) = groups.get_mut(group_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if group.expire(now) {
            self.changed.notify_waiters();
        }
        let state = group.state;
        let current = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = now;
        if state == GroupState::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        0
    }

    /// Members leave; the rest rebalance. Returns an error code per member.
    pub fn leave(&self, group_id: &str, members: &[String]) -> Vec<i16> {
        let now = Instant::now();
        let mut groups = self.groups();
        let Some(group) = groups.get_mut(group_id) else {
            return members.iter().map(|_| code::UNKNOWN_MEMBER_ID).collect();
        };
        let codes = members
            .iter()
            .map(|m| {
                if group.members.remove(m).is_some() {
                    0
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect();
        if group.state == GroupState::PreparingRebalance {
            group.try_complete(now);
        } else {
            group.prepare_rebalance(now);
        }
        self.changed.notify_waiters();
        codes
    }

    /// Drops members whose sessions timed out, in every group.
    pub fn expire_sessions(&self) {
        let now = Instant::now();
        let mut any = false;
        for group in self.groups().values_mut() {
            any |= group.expire(now);
            any |= group.try_complete(now);
        }
        if any {
            self.changed.notify_waiters();
        }
    }

    /// Whether a commit by `member_id` in `generation` may be stored: a member of the current
    /// generation, or a commit outside any group membership (generation -1).
    pub fn may_commit(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        if generation < 0 {
            return 0;
        }
        let groups = self.groups();
        let Some(group) = groups.get(group_id) else {
            return code::ILLEGAL_GENERATION;
        };
        if !group.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if group.generation != generation {
            return code::ILLEGAL_GENERATION;
        }
        0
    }

    /// Stores committed offsets durably (fsynced before this returns).
    pub fn commit(&self, group_id: &str, offsets: &[(String, i32, i64)]) -> std::io::Result<()> {
        self.offsets.commit(group_id, offsets)
    }

    /// The committed offset of a group's partition.
    pub fn committed(&self, group_id: &str, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(group_id, topic, partition)
    }

    /// Every committed offset of a group: `(topic, partition, offset)`.
    pub fn committed_all(&self, group_id: &str) -> Vec<(String, i32, i64)> {
        self.offsets.all(group_id)
    }

    /// Every group, known by membership or by committed offsets.
    pub fn list(&self) -> Vec<(String, Group)> {
        let mut out: BTreeMap<String, Group> = self
            .groups()
            .iter()
            .map(|(k, g)| (k.clone(), g.clone()))
            .collect();
        for id in self.offsets.groups() {
            out.entry(id).or_insert_with(|| Group::new("consumer"));
        }
        out.into_iter().collect()
    }
}

/// Committed offsets: a file rewritten whole, fsynced and renamed into place on every commit,
/// so a crash leaves the old or the new version, never half of one.
#[derive(Debug)]
struct OffsetStore {
    path: PathBuf,
    dir: PathBuf,
    offsets: Mutex<BTreeMap<(String, String, i32), i64>>,
}

impl OffsetStore {
    fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("committed-offsets.json");
        let offsets = match fs::read(&path) {
            Ok(bytes) => {
                let entries: Vec<(String, String, i32, i64)> = serde_json::from_slice(&bytes)
                    .map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} does not parse: {e}", path.display()),
                        )
                    })?;
                entries
                    .into_iter()
                    .map(|(g, t, p, o)| ((g, t, p), o))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            dir: dir.to_path_buf(),
            offsets: Mutex::new(offsets),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String, i32), i64>> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self, group: &str, offsets: &[(String, i32, i64)]) -> std::io::Result<()> {
        let mut all = self.lock();
        let mut next = all.clone();
        for (topic, partition, offset) in offsets {
            next.insert((group.to_string(), topic.clone(), *partition), *offset);
        }
        let entries: Vec<(&String, &String, i32, i64)> =
            next.iter().map(|((g, t, p), o)| (g, t, *p, *o)).collect();
        let bytes = serde_json::to_vec(&entries).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        fs::File::open(&self.dir)?.sync_all()?;
        *all = next;
        Ok(())
    }

    fn get(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .get(&(group.to_string(), topic.to_string(), partition))
            .copied()
    }

    fn all(&self, group: &str) -> Vec<(String, i32, i64)> {
        self.lock()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), o)| (t.clone(), *p, *o))
            .collect()
    }

    fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lock().keys().map(|(g, _, _)| g.clone()).collect();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(group: &str, member: &str) -> Join {
        Join {
            group_id: group.into(),
            member_id: member.into(),
            client_id: "test".into(),
            client_host: "127.0.0.1".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"md"))],
            session_timeout: Duration::from_millis(300),
            rebalance_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn two_members_rebalance_and_a_silent_one_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = std::sync::Arc::new(Coordinator::open(dir.path()).expect("open"));
        let a = c.join(join("g", "")).await;
        assert_eq!((a.error, a.generation), (0, 1));
        assert_eq!(a.leader, a.member_id);
        let (e, _) = c
            .sync(
                "g",
                1,
                &a.member_id,
                vec![(a.member_id.clone(), Bytes::from_static(b"all"))],
            )
            .await;
        assert_eq!(e, 0);
        // B joins: A learns of the rebalance by heartbeat and rejoins.
        let c2 = std::sync::Arc::clone(&c);
        let b = tokio::spawn(async move { c2.join(join("g", "")).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            c.heartbeat("g", 1, &a.member_id),
            code::REBALANCE_IN_PROGRESS
        );
        let a2 = c.join(join("g", &a.member_id)).await;
        let b = b.await.expect("join task");
        assert_eq!((a2.generation, b.generation), (2, 2));
        assert_eq!(a2.members.len(), 2, "the leader sees both");
        assert!(b.members.is_empty());
        let c3 = std::sync::Arc::clone(&c);
        let bid = b.member_id.clone();
        let follower = tokio::spawn(async move { c3.sync("g", 2, &bid, Vec::new()).await });
        let (e, mine) = c
            .sync(
                "g",
                2,
                &a2.member_id,
                vec![
                    (a2.member_id.clone(), Bytes::from_static(b"p0")),
                    (b.member_id.clone(), Bytes::from_static(b"p1")),
                ],
            )
            .await;
        assert_eq!((e, mine.as_ref()), (0, &b"p0"[..]));
        assert_eq!(
            follower.await.expect("sync task"),
            (0, Bytes::from_static(b"p1"))
        );
        // B goes silent: after its session timeout A is told to rejoin, and is alone.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = c.heartbeat("g", 2, &a2.member_id);
        }
        assert_eq!(
            c.heartbeat("g", 2, &a2.member_id),
            code::REBALANCE_IN_PROGRESS
        );
        let a3 = c.join(join("g", &a2.member_id)).await;
        assert_eq!((a3.generation, a3.members.len()), (3, 1));
    }

    #[test]
    fn committed_offsets_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let c = Coordinator::open(dir.path()).expect("open");
            c.commit("g", &[("clicks".into(), 0, 42), ("clicks".into(), 3, 7)])
                .expect("commit");
            c.commit("g", &[("clicks".into(), 0, 50)]).expect("commit");
        }
        let c = Coordinator::open(dir.path()).expect("reopen");
        assert_eq!(c.committed("g", "clicks", 0), Some(50));
        assert_eq!(c.committed("g", "clicks", 3), Some(7));
        assert_eq!(c.committed("g", "clicks", 1), None);
        assert_eq!(c.list().len(), 1);
    }
}
