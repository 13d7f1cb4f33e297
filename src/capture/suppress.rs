//! Suppression: events logged on the pipeline's own threads (by a sink's or
//! an enricher's dependencies, or by a `Debug` impl that logs while it is
//! being captured) are never fed back into the pipeline.
//!
//! A thread-local flag, not a filter: it costs one read per event and needs
//! no knowledge of which crates the dependencies log under.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

thread_local! {
    static SUPPRESSED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as one of the pipeline's own: nothing logged on
/// it is captured.
pub(crate) fn mark_pipeline_thread() {
    SUPPRESSED.with(|s| s.set(true));
}

/// Whether capture is suppressed on this thread now.
pub(crate) fn is_suppressed() -> bool {
    SUPPRESSED.with(|s| s.get())
}

/// Runs `f` with capture suppressed on this thread, restoring the previous
/// state afterwards (also when `f` panics).
pub(crate) fn suppressed<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0;
            SUPPRESSED.with(|s| s.set(prev));
        }
    }
    let _restore = Restore(SUPPRESSED.with(|s| s.replace(true)));
    f()
}

/// Polls a future with capture suppressed on the polling thread, so a task
/// of the pipeline's running on an application runtime is not captured.
pub(crate) struct Suppressed<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for Suppressed<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        suppressed(|| inner.poll(cx))
    }
}

/// Spawns a pipeline task on the current runtime, capture suppressed.
pub(crate) fn spawn_suppressed<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Suppressed(Box::pin(f)))
}
