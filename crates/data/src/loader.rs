//! The prefetching loader (docs on [`Loader`]).

use crate::error::{DataError, Result};
use crate::sampler::Batch;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

/// A batch and what the closure made of it.
#[derive(Debug)]
pub struct LoadedBatch<T> {
    pub batch: Batch,
    pub data: T,
}

/// A prefetching loader: a background thread prepares the next batches while
/// the caller trains on the current one.
///
/// The caller's closure does the work (gather images, augment, stack) and
/// runs on one worker thread, batch after batch in sampler order; it may use
/// rayon inside. Results reach the caller through a bounded queue, in the same
/// order, so the output never depends on timing. The closure receives the
/// whole [`Batch`], position included: seed per-batch randomness (augmentation)
/// from `(epoch, step)` and a resumed run reproduces it.
///
/// An error returned by the closure is handed to the caller in its place and
/// ends the stream; a panic in the closure is re-raised in the caller's
/// thread. Dropping the loader stops the worker (after the batch it is
/// preparing, if any) and joins it: no thread outlives the loader.
pub struct Loader<T, E> {
    rx: Option<Receiver<std::result::Result<LoadedBatch<T>, E>>>,
    worker: Option<JoinHandle<()>>,
}

impl<T: Send + 'static, E: Send + 'static> Loader<T, E> {
    /// Starts the worker on `batches` (usually [`BatchSampler::iter_from`]).
    ///
    /// `depth` (≥ 1) is how many prepared batches may wait beyond the one the
    /// caller holds: 1 prepares batch t+1 while step t runs, 2 also t+2. Each
    /// waiting batch costs its memory, so keep it small.
    ///
    /// [`BatchSampler::iter_from`]: crate::BatchSampler::iter_from
    pub fn new<I, F>(batches: I, depth: usize, mut prepare: F) -> Result<Self>
    where
        I: IntoIterator<Item = Batch>,
        I::IntoIter: Send + 'static,
        F: FnMut(&Batch) -> std::result::Result<T, E> + Send + 'static,
    {
        if depth == 0 {
            return Err(DataError::InvalidArgument(
                "loader depth must be at least 1".into(),
            ));
        }
        // The worker holds one finished batch while blocked in `send`, so a
        // channel of `depth - 1` slots gives `depth` batches ahead.
        let (tx, rx) = sync_channel(depth - 1);
        let batches = batches.into_iter();
        let worker = std::thread::Builder::new()
            .name("mocca-data-loader".into())
            .spawn(move || {
                for batch in batches {
                    let item = prepare(&batch).map(|data| LoadedBatch { batch, data });
                    let failed = item.is_err();
                    // A send error means the loader was dropped: stop quietly.
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(DataError::Thread)?;
        Ok(Loader {
            rx: Some(rx),
            worker: Some(worker),
        })
    }
}

impl<T, E> Loader<T, E> {
    fn shut_down(&mut self) -> std::thread::Result<()> {
        self.rx = None;
        match self.worker.take() {
            Some(w) => w.join(),
            None => Ok(()),
        }
    }
}

impl<T, E> Iterator for Loader<T, E> {
    type Item = std::result::Result<LoadedBatch<T>, E>;

    fn next(&mut self) -> Option<Self::Item> {
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(Ok(item)) => Some(Ok(item)),
            Ok(Err(e)) => {
                // The worker stops after an error; the stream ends here.
                let _ = self.shut_down();
                Some(Err(e))
            }
            Err(_) => {
                // The worker finished its batches, or panicked.
                if let Err(panic) = self.shut_down() {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl<T, E> Drop for Loader<T, E> {
    fn drop(&mut self) {
        // A worker panic not yet seen by `next` is dropped with the loader:
        // panicking inside drop would abort.
        let _ = self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{BatchSampler, Order};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    fn sampler() -> BatchSampler {
        BatchSampler::new(20, 4, Order::Shuffled { seed: 1 }, true).unwrap()
    }

    #[test]
    fn yields_prepared_batches_in_sampler_order() {
        let s = sampler();
        let loader: Loader<usize, String> =
            Loader::new(s.iter_from(0, 0).take(12), 2, |b: &Batch| {
                Ok(b.indices.iter().sum())
            })
            .unwrap();
        let got: Vec<(Batch, usize)> = loader
            .map(|r| r.unwrap())
            .map(|l| (l.batch, l.data))
            .collect();
        let want: Vec<Batch> = s.iter_from(0, 0).take(12).collect();
        assert_eq!(got.len(), 12);
        for ((b, sum), w) in got.iter().zip(&want) {
            assert_eq!(b, w);
            assert_eq!(*sum, w.indices.iter().sum::<usize>());
        }
    }

    #[test]
    fn error_is_returned_in_place_and_ends_the_stream() {
        let mut loader = Loader::new(sampler().iter_from(0, 0), 1, |b: &Batch| {
            if b.step == 2 {
                Err(format!("bad batch at step {}", b.step))
            } else {
                Ok(b.step)
            }
        })
        .unwrap();
        assert_eq!(loader.next().unwrap().unwrap().data, 0);
        assert_eq!(loader.next().unwrap().unwrap().data, 1);
        assert_eq!(loader.next().unwrap().unwrap_err(), "bad batch at step 2");
        assert!(loader.next().is_none());
    }

    #[test]
    fn next_batch_is_prepared_while_the_caller_holds_the_current_one() {
        let (started_tx, started_rx) = mpsc::channel();
        let mut loader: Loader<usize, ()> =
            Loader::new(sampler().iter_from(0, 0), 1, move |b: &Batch| {
                started_tx.send(b.step).unwrap();
                Ok(b.step)
            })
            .unwrap();
        let first = loader.next().unwrap().unwrap();
        assert_eq!(first.data, 0);
        // Without taking another batch, the worker starts on step 1 ...
        let wait = Duration::from_secs(10);
        assert_eq!(started_rx.recv_timeout(wait), Ok(0));
        assert_eq!(started_rx.recv_timeout(wait), Ok(1));
        // ... and, at depth 1, not on step 2 until step 1 is taken.
        assert!(started_rx.recv_timeout(Duration::from_millis(200)).is_err());
        assert_eq!(loader.next().unwrap().unwrap().data, 1);
        assert_eq!(started_rx.recv_timeout(wait), Ok(2));
    }

    #[test]
    fn dropping_mid_stream_stops_and_joins_the_worker() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let mut loader: Loader<(), ()> =
            Loader::new(sampler().iter_from(0, 0), 2, move |_: &Batch| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        loader.next().unwrap().unwrap();
        drop(loader);
        // Joined: the closure (and its clone of the counter) is gone, and the
        // endless sampler was abandoned after 1 taken + 1 queued + 1 held batch.
        assert_eq!(Arc::strong_count(&calls), 1);
        assert!(calls.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn finite_batches_end_the_stream() {
        let loader: Loader<u64, ()> =
            Loader::new(sampler().epoch(3), 1, |b: &Batch| Ok(b.epoch)).unwrap();
        let epochs: Vec<u64> = loader.map(|r| r.unwrap().data).collect();
        assert_eq!(epochs, vec![3; 5]);
    }

    #[test]
    #[should_panic(expected = "closure bug")]
    fn panic_in_the_closure_reaches_the_caller() {
        let mut loader: Loader<(), ()> = Loader::new(sampler().iter_from(0, 0), 1, |_: &Batch| {
            panic!("closure bug")
        })
        .unwrap();
        let _ = loader.next();
    }

    #[test]
    fn zero_depth_is_rejected() {
        let r: Result<Loader<(), ()>> = Loader::new(sampler().epoch(0), 0, |_: &Batch| Ok(()));
        assert!(r.is_err());
    }
}
