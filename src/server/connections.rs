//! Connection slots: at most `max_connections` connections are served at
//! once, and when every slot is taken, a newcomer gets the slot of the
//! connection that has been quiet the longest.
//!
//! A slot is not held for good by a connection that keeps sending cheap,
//! complete requests (keep-alive): when a new connection arrives and the
//! server is full, a connection is asked to close gracefully — at once if it
//! is between requests, after its response if one is in progress. The one
//! asked is, among connections already answered at least once, the one whose
//! client has been quiet the longest; connections not answered yet (the
//! newcomers, whose clients cannot retry elsewhere) only when no answered one
//! is left. A connection still sending its request headers is not cut short
//! (the header timeout bounds it), so the newcomer may wait for the next
//! candidate: one more is asked every [`EVICT_RETRY`]. The server's own
//! shutdown uses the same graceful close.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// While a newcomer waits for a slot, another quiet connection is asked to
/// close this often (the one asked before may have been mid-request).
const EVICT_RETRY: Duration = Duration::from_millis(100);

/// Every connection being served, and the permits that bound their number.
pub(super) struct Slots {
    permits: Arc<Semaphore>,
    capacity: u32,
    table: Mutex<Table>,
    /// `last_read_ms` counts from here.
    epoch: Instant,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Arc<Activity>>,
    /// The server is shutting down: every connection, new ones included, closes.
    closing: bool,
}

/// What the slot table knows about one connection, shared with its task.
pub(super) struct Activity {
    /// When the client last sent bytes (milliseconds since [`Slots::epoch`]).
    last_read_ms: AtomicU64,
    /// The connection has written part of an answer.
    answered: AtomicBool,
    /// Asked to close (eviction or shutdown); asked once.
    asked: AtomicBool,
    close: Notify,
}

impl Activity {
    fn ask_to_close(&self) {
        if !self.asked.swap(true, Ordering::AcqRel) {
            // notify_one keeps a permit if the task is not waiting yet.
            self.close.notify_one();
        }
    }
}

impl Slots {
    pub(super) fn new(max_connections: usize) -> Arc<Slots> {
        let capacity = u32::try_from(max_connections.max(1)).unwrap_or(u32::MAX);
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            table: Mutex::new(Table::default()),
            epoch: Instant::now(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot for a connection just accepted. When all are taken, quiet
    /// connections are asked to close until one frees; `None` when
    /// `shutdown` changes first.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Slot> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => loop {
                self.evict_quietest();
                tokio::select! {
                    permit = Arc::clone(&self.permits).acquire_owned() => break permit.ok()?,
                    _ = tokio::time::sleep(EVICT_RETRY) => {}
                    _ = shutdown.changed() => return None,
                }
            },
        };
        Some(self.register(permit))
    }

    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let activity = Arc::new(Activity {
            last_read_ms: AtomicU64::new(self.now_ms()),
            answered: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            close: Notify::new(),
        });
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        if table.closing {
            activity.ask_to_close();
        }
        table.conns.insert(id, Arc::clone(&activity));
        Slot {
            id,
            activity,
            slots: Arc::clone(self),
            _permit: permit,
        }
    }

    /// Asks a connection not asked before to close: the quietest of those
    /// answered at least once, else the quietest of all.
    fn evict_quietest(&self) {
        let table = self.table();
        let quietest = table
            .conns
            .values()
            .filter(|a| !a.asked.load(Ordering::Acquire))
            .min_by_key(|a| {
                let not_answered = !a.answered.load(Ordering::Relaxed);
                (not_answered, a.last_read_ms.load(Ordering::Relaxed))
            });
        if let Some(activity) = quietest {
            tracing::debug!("all connection slots taken; closing the quietest connection");
            activity.ask_to_close();
        }
    }

    /// Asks every connection to close, then waits until they have, at most
    /// `grace`. True when all closed in time.
    pub(super) async fn close_all(&self, grace: Duration) -> bool {
        {
            let mut table = self.table();
            table.closing = true;
            for activity in table.conns.values() {
                activity.ask_to_close();
            }
        }
        let all = Arc::clone(&self.permits).acquire_many_owned(self.capacity);
        tokio::time::timeout(grace, all).await.is_ok()
    }
}

