//! The Sendmail milter wire protocol, version 6 (as libmilter and Postfix
//! speak it), without I/O: packets are `len(4, big-endian) cmd(1) data`,
//! where `len` counts the command byte and the data.
//!
//! [`Command`] is what the gateway sends, [`Response`] what a milter
//! answers; [`Decoder`] cuts responses out of a byte stream.

use std::fmt;

/// The protocol version the gateway speaks.
pub const VERSION: u32 = 6;
/// Largest packet accepted from a milter (libmilter's own bound is 1 MiB
/// of data plus framing); a longer length is a broken milter.
pub const MAX_PACKET: usize = 1024 * 1024 + 16;
/// Largest body chunk sent in one SMFIC_BODY (libmilter's MILTER_CHUNK_SIZE).
pub const BODY_CHUNK: usize = 65535;

/// Actions a milter may ask for at end of message (SMFIF_*).
pub mod action {
    /// Add header fields.
    pub const ADDHDRS: u32 = 0x01;
    /// Replace the body.
    pub const CHGBODY: u32 = 0x02;
    /// Add recipients.
    pub const ADDRCPT: u32 = 0x04;
    /// Delete recipients.
    pub const DELRCPT: u32 = 0x08;
    /// Change or delete header fields.
    pub const CHGHDRS: u32 = 0x10;
    /// Quarantine the message.
    pub const QUARANTINE: u32 = 0x20;
    /// Change the envelope sender.
    pub const CHGFROM: u32 = 0x40;
    /// Add recipients with ESMTP arguments.
    pub const ADDRCPT_PAR: u32 = 0x80;
    /// Set the macros it wants per stage.
    pub const SETSYMLIST: u32 = 0x100;
    /// Every action the gateway carries out.
    pub const ALL: u32 = 0x1FF;
}

/// Protocol flags (SMFIP_*): steps a milter does not want, or does not
/// answer.
pub mod protocol {
    /// No SMFIC_CONNECT.
    pub const NOCONNECT: u32 = 0x01;
    /// No SMFIC_HELO.
    pub const NOHELO: u32 = 0x02;
    /// No SMFIC_MAIL.
    pub const NOMAIL: u32 = 0x04;
    /// No SMFIC_RCPT.
    pub const NORCPT: u32 = 0x08;
    /// No SMFIC_BODY.
    pub const NOBODY: u32 = 0x10;
    /// No SMFIC_HEADER.
    pub const NOHDRS: u32 = 0x20;
    /// No SMFIC_EOH.
    pub const NOEOH: u32 = 0x40;
    /// No reply to SMFIC_HEADER.
    pub const NR_HDR: u32 = 0x80;
    /// No SMFIC_UNKNOWN.
    pub const NOUNKNOWN: u32 = 0x100;
    /// No SMFIC_DATA.
    pub const NODATA: u32 = 0x200;
    /// The milter may answer SMFIR_SKIP to a body chunk.
    pub const SKIP: u32 = 0x400;
    /// Rejected recipients are sent too (not offered).
    pub const RCPT_REJ: u32 = 0x800;
    /// No reply to SMFIC_CONNECT.
    pub const NR_CONN: u32 = 0x1000;
    /// No reply to SMFIC_HELO.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to SMFIC_MAIL.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to SMFIC_RCPT.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to SMFIC_DATA.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to SMFIC_UNKNOWN.
    pub const NR_UNKN: u32 = 0x20000;
    /// No reply to SMFIC_EOH.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to SMFIC_BODY.
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space, in both directions.
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// What the gateway offers: every step may be skipped or left
    /// unanswered, header values may keep their leading space; rejected
    /// recipients are not sent.
    pub const OFFERED: u32 = 0x1FFFFF & !RCPT_REJ;
}

/// Address family of SMFIC_CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Unknown (no address follows).
    Unknown,
    /// IPv4 (`'4'`).
    Inet,
    /// IPv6 (`'6'`).
    Inet6,
}

