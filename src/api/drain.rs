//! Early rejections (401, 403, 404, 409, bad headers) are answered before a handler reads the body. If the
//! connection were then closed with the body unread, a client still sending a large upload would see a reset
//! instead of the problem+json that says what to fix. This middleware reads and discards a body the handler
//! never started on (bounded in size and time) before the answer goes out.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Longest time spent discarding an unread body.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// The request body, handed over on the handler's first read; until then the middleware can take it back.
struct Deferred {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Option<Body>,
}

impl Deferred {
    fn with_body<T>(&self, f: impl FnOnce(&Body) -> T, default: T) -> T {
        match &self.taken {
            Some(body) => f(body),
            None => match self.slot.lock() {
                Ok(slot) => slot.as_ref().map_or(default, f),
                Err(_) => default,
            },
        }
    }
}

impl http_body::Body for Deferred {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this.slot.lock().ok().and_then(|mut slot| slot.take());
        }
        match &mut this.taken {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.with_body(http_body::Body::is_end_stream, true)
    }

    fn size_hint(&self) -> SizeHint {
        self.with_body(http_body::Body::size_hint, SizeHint::with_exact(0))
    }
}

/// `State` is the largest body worth draining (the request body limit): beyond it the client gets a 413 and
/// the connection closes anyway.
pub async fn drain_unread(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let slot = Arc::new(Mutex::new(Some(body)));
    let deferred = Deferred {
        slot: slot.clone(),
        taken: None,
    };
    let response = next
        .run(Request::from_parts(parts, Body::new(deferred)))
        .await;
    let unread = slot.lock().ok().and_then(|mut slot| slot.take());
    if let Some(body) = unread {
        if declared.is_none_or(|n| n <= limit as u64) {
            let _ = tokio::time::timeout(DRAIN_TIME, discard(body, limit)).await;
        }
    }
    response
}

async fn discard(body: Body, limit: usize) {
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > limit {
            return;
        }
    }
}
