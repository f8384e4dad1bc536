//! `danmaku tail`: follow a channel and print each comment as it arrives.
//!
//! - HTTP room: the cursor long poll (`?after=next&wait=25`), which never misses or repeats.
//! - Video: the WebSocket's `danmaku` frames, optionally after a `range` of what is already there.
//! - Live room: the WebSocket; after a dropped connection it reconnects with `since` set to the
//!   last id it printed, so the server replays exactly what was missed.
//!
//! A status line goes to stderr once it is following (and again after each reconnect); comments
//! go to stdout, one per line. The `--hide-*` flags are the pages' block list (see [`crate::filter`]):
//! a hidden comment is not printed and does not count toward `--count`, but it still moves the
//! resume point, so a reconnect does not fetch it again.

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;
use shared_model::api::Page;
use shared_model::{ClientMessage, Danmaku, ErrorCode, Ref, ServerMessage};

use crate::endpoint::{Kind, Target, TargetArgs};
use crate::error::CliError;
use crate::filter::{BlockArgs, BlockList};
use crate::output::print_item;
use crate::transport::counting::Traffic;
use crate::transport::http::HttpClient;
use crate::transport::ws::{self, Incoming, WsStream};

/// How long a connect or a greeting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The `ref` of the `range` request.
const RANGE_REF: &str = "cli-range";

/// Options of `danmaku tail`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  danmaku tail --room lobby                    # new comments, by long polling
  danmaku tail --room lobby --after 0 --json   # everything from the start, as JSON lines
  danmaku tail --video demo --from 0 --to 30   # the first 30 s of the video, then new ones
  danmaku tail --live lobby --history          # the chat box, then the live stream
  danmaku tail --live lobby --count 1          # wait for one comment and exit
  danmaku tail --live lobby --hide-keyword spoiler --hide-author bob --hide-mode top

