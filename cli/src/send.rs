//! `danmaku send`: post one comment to an HTTP room (`POST`), a video or a live room (the
//! WebSocket `send` frame, waiting for its `ack`), and print what the server stored.

use std::time::Duration;

use clap::Args;
use shared_model::{ClientMessage, Danmaku, DraftDanmaku, Ref, ServerMessage};

use crate::endpoint::{Kind, Target, TargetArgs};
use crate::error::CliError;
use crate::output::print_item;
use crate::transport::counting::Traffic;
use crate::transport::http::HttpClient;
use crate::transport::ws::{self, Incoming};

/// The `ref` this command puts on its `send` frame.
const SEND_REF: &str = "cli-send";

/// Options of `danmaku send`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  danmaku send --room lobby 'hello from a terminal'
  danmaku send --video demo --time 12.5 --color '#ff0000' --mode top 'look at this'
  danmaku send --live lobby --author ann --url ws://127.0.0.1:8083 hi
  danmaku send --live lobby --json hi | jq .id")]
pub struct SendArgs {
    /// Where to post.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The comment (several words are joined with spaces).
    #[arg(required = true, value_name = "TEXT")]
    pub text: Vec<String>,
    /// The author's name (in a live room, the connection's name).
    #[arg(long, env = "DANMAKU_AUTHOR", default_value = "cli")]
    pub author: String,
    /// Colour, #rrggbb.
    #[arg(long)]
    pub color: Option<String>,
    /// scroll, top or bottom.
    #[arg(long)]
    pub mode: Option<String>,
    /// Seconds into the video (required for --video, refused otherwise).
    #[arg(long)]
    pub time: Option<f64>,
    /// Print the stored comment as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the server.
    #[arg(long, default_value = "10")]
    pub timeout_secs: f64,
}

/// Posts the comment and prints it as stored.
pub async fn run(args: SendArgs) -> Result<(), CliError> {
    let target = args.target.resolve()?;
    match (target.kind, args.time) {
        (Kind::Video, None) => {
            return Err(CliError::Usage(
                "a video comment needs --time SECONDS".into(),
            ));
        }
        (Kind::Room | Kind::Live, Some(_)) => {
            return Err(CliError::Usage(
                "--time is for video comments only (--video)".into(),
            ));
        }
        _ => {}
    }
    let limit = Duration::try_from_secs_f64(args.timeout_secs)
        .map_err(|_| CliError::Usage("--timeout-secs must be a positive number".into()))?;
    let draft = DraftDanmaku {
        author: args.author,
        text: args.text.join(" "),
        color: args.color,
        mode: args.mode,
        time: args.time,
    };
    let item = match target.kind {
        Kind::Room => post_to_room(&target, &draft, limit).await?,
        Kind::Video | Kind::Live => send_over_websocket(&target, draft, limit).await?,
    };
    print_item(&item, args.json);
    Ok(())
}

/// `POST /api/rooms/{room}/danmaku`.
async fn post_to_room(
    target: &Target,
    draft: &DraftDanmaku,
    limit: Duration,
) -> Result<Danmaku, CliError> {
    let mut client = HttpClient::new(&target.base, Traffic::shared())?;
    let path = format!("/api/rooms/{}/danmaku", target.channel);
    client.post_json(&path, draft, limit).await?.json()
}

/// The `send` frame, then its `ack` (or the error frame that answers it).
async fn send_over_websocket(
    target: &Target,
    draft: DraftDanmaku,
    limit: Duration,
) -> Result<Danmaku, CliError> {
    let path = match target.kind {
        Kind::Live => target.ws_path(&[("name", &draft.author)]),
        _ => target.ws_path(&[]),
    };
    let mut socket = tokio::time::timeout(
        limit,
        ws::connect(&target.base, &path, &Traffic::shared(), ws::lean_config()),
    )
    .await
    .map_err(|_| CliError::timeout(format!("connecting to {target}"), limit))??;
    ws::first_frame(&mut socket, limit).await?;
    let (time, author) = match target.kind {
        Kind::Video => (draft.time, Some(draft.author)),
        _ => (None, None),
    };
    let frame = ClientMessage::Send {
        text: draft.text,
        color: draft.color,
        mode: draft.mode,
        time,
        author,
        reference: Some(Ref::Text(SEND_REF.into())),
    };
    ws::send(&mut socket, &frame).await?;
    let ours = Some(Ref::Text(SEND_REF.into()));
    let answer = tokio::time::timeout(limit, async {
        loop {
            match ws::next_frame(&mut socket).await {
                Incoming::Frame(ServerMessage::Ack { reference, item }) if reference == ours => {
                    return Ok(item);
                }
                Incoming::Frame(ServerMessage::Error {
                    code,
                    message,
                    reference,
                }) if reference == ours || reference.is_none() => {
                    return Err(CliError::Refused(shared_model::ApiError::new(
                        code, message,
                    )));
                }
                Incoming::Frame(_) => continue,
                Incoming::Closed(close) => {
                    return Err(CliError::Protocol(format!(
                        "the server closed the connection before acknowledging{}",
                        ws::describe_close(&close)
                    )));
                }
                Incoming::Broken(reason) => {
                    return Err(CliError::Protocol(format!(
                        "the connection broke before the acknowledgement: {reason}"
                    )));
                }
            }
        }
    })
    .await
    .map_err(|_| CliError::timeout("the acknowledgement", limit))?;
    let _ = futures::SinkExt::close(&mut socket).await;
    answer
}
