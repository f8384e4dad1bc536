//! Conversions between our comments and the formats of other players and archives. Pure data
//! work, no I/O and no HTTP: the services read and write the bytes, these modules decide what
//! they mean.
//!
//! - [`dplayer`]: the DPlayer v3 danmaku API (`[time, type, color, author, text]` rows, the
//!   comment DPlayer posts, and its `{"code", "data"}` / `{"code", "msg"}` envelopes).
//! - [`bilibili`]: Bilibili's XML archives (`<i><d p="time,mode,size,color,sent,pool,user,id">`),
//!   read with a real XML parser and written with an XML writer, never by string slicing or
//!   concatenation.

pub mod bilibili;
pub mod dplayer;
