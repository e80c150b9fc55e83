//! The SMTP wire codec, free of I/O: bytes in, values out, and back.
//!
//! Nothing here touches a socket or awaits. The session layer feeds bytes it
//! has read and writes the bytes these functions produce; that keeps every
//! parser testable on its own and fuzzable.

pub mod address;
pub mod bdat;
pub mod command;
pub mod data;
pub mod dsn;
pub mod line;
pub mod proxy;
pub mod reply;
#[doc(hidden)]
pub mod selfcheck;

pub(crate) use address::{parse_path, Path};
pub use address::{Mailbox, Recipient};
pub use bdat::BdatReceiver;
pub use command::{parse_command, Command, CommandError, Param};
pub use data::{BareLineEndings, DataError, DataReceiver, DotStuffer, Fed};
pub use line::{LineError, LineReader};
pub use reply::{EnhancedCode, Reply, ReplyError, ReplyParser};
