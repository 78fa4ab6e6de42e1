use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

#[test]
fn lengths_at_the_edges_of_i64_read_as_from_str() {
    for line in [
        "0",
        "-0",
        "+0",
        "+5",
        "-1",
        "007",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999",
        "-",
        "+",
        "",
        "1-",
        "٣",
        "999999999999999999",
        "1000000000000000000",
        "0000000000000000001",
    ] {
        let expected = Some(line)
            .filter(|s| !s.is_empty() && s.len() <= 20)
            .and_then(|s| s.parse::<i64>().ok());
        assert_eq!(parse_i64(line.as_bytes()), expected, "{line:?}");
        let input = format!("${line}\r\n");
        let want = expected
            .map(|n| Some((n, input.len())))
            .ok_or(ProtocolError::BadLength { what: "bulk" });
        assert_eq!(read_len(input.as_bytes(), 0, "bulk", 32), want, "{line:?}");
    }
}

fn encode_request(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(args) = parse_request(&mut buf, &Limits::default())? {
        out.push(args);
    }
    Ok(out)
}

fn strs(args: &[Bytes]) -> Vec<&str> {
    args.iter()
        .map(|a| std::str::from_utf8(a).expect("utf8"))
        .collect()
}

#[test]
fn multibulk_pipelined_and_partial() {
    let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
    let reqs = parse_all(input).expect("parses");
    assert_eq!(strs(&reqs[0]), ["GET", "k"]);
    assert_eq!(strs(&reqs[1]), ["SET", "k", ""]);
    // Every strict prefix of one request is "need more" and consumes nothing.
    let one = &input[..20];
    for cut in 0..one.len() {
        let mut buf = BytesMut::from(&one[..cut]);
        assert_eq!(
            parse_request(&mut buf, &Limits::default()),
            Ok(None),
            "cut {cut}"
        );
        assert_eq!(buf.len(), cut);
    }
}

/// Feeds `input` to one parser `chunk` bytes at a time, as a connection's
/// reads do; returns the requests and the steps the parser took.
fn feed(input: &[u8], chunk: usize) -> (Vec<Vec<Bytes>>, u64) {
    let mut parser = RequestParser::default();
    let (mut buf, mut fed, mut out) = (BytesMut::new(), 0, Vec::new());
    loop {
        let mut args = Vec::new();
        if parser
            .parse(&mut buf, &Limits::default(), &mut args)
            .expect("valid")
        {
            out.push(args);
            continue;
        }
        if fed == input.len() {
            return (out, parser.steps());
        }
        let end = input.len().min(fed + chunk);
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
    }
}

/// A slow sender costs what it sends: a request arriving a few bytes per
/// read is scanned once, not again on every read (issue 21, finding 16).
/// Before, the 60,000-byte inline line sent a byte per read took 1.8e9
/// steps and the 20,000 arguments sent 3 bytes per read 7.8e8; now each
/// takes about one step per byte or argument.
#[test]
fn a_request_split_across_many_reads_is_scanned_once() {
    let line = format!("SET k {}\r\n", "v".repeat(60_000));
    let (reqs, steps) = feed(line.as_bytes(), 1);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0][2].len(), 60_000);
    assert!(
        steps <= line.len() as u64,
        "{steps} steps for {} bytes",
        line.len()
    );

    let args: Vec<Vec<u8>> = (0..20_000).map(|i| format!("k{i}").into_bytes()).collect();
    let wire = encode_request(&args);
    let (reqs, steps) = feed(&wire, 3);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].len(), 20_000);
    // One step per argument, plus one per read that ended inside one.
    let reads = wire.len().div_ceil(3) as u64;
    assert!(
        steps <= 20_000 + reads,
        "{steps} steps for 20,000 arguments in {reads} reads"
    );
    // The same requests as parsed at once.
    assert_eq!(reqs, parse_all(&wire).expect("parses"));
}

