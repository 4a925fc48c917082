//! A caching global allocator for large blocks.
//!
//! A training step allocates and frees the same large tensors (activations, gradients, matmul
//! outputs) every step. Through glibc those blocks are mmapped and unmapped, or trimmed off the
//! heap top, so every step faults its working set back in page by page and the kernel zeroes
//! each page again (7.5% of a CPU training step, docs/performance.md). Here a freed large block
//! goes onto a free list of its size class instead, and the next allocation of that class takes
//! it back already mapped — the CPU counterpart of PyTorch's CUDA caching allocator.
//!
//! Blocks below [`MIN_CACHED`] stay with malloc's own bins. Sizes are rounded up to one of four
//! classes per power of two (at most 25% more address space; the untouched tail of a block is
//! never faulted in). At most [`DEFAULT_LIMIT`] bytes (or what [`CachingAllocator::set_limit`]
//! says; `hier` reads `HIER_ALLOC_CACHE_MIB`, 0 turns the cache off) wait on the free lists;
//! beyond that, and when a class's list is full, blocks go back to the system.
//!
//! A program opts in with one declaration (the `hier` binary does):
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOCATOR: hier_train::alloc::CachingAllocator = hier_train::alloc::CachingAllocator::new();
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Smallest block that is cached (smaller ones are served well by malloc's bins).
pub const MIN_CACHED: usize = 1 << 16;
/// Largest block that is cached.
pub const MAX_CACHED: usize = 1 << 34;
/// Most bytes held on the free lists at once, unless set otherwise.
pub const DEFAULT_LIMIT: usize = 2 << 30;

const SUB_CLASSES: usize = 4; // size classes per power of two
const MIN_SHIFT: u32 = MIN_CACHED.trailing_zeros();
const CLASSES: usize = (MAX_CACHED.trailing_zeros() - MIN_SHIFT) as usize * SUB_CLASSES + 1;
// free blocks kept per class: a (1,2) training step at batch 4 frees more than 128 blocks of one
// class at once (with 128 slots, ~86 blocks per step still went back to glibc)
const SLOTS: usize = 1024;
const ALIGN: usize = 4096; // every cached block is page aligned, so it serves any smaller alignment

/// Index of the smallest class that holds `size` bytes (`MIN_CACHED <= size <= MAX_CACHED`).
fn class_of(size: usize) -> usize {
    let shift = usize::BITS - 1 - size.leading_zeros(); // floor(log2(size))
    let base = 1usize << shift;
    let step = base / SUB_CLASSES;
    let sub = (size - base).div_ceil(step);
    (shift - MIN_SHIFT) as usize * SUB_CLASSES + sub
}

/// Bytes of a block of class `index`.
fn class_size(index: usize) -> usize {
    let base = MIN_CACHED << (index / SUB_CLASSES);
    base + (index % SUB_CLASSES) * (base / SUB_CLASSES)
}

/// One class's free list behind a spin lock (held for a push or a pop only).
struct FreeList {
    locked: AtomicBool,
    len: UnsafeCell<usize>,
    blocks: UnsafeCell<[*mut u8; SLOTS]>,
}

// SAFETY: `len` and `blocks` are only touched while `locked` is held.
unsafe impl Sync for FreeList {}

impl FreeList {
    const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
            len: UnsafeCell::new(0),
            blocks: UnsafeCell::new([std::ptr::null_mut(); SLOTS]),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut usize, &mut [*mut u8; SLOTS]) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held until the store below.
        let out = unsafe { f(&mut *self.len.get(), &mut *self.blocks.get()) };
        self.locked.store(false, Ordering::Release);
        out
    }

    fn pop(&self) -> Option<*mut u8> {
        self.with(|len, blocks| {
            (*len > 0).then(|| {
                *len -= 1;
                blocks[*len]
            })
        })
    }

    fn push(&self, block: *mut u8) -> bool {
        self.with(|len, blocks| {
            let room = *len < SLOTS;
            if room {
                blocks[*len] = block;
                *len += 1;
            }
            room
        })
    }
}

/// The allocator; install with `#[global_allocator]`.
pub struct CachingAllocator {
    free: [FreeList; CLASSES],
    cached_bytes: AtomicUsize,
    limit: AtomicUsize,
}

impl CachingAllocator {
    /// An allocator with an empty cache and the [`DEFAULT_LIMIT`].
    pub const fn new() -> Self {
        Self {
            free: [const { FreeList::new() }; CLASSES],
            cached_bytes: AtomicUsize::new(0),
            limit: AtomicUsize::new(DEFAULT_LIMIT),
        }
    }

    /// The class that serves `layout`, if it is cached at all. The answer depends on the layout
    /// only, so `dealloc` finds the class `alloc` used.
    fn class(layout: Layout) -> Option<usize> {
        let cached = (MIN_CACHED..=MAX_CACHED).contains(&layout.size()) && layout.align() <= ALIGN;
        cached.then(|| class_of(layout.size()))
    }

    fn block_layout(class: usize) -> Layout {
        // SAFETY: class sizes are non-zero multiples of the (power of two) page size and far
        // below isize::MAX.
        unsafe { Layout::from_size_align_unchecked(class_size(class), ALIGN) }
    }

    fn take(&self, class: usize) -> Option<*mut u8> {
        let block = self.free[class].pop()?;
        self.cached_bytes
            .fetch_sub(class_size(class), Ordering::Relaxed);
        Some(block)
    }

