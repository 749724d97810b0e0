//! A bounded pool of buffers given back by dropped batches and blocks, for the next ones.
//!
//! A fresh multi-megabyte buffer is fresh pages: faulting them in on first write cost most of
//! the reader's system time, and more than the decoding itself on the dense path (glibc also
//! returns large blocks to the OS on free, so the next allocation faults them in again). A
//! reused buffer is already mapped. The pool keeps at most `limit` idle buffers, so memory
//! stays bounded.

use std::sync::{Arc, Mutex};

/// A buffer a [`Pool`] can hand out again.
pub trait Reusable {
    /// An empty buffer with room for at least `capacity` bytes.
    fn with_capacity(capacity: usize) -> Self;

    /// Bytes it holds without reallocating.
    fn capacity(&self) -> usize;

    /// Empties it, keeping the allocation, with room for at least `capacity` bytes.
    fn reuse(&mut self, capacity: usize);
}

impl Reusable for Vec<u8> {
    fn with_capacity(capacity: usize) -> Self {
        Vec::with_capacity(capacity)
    }

    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }

    fn reuse(&mut self, capacity: usize) {
        self.clear();
        self.reserve(capacity);
    }
}

/// Idle buffers shared by a builder and the batches it hands out; clones share one pool.
#[derive(Debug)]
pub struct Pool<B> {
    free: Arc<Mutex<Vec<B>>>,
    limit: usize,
}

// Not derived: a derive would require `B: Clone`, yet clones share the buffers.
impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            free: Arc::clone(&self.free),
            limit: self.limit,
        }
    }
}

impl<B: Reusable> Pool<B> {
    /// Buffers of this size or less (an empty column's is 64 bytes) cost nothing to allocate
    /// afresh, so they are not kept.
    const TOO_SMALL: usize = 64;

    /// A pool keeping at most `limit` idle buffers.
    pub fn new(limit: usize) -> Self {
        Self {
            free: Arc::default(),
            limit,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes: the smallest idle one that fits
    /// (of equals, the latest given back), else the largest idle one grown to fit, else a new
    /// one. Best fit matters where one pool serves columns of very different sizes: were a small
    /// column to take the large buffer, the large column would have to grow a small buffer, and
    /// zero the new bytes, on every block.
    pub fn take(&self, capacity: usize) -> B {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            // Latest first: `min_by_key` keeps the first of equals, so the buffer given back
            // last, the most likely still in cache, wins ties.
            let sizes = free.iter().map(B::capacity).enumerate().rev();
            let best_fit = sizes
                .clone()
                .filter(|&(_, size)| size >= capacity)
                .min_by_key(|&(_, size)| size);
            let largest = || sizes.min_by_key(|&(_, size)| std::cmp::Reverse(size));
            let chosen = best_fit.or_else(largest);
            chosen.map(|(i, _)| free.swap_remove(i))
        };
        match reused {
            Some(mut buffer) => {
                buffer.reuse(capacity);
                buffer
            }
            None => B::with_capacity(capacity),
        }
    }

    /// Keeps `buffer` for reuse, unless the pool is full or the buffer too small to matter.
    pub fn give(&self, buffer: B) {
        if buffer.capacity() <= Self::TOO_SMALL {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.limit {
            free.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitting_buffer_is_reused_before_one_that_must_grow() {
        let pool = Pool::<Vec<u8>>::new(4);
        pool.give(Vec::with_capacity(1000));
        pool.give(vec![7; 100]);
        let taken = pool.take(500);
        assert!(taken.is_empty());
        assert_eq!(taken.capacity(), 1000);
        let grown = pool.take(5000);
        assert!(grown.is_empty() && grown.capacity() >= 5000);
        assert!(
            pool.take(10).capacity() < 1000,
            "a new buffer once none is idle"
        );
    }

    #[test]
    fn of_equal_buffers_the_latest_given_back_is_taken() {
        let pool = Pool::<Vec<u8>>::new(4);
        let (first, last) = (Vec::with_capacity(1000), Vec::with_capacity(1000));
        let last_ptr = last.as_ptr();
        pool.give(first);
        pool.give(last);
        let taken = pool.take(10);
        assert_eq!(taken.as_ptr(), last_ptr);
    }

    #[test]
    fn the_smallest_fitting_buffer_is_taken_else_the_largest_grows() {
        let pool = Pool::<Vec<u8>>::new(4);
        for size in [8000, 100, 3000] {
            pool.give(Vec::with_capacity(size));
        }
        assert_eq!(pool.take(50).capacity(), 100);
        assert_eq!(pool.take(2000).capacity(), 3000);
        pool.give(Vec::with_capacity(500));
        assert!(pool.take(9000).capacity() >= 9000, "the 8000 grows");
        assert_eq!(pool.take(0).capacity(), 500);
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit_and_no_tiny_buffers() {
        let pool = Pool::<Vec<u8>>::new(1);
        pool.give(Vec::with_capacity(64));
        pool.give(Vec::with_capacity(200));
        pool.give(Vec::with_capacity(300)); // beyond the limit: dropped
        assert_eq!(pool.take(0).capacity(), 200);
        assert_eq!(pool.take(0).capacity(), 0);
    }
}
