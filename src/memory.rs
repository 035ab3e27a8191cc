//! Handing freed heap memory back to the operating system.
//!
//! Reading a long history at start decodes hundreds of megabytes of answers, each freed
//! as soon as it is stored. glibc's allocator keeps most of those pages: they are spread
//! over per-thread arenas and pinned by the rows allocated between them, so without a
//! trim the agent's RSS stays near its warm-up high for good (measured in BENCHMARKS.md,
//! "10,000 entities with the node preset's settings"). Steady cycles do the same on a
//! smaller scale: each frees its answers and scoring buffers among long-lived state.

/// Returns every free heap page to the operating system. Blocking, so off the async
/// runtime; cheap enough to call once per cycle (the 10,000-entity bench's steady cycle
/// CPU, trim included, is in BENCHMARKS.md), too slow to call per answer during a
/// warm-up. A no-op where the C library has no `malloc_trim`.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: `malloc_trim` takes no pointer of ours; it walks glibc's own free
        // lists under the allocator's locks and is safe to call from any thread.
        #[allow(unsafe_code)]
        unsafe {
            malloc_trim(0);
        }
    }
}
