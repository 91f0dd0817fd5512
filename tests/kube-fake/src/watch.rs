//! The watch stream: newline-delimited JSON events, bookmarks, and the timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::store::{Change, Store, WatchFilter, WatchStart};

/// Events buffered between the producing task and the HTTP body.
const LINE_BUFFER: usize = 64;

/// The annotation that ends the initial events of a streaming list.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How one watch renders and paces its events.
#[derive(Debug, Clone)]
pub struct WatchStyle {
    /// The type (and version) the watch was opened on.
    pub rt: ResourceType,
    /// Objects as `PartialObjectMetadata` (kube's `metadata_watcher`).
    pub metadata_only: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial events with a marked bookmark.
    pub initial_events_end: bool,
    /// When the server ends the watch (`timeoutSeconds`).
    pub timeout: Duration,
    /// How often an idle watch gets a bookmark.
    pub bookmark_interval: Duration,
}

/// An object as this watch serves it.
pub fn render_object(rt: &ResourceType, metadata_only: bool, obj: &Value) -> Value {
    if metadata_only {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        })
    } else {
        Store::present(rt, obj)
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut text = json!({ "type": kind, "object": object }).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn bookmark(style: &WatchStyle, rv: u64, initial_end: bool) -> Bytes {
    let (api_version, kind) = if style.metadata_only {
        ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata".to_string())
    } else {
        (style.rt.api_version(), style.rt.kind.clone())
    };
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        metadata["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
    }
    line(
        "BOOKMARK",
        json!({ "apiVersion": api_version, "kind": kind, "metadata": metadata }),
    )
}

fn error_line(error: &ApiError) -> Bytes {
    line("ERROR", error.to_status())
}

/// Starts producing a watch's lines; the stream ends at the timeout, on shutdown, when
/// the client goes away, or after an ERROR event (410 when the history cannot serve it
/// or the watch fell too far behind).
pub fn stream(
    start: WatchStart,
    filter: WatchFilter,
    style: WatchStyle,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(LINE_BUFFER);
    tokio::spawn(produce(start, filter, style, shutdown, tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|line| (Ok(line), rx)) })
}

async fn produce(
    start: WatchStart,
    filter: WatchFilter,
    style: WatchStyle,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Bytes>,
) {
    let WatchStart {
        initial,
        expired,
        start_rv,
        mut receiver,
    } = start;
    if let Some(error) = expired {
        let _ = tx.send(error_line(&error)).await;
        return;
    }
    for (kind, obj) in initial {
        if tx
            .send(line(kind, render_object(&style.rt, style.metadata_only, &obj)))
            .await
            .is_err()
        {
            return;
        }
    }
    if style.initial_events_end && tx.send(bookmark(&style, start_rv, true)).await.is_err() {
        return;
    }
    let mut last_rv = start_rv;
    let deadline = tokio::time::sleep(style.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + style.bookmark_interval,
        style.bookmark_interval,
    );
    loop {
        let next = tokio::select! {
            () = &mut deadline => {
                if style.bookmarks {
                    let _ = tx.send(bookmark(&style, last_rv, false)).await;
                }
                return;
            }
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            _ = ticker.tick(), if style.bookmarks => Some(bookmark(&style, last_rv, false)),
            received = receiver.recv() => match received {
                Ok(change) => {
                    last_rv = change.rv;
                    event_line(&filter, &style, &change)
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "watch fell behind; ending it with 410 so the client relists");
                    let _ = tx.send(error_line(&ApiError::expired(last_rv, last_rv + missed))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Some(next) = next
            && tx.send(next).await.is_err()
        {
            return;
        }
    }
}

fn event_line(filter: &WatchFilter, style: &WatchStyle, change: &Arc<Change>) -> Option<Bytes> {
    let (kind, obj) = filter.event_for(change)?;
    Some(line(kind, render_object(&style.rt, style.metadata_only, obj)))
}
