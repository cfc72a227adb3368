//! A [`Watcher`] that records every report with the time it arrived, for the tests of
//! `RedisCore::watch`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use cachier_core::{Change, FuncId, Key, Watcher};

/// An owned [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Entry(Key),
    Function(FuncId),
    Namespace,
    Lost,
    Resumed,
}

impl From<Change<'_>> for Report {
    fn from(change: Change<'_>) -> Self {
        match change {
            Change::Entry(key) => Report::Entry(key.clone()),
            Change::Function(func) => Report::Function(func.clone()),
            Change::Namespace => Report::Namespace,
            Change::Lost => Report::Lost,
            Change::Resumed => Report::Resumed,
        }
    }
}

/// One report and when it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub report: Report,
    pub at: Instant,
    pub wall: SystemTime,
}

/// Records reports; cheap to share.
#[derive(Default)]
pub struct Recorder {
    reports: Mutex<Vec<Arrival>>,
    /// A `Resumed` came, and no `Lost` after it (kept apart from `reports`, which tests clear).
    live: AtomicBool,
}

impl Watcher for Recorder {
    fn changed(&self, change: Change<'_>) {
        let arrival = Arrival {
            report: change.into(),
            at: Instant::now(),
            wall: SystemTime::now(),
        };
        let mut reports = self.lock();
        match change {
            Change::Lost => self.live.store(false, Ordering::SeqCst),
            Change::Resumed => self.live.store(true, Ordering::SeqCst),
            _ => {}
        }
        reports.push(arrival);
    }
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    /// The weak handle `Core::watch` takes.
    pub fn weak(self: &Arc<Self>) -> Weak<dyn Watcher> {
        let watcher: Arc<dyn Watcher> = self.clone();
        Arc::downgrade(&watcher)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arrival>> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every report so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.lock().clone()
    }

    /// Every report so far, without times.
    pub fn reports(&self) -> Vec<Report> {
        self.lock().iter().map(|a| a.report.clone()).collect()
    }

    /// Forgets the reports so far.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Waits until the reports satisfy `done`, for at most `within`; panics with `what` and
    /// the reports otherwise.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Report]) -> bool,
    ) -> Vec<Report> {
        let deadline = Instant::now() + within;
        loop {
            let reports = self.reports();
            if done(&reports) {
                return reports;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; reports: {reports:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until `report` has arrived.
    pub async fn wait_for(&self, report: &Report, within: Duration) -> Vec<Report> {
        self.wait_until(&format!("{report:?}"), within, |r| r.contains(report))
            .await
    }

    /// Whether the watcher is live: a `Resumed` came, and no `Lost` after it.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Waits until the watcher is live.
    pub async fn wait_live(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.is_live() {
            assert!(
                Instant::now() < deadline,
                "no Resumed within {within:?}; reports: {:?}",
                self.reports()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
