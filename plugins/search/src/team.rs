//! Runs the CPU selection on libtorch's own OpenMP thread team.
//!
//! After every GEMM, libtorch's OpenMP workers keep spinning for a while before they sleep.
//! Rust threads started for the selection then time-slice against those spinning workers: on
//! 2 cores, 2 Rust threads scanned a tile no faster than 1 (and often slower). Running the
//! selection as an OpenMP parallel region of the calling thread instead reuses that same team
//! (the spinning workers pick the work up at once), so it scales with the cores libtorch uses
//! and never oversubscribes them. This is what faiss gets by running its BLAS and its heaps on
//! one OpenMP runtime.
//!
//! libtorch's Linux builds use GNU OpenMP (`libgomp`, which torch-sys links on every target
//! that is neither Apple nor MSVC). A parallel region is started through libgomp's stable
//! entry point `GOMP_parallel` — what GCC emits for `#pragma omp parallel` — with a callback
//! that reads its thread number and team size. Elsewhere, scoped Rust threads are used.

/// Runs `work(thread, threads)` on `threads` threads (the calling one included) and returns when
/// all are done. `threads` may be lowered by the runtime; `work` is told the real count.
pub(crate) fn parallel(threads: usize, work: &(dyn Fn(usize, usize) + Sync)) {
    imp::parallel(threads.max(1), work)
}

#[cfg(all(unix, not(target_vendor = "apple")))]
mod imp {
    use std::ffi::c_void;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicBool, Ordering};

    unsafe extern "C" {
        fn GOMP_parallel(
            f: extern "C" fn(*mut c_void),
            data: *mut c_void,
            threads: u32,
            flags: u32,
        );
        fn omp_get_thread_num() -> i32;
        fn omp_get_num_threads() -> i32;
    }

    struct Job<'a> {
        work: &'a (dyn Fn(usize, usize) + Sync),
        panicked: AtomicBool,
    }

    extern "C" fn run(data: *mut c_void) {
        // SAFETY: `data` is the `Job` that `parallel` keeps alive until `GOMP_parallel` returns.
        let job = unsafe { &*(data as *const Job<'_>) };
        // SAFETY: plain queries of the OpenMP runtime, valid inside a parallel region.
        let (t, n) = unsafe { (omp_get_thread_num(), omp_get_num_threads()) };
        // A panic must not unwind through C frames: catch it and report it after the region.
        if catch_unwind(AssertUnwindSafe(|| {
            (job.work)(t.max(0) as usize, n.max(1) as usize)
        }))
        .is_err()
        {
            job.panicked.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn parallel(threads: usize, work: &(dyn Fn(usize, usize) + Sync)) {
        let job = Job {
            work,
            panicked: AtomicBool::new(false),
        };
        // SAFETY: `run` matches the callback signature libgomp expects, `job` outlives the call
        // (GOMP_parallel returns only after every thread of the team has finished), and `run`
        // never unwinds.
        unsafe {
            GOMP_parallel(
                run,
                &job as *const Job<'_> as *mut c_void,
                threads as u32,
                0,
            );
        }
        if job.panicked.load(Ordering::Relaxed) {
            panic!("dinoflow-search: a selection thread panicked (a bug in the crate)");
        }
    }
}

#[cfg(not(all(unix, not(target_vendor = "apple"))))]
mod imp {
    pub(super) fn parallel(threads: usize, work: &(dyn Fn(usize, usize) + Sync)) {
        std::thread::scope(|s| {
            for t in 1..threads {
                s.spawn(move || work(t, threads));
            }
            work(0, threads);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_thread_runs_once() {
        let seen = AtomicUsize::new(0);
        let count = AtomicUsize::new(0);
        super::parallel(2, &|t, n| {
            assert!(t < n);
            seen.fetch_or(1 << t, Ordering::Relaxed);
            count.fetch_add(1, Ordering::Relaxed);
        });
        let n = count.load(Ordering::Relaxed);
        assert!((1..=2).contains(&n));
        assert_eq!(seen.load(Ordering::Relaxed), (1 << n) - 1);
    }
}
