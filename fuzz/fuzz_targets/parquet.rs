#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most live heap the target may hold while reading an input of `n` bytes: a
/// base, plus what a page may decompress to (Berth lets a page declare 64 MiB, or
/// up to 1040 times its compressed bytes). A Parquet header that declares a huge
/// length must not make Berth allocate gigabytes; libFuzzer's own `-malloc_limit_mb`
/// needs a sanitizer's allocator hooks, so the target counts for itself and aborts
/// (a crash libFuzzer saves) past the cap.
fn live_cap(n: usize) -> usize {
    (256 << 20) + 1040 * n
}

static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);

struct Capped;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            self.count(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

impl Capped {
    fn count(&self, size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        if live > live_cap(INPUT_LEN.load(Ordering::Relaxed)) {
            // No allocation here: write the message with a stack buffer, then abort.
            let mut buf = [0u8; 96];
            let msg = format_no_alloc(&mut buf, size, live);
            unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
            std::process::abort();
        }
    }
}

fn format_no_alloc(buf: &mut [u8; 96], size: usize, live: usize) -> &[u8] {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "live heap cap: a {size}-byte allocation makes {live} bytes live\n");
    let n = cur.position() as usize;
    &buf[..n]
}

unsafe extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

#[global_allocator]
static ALLOC: Capped = Capped;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    INPUT_LEN.store(data.len(), Ordering::Relaxed);
    berth_fuzzing::parquet(data)
});