Hiding (each flag repeatable; the same rules as the pages' Block panel):
  keywords and authors ignore case and compare after Unicode NFKC (full-width ＡＢＣ is abc);
  a keyword hides any text containing it, an author only that exact name; a regex is matched
  case-insensitively against the NFKC text. Hidden comments are not printed and do not count
  toward --count.")]
pub struct TailArgs {
    /// What to follow.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print each comment as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Exit after printing this many comments.
    #[arg(long)]
    pub count: Option<u64>,
    /// HTTP room: start after this comment id (0 for everything) instead of at the newest.
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    /// Live room: start after this comment id; the server replays what came after it.
    #[arg(long, value_name = "ID")]
    pub since: Option<i64>,
    /// Live room: print the chat box (the last 50 comments) first.
    #[arg(long)]
    pub history: bool,
    /// Video: first print the comments with FROM <= time < TO (seconds).
    #[arg(long, requires = "to", value_name = "SECONDS")]
    pub from: Option<f64>,
    /// Video: the end of the --from window (exclusive).
    #[arg(long, requires = "from", value_name = "SECONDS")]
    pub to: Option<f64>,
    /// Live room: this connection's name, shown to the room's viewer list.
    #[arg(long, default_value = "cli-tail")]
    pub name: String,
    /// HTTP room: how long each long poll waits, seconds (at most 30).
    #[arg(long, default_value = "25")]
    pub wait_secs: u32,
    /// Hide comments whose text contains this (ignoring case, after NFKC).
    #[arg(long, value_name = "TEXT")]
    pub hide_keyword: Vec<String>,
    /// Hide comments whose text matches this regular expression (case-insensitive).
    #[arg(long, value_name = "REGEX")]
    pub hide_regex: Vec<String>,
    /// Hide comments by this author (the whole name, ignoring case, after NFKC).
    #[arg(long, value_name = "NAME")]
    pub hide_author: Vec<String>,
    /// Hide comments in this mode: scroll, top or bottom.
    #[arg(long, value_name = "MODE")]
    pub hide_mode: Vec<String>,
    /// Hide comments of this colour (#rrggbb).
    #[arg(long, value_name = "COLOR")]
    pub hide_color: Vec<String>,
    /// Hide every comment that is not white.
    #[arg(long)]
    pub hide_colored: bool,
}

impl TailArgs {
    /// The `--hide-*` flags, unchecked.
    pub fn block_args(&self) -> BlockArgs {
        BlockArgs {
            keywords: self.hide_keyword.clone(),
            regexes: self.hide_regex.clone(),
            authors: self.hide_author.clone(),
            modes: self.hide_mode.clone(),
            colors: self.hide_color.clone(),
            colored: self.hide_colored,
        }
    }
}

/// Follows the target until `--count` comments were printed (or forever).
pub async fn run(args: TailArgs) -> Result<(), CliError> {
    let target = args.target.resolve()?;
    check_flags(&args, target.kind)?;
    // Checked before connecting: a bad regex fails at once, naming its flag.
    let blocked = BlockList::new(&args.block_args())?;
    let mut printer = Printer {
        json: args.json,
        remaining: args.count,
        blocked,
    };
    if printer.done() {
        return Ok(());
    }
    match target.kind {
        Kind::Room => tail_room(&target, &args, &mut printer).await,
        Kind::Video => tail_video(&target, &args, &mut printer).await,
        Kind::Live => tail_live(&target, &args, &mut printer).await,
    }
}

fn check_flags(args: &TailArgs, kind: Kind) -> Result<(), CliError> {
    let misplaced = [
        ("--after", args.after.is_some(), Kind::Room),
        ("--since", args.since.is_some(), Kind::Live),
        ("--history", args.history, Kind::Live),
        ("--from/--to", args.from.is_some(), Kind::Video),
    ]
    .into_iter()
    .find(|(_, given, for_kind)| *given && *for_kind != kind);
    if let Some((flag, _, for_kind)) = misplaced {
        return Err(CliError::Usage(format!(
            "{flag} is for a {} only",
            for_kind.noun()
        )));
    }
    if args.wait_secs > 30 {
        return Err(CliError::Usage("--wait-secs is at most 30".into()));
    }
    Ok(())
}

/// Prints the comments the block list lets through and counts them against `--count`.
struct Printer {
    json: bool,
    remaining: Option<u64>,
    blocked: BlockList,
}

impl Printer {
    /// Prints `item` unless it is hidden; `true` once `--count` comments have been printed.
    fn emit(&mut self, item: &Danmaku) -> bool {
        if self.blocked.hides(item) {
            return false;
        }
        print_item(item, self.json);
        if let Some(left) = self.remaining.as_mut() {
            *left = left.saturating_sub(1);
        }
        self.done()
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// Doubling waits between reconnects.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(FIRST_BACKOFF)
    }

    async fn wait(&mut self, why: &str) {
        eprintln!("tail: {why}; retrying in {:.1} s", self.0.as_secs_f64());
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }

    fn reset(&mut self) {
        self.0 = FIRST_BACKOFF;
    }
}

/// Whether a failure is worth retrying: the network, the server restarting or shedding load.
/// A refusal that will not change (a bad room name) is not.
fn transient(error: &CliError) -> bool {
    match error {
        CliError::Refused(e) => matches!(e.code, ErrorCode::RateLimited | ErrorCode::Unavailable),
        CliError::Usage(_) | CliError::LocalService(_) => false,
        _ => true,
    }
}

async fn tail_room(
    target: &Target,
    args: &TailArgs,
    printer: &mut Printer,
) -> Result<(), CliError> {
    let mut client = HttpClient::new(&target.base, Traffic::shared())?;
    let path = format!("/api/rooms/{}/danmaku", target.channel);
    let mut cursor = match args.after {
        Some(after) => after,
        // Without `after` the service answers with the newest comments and the cursor after
        // them: start there, like `tail -f`.
        None => {
            client
                .get(&format!("{path}?limit=1"), CONNECT_TIMEOUT)
                .await?
                .json::<Page>()?
                .next
        }
    };
    eprintln!("tail: following {target} by long polling (Ctrl-C to stop)");
    let wait = args.wait_secs;
    let limit = Duration::from_secs(u64::from(wait)) + CONNECT_TIMEOUT;
    let mut backoff = Backoff::new();
    loop {
        let poll = format!("{path}?after={cursor}&limit=500&wait={wait}");
        match client
            .get(&poll, limit)
            .await
            .and_then(|r| r.json::<Page>())
        {
            Ok(page) => {
                backoff.reset();
                for item in &page.items {
                    if printer.emit(item) {
                        return Ok(());
                    }
                }
                cursor = page.next;
            }
            Err(e) if transient(&e) => backoff.wait(&e.to_string()).await,
            Err(e) => return Err(e),
        }
    }
}

/// Connects to `path` and reads the greeting, within [`CONNECT_TIMEOUT`].
async fn open(target: &Target, path: &str) -> Result<(WsStream, ServerMessage), CliError> {
    let traffic = Traffic::shared();
    let connect = ws::connect(&target.base, path, &traffic, ws::lean_config());
    let mut socket = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| CliError::timeout(format!("connecting to {target}"), CONNECT_TIMEOUT))??;
    let greeting = ws::first_frame(&mut socket, CONNECT_TIMEOUT).await?;
    Ok((socket, greeting))
}