/// A command from the gateway to a milter (SMFIC_*).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `O`: version, actions and protocol flags offered.
    OptNeg {
        /// Protocol version.
        version: u32,
        /// SMFIF_* actions offered.
        actions: u32,
        /// SMFIP_* flags offered.
        protocol: u32,
    },
    /// `D`: macros for the command `stage` that follows.
    Macro {
        /// The command code they belong to (`C`, `H`, `M`, `R`, `T`, `N`, `E`).
        stage: u8,
        /// Name and value pairs, names as `{daemon_name}` or `j`.
        pairs: Vec<(String, String)>,
    },
    /// `C`: the client's name, family, port and address.
    Connect {
        /// Host name (or `[address]` when unknown).
        host: String,
        /// Address family.
        family: Family,
        /// Client port.
        port: u16,
        /// Client address in text.
        address: String,
    },
    /// `H`: the HELO/EHLO argument.
    Helo(String),
    /// `M`: `<sender>` and ESMTP parameters.
    Mail(Vec<String>),
    /// `R`: `<recipient>` and ESMTP parameters.
    Rcpt(Vec<String>),
    /// `T`: DATA.
    Data,
    /// `L`: one header field, name and value (unfolded as received).
    Header(String, String),
    /// `N`: end of headers.
    Eoh,
    /// `B`: one body chunk.
    Body(Vec<u8>),
    /// `E`: end of message.
    Eom,
    /// `A`: abort the transaction.
    Abort,
    /// `Q`: close the connection.
    Quit,
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // A NUL would end the string early on the milter's side.
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

impl Command {
    /// Its command byte.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg { .. } => b'O',
            Command::Macro { .. } => b'D',
            Command::Connect { .. } => b'C',
            Command::Helo(_) => b'H',
            Command::Mail(_) => b'M',
            Command::Rcpt(_) => b'R',
            Command::Data => b'T',
            Command::Header(..) => b'L',
            Command::Eoh => b'N',
            Command::Body(_) => b'B',
            Command::Eom => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
        }
    }

    /// The whole packet, framing included.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                data.extend_from_slice(&version.to_be_bytes());
                data.extend_from_slice(&actions.to_be_bytes());
                data.extend_from_slice(&protocol.to_be_bytes());
            }
            Command::Macro { stage, pairs } => {
                data.push(*stage);
                for (name, value) in pairs {
                    push_str(&mut data, name);
                    push_str(&mut data, value);
                }
            }
            Command::Connect {
                host,
                family,
                port,
                address,
            } => {
                push_str(&mut data, host);
                match family {
                    Family::Unknown => data.push(b'U'),
                    Family::Inet | Family::Inet6 => {
                        data.push(if *family == Family::Inet { b'4' } else { b'6' });
                        data.extend_from_slice(&port.to_be_bytes());
                        push_str(&mut data, address);
                    }
                }
            }
            Command::Helo(s) => push_str(&mut data, s),
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in args {
                    push_str(&mut data, a);
                }
            }
            Command::Header(name, value) => {
                push_str(&mut data, name);
                push_str(&mut data, value);
            }
            Command::Body(chunk) => data.extend_from_slice(chunk),
            Command::Data | Command::Eoh | Command::Eom | Command::Abort | Command::Quit => {}
        }
        let mut out = Vec::with_capacity(data.len() + 5);
        out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
        out.push(self.code());
        out.extend_from_slice(&data);
        out
    }
}

/// A milter's answer (SMFIR_*), or its option negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `O`: what the milter agreed to.
    OptNeg {
        /// Its protocol version.
        version: u32,
        /// SMFIF_* actions it may ask for.
        actions: u32,
        /// SMFIP_* steps it skips or leaves unanswered.
        protocol: u32,
    },
    /// `a`: accept; the milter wants nothing more of this transaction.
    Accept,
    /// `c`: go on.
    Continue,
    /// `d`: accept and drop the message (or recipient).
    Discard,
    /// `r`: reject with a 5xx.
    Reject,
    /// `t`: reject for now with a 4xx.
    Tempfail,
    /// `y`: reject with this SMTP reply text (`550 5.7.1 text`, lines
    /// joined by CRLF).
    ReplyCode(String),
    /// `s`: send no more body chunks.
    Skip,
    /// `p`: still working; wait longer.
    Progress,
    /// `h`: add a header field at the end of the header.
    AddHeader(String, String),
    /// `i`: insert a header field at this index (0: the top).
    InsertHeader(u32, String, String),
    /// `m`: change the index-th (from 1) field of this name; an empty
    /// value deletes it.
    ChangeHeader(u32, String, String),
    /// `b`: a chunk of the replacement body.
    ReplaceBody(Vec<u8>),
    /// `+` or `2`: add a recipient (with ESMTP arguments).
    AddRcpt(String, Option<String>),
    /// `-`: delete a recipient.
    DelRcpt(String),
    /// `e`: change the sender (with ESMTP arguments).
    ChangeFrom(String, Option<String>),
    /// `q`: quarantine, with a reason.
    Quarantine(String),
}

