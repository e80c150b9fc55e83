//! Codec unit tests: framing, the command layouts libmilter expects, and
//! the parsing of every reply a milter may send.

use super::*;

fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

#[test]
fn commands_are_framed_with_their_length() {
    let optneg = Command::OptNeg {
        version: 6,
        actions: action::ALL,
        protocol: protocol::OFFERED,
    }
    .encode();
    assert_eq!(&optneg[..5], &[0, 0, 0, 13, b'O']);
    assert_eq!(&optneg[5..9], &6u32.to_be_bytes());
    let connect = Command::Connect {
        host: "mx.test".into(),
        family: Family::Inet,
        port: 25,
        address: "192.0.2.1".into(),
    }
    .encode();
    assert_eq!(connect, packet(b'C', b"mx.test\x004\x00\x19192.0.2.1\x00"));
    let mail = Command::Mail(vec!["<a@b.test>".into(), "SIZE=10".into()]).encode();
    assert_eq!(mail, packet(b'M', b"<a@b.test>\x00SIZE=10\x00"));
    let macros = Command::Macro {
        stage: b'M',
        pairs: vec![("i".into(), "q1".into())],
    }
    .encode();
    assert_eq!(macros, packet(b'D', b"Mi\x00q1\x00"));
    assert_eq!(Command::Eom.encode(), packet(b'E', b""));
}

#[test]
fn a_nul_inside_a_string_cannot_cut_it_short() {
    let h = Command::Header("X".into(), "a\0b".into()).encode();
    assert_eq!(h, packet(b'L', b"X\x00ab\x00"));
}

#[test]
fn replies_are_parsed_across_reads() {
    let mut d = Decoder::new();
    let mut bytes = packet(b'h', b"X-A\x00one\x00");
    bytes.extend(packet(b'm', b"\x00\x00\x00\x01Subject\x00\x00"));
    bytes.extend(packet(b'y', b"554 5.7.1 no\x00"));
    let (first, rest) = bytes.split_at(7);
    d.feed(first);
    assert_eq!(d.next_response(), Ok(None));
    d.feed(rest);
    assert_eq!(
        d.next_response(),
        Ok(Some(Response::AddHeader("X-A".into(), "one".into())))
    );
    assert_eq!(
        d.next_response(),
        Ok(Some(Response::ChangeHeader(
            1,
            "Subject".into(),
            String::new()
        )))
    );
    assert_eq!(
        d.next_response(),
        Ok(Some(Response::ReplyCode("554 5.7.1 no".into())))
    );
    assert_eq!(d.next_response(), Ok(None));
}

#[test]
fn every_reply_kind_parses() {
    let cases: Vec<(u8, &[u8], Response)> = vec![
        (b'a', b"", Response::Accept),
        (b'c', b"", Response::Continue),
        (b'd', b"", Response::Discard),
        (b'r', b"", Response::Reject),
        (b't', b"", Response::Tempfail),
        (b's', b"", Response::Skip),
        (b'p', b"", Response::Progress),
        (
            b'i',
            b"\x00\x00\x00\x00DKIM-Signature\x00v=1\x00",
            Response::InsertHeader(0, "DKIM-Signature".into(), "v=1".into()),
        ),
        (
            b'b',
            b"new body",
            Response::ReplaceBody(b"new body".to_vec()),
        ),
        (b'+', b"<c@d>\x00", Response::AddRcpt("<c@d>".into(), None)),
        (
            b'2',
            b"<c@d>\x00NOTIFY=NEVER\x00",
            Response::AddRcpt("<c@d>".into(), Some("NOTIFY=NEVER".into())),
        ),
        (b'-', b"<c@d>\x00", Response::DelRcpt("<c@d>".into())),
        (
            b'e',
            b"<x@y>\x00",
            Response::ChangeFrom("<x@y>".into(), None),
        ),
        (b'q', b"held\x00", Response::Quarantine("held".into())),
    ];
    for (code, data, want) in cases {
        assert_eq!(Response::parse(code, data), Ok(want));
    }
    let neg = [6u32, 0x1ff, 0x10]
        .iter()
        .flat_map(|n| n.to_be_bytes())
        .collect::<Vec<_>>();
    assert_eq!(
        Response::parse(b'O', &neg),
        Ok(Response::OptNeg {
            version: 6,
            actions: 0x1ff,
            protocol: 0x10
        })
    );
}

#[test]
fn broken_replies_are_errors() {
    assert_eq!(
        Response::parse(b'Z', b""),
        Err(CodecError::UnknownResponse(b'Z'))
    );
    assert!(Response::parse(b'h', b"no-nul").is_err());
    assert!(Response::parse(b'm', b"\x00\x01").is_err());
    assert!(Response::parse(b'O', b"\x00\x00\x00\x06").is_err());
    let mut d = Decoder::new();
    d.feed(&[0, 0, 0, 0]);
    assert_eq!(d.next_response(), Err(CodecError::BadLength(0)));
    let mut d = Decoder::new();
    d.feed(&[0x7f, 0, 0, 0, b'a']);
    assert!(matches!(d.next_response(), Err(CodecError::BadLength(_))));
}

#[test]
fn replycodes_are_checked() {
    assert_eq!(
        parse_replycode("550 5.7.1 Go away"),
        Some((550, Some("5.7.1".into()), vec!["Go away".into()]))
    );
    assert_eq!(
        parse_replycode("451-4.7.1 first\r\n451 4.7.1 second"),
        Some((
            451,
            Some("4.7.1".into()),
            vec!["first".into(), "second".into()]
        ))
    );
    // An enhanced code of another class is text, not a code.
    assert_eq!(
        parse_replycode("550 4.7.1 odd"),
        Some((550, None, vec!["4.7.1 odd".into()]))
    );
    for bad in [
        "250 2.0.0 fine",
        "600 x",
        "55x no",
        "550-only one line",
        "550 a\r\n451 b",
        "550 a\r\n550 b\r\n550-c",
        "",
    ] {
        assert_eq!(parse_replycode(bad), None, "{bad:?}");
    }
}