/// One connection's slot; dropping it frees the slot.
pub(super) struct Slot {
    id: u64,
    activity: Arc<Activity>,
    slots: Arc<Slots>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table().conns.remove(&self.id);
    }
}

impl Slot {
    /// Resolves when this connection is asked to close.
    pub(super) async fn asked_to_close(&self) {
        self.activity.close.notified().await;
    }

    /// `io` with its reads and first answer recorded, so the slot table knows
    /// how long the client has been quiet and whether it was served.
    pub(super) fn track<T>(&self, io: T) -> Tracked<T> {
        Tracked {
            inner: io,
            activity: Arc::clone(&self.activity),
            slots: Arc::clone(&self.slots),
        }
    }

    /// Drives `conn` to its end; when asked to close, calls `graceful` on it
    /// (hyper's `graceful_shutdown`: close now if idle, else after the
    /// response in progress) and keeps driving it.
    pub(super) async fn serve<C: Future>(
        &self,
        mut conn: Pin<&mut C>,
        graceful: impl FnOnce(Pin<&mut C>),
    ) -> C::Output {
        tokio::select! {
            // The connection first, so it reads what the client already sent
            // and a request that has begun is not mistaken for silence.
            biased;
            out = conn.as_mut() => return out,
            _ = self.asked_to_close() => {}
        }
        graceful(conn.as_mut());
        conn.await
    }
}

/// An I/O stream whose reads (and first write) are recorded in the slot table.
pub(super) struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
    slots: Arc<Slots>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity
                .last_read_ms
                .store(this.slots.now_ms(), Ordering::Relaxed);
        }
        result
    }
}

impl<T> Tracked<T> {
    fn wrote(&self, result: &Poll<std::io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.answered.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn slot(slots: &Arc<Slots>) -> Slot {
        let (_tx, mut rx) = watch::channel(false);
        slots.acquire(&mut rx).await.expect("a free slot")
    }

    fn asked(slot: &Slot) -> bool {
        slot.activity.asked.load(Ordering::Acquire)
    }

    #[tokio::test]
    async fn answered_connections_go_first_then_the_quietest() {
        let slots = Slots::new(3);
        let (fresh, old, recent) = (slot(&slots).await, slot(&slots).await, slot(&slots).await);
        fresh.activity.last_read_ms.store(0, Ordering::Relaxed);
        for (s, read) in [(&old, 10), (&recent, 20)] {
            s.activity.answered.store(true, Ordering::Relaxed);
            s.activity.last_read_ms.store(read, Ordering::Relaxed);
        }
        slots.evict_quietest();
        assert!(asked(&old) && !asked(&recent) && !asked(&fresh));
        slots.evict_quietest();
        assert!(
            asked(&recent) && !asked(&fresh),
            "answered ones before a fresh one"
        );
        slots.evict_quietest();
        assert!(asked(&fresh), "a fresh one when nothing else is left");
    }

    #[tokio::test]
    async fn a_newcomer_waits_for_the_evicted_slot_and_shutdown_asks_everyone() {
        let slots = Slots::new(1);
        let held = slot(&slots).await;
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slot(&slots).await }
        });
        // The holder is asked to close; when it does, the newcomer gets in.
        tokio::time::timeout(Duration::from_secs(1), held.asked_to_close())
            .await
            .expect("the holder is asked to close");
        drop(held);
        let newcomer = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the newcomer gets the freed slot")
            .unwrap();
        let closing = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.close_all(Duration::from_secs(5)).await }
        });
        tokio::time::timeout(Duration::from_secs(1), newcomer.asked_to_close())
            .await
            .expect("shutdown asks every connection to close");
        drop(newcomer);
        assert!(closing.await.unwrap(), "all closed within the grace time");
    }
}
