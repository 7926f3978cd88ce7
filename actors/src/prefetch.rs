//! Cache prefetch hints for the batch read path: a batch looks up many entities scattered
//! over memory, and asking for all of their cache lines before touching any lets the misses
//! overlap instead of stalling one lookup after the other.

/// Asks the processor to bring the cache lines at `address` and just before it (a reference
/// count's header, say) into the cache, without waiting. A hint only: nothing is read that the
/// program sees, and an address that is not mapped is ignored, never a fault.
#[inline(always)]
pub(crate) fn prefetch<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = address.cast::<i8>();
        #[allow(unsafe_code)]
        // SAFETY: `prefetch` only hints at the cache: it dereferences nothing, cannot fault
        // whatever the address, and SSE (which defines it) is part of every x86-64 target.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_sub(8));
            _mm_prefetch::<_MM_HINT_T0>(start);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
