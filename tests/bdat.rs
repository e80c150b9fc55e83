//! CHUNKING/BDAT (RFC 3030) as dialogues over in-memory pipes: chunks up
//! to LAST become one message, relayed as DATA; pipelined chunks; every
//! refused chunk's octets are read and dropped, never run as commands;
//! bare line endings and the size limit as for DATA. The session, rules
//! and upstream client are the real ones; only the byte streams are in
//! memory.

mod common;

use common::dialogue::{Dialogue, Memory};
use common::MockOptions;

/// A gateway without a Received header (so messages arrive as sent),
/// with `message` settings and other `extra` configuration.
fn gateway_with(message: &str, extra: &str) -> Memory {
    let yaml =
        format!("hostname: gate.test\nmessage: {{ received_header: false{message} }}\n{extra}");
    Memory::start(&yaml, MockOptions::default())
}

fn gateway(extra: &str) -> Memory {
    gateway_with("", extra)
}

/// A gateway whose upstream offers CHUNKING.
fn chunking_gateway() -> Memory {
    let options = MockOptions {
        ehlo_extra: vec!["CHUNKING".into()],
        ..MockOptions::default()
    };
    Memory::start(
        "hostname: gate.test\nmessage: { received_header: false }\n",
        options,
    )
}

/// EHLO, MAIL and one RCPT, each answered 250.
fn open_transaction(s: &mut Dialogue) {
    s.cmd("EHLO client.test").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    s.cmd("RCPT TO:<b@example.com>").expect("250");
}

/// `BDAT` with its octets, and the reply.
fn chunk(s: &mut Dialogue, octets: &str, last: bool) -> String {
    let end = if last { " LAST" } else { "" };
    s.send(&format!("BDAT {}{end}\r\n{octets}", octets.len()));
    s.reply().raw
}

#[test]
fn ehlo_offers_chunking() {
    let gw = gateway("");
    let mut s = gw.session();
    let ehlo = s.cmd("EHLO client.test").expect("250");
    assert!(ehlo.contains("250 CHUNKING\r\n"), "{ehlo}");
    assert!(!ehlo.contains("BINARYMIME"), "{ehlo}");
}

#[test]
fn chunks_to_last_are_one_message_relayed_as_dot_stuffed_data() {
    let gw = gateway("");
    let mut s = gw.session();
    open_transaction(&mut s);
    let message = "Subject: chunked\r\n\r\n.a leading dot\r\nsplit CR\r\nLF and end\r\n";
    let (first, rest) = message.split_at(message.find("CR\r").unwrap() + 3);
    assert_eq!(
        chunk(&mut s, first, false),
        format!("250 2.0.0 {} octets received\r\n", first.len())
    );
    assert!(chunk(&mut s, rest, true).starts_with("250 2.0.0"));
    let delivered = gw.upstream.wait_for(1);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].data, message.as_bytes());
    let wire = String::from_utf8_lossy(&delivered[0].wire);
    assert!(
        wire.contains("\r\n..a leading dot\r\n"),
        "not dot-stuffed: {wire:?}"
    );
    assert!(gw.upstream.commands()[0].iter().any(|c| c == "DATA"));
    // The session goes on: a second transaction by DATA.
    let reply = s.send_message(
        "a@example.com",
        &["c@example.com"],
        "Subject: two\r\n\r\nx\r\n",
    );
    reply.expect("250");
    assert_eq!(gw.upstream.wait_for(2).len(), 2);
}

#[test]
fn pipelined_bdat_gets_every_reply_in_order() {
    let gw = gateway("");
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    s.send(concat!(
        "MAIL FROM:<a@example.com>\r\n",
        "RCPT TO:<b@example.com>\r\n",
        "RCPT TO:<c@example.com>\r\n",
        "BDAT 10\r\nSubject: x",
        "BDAT 8\r\n\r\n\r\nbody",
        "BDAT 2 LAST\r\n\r\n",
        "NOOP\r\n",
    ));
    s.reply().expect("250");
    s.reply().expect("250");
    s.reply().expect("250");
    s.reply().expect("250 2.0.0 10 octets");
    s.reply().expect("250 2.0.0 8 octets");
    s.reply().expect("250");
    s.reply().expect("250 2.0.0");
    let delivered = gw.upstream.wait_for(1);
    assert_eq!(delivered[0].data, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(delivered[0].rcpts.len(), 2);
}

#[test]
fn an_empty_last_chunk_ends_the_message() {
    let gw = gateway("");
    let mut s = gw.session();
    open_transaction(&mut s);
    chunk(&mut s, "Subject: x\r\n\r\nno final line end", false);
    assert!(s.cmd("BDAT 0 LAST").raw.starts_with("250 2.0.0"));
    let delivered = gw.upstream.wait_for(1);
    // Relayed as DATA, the message gets the line end DATA cannot do without.
    assert_eq!(
        delivered[0].data,
        b"Subject: x\r\n\r\nno final line end\r\n"
    );
}

#[test]
fn a_data_end_and_commands_inside_a_chunk_stay_one_message() {
    let gw = gateway("");
    let mut s = gw.session();
    open_transaction(&mut s);
    let smuggled = "Subject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n";
    assert!(chunk(&mut s, smuggled, true).starts_with("250 2.0.0"));
    s.cmd("NOOP").expect("250");
    let delivered = gw.upstream.wait_for(1);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].data, smuggled.as_bytes());
    let commands: Vec<String> = gw.upstream.commands().concat();
    assert!(
        !commands.iter().any(|c| c.contains("evil")),
        "smuggled command reached the upstream: {commands:?}"
    );
}