    /// Hold at most `bytes` on the free lists from now on (0: no caching).
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// Bytes now waiting on the free lists.
    #[cfg(test)]
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for CachingAllocator {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            while let Some(block) = self.take(class) {
                // SAFETY: the block came from `System` with this class's layout.
                unsafe { System.dealloc(block, Self::block_layout(class)) };
            }
        }
    }
}

impl Default for CachingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for CachingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::class(layout) {
            None => unsafe { System.alloc(layout) },
            Some(class) => match self.take(class) {
                Some(block) => block,
                None => unsafe { System.alloc(Self::block_layout(class)) },
            },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::class(layout) {
            None => unsafe { System.alloc_zeroed(layout) },
            Some(class) => match self.take(class) {
                Some(block) => {
                    unsafe { block.write_bytes(0, layout.size()) };
                    block
                }
                // fresh pages from the system are zero already
                None => unsafe { System.alloc_zeroed(Self::block_layout(class)) },
            },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            return unsafe { System.dealloc(ptr, layout) };
        };
        let size = class_size(class);
        let within_limit = self.cached_bytes.fetch_add(size, Ordering::Relaxed) + size
            <= self.limit.load(Ordering::Relaxed);
        if !(within_limit && self.free[class].push(ptr)) {
            self.cached_bytes.fetch_sub(size, Ordering::Relaxed);
            unsafe { System.dealloc(ptr, Self::block_layout(class)) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is a valid size for `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new_layout)) {
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            (Some(old), Some(new)) if old == new => ptr,
            _ => {
                let new_ptr = unsafe { self.alloc(new_layout) };
                if !new_ptr.is_null() {
                    let len = layout.size().min(new_size);
                    unsafe { std::ptr::copy_nonoverlapping(ptr, new_ptr, len) };
                    unsafe { self.dealloc(ptr, layout) };
                }
                new_ptr
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_the_smallest_that_fit() {
        assert_eq!(class_size(0), MIN_CACHED);
        assert_eq!(class_size(CLASSES - 1), MAX_CACHED);
        for size in [
            MIN_CACHED,
            MIN_CACHED + 1,
            MIN_CACHED * 5 / 4,
            MIN_CACHED * 5 / 4 + 1,
            (1 << 20) - 1,
            1 << 20,
            3 << 20,
            (4 << 20) + 4096,
            MAX_CACHED,
        ] {
            let class = class_of(size);
            assert!(class_size(class) >= size, "{size}: class {class} too small");
            assert!(
                class == 0 || class_size(class - 1) < size,
                "{size}: not the smallest"
            );
            assert!(
                class_size(class) <= size + size / 4,
                "{size}: more than 25% over"
            );
        }
    }

    #[test]
    fn a_freed_block_is_reused_and_zeroed_on_request() {
        let cache = CachingAllocator::new();
        let layout = Layout::from_size_align(3 << 20, 64).unwrap();
        unsafe {
            let a = cache.alloc(layout);
            assert!(!a.is_null());
            a.write_bytes(7, layout.size());
            cache.dealloc(a, layout);
            assert_eq!(cache.cached_bytes(), class_size(class_of(3 << 20)));
            // a slightly different size of the same class gets the same block back, zeroed
            let similar = Layout::from_size_align((3 << 20) - 100, 8).unwrap();
            let b = cache.alloc_zeroed(similar);
            assert_eq!(a, b);
            assert_eq!(cache.cached_bytes(), 0);
            let bytes = std::slice::from_raw_parts(b, similar.size());
            assert!(bytes.iter().all(|&x| x == 0));
            cache.dealloc(b, similar);
            // small and over-aligned blocks bypass the cache
            let small = Layout::from_size_align(1024, 8).unwrap();
            let c = cache.alloc(small);
            cache.dealloc(c, small);
            let aligned = Layout::from_size_align(1 << 20, 1 << 16).unwrap();
            let d = cache.alloc(aligned);
            assert_eq!(d as usize % (1 << 16), 0);
            cache.dealloc(d, aligned);
            assert_eq!(cache.cached_bytes(), class_size(class_of(3 << 20)));
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes() {
        let cache = CachingAllocator::new();
        let layout = Layout::from_size_align(1000, 4).unwrap();
        unsafe {
            let mut p = cache.alloc(layout);
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let mut size = 1000;
            for new_size in [100_000, 100_001, 5_000_000, 50_000, 700] {
                p = cache.realloc(p, Layout::from_size_align(size, 4).unwrap(), new_size);
                for i in 0..size.min(new_size).min(1000) {
                    assert_eq!(*p.add(i), (i % 251) as u8, "byte {i} after {new_size}");
                }
                size = new_size;
            }
            cache.dealloc(p, Layout::from_size_align(size, 4).unwrap());
        }
    }

    #[test]
    fn the_limit_sends_blocks_back_to_the_system() {
        let cache = CachingAllocator::new();
        let layout = Layout::from_size_align(1 << 30, 64).unwrap();
        unsafe {
            let blocks: Vec<*mut u8> = (0..3).map(|_| cache.alloc(layout)).collect();
            for &b in &blocks {
                assert!(!b.is_null());
                cache.dealloc(b, layout);
            }
        }
        assert_eq!(cache.cached_bytes(), DEFAULT_LIMIT);
        // with the cache off, nothing is held
        let off = CachingAllocator::new();
        off.set_limit(0);
        unsafe {
            let block = off.alloc(layout);
            off.dealloc(block, layout);
        }
        assert_eq!(off.cached_bytes(), 0);
    }
}
