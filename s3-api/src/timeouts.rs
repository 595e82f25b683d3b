//! Time limits on what a client sends and reads: each wait for a byte of a request body
//! ([`IdleBody`]), a connection's time with no request in progress ([`Activity`]), each
//! wait for the client to take a byte of what the gateway writes ([`StallGuard`]), and
//! each wait of an answer's body for hyper to ask for its next frame
//! ([`Activity::stalled_answer`]): an HTTP/2 client that never opens a stream's
//! flow-control window stalls that answer while the socket itself keeps moving.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use s3s::StdError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How the error of a stalled body begins; `errors::from_write` recognises it.
pub(crate) const BODY_STALLED: &str = "RequestTimeout";

/// A request body that fails once the gateway has waited `idle` for a byte without one
/// arriving. Only waiting counts: time the gateway spends elsewhere between reads (writing
/// a segment to nodes) is not the client's.
pub(crate) struct IdleBody {
    inner: Incoming,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` measures the current wait.
    armed: bool,
    stalled: bool,
}

impl IdleBody {
    pub(crate) fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
            stalled: false,
        }
    }

    fn stalled_error(&self) -> StdError {
        format!(
            "{BODY_STALLED}: no byte of the request body arrived for {:?}",
            self.idle
        )
        .into()
    }
}

impl Body for IdleBody {
    type Data = Bytes;
    type Error = StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StdError>>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(Some(Err(this.stalled_error())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|frame| frame.map_err(StdError::from)))
            }
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    let deadline = Instant::now() + this.idle;
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.stalled = true;
                        Poll::Ready(Some(Err(this.stalled_error())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.stalled && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail once one has waited `limit` for the client to take a
/// byte (a client that stops reading an answer): hyper then ends the connection, dropping
/// the answer's body and whatever the read behind it held. Only waiting counts: time
/// the gateway spends producing the answer is not the client's.
pub(crate) struct StallGuard<T> {
    inner: T,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` measures the current wait.
    armed: bool,
    stalled: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<T> StallGuard<T> {
    /// `inner`, whose writes may wait at most `limit`; `on_stall` runs once if one does.
    pub(crate) fn new(
        inner: T,
        limit: Duration,
        on_stall: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
            stalled: Some(Box::new(on_stall)),
        }
    }

    /// What a write that returned `polled` means: progress disarms the timer, a wait arms
    /// it, and a wait past `limit` is an error.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let deadline = Instant::now() + self.limit;
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        if let Some(on_stall) = self.stalled.take() {
                            on_stall();
                        }
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the client took no byte of the answer for {:?}", self.limit),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

/// What one connection is doing: the requests in progress on it (from the head read to the
/// last byte of the answer handed to hyper), for closing it once it has been idle.
pub(crate) struct Activity {
    open: AtomicUsize,
    begun: AtomicU64,
    changed: Notify,
    /// The answers handed to hyper whose bodies are not finished.
    answers: Mutex<Vec<Weak<Handed>>>,
    /// What [`Handed`] times count from.
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            changed: Notify::new(),
            answers: Mutex::new(Vec::new()),
            epoch: Instant::now(),
        }
    }
}

/// One answer's body as hyper sees it: since when (milliseconds after the connection's
/// epoch, plus one; 0 while hyper is waiting on the body instead) hyper has held its
/// head or latest frame without asking for the next. hyper asks for the next frame once
/// it can send it, so a long wait here is a client that takes nothing of this answer.
pub(crate) struct Handed {
    since: AtomicU64,
    epoch: Instant,
}

impl Handed {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn hand_over(&self) {
        self.since.store(self.now(), Ordering::SeqCst);
    }

    fn asked(&self) {
        self.since.store(0, Ordering::SeqCst);
    }

    /// How long hyper has held what it was handed, if it holds anything.
    fn held(&self) -> Option<Duration> {
        match self.since.load(Ordering::SeqCst) {
            0 => None,
            since => Some(Duration::from_millis(self.now().saturating_sub(since))),
        }
    }
}