async fn tail_video(
    target: &Target,
    args: &TailArgs,
    printer: &mut Printer,
) -> Result<(), CliError> {
    let path = target.ws_path(&[]);
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        let mut socket = match open(target, &path).await {
            Ok((socket, _hello)) => socket,
            Err(e) if first || !transient(&e) => return Err(e),
            Err(e) => {
                backoff.wait(&e.to_string()).await;
                continue;
            }
        };
        backoff.reset();
        eprintln!(
            "tail: {} {target} (Ctrl-C to stop)",
            if first { "following" } else { "reconnected to" }
        );
        // Ids printed from the range, so a live frame that races it is not printed twice.
        let mut from_range = HashSet::new();
        if let (true, Some(from), Some(to)) = (first, args.from, args.to) {
            for item in video_range(&mut socket, from, to).await? {
                if printer.emit(&item) {
                    return Ok(());
                }
                from_range.insert(item.id);
            }
        }
        first = false;
        let Some(why) = follow(&mut socket, printer, |item| !from_range.contains(&item.id)).await
        else {
            return Ok(());
        };
        backoff
            .wait(&format!(
                "{why} (comments sent meanwhile are not replayed on a video)"
            ))
            .await;
    }
}

/// Asks for the comments with `from <= time < to` and waits for the answer.
async fn video_range(socket: &mut WsStream, from: f64, to: f64) -> Result<Vec<Danmaku>, CliError> {
    let ours = Some(Ref::Text(RANGE_REF.into()));
    ws::send(
        socket,
        &ClientMessage::Range {
            from,
            to,
            reference: ours.clone(),
        },
    )
    .await?;
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match ws::next_frame(socket).await {
                Incoming::Frame(ServerMessage::Range {
                    items, reference, ..
                }) if reference == ours => return Ok(items),
                Incoming::Frame(ServerMessage::Error {
                    code,
                    message,
                    reference,
                }) if reference == ours => {
                    return Err(CliError::Refused(shared_model::ApiError::new(
                        code, message,
                    )));
                }
                Incoming::Frame(_) => {}
                Incoming::Closed(close) => {
                    return Err(CliError::Protocol(format!(
                        "the server closed the connection{}",
                        ws::describe_close(&close)
                    )));
                }
                Incoming::Broken(reason) => return Err(CliError::Protocol(reason)),
            }
        }
    });
    answer
        .await
        .map_err(|_| CliError::timeout("the range answer", CONNECT_TIMEOUT))?
}

