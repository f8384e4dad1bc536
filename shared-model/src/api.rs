//! HTTP bodies shared by the services and their clients.
//!
//! Requests that create a comment use [`crate::DraftDanmaku`]; this module holds the rest.

use serde::{Deserialize, Serialize};

use crate::comment::Danmaku;

/// One page of a cursor poll: the items after the cursor, oldest first, and the cursor to pass
/// back next time. A client that always passes back `next` never misses and never repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Comments with an id above the cursor, oldest first.
    pub items: Vec<Danmaku>,
    /// The id to poll after next: the last item's id, or the cursor itself when there were none.
    pub next: i64,
}

/// The answer of `GET /api/videos/{video}/danmaku?from=&to=`, shaped like the WebSocket `range`
/// frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoWindow {
    /// Window start, seconds.
    pub from: f64,
    /// Window end (exclusive), seconds.
    pub to: f64,
    /// The comments with `from <= time < to`, ordered by time.
    pub items: Vec<Danmaku>,
}

/// The body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the service answers.
    pub status: String,
}

impl Health {
    /// A healthy answer.
    pub fn ok() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_page_wire_format() {
        let page = Page {
            items: vec![],
            next: 42,
        };
        assert_eq!(
            serde_json::to_value(&page).unwrap(),
            serde_json::json!({"items": [], "next": 42})
        );
    }
}