impl Activity {
    /// Marks a request in progress until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.begun.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Wraps an answer's body handed to hyper now: it counts as in progress (`busy`) until
    /// hyper has taken its last frame, and is watched by [`Activity::stalled_answer`].
    pub(crate) fn track(&self, inner: s3s::Body, busy: Busy) -> Tracked {
        let handed = Arc::new(Handed {
            since: AtomicU64::new(0),
            epoch: self.epoch,
        });
        handed.hand_over();
        if let Ok(mut answers) = self.answers.lock() {
            answers.retain(|answer| answer.strong_count() > 0);
            answers.push(Arc::downgrade(&handed));
        }
        self.changed.notify_waiters();
        Tracked {
            inner,
            busy: Some(busy),
            handed,
        }
    }

    /// Returns once some answer on this connection has waited `limit` for hyper to ask
    /// for its next frame: the client took nothing of it for that long, whether its socket
    /// is full or (HTTP/2) it never opened the stream's window. Checked a few times per
    /// `limit`, and not at all while no answer is out.
    pub(crate) async fn stalled_answer(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(50));
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (out, stalled) = match self.answers.lock() {
                Ok(mut answers) => {
                    answers.retain(|answer| answer.strong_count() > 0);
                    let stalled = answers.iter().any(|answer| {
                        answer
                            .upgrade()
                            .and_then(|handed| handed.held())
                            .is_some_and(|held| held >= limit)
                    });
                    (!answers.is_empty(), stalled)
                }
                Err(_) => (false, false),
            };
            if stalled {
                return;
            }
            if out {
                tokio::time::sleep(tick).await;
            } else {
                changed.await;
            }
        }
    }

    /// Requests begun so far.
    pub(crate) fn begun(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    /// Returns once the connection has had no request in progress for `idle` at a stretch.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let begun = self.begun();
            tokio::select! {
                () = tokio::time::sleep(idle) => {
                    if self.open.load(Ordering::SeqCst) == 0 && self.begun() == begun {
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }
}

/// A request in progress on a connection (see [`Activity::begin`]).
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// An answer's body that keeps its request marked in progress until hyper has taken its
/// last frame (or dropped it), and notes when hyper asks for frames (made by
/// [`Activity::track`]).
pub(crate) struct Tracked {
    inner: s3s::Body,
    busy: Option<Busy>,
    handed: Arc<Handed>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StdError>>> {
        let this = self.get_mut();
        this.handed.asked();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.busy = None,
            Poll::Ready(Some(Ok(_))) => this.handed.hand_over(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_progress_for_the_whole_time() {
        let activity = Arc::new(Activity::default());
        let idle = Duration::from_secs(10);
        let started = Instant::now();
        activity.idle_for(idle).await;
        assert_eq!(started.elapsed(), idle);

        let busy = activity.begin();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                activity.idle_for(idle).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(busy);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // A request begun and ended within the idle time starts the count again.
        drop(activity.begin());
        let waited = watcher.await.unwrap();
        assert_eq!(waited, Duration::from_secs(45));
    }

    /// An answer whose frames hyper keeps asking for is never stalled, however long it
    /// takes; one whose frame hyper holds past the limit is.
    #[tokio::test(start_paused = true)]
    async fn an_answer_is_stalled_only_while_hyper_holds_what_it_was_handed() {
        struct Channel(tokio::sync::mpsc::Receiver<Bytes>);
        impl Body for Channel {
            type Data = Bytes;
            type Error = StdError;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, StdError>>> {
                self.0
                    .poll_recv(cx)
                    .map(|bytes| bytes.map(|bytes| Ok(Frame::data(bytes))))
            }
        }
        let limit = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let body = s3s::Body::http_body(Channel(rx));
        let mut tracked = activity.track(body, activity.begin());
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                activity.stalled_answer(limit).await;
                started.elapsed()
            })
        };
        // Hyper asks at once and waits 30 s on a slow body: not the client's doing.
        let asking = tokio::spawn(async move {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut tracked).poll_frame(cx)).await;
            (tracked, frame.is_some())
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        let (tracked, answered) = asking.await.unwrap();
        assert!(answered);
        assert!(!watcher.is_finished());
        // Then hyper holds the frame and never asks again.
        let waited = watcher.await.unwrap();
        assert!(
            waited >= Duration::from_secs(40) && waited <= Duration::from_secs(43),
            "{waited:?}"
        );
        drop(tracked);
    }
}
