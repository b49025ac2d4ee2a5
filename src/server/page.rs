//! The live page of `--http-addr`: `/` is one HTML file built into the binary (no asset comes
//! from the internet), and `/api/events` pushes the `/api/status` view as server-sent events
//! whenever the engine's progress or the controls change. The page's buttons use the JSON API.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ControlPlane;
use super::http::status_view;
use crate::engine::controls::Controls;
use crate::engine::progress::Progress;

const PAGE: &str = include_str!("page/index.html");
/// At most two updates a second: the engine publishes progress at every chunk.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// An update at least this often, so elapsed time and rates stay fresh while nothing changes.
const MAX_INTERVAL: Duration = Duration::from_secs(5);

pub async fn page() -> Response {
    html(PAGE)
}

/// A page built into the binary, as both servers answer `/`.
pub fn html(page: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // No other site may frame the page to trick a click on its buttons.
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        page,
    )
        .into_response()
}

/// `GET /api/events`: `event: status` with the status view, right away and then on change; the
/// stream ends after the view of a finished migration.
pub async fn events(
    State(plane): State<ControlPlane>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    plane.page_streams.fetch_add(1, Ordering::SeqCst);
    let state = Updates {
        open: OpenStream(plane.page_streams.clone()),
        progress: plane.progress.clone(),
        controls: plane.controls.subscribe(),
        plane,
        last_sent: None,
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok(event), state))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(MAX_INTERVAL))
}

/// Counts the stream as open until it is dropped (after its last event went out).
struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Lets the open pages receive the final state before the process exits: waits until every
/// event stream has ended, for at most `limit`.
pub async fn let_pages_see_the_end(plane: &ControlPlane, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut waited = false;
    while plane.page_streams.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        waited = true;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stream ends when its last event is handed to the connection, not when it is sent.
    if waited {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Updates {
    #[allow(dead_code)] // held for its Drop
    open: OpenStream,
    plane: ControlPlane,
    progress: watch::Receiver<Progress>,
    controls: watch::Receiver<Controls>,
    last_sent: Option<Instant>,
    ended: bool,
}

impl Updates {
    /// The next event, or None once the finished state has been sent.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        if let Some(last) = self.last_sent {
            // Wait for a change (or the refresh interval), then keep to the rate limit.
            let deadline = last + MAX_INTERVAL;
            tokio::select! {
                changed = self.progress.changed() => {
                    if changed.is_err() {
                        // The engine is gone: send the last state and end.
                        self.ended = true;
                    }
                }
                _ = self.controls.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
            tokio::time::sleep_until(last + MIN_INTERVAL).await;
        }
        self.progress.borrow_and_update();
        self.controls.borrow_and_update();
        let view = status_view(&self.plane);
        self.ended |= view.progress.phase.is_terminal();
        self.last_sent = Some(Instant::now());
        let event = Event::default()
            .event("status")
            .json_data(&view)
            .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
        Some(event)
    }
}
