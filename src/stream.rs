//! The byte streams sessions run over.
//!
//! Sessions and the upstream client are written against `futures::io`, so a
//! plain TCP stream, a TLS stream or an in-memory pipe are all the same to
//! them, and the runtime stays a thin layer.

use futures::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream a session can run over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed stream, for connections whose kind (plain or TLS) is chosen at run time.
pub type BoxStream = Box<dyn Stream>;
