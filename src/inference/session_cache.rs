//! Idle ONNX Runtime sessions kept for the next job of the same model.
//!
//! Building a session costs tens of milliseconds on a CPU and seconds on a GPU; a worker runs the same
//! deployed model job after job. A session is checked out for one job's use and comes back when that
//! job drops it, so two jobs of one model run on two sessions instead of taking turns on one. At most
//! `capacity` idle sessions are kept; the least recently returned goes first.

use ort::session::Session;
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Shared by every clone of one [`super::Runtime`], so the provider is part of the key implicitly.
#[derive(Clone)]
pub struct SessionCache {
    idle: Arc<Mutex<VecDeque<(String, Session)>>>,
    capacity: usize,
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            idle: Arc::default(),
            capacity,
        }
    }

    /// An idle session of the model with this digest, most recently returned first.
    pub fn take(&self, sha256: &str) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let i = idle.iter().rposition(|(key, _)| key == sha256)?;
        idle.remove(i).map(|(_, session)| session)
    }

    fn put_back(&self, sha256: String, session: Session) {
        if self.capacity == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push_back((sha256, session));
        while idle.len() > self.capacity {
            idle.pop_front();
        }
    }

    /// Idle sessions held now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A session in use; it returns to its cache when dropped.
pub struct PooledSession {
    session: Option<Session>,
    sha256: String,
    cache: SessionCache,
}

impl PooledSession {
    pub fn new(session: Session, sha256: String, cache: SessionCache) -> Self {
        Self {
            session: Some(session),
            sha256,
            cache,
        }
    }

    /// SHA-256 (hex) of the ONNX bytes the session was built from.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl Deref for PooledSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledSession {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.cache
                .put_back(std::mem::take(&mut self.sha256), session);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::Gray;
    use crate::inference::{ModelSpec, Runtime, RuntimeConfig, SegModel};
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn a_model_loaded_again_reuses_its_idle_session_and_concurrent_loads_get_their_own() {
        let runtime = Runtime::init(RuntimeConfig {
            session_cache: 2,
            ..RuntimeConfig::default()
        })
        .expect("ONNX Runtime (run `make ort`)");
        let spec = ModelSpec::parse(&String::from_utf8(fixture("spec_gray_argmax.json")).unwrap())
            .unwrap();
        let (a, b) = (
            fixture("checkpoints/ckpt_07.onnx"),
            fixture("checkpoints/ckpt_03.onnx"),
        );
        let image = Gray::from_shape_fn((128, 128), |(y, x)| ((x * 2 + y) % 256) as f32);

        let first = SegModel::load(&runtime, &a, "a", &spec).unwrap();
        let fresh = first.predict(std::slice::from_ref(&image)).unwrap();
        assert_eq!(runtime.idle_sessions(), 0);
        drop(first);
        assert_eq!(
            runtime.idle_sessions(),
            1,
            "a dropped model's session waits"
        );

        let again = SegModel::load(&runtime, &a, "a", &spec).unwrap();
        assert_eq!(runtime.idle_sessions(), 0, "the idle session was taken");
        assert_eq!(again.predict(std::slice::from_ref(&image)).unwrap(), fresh);
        let beside = SegModel::load(&runtime, &a, "a", &spec).unwrap();
        assert_eq!(
            runtime.idle_sessions(),
            0,
            "a second user gets a session of its own"
        );
        drop((again, beside));
        assert_eq!(runtime.idle_sessions(), 2);

        // Another model's session takes the place of the least recently returned.
        drop(SegModel::load(&runtime, &b, "b", &spec).unwrap());
        assert_eq!(runtime.idle_sessions(), 2, "at most the capacity waits");
        let b_again = SegModel::load(&runtime, &b, "b", &spec).unwrap();
        assert_eq!(runtime.idle_sessions(), 1);
        drop(b_again);
    }

    #[test]
    fn no_capacity_keeps_nothing() {
        let runtime = Runtime::init(RuntimeConfig::default()).expect("ONNX Runtime");
        let spec = ModelSpec::parse(&String::from_utf8(fixture("spec_gray_argmax.json")).unwrap())
            .unwrap();
        drop(SegModel::load(&runtime, &fixture("checkpoints/ckpt_07.onnx"), "a", &spec).unwrap());
        assert_eq!(runtime.idle_sessions(), 0);
    }
}