#[test]
fn refused_chunks_are_read_and_dropped_never_run_as_commands() {
    let gw = gateway("");
    let mut s = gw.session();
    s.cmd("EHLO client.test").expect("250");
    // No MAIL: 503, and the octets (a QUIT) are not a command.
    s.send("BDAT 6\r\nQUIT\r\n");
    s.reply().expect("503 5.5.1");
    s.cmd("NOOP").expect("250");
    s.cmd("MAIL FROM:<a@example.com>").expect("250");
    // No recipient yet.
    s.send("BDAT 6 LAST\r\nQUIT\r\n");
    s.reply().expect("554 5.5.1");
    s.cmd("NOOP").expect("250");
    s.cmd("RCPT TO:<b@example.com>").expect("250");
    chunk(&mut s, "Subject: x\r\n", false);
    // A message begun with BDAT cannot go on as DATA.
    s.cmd("DATA").expect("503 5.5.1");
    // RSET drops the chunks so far.
    s.cmd("RSET").expect("250");
    s.send("BDAT 2 LAST\r\nxx");
    s.reply().expect("503");
    assert!(gw.upstream.delivered().is_empty());
}

#[test]
fn bdat_syntax_errors_get_501() {
    let gw = gateway("");
    let mut s = gw.session();
    open_transaction(&mut s);
    s.cmd("BDAT").expect("501 5.5.4");
    s.cmd("BDAT ten").expect("501 5.5.4");
    s.cmd("BDAT 1 FIRST").expect("501 5.5.4");
    s.cmd("NOOP").expect("250");
}

#[test]
fn bare_line_feeds_are_refused_as_for_data_or_normalized() {
    let gw = gateway("");
    let mut s = gw.session();
    open_transaction(&mut s);
    // The bare LF opens a chunk; the one before ended without a CR.
    chunk(&mut s, "Subject: x\r\n\r\nline", false);
    s.send("BDAT 6 LAST\r\n\nmore\n");
    s.reply().expect("554 5.6.0");
    assert!(gw.upstream.delivered().is_empty());

    let lenient = gateway_with(", bare_line_endings: normalize", "");
    let mut s = lenient.session();
    open_transaction(&mut s);
    chunk(&mut s, "Subject: x\r\n\r\nline\r", false);
    assert!(chunk(&mut s, "x\nmore\n", true).starts_with("250"));
    assert_eq!(
        lenient.upstream.wait_for(1)[0].data,
        b"Subject: x\r\n\r\nline\r\nx\r\nmore\r\n"
    );
}

#[test]
fn the_size_limit_counts_every_chunk() {
    let gw = gateway("limits: { max_message_bytes: 1024 }\n");
    let mut s = gw.session();
    open_transaction(&mut s);
    let line = format!("{}\r\n", "x".repeat(598));
    chunk(&mut s, &line, false);
    s.send(&format!("BDAT {} LAST\r\n{line}NOOP\r\n", line.len()));
    s.reply().expect("552 5.3.4");
    s.reply().expect("250");
    assert!(gw.upstream.delivered().is_empty());
}

#[test]
fn an_upstream_offering_chunking_gets_bdat_whichever_way_the_client_sent() {
    let gw = chunking_gateway();
    let mut s = gw.session();
    open_transaction(&mut s);
    let message = "Subject: by bdat\r\n\r\n.dot\r\n";
    assert!(chunk(&mut s, message, true).starts_with("250"));
    let by_data = "Subject: by data\r\n\r\n.dot\r\n";
    // DATA takes the dot-stuffed form; the upstream gets it unstuffed.
    let reply = s.send_message(
        "a@example.com",
        &["b@example.com"],
        "Subject: by data\r\n\r\n..dot\r\n",
    );
    reply.expect("250");
    let delivered = gw.upstream.wait_for(2);
    assert_eq!(delivered[0].data, message.as_bytes());
    assert_eq!(delivered[1].data, by_data.as_bytes());
    let commands = gw.upstream.commands().concat();
    assert!(!commands.iter().any(|c| c == "DATA"), "{commands:?}");
    let lasts: Vec<&String> = commands.iter().filter(|c| c.starts_with("BDAT ")).collect();
    assert_eq!(
        lasts,
        [
            &format!("BDAT {} LAST", message.len()),
            &format!("BDAT {} LAST", by_data.len())
        ]
    );
}

#[test]
fn a_large_message_goes_upstream_in_several_chunks_and_arrives_whole() {
    let gw = chunking_gateway();
    let mut s = gw.session();
    open_transaction(&mut s);
    let line = format!("{}\r\n", "y".repeat(78));
    let message = format!("Subject: large\r\n\r\n{}", line.repeat(3000));
    let (a, b) = message.split_at(100_001);
    chunk(&mut s, a, false);
    assert!(chunk(&mut s, b, true).starts_with("250"));
    let delivered = gw.upstream.wait_for(1);
    assert_eq!(delivered[0].data, message.as_bytes());
    let chunks: Vec<String> = gw
        .upstream
        .commands()
        .concat()
        .into_iter()
        .filter(|c| c.starts_with("BDAT "))
        .collect();
    assert!(chunks.len() >= 2, "{chunks:?}");
    assert!(chunks.last().unwrap().ends_with(" LAST"));
    assert_eq!(chunks.iter().filter(|c| c.ends_with(" LAST")).count(), 1);
}