async fn tail_live(
    target: &Target,
    args: &TailArgs,
    printer: &mut Printer,
) -> Result<(), CliError> {
    // The last id printed (or, before any, the newest one the room had): where a reconnect
    // resumes.
    let mut last_id = args.since;
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        let since = last_id.map(|id| id.to_string());
        let path = match &since {
            Some(since) => target.ws_path(&[("name", &args.name), ("since", since)]),
            None => target.ws_path(&[("name", &args.name)]),
        };
        let (mut socket, greeting) = match open(target, &path).await {
            Ok(opened) => opened,
            Err(e) if first || !transient(&e) => return Err(e),
            Err(e) => {
                backoff.wait(&e.to_string()).await;
                continue;
            }
        };
        backoff.reset();
        let ServerMessage::Welcome {
            history, recovered, ..
        } = greeting
        else {
            return Err(CliError::Protocol(format!(
                "expected a welcome from {target}, got {greeting:?}"
            )));
        };
        if recovered == Some(false) {
            eprintln!(
                "tail: more comments were missed than the server replays; showing the last {}",
                history.len()
            );
        }
        eprintln!(
            "tail: {} {target} (Ctrl-C to stop)",
            if first { "following" } else { "reconnected to" }
        );
        let print_history = !first || args.since.is_some() || args.history;
        first = false;
        for item in &history {
            if newer(&mut last_id, item) && print_history && printer.emit(item) {
                return Ok(());
            }
        }
        // An empty room: everything after id 0 is new.
        last_id.get_or_insert(0);
        let Some(why) = follow(&mut socket, printer, |item| newer(&mut last_id, item)).await else {
            return Ok(());
        };
        backoff.wait(&why).await;
    }
}

/// Whether `item` comes after `last_id` (the newest id seen), moving `last_id` up to it if so:
/// a reconnect's replay repeats what was already printed.
fn newer(last_id: &mut Option<i64>, item: &Danmaku) -> bool {
    if last_id.is_some_and(|last| item.id <= last) {
        return false;
    }
    *last_id = Some(item.id);
    true
}

/// Prints the comments of the live frames that `wanted` lets through until the connection
/// ends; why it ended, or `None` once the printer has printed all it should.
async fn follow(
    socket: &mut WsStream,
    printer: &mut Printer,
    mut wanted: impl FnMut(&Danmaku) -> bool,
) -> Option<String> {
    loop {
        match ws::next_frame(socket).await {
            Incoming::Frame(ServerMessage::Danmaku { items }) => {
                for item in items.iter().filter(|item| wanted(item)) {
                    if printer.emit(item) {
                        return None;
                    }
                }
            }
            Incoming::Frame(_) => {}
            Incoming::Closed(close) => {
                return Some(format!(
                    "the server closed the connection{}",
                    ws::describe_close(&close)
                ));
            }
            Incoming::Broken(reason) => return Some(format!("the connection broke: {reason}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: TargetArgs) -> TailArgs {
        TailArgs {
            target,
            json: false,
            count: None,
            after: None,
            since: None,
            history: false,
            from: None,
            to: None,
            name: "t".into(),
            wait_secs: 25,
            hide_keyword: Vec::new(),
            hide_regex: Vec::new(),
            hide_author: Vec::new(),
            hide_mode: Vec::new(),
            hide_color: Vec::new(),
            hide_colored: false,
        }
    }

    #[test]
    fn flags_for_another_service_are_refused_by_name() {
        let room = TargetArgs {
            room: Some("r".into()),
            video: None,
            live: None,
            url: None,
        };
        let mut a = args(room);
        a.since = Some(3);
        let err = check_flags(&a, Kind::Room).unwrap_err();
        assert!(err.to_string().contains("--since"), "{err}");
        a.since = None;
        a.after = Some(3);
        assert!(check_flags(&a, Kind::Room).is_ok());
        a.wait_secs = 31;
        assert!(check_flags(&a, Kind::Room).is_err());
    }

    #[test]
    fn only_lasting_refusals_stop_the_tail() {
        let refused = |code| CliError::Refused(shared_model::ApiError::new(code, "x"));
        assert!(transient(&refused(ErrorCode::RateLimited)));
        assert!(!transient(&refused(ErrorCode::InvalidChannel)));
        assert!(transient(&CliError::Protocol("reset".into())));
    }
}
