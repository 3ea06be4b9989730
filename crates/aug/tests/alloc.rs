//! The batch loop allocates nothing per image once its per-thread buffers have
//! grown (a counting global allocator; this test binary holds only this test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mocca_aug::{ImageU8, Preset};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn batch_into_a_reused_buffer_allocates_nothing_per_image() {
    let n = 64;
    let px: Vec<u8> = (0..n * 60 * 60 * 3).map(|i| (i * 31 % 253) as u8).collect();
    let images: Vec<ImageU8> = px
        .chunks_exact(60 * 60 * 3)
        .map(|p| ImageU8::new(p, 60, 60, 3).unwrap())
        .collect();
    let ids: Vec<u64> = (0..n as u64).collect();
    // 48 px SimCLR: crop, flip, jitter, grayscale, blur, normalize.
    let pipe = Preset::SimClr.compose(48).unwrap();
    let mut out = vec![0.0f32; n * 3 * 48 * 48];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        pipe.apply_batch_into(&images, &ids, 0, 0, 0, &mut out)
            .unwrap();
        let before = ALLOCS.load(Ordering::Relaxed);
        pipe.apply_batch_into(&images, &ids, 0, 1, 0, &mut out)
            .unwrap();
        let during = ALLOCS.load(Ordering::Relaxed) - before;
        assert!(during < 4, "{during} allocations for {n} images");
    });
}
