//! CPU-bound work (engine, decoding, hashing) runs below the threads that answer requests, so that on a
//! small machine a busy worker or a storm of uploads does not slow polling, health checks and
//! heartbeats.

/// Lowers the calling thread to nice 10. Threads it creates later (ONNX Runtime's pools) inherit it.
/// It cannot be raised again without privileges, so call it only on threads kept for such work.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers; on Linux, PRIO_PROCESS with who = 0 is the calling thread.
    #[expect(unsafe_code, reason = "setpriority(2) has no safe binding")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// `tokio::task::spawn_blocking` at the lower priority. Tokio's blocking threads run only such closures
/// and blocking file I/O, so lowering one for good is harmless.
pub async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        lower_priority();
        f()
    })
    .await
}
