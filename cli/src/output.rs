//! How things are shown on the terminal: comments as one plain line each or one JSON object per
//! line (`--json`); the reports of bench and compare; their progress bar.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// Prints a command's report on stdout: pretty JSON when `json`, else its `render`ed table.
pub fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    render: impl FnOnce(&R) -> String,
) {
    if json {
        // Holds: the reports are numbers, strings and maps of those.
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("a report always serializes")
        );
    } else {
        print!("{}", render(report));
    }
}

/// A progress bar over `total`, counted in milliseconds and drawn with indicatif `template`, on
/// stderr unless `hidden`.
pub fn progress_bar(template: &'static str, hidden: bool, total: Duration) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total.as_millis() as u64),
        if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    // Holds: callers pass constant templates that indicatif accepts.
    let style = ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
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
