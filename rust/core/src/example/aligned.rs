//! [`AlignedBuf`], the 64-byte aligned, growable byte buffer of a numeric column, and its
//! [`BufferPool`]: the only unsafe code of the crate, kept apart from the decoding that uses it
//! (as arrow-buffer keeps its aligned allocation in a module of its own).
//!
//! Numeric columns need their own allocation: TensorFlow adopts a numpy array without a copy
//! only when its data is 64-byte aligned, and numpy's own allocator (like `Vec<u8>`) promises
//! 16 at most.
//!
//! The invariant every unsafe block relies on: `ptr` comes from the global allocator with
//! `Self::layout(capacity)`, and all `capacity` bytes behind it are initialised (zeroed when
//! allocated or grown, overwritten only through safe slices since), so any `len <= capacity`
//! prefix may be read as a `&[u8]`.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use crate::pool::{Pool, Reusable};

/// The alignment of every numeric column.
pub const ALIGN: usize = 64;

/// A growable, zero-initialised byte buffer whose start is [`ALIGN`]-byte aligned.
pub struct AlignedBuf {
    /// Start of an allocation made with `Self::layout(capacity)`: never dangling, never shared
    /// with another `AlignedBuf`; all of its `capacity` bytes are initialised.
    ptr: NonNull<u8>,
    /// Bytes in use: `len <= capacity` always.
    len: usize,
    /// Bytes allocated: at least [`ALIGN`], so never a zero-sized allocation.
    capacity: usize,
}

// SAFETY: AlignedBuf owns its allocation outright, like a Vec<u8> (no other value points into
// it), so moving it to another thread moves the only access.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` gives only reads (`as_slice`, `as_ptr`); every write takes `&mut self`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer with room for `capacity` bytes (at least [`ALIGN`]), all zeroed.
    pub fn with_capacity(capacity: usize) -> Self {
        // Never a zero-sized allocation, so even an empty column has an aligned, real address.
        let capacity = capacity.max(ALIGN);
        let layout = Self::layout(capacity);
        // SAFETY: the layout has a non-zero size (capacity >= ALIGN > 0).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Self {
            ptr,
            len: 0,
            capacity,
        }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, ALIGN).expect("column buffer size overflows isize")
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The [`ALIGN`]-byte aligned start, valid as long as the buffer is neither dropped nor
    /// grown (`set_len` past the capacity).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len <= capacity` bytes are allocated and initialised (the type's
        // invariant), and `&self` keeps them from being written or freed meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Sets the length, growing the allocation (doubling) when needed. Bytes past the old length
    /// are zero or left over from earlier writes; callers overwrite them.
    pub fn set_len(&mut self, len: usize) {
        if len > self.capacity {
            self.grow(len.max(self.capacity.saturating_mul(2)));
        }
        self.len = len;
    }

    /// Reallocates to `capacity` bytes (more than now), zeroing the new ones.
    fn grow(&mut self, capacity: usize) {
        debug_assert!(capacity > self.capacity);
        let old = Self::layout(self.capacity);
        // Checked first: realloc requires the new size, rounded up to ALIGN, to fit an isize.
        let new = Self::layout(capacity);
        // SAFETY: `ptr` was allocated with `old` (the invariant); `new` has the same alignment
        // and a valid, non-zero size.
        let ptr = unsafe { alloc::realloc(self.ptr.as_ptr(), old, new.size()) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(new));
        // SAFETY: the bytes from the old capacity to the new one lie inside the allocation just
        // made and nothing else points at them; zeroing them restores the invariant.
        unsafe {
            ptr.as_ptr()
                .add(self.capacity)
                .write_bytes(0, capacity - self.capacity)
        };
        self.ptr = ptr;
        self.capacity = capacity;
    }

    /// The `len` bytes from `start`, which must lie within the buffer's length (else a panic).
    pub fn slice_mut(&mut self, start: usize, len: usize) -> &mut [u8] {
        let end = start.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.len),
            "write past the end of a column"
        );
        // SAFETY: `start + len <= self.len <= capacity` was checked just above, the bytes are
        // initialised (the invariant), and `&mut self` makes this the only access to them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated with exactly this layout (the invariant), and is freed
        // once: nothing else owns it.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

impl Reusable for AlignedBuf {
    fn with_capacity(capacity: usize) -> Self {
        AlignedBuf::with_capacity(capacity)
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn reuse(&mut self, capacity: usize) {
        self.len = 0;
        if capacity > self.capacity {
            self.grow(capacity);
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// Column buffers given back once nothing views them (Python drops the arrays), for later
/// blocks to reuse; a reused buffer is also initialised already, so it needs no zeroing.
pub type BufferPool = Pool<AlignedBuf>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffer_starts_aligned_even_an_empty_one() {
        for capacity in [0, 1, 63, 64, 65, 4096, 1 << 20] {
            let buf = AlignedBuf::with_capacity(capacity);
            assert_eq!(buf.as_ptr() as usize % ALIGN, 0, "capacity {capacity}");
            assert!(buf.capacity() >= capacity.max(ALIGN));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn growing_keeps_the_bytes_and_the_alignment_and_zeroes_the_new_ones() {
        let mut buf = AlignedBuf::with_capacity(64);
        buf.set_len(64);
        buf.slice_mut(0, 64).fill(7);
        buf.set_len(1000);
        assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
        assert!(buf.capacity() >= 1000);
        assert!(buf.as_slice()[..64].iter().all(|&b| b == 7));
        assert!(buf.as_slice()[64..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_reused_buffer_is_empty_with_room_asked_for() {
        let mut buf = AlignedBuf::with_capacity(64);
        buf.set_len(10);
        Reusable::reuse(&mut buf, 500);
        assert!(buf.is_empty());
        assert!(buf.capacity() >= 500);
        assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
    }

    #[test]
    #[should_panic(expected = "write past the end of a column")]
    fn a_write_past_the_length_panics_instead_of_writing() {
        let mut buf = AlignedBuf::with_capacity(128);
        buf.set_len(8);
        buf.slice_mut(4, 5);
    }

    #[test]
    #[should_panic(expected = "write past the end of a column")]
    fn a_write_whose_end_overflows_panics() {
        let mut buf = AlignedBuf::with_capacity(128);
        buf.set_len(8);
        buf.slice_mut(usize::MAX, 2);
    }
}