/// Why a milter's packet is not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The length field is 0 or over [`MAX_PACKET`].
    BadLength(usize),
    /// A command byte the protocol does not define.
    UnknownResponse(u8),
    /// The data does not fit the response's layout.
    Malformed(&'static str),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::BadLength(n) => write!(f, "bad packet length {n}"),
            CodecError::UnknownResponse(c) => write!(f, "unknown response code 0x{c:02x}"),
            CodecError::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Reads NUL-terminated strings and numbers out of a packet's data.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::Malformed(what))?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }

    fn optional(&mut self, what: &'static str) -> Result<Option<String>, CodecError> {
        if self.0.is_empty() {
            Ok(None)
        } else {
            self.string(what).map(Some)
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or(CodecError::Malformed(what))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }
}

impl Response {
    /// Parses one packet's command byte and data.
    pub fn parse(code: u8, data: &[u8]) -> Result<Response, CodecError> {
        let mut f = Fields(data);
        Ok(match code {
            b'O' => Response::OptNeg {
                version: f.u32("option negotiation")?,
                actions: f.u32("option negotiation")?,
                protocol: f.u32("option negotiation")?,
                // Per-stage macro lists may follow: the gateway sends its
                // fixed set whatever they say.
            },
            b'a' => Response::Accept,
            b'c' => Response::Continue,
            b'd' => Response::Discard,
            b'r' => Response::Reject,
            b't' => Response::Tempfail,
            b's' => Response::Skip,
            b'p' => Response::Progress,
            b'y' => Response::ReplyCode(f.string("replycode")?),
            b'h' => {
                let name = f.string("addheader")?;
                Response::AddHeader(name, f.string("addheader")?)
            }
            b'i' | b'm' => {
                let what = if code == b'i' {
                    "insheader"
                } else {
                    "chgheader"
                };
                let index = f.u32(what)?;
                let name = f.string(what)?;
                let value = f.string(what)?;
                if code == b'i' {
                    Response::InsertHeader(index, name, value)
                } else {
                    Response::ChangeHeader(index, name, value)
                }
            }
            b'b' => Response::ReplaceBody(data.to_vec()),
            b'+' => Response::AddRcpt(f.string("addrcpt")?, None),
            b'2' => {
                let rcpt = f.string("addrcpt_par")?;
                Response::AddRcpt(rcpt, f.optional("addrcpt_par")?)
            }
            b'-' => Response::DelRcpt(f.string("delrcpt")?),
            b'e' => {
                let from = f.string("chgfrom")?;
                Response::ChangeFrom(from, f.optional("chgfrom")?)
            }
            b'q' => Response::Quarantine(f.optional("quarantine")?.unwrap_or_default()),
            other => return Err(CodecError::UnknownResponse(other)),
        })
    }
}

/// Cuts milter responses out of the bytes read so far.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds bytes read from the milter.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole response, `Ok(None)` when more bytes are needed.
    pub fn next_response(&mut self) -> Result<Option<Response>, CodecError> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(CodecError::BadLength(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let response = Response::parse(self.buf[4], &self.buf[5..4 + len]);
        self.buf.drain(..4 + len);
        response.map(Some)
    }
}

/// A `replycode` text checked against the class the milter's verb
/// implies: `Some((code, enhanced, lines))` for a 4xx or 5xx reply whose
/// lines all carry the same code, as libmilter's `smfi_setmlreply` writes
/// them. `None` when the text is not a valid reply.
pub fn parse_replycode(text: &str) -> Option<(u16, Option<String>, Vec<String>)> {
    let mut code = None;
    let mut enhanced = None;
    let mut lines = Vec::new();
    let raw: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    for (i, line) in raw.iter().enumerate() {
        let digits = line.get(..3)?;
        let this: u16 = digits.parse().ok()?;
        if !(400..600).contains(&this) || code.is_some_and(|c| c != this) {
            return None;
        }
        code = Some(this);
        let sep = line.as_bytes().get(3).copied();
        let last = i + 1 == raw.len();
        match sep {
            None => {}
            Some(b' ') if last => {}
            Some(b'-') if !last => {}
            Some(b' ') | Some(b'-') => return None,
            Some(_) => return None,
        }
        let rest = line.get(4..).unwrap_or("");
        let (enh, rest) = split_enhanced(rest, this);
        if i == 0 {
            enhanced = enh;
        }
        lines.push(rest.to_string());
    }
    code.map(|c| (c, enhanced, lines))
}

/// An enhanced status code at the start of `text` whose class matches the
/// reply code's, and the text after it.
fn split_enhanced(text: &str, code: u16) -> (Option<String>, &str) {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let parts: Vec<&str> = word.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if numeric && parts[0] == (code / 100).to_string() {
        (Some(word.to_string()), rest)
    } else {
        (None, text)
    }
}

#[cfg(test)]
mod tests;
