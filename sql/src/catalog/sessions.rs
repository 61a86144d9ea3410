//! The sessions open on a database (clients over the wire, the shell): who, since when, and
//! what each is running, for `weir_sessions`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use weir_engine::result_table::Subscriber;

/// The longest statement text kept per session.
const MAX_TEXT: usize = 1000;

/// Who is on the other end of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientDesc {
    /// The user it authenticated as.
    pub user: String,
    /// Its address (`host:port`), empty for an embedded session.
    pub address: String,
    /// Its `application_name`.
    pub application: String,
}

/// What a session runs, or ran last.
#[derive(Debug, Clone, Default)]
struct Activity {
    statement: String,
    since: Option<SystemTime>,
    active: bool,
}

/// One open session.
#[derive(Debug)]
pub struct SessionInfo {
    /// A number of its own, counting up from 1 as sessions open.
    pub id: u64,
    /// When it opened.
    pub started: SystemTime,
    client: Mutex<ClientDesc>,
    activity: Mutex<Activity>,
    statements: AtomicU64,
    /// The view subscriptions it follows (`SUBSCRIBE`, cursors), gone once they end.
    feeds: Mutex<Vec<Weak<Subscriber>>>,
}

/// What a session is doing now, read at one time.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// See [`SessionInfo::id`].
    pub id: u64,
    /// See [`SessionInfo::started`].
    pub started: SystemTime,
    /// Who it is.
    pub client: ClientDesc,
    /// Whether a statement is running.
    pub active: bool,
    /// The running statement, or the last one.
    pub statement: String,
    /// When that statement started.
    pub statement_started: Option<SystemTime>,
    /// Statements run so far.
    pub statements: u64,
    /// Over the view subscriptions it follows, if any: the rows waiting for it to read them,
    /// and the most that may wait before a subscription is cut off.
    pub subscribed: Option<(u64, u64)>,
}

/// Marks a session active while it lives.
#[derive(Debug)]
pub struct Running<'a>(&'a SessionInfo);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .active = false;
    }
}

impl SessionInfo {
    /// Says who is on the other end.
    pub fn set_client(&self, client: ClientDesc) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
    }

    /// Marks `sql` as running until the returned guard goes.
    pub fn begin(&self, sql: &str) -> Running<'_> {
        let mut text = sql.trim();
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = &text[..end];
        }
        *self.activity.lock().unwrap_or_else(|e| e.into_inner()) = Activity {
            statement: text.to_string(),
            since: Some(SystemTime::now()),
            active: true,
        };
        self.statements.fetch_add(1, Ordering::Relaxed);
        Running(self)
    }

    /// Counts `feed`'s buffer as this session's, while the subscription lasts.
    pub fn follow(&self, feed: &Arc<Subscriber>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds.retain(|f| f.strong_count() > 0);
        feeds.push(Arc::downgrade(feed));
    }

    /// The rows buffered for the live subscriptions, and their capacity.
    fn subscribed(&self) -> Option<(u64, u64)> {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<_> = feeds.iter().filter_map(Weak::upgrade).collect();
        (!live.is_empty()).then(|| {
            live.iter().fold((0, 0), |(rows, max), f| {
                let (r, m) = f.buffered();
                (rows + r as u64, max + m as u64)
            })
        })
    }

    /// The session as it is now.
    pub fn state(&self) -> SessionState {
        let activity = self
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SessionState {
            id: self.id,
            started: self.started,
            client: self
                .client
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            active: activity.active,
            statement: activity.statement,
            statement_started: activity.since,
            statements: self.statements.load(Ordering::Relaxed),
            subscribed: self.subscribed(),
        }
    }
}

/// The open sessions of a database; a session leaves when it is dropped.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    next: AtomicU64,
    sessions: Mutex<Vec<Weak<SessionInfo>>>,
}

impl SessionRegistry {
    /// Opens a session.
    pub fn register(&self) -> Arc<SessionInfo> {
        let info = Arc::new(SessionInfo {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            started: SystemTime::now(),
            client: Mutex::default(),
            activity: Mutex::default(),
            statements: AtomicU64::new(0),
            feeds: Mutex::default(),
        });
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|s| s.strong_count() > 0);
        sessions.push(Arc::downgrade(&info));
        info
    }

    /// The sessions open now, oldest first.
    pub fn open(&self) -> Vec<SessionState> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.state())
            .collect()
    }
}