#[test]
fn inline_commands_with_quotes() {
    let reqs = parse_all(b"PING\r\nset k \"a b\\n\" 'c d'\n\r\n").expect("parses");
    assert_eq!(strs(&reqs[0]), ["PING"]);
    assert_eq!(strs(&reqs[1]), ["set", "k", "a b\n", "c d"]);
    assert!(reqs[2].is_empty(), "a blank line is an empty request");
    assert_eq!(
        parse_all(b"get \"open\r\n"),
        Err(ProtocolError::UnbalancedQuotes)
    );
}

#[test]
fn binary_safe_bulk() {
    let value: Vec<u8> = (0..=255).collect();
    let input = encode_request(&[b"SET".to_vec(), b"k\r\n".to_vec(), value.clone()]);
    let reqs = parse_all(&input).expect("parses");
    assert_eq!(&reqs[0][1][..], b"k\r\n");
    assert_eq!(&reqs[0][2][..], &value[..]);
}

#[test]
fn malformed_and_oversize_frames_are_errors() {
    let limits = Limits {
        max_bulk: 10,
        max_args: 3,
        max_inline: 16,
        ..Limits::default()
    };
    let p = |input: &[u8]| parse_request(&mut BytesMut::from(input), &limits);
    assert!(matches!(p(b"*x\r\n"), Err(ProtocolError::BadLength { .. })));
    assert!(matches!(
        p(b"*1\r\n:1\r\n"),
        Err(ProtocolError::Unexpected { .. })
    ));
    assert!(matches!(
        p(b"*1\r\n$2\r\nabc\r\n"),
        Err(ProtocolError::Unexpected { .. })
    ));
    assert!(matches!(
        p(b"*1\r\n$-5\r\n"),
        Err(ProtocolError::BadLength { .. })
    ));
    assert!(matches!(p(b"*4\r\n"), Err(ProtocolError::TooLarge { .. })));
    assert!(matches!(
        p(b"*1\r\n$11\r\n"),
        Err(ProtocolError::TooLarge { .. })
    ));
    assert!(matches!(
        p(&[b'a'; 17]),
        Err(ProtocolError::TooLarge { .. })
    ));
    assert!(matches!(
        p(b"*99999999999999999999999999999999999"),
        Err(ProtocolError::BadLength { .. })
    ));
    assert_eq!(p(b"*0\r\n"), Ok(Some(vec![])));
}

proptest! {
    /// The length reader takes exactly what `i64::from_str` takes (a sign,
    /// digits, no overflow), up to 20 characters, on any line.
    #[test]
    fn lengths_read_as_i64_from_str(
        line in proptest::collection::vec(
            prop_oneof![Just(b'-'), Just(b'+'), b'0'..=b'9', any::<u8>()],
            0..24,
        )
    ) {
        prop_assume!(!line.contains(&b'\r'));
        let mut input = vec![b'*'];
        input.extend_from_slice(&line);
        input.extend_from_slice(b"\r\n");
        let expected = std::str::from_utf8(&line)
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 20)
            .and_then(|s| s.parse::<i64>().ok())
            .map(|n| (n, input.len()));
        let got = read_len(&input, 0, "multibulk", 32);
        match expected {
            Some(e) => prop_assert_eq!(got, Ok(Some(e))),
            None => prop_assert_eq!(got, Err(ProtocolError::BadLength { what: "multibulk" })),
        }
    }

    #[test]
    fn multibulk_round_trips_at_any_split(
        reqs in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6), 1..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire: Vec<u8> = reqs.iter().flat_map(|r| encode_request(r)).collect();
        let cut = cut.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(args) = parse_request(&mut buf, &Limits::default()).expect("valid") {
            got.push(args);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(args) = parse_request(&mut buf, &Limits::default()).expect("valid") {
            got.push(args);
        }
        let got: Vec<Vec<Vec<u8>>> = got.into_iter().map(|r| r.into_iter().map(|a| a.to_vec()).collect()).collect();
        prop_assert_eq!(got, reqs);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&input[..]);
        let limits = Limits { max_bulk: 64, max_args: 8, max_inline: 128, ..Limits::default() };
        for _ in 0..input.len() + 1 {
            match parse_request(&mut buf, &limits) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}
