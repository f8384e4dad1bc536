//! How comments are printed: one plain line each, or one JSON object per line (`--json`).

use std::io::Write;

use shared_model::time::rfc3339;
use shared_model::{Danmaku, Mode};

/// A comment as one plain line: `2026-11-22T10:00:00.000Z #12 ann: hello`, with the video time
/// (`@12.50s`), and the mode and colour when they are not the defaults.
pub fn format_line(item: &Danmaku) -> String {
    let mut line = format!("{} #{} ", rfc3339(item.sent_at), item.id);
    if let Some(time) = item.time {
        line.push_str(&format!("@{time:.2}s "));
    }
    if item.mode != Mode::Scroll {
        line.push_str(&format!("[{}] ", item.mode.as_str()));
    }
    if item.color != shared_model::Color::default() {
        line.push_str(&format!("[{}] ", item.color.as_str()));
    }
    line.push_str(&format!("{}: {}", item.author, item.text));
    line
}

/// Prints a comment on stdout, plain or as a JSON line. A closed stdout (`| head`) ends the
/// process quietly, as command-line tools do.
pub fn print_item(item: &Danmaku, json: bool) {
    let line = if json {
        // Holds: a Danmaku is strings and numbers; serializing it cannot fail.
        serde_json::to_string(item).expect("a comment always serializes")
    } else {
        format_line(item)
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_model::{ChannelId, Color};

    fn item() -> Danmaku {
        Danmaku {
            id: 12,
            channel: ChannelId::parse("lobby").unwrap(),
            author: "ann".into(),
            text: "hello".into(),
            color: Color::default(),
            mode: Mode::Scroll,
            time: None,
            sent_at: shared_model::time::parse("2026-11-22T10:00:00.000Z").unwrap(),
        }
    }

    #[test]
    fn plain_line_shows_id_author_and_text() {
        assert_eq!(
            format_line(&item()),
            "2026-11-22T10:00:00.000Z #12 ann: hello"
        );
    }

    #[test]
    fn plain_line_shows_video_time_mode_and_colour_when_set() {
        let video = Danmaku {
            time: Some(12.5),
            mode: Mode::Top,
            color: Color::parse("#FF0000").unwrap(),
            ..item()
        };
        assert_eq!(
            format_line(&video),
            "2026-11-22T10:00:00.000Z #12 @12.50s [top] [#ff0000] ann: hello"
        );
    }
}
