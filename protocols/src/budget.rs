//! Byte budgets: how many bytes the node holds at once for its peers (blocks
//! being served, tx batches being received), beyond the per-message caps.
//!
//! A handler reserves the bytes of what it is about to hold before it holds
//! them, and gives them back when the [`Reservation`] drops. A reservation
//! never waits: when the budget is spent the handler declines
//! ([`crate::ProtocolError::Refused`], no penalty for the peer: it is the
//! node that is busy), so a peer that never reads what it asked for cannot
//! make the node hold more than the budget. A budget may have a parent: a
//! peer's own budget inside the node-wide one, so that one peer cannot take
//! it all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bounded number of bytes, shared by clones.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    total: usize,
    peak: AtomicUsize,
    refused: AtomicU64,
    parent: Option<ByteBudget>,
}

/// Bytes held from a [`ByteBudget`] (and its parent), given back on drop.
#[derive(Debug)]
pub struct Reservation {
    _own: OwnedSemaphorePermit,
    _parent: Option<Box<Reservation>>,
}

impl ByteBudget {
    /// A budget of `total` bytes (at most 4 GiB counts).
    pub fn new(total: usize) -> ByteBudget {
        Self::with_parent(total, None)
    }

    /// A budget of `total` bytes inside `parent`: a reservation takes its
    /// bytes from both.
    pub fn child(&self, total: usize) -> ByteBudget {
        Self::with_parent(total, Some(self.clone()))
    }

    fn with_parent(total: usize, parent: Option<ByteBudget>) -> ByteBudget {
        let total = total.min(u32::MAX as usize);
        ByteBudget {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(total)),
                total,
                peak: AtomicUsize::new(0),
                refused: AtomicU64::new(0),
                parent,
            }),
        }
    }

    /// Reserves `bytes` (at least 1) now, or returns `None` (and counts a
    /// refusal) when this budget or its parent has not that many left.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let n = u32::try_from(bytes.max(1)).ok()?;
        let parent = match &self.inner.parent {
            Some(p) => match p.try_reserve(bytes) {
                Some(r) => Some(Box::new(r)),
                None => {
                    self.inner.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            },
            None => None,
        };
        let Ok(own) = self.inner.permits.clone().try_acquire_many_owned(n) else {
            // Counted here and by every budget above this one.
            let mut b = Some(self);
            while let Some(budget) = b {
                budget.inner.refused.fetch_add(1, Ordering::Relaxed);
                b = budget.inner.parent.as_ref();
            }
            return None;
        };
        self.inner.peak.fetch_max(self.in_use(), Ordering::Relaxed);
        Some(Reservation {
            _own: own,
            _parent: parent,
        })
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.inner
            .total
            .saturating_sub(self.inner.permits.available_permits())
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// Reservations refused so far (by this budget or by one of its
    /// children).
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let b = ByteBudget::new(100);
        let r1 = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let r2 = b.try_reserve(40).unwrap();
        assert_eq!((b.in_use(), b.peak(), b.refused()), (100, 100, 1));
        drop(r1);
        assert_eq!(b.in_use(), 40);
        assert!(b.try_reserve(101).is_none(), "more than the whole budget");
        drop(r2);
        assert_eq!((b.in_use(), b.peak()), (0, 100));
    }

    #[test]
    fn a_child_takes_from_its_parent_and_is_capped_by_its_own_share() {
        let all = ByteBudget::new(100);
        let a = all.child(50);
        let b = all.child(50);
        let ra = a.try_reserve(50).unwrap();
        assert!(a.try_reserve(1).is_none(), "a's share is spent");
        assert_eq!(all.in_use(), 50);
        let rb = b.try_reserve(50).unwrap();
        let c = all.child(50);
        assert!(c.try_reserve(1).is_none(), "the parent is spent");
        assert_eq!(c.in_use(), 0, "a refused child reservation holds nothing");
        assert_eq!(
            (a.refused(), all.refused()),
            (1, 2),
            "both refusals count above"
        );
        drop((ra, rb));
        assert_eq!(all.in_use(), 0);
        assert!(c.try_reserve(50).is_some());
    }
}
